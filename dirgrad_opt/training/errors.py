"""Errors of the training runner and their one-line rendering for the command line."""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """The run's configuration is wrong (bad binding, unknown dataset, conflicting workdir...).

    Raised before any output is written; the message says what was wrong and what to do.
    """


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; ``result.json`` records ``"diverged"``."""


class TrainingStalled(TrainingDiverged):
    """The optimizer rejected every step for ``train.max_rejected_steps`` consecutive steps;
    ``result.json`` records ``"stalled"``. Exit code 3, like a divergence: the run cannot
    make progress with this configuration."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM/SIGINT stopped the run after it saved a checkpoint of the current step;
    ``result.json`` records ``"interrupted"`` and rerunning resumes."""


class RunIOError(RuntimeError):
    """Reading or writing the workdir failed during the run (disk full, permissions...); the
    message is one line naming the path and the error number."""


_OBJECT_REPR = re.compile(r"\s*\(<[^<>]*>\)")
#: Context gin adds to every error raised inside the runner: it names no culprit.
_NOISE = frozenset({"In call to configurable 'train'"})


def one_line(error: BaseException) -> str:
    """``error`` as a single line: its type, message and any gin context joined by `` | ``.

    Gin appends context on extra lines ("In call to configurable 'Adam' (<function ...>)",
    "In file 'x.gin', line 3"); those name the culprit, so they are kept, minus object reprs.
    A ``ConfigError``'s message is shown as is (when it wraps another error, it already starts
    with that error's type).
    """
    message = str(error)
    if isinstance(error, SyntaxError) and error.msg:  # gin parse errors carry file/line/text
        where = f"{error.filename or '<bindings>'}, line {error.lineno}"
        source = f": {error.text.strip()}" if error.text else ""
        message = f"{error.msg} (in {where}{source})"
    lines = [_OBJECT_REPR.sub("", line).strip() for line in message.splitlines()]
    lines = [line for line in lines if line.strip("^ ") and line not in _NOISE]
    text = " | ".join(lines)
    if isinstance(error, ConfigError):
        return _bounded(text)
    if isinstance(error, KeyError) and text.startswith(("'", '"')):
        text = text.strip("'\"")
    name = type(error).__name__
    return _bounded(f"{name}: {text}" if text else name)


#: Longest line :func:`one_line` returns; longer ones lose their middle (a printed array...).
MAX_LINE = 1000


def _bounded(text: str) -> str:
    if len(text) <= MAX_LINE:
        return text
    cut = len(text) - MAX_LINE
    half = (MAX_LINE - 40) // 2
    return f"{text[:half]} ...[{cut} characters cut]... {text[-half:]}"
