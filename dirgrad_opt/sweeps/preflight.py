"""Sweep pre-flight: parse and bind the gin of one trial per configuration before any trial runs.

A misspelt binding or a bad value would otherwise fail every trial, each after a process start
of several seconds. :func:`check` starts **one** Python process (``python -m
dirgrad_opt.sweeps.preflight``) that sees exactly what a trial sees — the project root as its
working directory, the user's ``--import`` modules and their folders, the sweep's gin files
and bindings — and, for every configuration (one seed each, the seed changes nothing gin
checks):

1. clears gin, imports the user's modules and parses the gin files, the sweep-wide bindings and
   the configuration's own bindings with unknown names as errors (what ``experiments.train``
   does first);
2. builds ``train.optimizer`` (``@Adam()``...): a bad value such as ``Adam.learning_rate =
   'fast'`` or an option the optimizer refuses fails here, naming the configurable.

It reports every invalid configuration, not just the first. The dataset and the model are not
built (that is the trial's work, and can take long).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dirgrad_opt.sweeps import launch

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: The child's last stdout line starts with this, then JSON.
_RESULT_PREFIX = "PREFLIGHT_RESULT "


@dataclasses.dataclass(frozen=True)
class Problem:
    """An invalid configuration: its id, its bindings as gin lines, the one-line error."""

    config_id: str
    lines: tuple[str, ...]
    error: str

    def __str__(self) -> str:
        return f"configuration {self.config_id} ({'; '.join(self.lines)}): {self.error}"


def check(
    configs: Sequence[tuple[str, Sequence[str]]],
    gin_files: Sequence[str],
    gin_params: Sequence[str] = (),
    imports: Sequence[str] = (),
    import_paths: Sequence[str] = (),
    timeout_s: float = 900.0,
) -> list[Problem]:
    """Checks configurations in one subprocess; returns the invalid ones (``[]``: all valid).

    Args:
      configs: ``(config_id, gin lines)`` per configuration (its bindings, ``train.seed``).
      gin_files: the sweep's gin files, as the trials get them (relative to the project root,
        or absolute).
      gin_params: sweep-wide bindings, applied before each configuration's own.
      imports: the user's modules (``--import``).
      import_paths: absolute folders to find them in.
      timeout_s: the check process is killed after this long.

    Raises:
      RuntimeError: the check process itself failed (not a configuration): the message holds
        the tail of its output.
    """
    if not configs:
        return []
    request = {
        "configs": [[cid, list(lines)] for cid, lines in configs],
        "gin_files": list(gin_files),
        "gin_params": list(gin_params),
        "imports": list(imports),
        "import_paths": list(import_paths),
    }
    env = launch.thread_env(max(1, (os.cpu_count() or 1)), str(PROJECT_ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "dirgrad_opt.sweeps.preflight"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_PREFIX):
            found = json.loads(line[len(_RESULT_PREFIX) :])
            return [Problem(p["config_id"], tuple(p["lines"]), p["error"]) for p in found]
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
    raise RuntimeError(f"the pre-flight check process failed (exit {proc.returncode}):\n{tail}")


def _check_one(lines: Sequence[str], request: dict[str, Any]) -> str | None:
    """The error of one configuration, or ``None``; runs in the check process."""
    import gin
    import keras

    from dirgrad_opt import problems, user_modules
    from dirgrad_opt.training import steps
    from dirgrad_opt.training.errors import one_line

    try:  # exactly as experiments.train parses (a train.problem's file included)
        problems.parse_config(
            request["gin_files"],
            [*request["gin_params"], *lines],
            request["imports"],
            request["import_paths"],
        )
    except user_modules.ImportFailed as error:
        return str(error)
    except Exception as error:  # noqa: BLE001 - every parse failure is the configuration's
        return one_line(error)
    try:
        reference = gin.query_parameter("train.optimizer")
    except ValueError:
        return "train.optimizer is not bound; bind it in a gin file or the sweep file"
    try:
        optimizer = reference
        if isinstance(reference, gin.config.ConfigurableReference):
            optimizer = reference.scoped_configurable_fn()
        if not isinstance(optimizer, keras.optimizers.Optimizer) and callable(optimizer):
            optimizer = optimizer()
        steps.check_optimizer(optimizer)
    except Exception as error:  # noqa: BLE001
        return f"train.optimizer = {reference!r}: {one_line(error)}"
    return None


def main() -> None:
    """The check process: a JSON request on stdin, the problems as JSON on the last line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    request = json.load(sys.stdin)
    import gin

    import dirgrad_opt.training  # noqa: F401 - registers train and the optimizers with gin

    gin.add_config_file_search_path(str(PROJECT_ROOT))  # as experiments.train does
    problems = []
    for config_id, lines in request["configs"]:
        error = _check_one(lines, request)
        if error is not None:
            problems.append({"config_id": config_id, "lines": lines, "error": error})
            if error.startswith("--import="):
                break  # the same for every configuration
    gin.clear_config()
    print(_RESULT_PREFIX + json.dumps(problems), flush=True)


if __name__ == "__main__":
    main()
