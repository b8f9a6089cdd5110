"""Train one configuration: ``python -m experiments.train --gin_file=... --workdir=...``.

    python -m experiments.train --gin_file=configs/quickstart.gin --workdir=runs/quickstart
    python -m experiments.train --gin_file=configs/mnist1d/mlp_adam.gin \
        --gin_param="Adam.learning_rate = 3e-3" --workdir=runs/mlp_adam_3e-3

Thin by design: parse the flags, load gin (unknown names are errors), call
:func:`dirgrad_opt.training.run`. Gin paths resolve against the current directory, then the
project root, so ``include 'configs/...'`` works from anywhere. Your own code:
``--import=my_opt`` (repeatable; ``--import_path=DIR`` adds a folder to look in), or
``import my_opt`` in a gin file beside ``my_opt.py`` (see :mod:`dirgrad_opt.user_modules`).

Exit codes: 0 done (or already complete in that workdir); 2 configuration error, bad flag or
unusable workdir (one line on stderr naming the culprit: a binding, a file, a workdir locked by
another process — its pid and host —, not one of our runs, unwritable, or with damaged
checkpoints/records; nothing written); 3 training diverged or stalled (``result.json`` says
so); 4 the run could not go on — an I/O error (one line naming the path and errno) or, in a
multi-worker run (``--workers=N`` / ``TF_CONFIG``), lost contact with another worker; rerun to
resume; 143 stopped by SIGTERM/SIGINT after checkpointing the current step (TensorFlow's
restartable exit code, ``result.json`` says ``interrupted``; rerun to resume); 130 a second
SIGINT stopped it before that checkpoint. Rerunning the same command in the same workdir
resumes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Gin config file (repeatable).")
_GIN_PARAMS = flags.DEFINE_multi_string(
    "gin_param", [], "Gin binding, e.g. 'train.num_steps = 100' (repeatable, after the files)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory of the run (required).")
_IMPORTS = flags.DEFINE_multi_string(
    "import", [], "Your own module to import before the gin files, e.g. my_opt (repeatable)."
)
_IMPORT_PATHS = flags.DEFINE_multi_string(
    "import_path", [], "Folder to look in for --import modules, before sys.path (repeatable)."
)
_LIST_PROBLEMS = flags.DEFINE_bool(
    "list_problems", False, "List the problems of configs/problems/ (train.problem) and exit."
)
_WORKERS = flags.DEFINE_integer(
    "workers",
    0,
    "Start this many local worker processes (127.0.0.1, free ports, one TF_CONFIG each) running "
    "this command with train.strategy = 'multi_worker'; 0 = run here.",
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXIT_CONFIG_ERROR = 2
EXIT_DIVERGED = 3
EXIT_IO_ERROR = 4  # also a multi-worker run that lost another worker: rerun to resume
EXIT_WORKER_LOST = EXIT_IO_ERROR
EXIT_PREEMPTED = 143  # = dirgrad_opt.training.preemption.EXIT_PREEMPTED (TF's restart code)
EXIT_KILLED = 130
_SEARCH_PATH_ADDED = False


def _fail(message: str, code: int) -> None:
    print(f"train: error: {message}", file=sys.stderr)
    sys.exit(code)


def _add_search_path(gin) -> None:
    """Lets gin find ``configs/...`` relative to the project root too (once per process)."""
    global _SEARCH_PATH_ADDED
    if not _SEARCH_PATH_ADDED:
        gin.add_config_file_search_path(str(PROJECT_ROOT))
        _SEARCH_PATH_ADDED = True


def _find(path: str) -> Path | None:
    """``path`` as given (absolute or relative to the working directory), else under the root."""
    for candidate in (Path(path), PROJECT_ROOT / path):
        if candidate.is_file():
            return candidate
    return None


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; use --gin_file / --gin_param", 2)
    if _WORKDIR.value is None and not _LIST_PROBLEMS.value:  # before TF's import logs a line
        _fail("--workdir is required (the run's output folder)", EXIT_CONFIG_ERROR)
    if _WORKERS.value:
        _launch_workers()
    from experiments import startup

    startup.import_keras()  # first: TF and Keras without Keras's unused sklearn/matplotlib extras
    import gin

    from dirgrad_opt import problems, training, user_modules

    if _LIST_PROBLEMS.value:
        for name in problems.available():
            info = problems.describe(name)
            print(
                f"{name:<20} {info['num_steps']:>6} steps  target {info['target']:<26} "
                f"{info['description']}"
            )
        return

    logging.set_verbosity(logging.INFO)
    _add_search_path(gin)
    for gin_file in _GIN_FILES.value:
        if _find(gin_file) is None:
            _fail(
                f"gin file {gin_file!r} not found (looked in {os.getcwd()!r} and the project "
                f"root {str(PROJECT_ROOT)!r})",
                EXIT_CONFIG_ERROR,
            )
    try:  # clears gin first: a fresh process has none, in-process callers (tests) may
        problems.parse_config(
            _GIN_FILES.value, _GIN_PARAMS.value, _IMPORTS.value, _IMPORT_PATHS.value
        )
    except user_modules.ImportFailed as error:
        _fail(str(error), EXIT_CONFIG_ERROR)
    except Exception as error:  # noqa: BLE001 - every parse failure is a config error
        _fail(training.one_line(error), EXIT_CONFIG_ERROR)
    try:
        training.run(_WORKDIR.value)
    except training.ConfigError as error:
        _fail(training.one_line(error), EXIT_CONFIG_ERROR)
    except training.TrainingDiverged as error:
        _fail(training.one_line(error), EXIT_DIVERGED)
    except training.RunIOError as error:
        _fail(str(error).splitlines()[0], EXIT_IO_ERROR)  # gin appends its context below
    except training.TrainingInterrupted as error:
        print(f"train: {str(error).splitlines()[0]}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except KeyboardInterrupt:
        _fail("stopped by a second signal before the checkpoint; rerun to resume", EXIT_KILLED)
    except Exception as error:
        import tensorflow as tf

        if not (os.environ.get("TF_CONFIG") and isinstance(error, tf.errors.OpError)):
            raise
        _fail(  # a collective with a dead or unreachable worker failed or timed out
            f"lost contact with another worker ({type(error).__name__}: "
            f"{training.one_line(error)[:300]}); rerun the same command(s) to resume from the "
            "last checkpoint",
            EXIT_WORKER_LOST,
        )


def _launch_workers() -> None:
    """``--workers=N``: this command as N local multi-worker processes; exits with their code."""
    if _WORKERS.value < 1:
        _fail(f"--workers must be >= 1, got {_WORKERS.value}", EXIT_CONFIG_ERROR)
    if _WORKDIR.value is None:
        _fail("--workdir is required (the run's output folder)", EXIT_CONFIG_ERROR)
    from dirgrad_opt.training import workers

    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg in ("--workers", "-workers"):
            skip = True
        elif not arg.lstrip("-").startswith("workers="):
            args.append(arg)
    sys.exit(workers.launch(args, _WORKERS.value, _WORKDIR.value))


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, but a bad or missing flag exits 2 (absl exits 1) in one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        _fail(f"{error} (see --helpfull)", EXIT_CONFIG_ERROR)
        raise  # unreachable


if __name__ == "__main__":
    try:
        app.run(main, flags_parser=_parse_flags)
    except KeyboardInterrupt:  # before the training loop catches signals (imports, gin)
        _fail("interrupted before training started; nothing to resume", EXIT_KILLED)
