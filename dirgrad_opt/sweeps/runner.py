"""Run one trial: its folder, its command (``python -m experiments.train``), its outcome.

Every trial runs in its own process through exactly the command a user would type, in its own
folder ``<sweep>/trials/<trial_id>/``::

    trial.json      what to run: id, configuration id, seed, bindings, gin files, the user
                    modules (``imports``) and their folders (``import_paths``), command
    bindings.gin    the trial's bindings (sweep-wide --gin_param lines, then the trial's own)
    status.json     the outcome: running | ok | diverged | failed | interrupted, exit code,
                    error (the trainer's one-line error or the tail of its log), duration
    log.txt         the trainer's stdout and stderr
    ... and everything experiments.train writes (result.json, metrics.jsonl, checkpoints/ ...)

Status from the trainer's exit code: 0 with a complete ``result.json`` → ``ok``; 3 (or a
``result.json`` saying ``diverged``) → ``diverged``; 143/130 (stopped by SIGTERM/SIGINT after a
checkpoint: a preempted trial) or death by SIGTERM/SIGINT → ``interrupted``; 2 (configuration
error), any other code or signal, or 0 without a valid result → ``failed``. A trial stopped by
the sweep itself (Ctrl-C or SIGTERM to the sweep, forwarded to the trial as SIGTERM) is
``interrupted`` too; interrupted trials resume from their last checkpoint on the next run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dirgrad_opt.sweeps import launch
from dirgrad_opt.sweeps.launch import StopFlag
from dirgrad_opt.sweeps.spec import Trial
from dirgrad_opt.training import schema

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRIALS_DIR = "trials"
TRIAL_FILE = "trial.json"
BINDINGS_FILE = "bindings.gin"
STATUS_FILE = launch.STATUS_FILE
LOG_FILE = launch.LOG_FILE

OK, DIVERGED, FAILED, INTERRUPTED = "ok", "diverged", "failed", "interrupted"
RUNNING = launch.RUNNING
#: Statuses of a trial that has run to an end (skipped on rerun; ``failed`` unless retried).
FINISHED = (OK, DIVERGED, FAILED)
EXIT_CONFIG_ERROR = 2
EXIT_DIVERGED = 3
ERROR_TAIL_LINES = 15
ERROR_MAX_CHARS = 2000
INTERRUPTED_MESSAGE = "stopped by the sweep (Ctrl-C or SIGTERM); rerun the sweep to resume"
#: Exit codes of a trainer stopped by SIGTERM/SIGINT: 143/130 after it saved a checkpoint (the
#: preemption convention of ``experiments.train``), negative when the signal killed it outright.
PREEMPTED_EXIT_CODES = (
    128 + signal.SIGTERM,
    128 + signal.SIGINT,
    -signal.SIGTERM,
    -signal.SIGINT,
)


@dataclasses.dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs to run one trial (picklable: sent to Ray workers as is).

    Attributes:
      trial_id: the trial's id.
      workdir: absolute path of the trial folder.
      command: the argument list (``python -m experiments.train ...``); ``python`` is
        replaced by the worker's interpreter.
      threads: CPU threads the trial may use (TF intra-/inter-op pools, OpenMP).
      project_root: the working directory of the trial process.
    """

    trial_id: str
    workdir: str
    command: tuple[str, ...]
    threads: int
    project_root: str = str(PROJECT_ROOT)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for :func:`dirgrad_opt.sweeps.launch.launch`."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended (the content of ``status.json``)."""

    trial_id: str
    status: str
    exit_code: int | None
    error: str | None
    duration_s: float
    host: str


# -- paths and files ---------------------------------------------------------------------------
def trial_dir(sweep_dir: str | os.PathLike, trial_id: str) -> Path:
    """``<sweep_dir>/trials/<trial_id>``."""
    return Path(sweep_dir) / TRIALS_DIR / trial_id


def gin_path_for_trial(path: str, cwd: str | os.PathLike | None = None) -> str:
    """A gin file path that resolves the same way on any machine running the project.

    Paths inside the project root become relative to it (the trainer resolves those against
    the root on every worker); others become absolute (they must be on a shared filesystem).

    Raises:
      FileNotFoundError: the file exists neither relative to ``cwd`` nor to the project root.
    """
    base = Path(cwd or os.getcwd())
    for candidate in (base / path, PROJECT_ROOT / path):
        if candidate.is_file():
            resolved = candidate.resolve()
            try:
                return str(resolved.relative_to(PROJECT_ROOT))
            except ValueError:
                return str(resolved)
    raise FileNotFoundError(
        f"gin file {path!r} not found (looked in {str(base)!r} and the project root "
        f"{str(PROJECT_ROOT)!r})"
    )


def trial_command(
    workdir: str | os.PathLike,
    gin_files: Sequence[str],
    gin_lines: Sequence[str],
    imports: Sequence[str] = (),
    import_paths: Sequence[str] = (),
) -> tuple[str, ...]:
    """``python -m experiments.train [--import_path=... --import=...] --gin_file=...
    --gin_param=... --workdir=...``."""
    return (
        "python",
        "-m",
        "experiments.train",
        *(f"--import_path={p}" for p in import_paths),
        *(f"--import={m}" for m in imports),
        *(f"--gin_file={f}" for f in gin_files),
        *(f"--gin_param={line}" for line in gin_lines),
        f"--workdir={workdir}",
    )


def prepare_trial(
    sweep_dir: str | os.PathLike,
    trial: Trial,
    gin_files: Sequence[str],
    gin_params: Sequence[str],
    threads: int,
    imports: Sequence[str] = (),
    import_paths: Sequence[str] = (),
) -> TrialJob:
    """Writes ``trial.json`` and ``bindings.gin`` for a trial and returns its job.

    Args:
      sweep_dir: the sweep's workdir.
      trial: the trial.
      gin_files: gin files as :func:`gin_path_for_trial` resolved them.
      gin_params: sweep-wide bindings, applied before the trial's own.
      threads: CPU threads per trial.
      imports: the user's modules (``--import``), imported by the trial before its gin files.
      import_paths: absolute folders the trial looks in for them (``--import_path``).
    """
    workdir = trial_dir(sweep_dir, trial.trial_id).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [*gin_params, *trial.gin_lines()]
    command = trial_command(workdir, gin_files, lines, imports, import_paths)
    info = {
        "trial_id": trial.trial_id,
        "config_id": trial.config_id,
        "seed": trial.seed,
        "bindings": trial.bindings,
        "gin_files": list(gin_files),
        "gin_params": list(gin_params),
        "imports": list(imports),
        "import_paths": list(import_paths),
        "command": list(command),
    }
    schema.write_text_atomic(workdir / TRIAL_FILE, json.dumps(info, indent=2) + "\n")
    header = "# Bindings of this trial, applied after the gin files in trial.json.\n"
    schema.write_text_atomic(workdir / BINDINGS_FILE, header + "\n".join(lines) + "\n")
    return TrialJob(trial.trial_id, str(workdir), command, threads)


read_json = launch.read_json


def read_status(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """A trial folder's ``status.json`` (``None`` if it never started)."""
    return read_json(Path(workdir) / STATUS_FILE)


def write_status(workdir: str | os.PathLike, status: Mapping[str, Any]) -> None:
    schema.write_text_atomic(Path(workdir) / STATUS_FILE, json.dumps(dict(status), indent=2) + "\n")


def needs_run(workdir: str | os.PathLike, retry_failed: bool = False) -> bool:
    """Whether a trial must (re)run: never started, interrupted, or failed and retried.

    ``ok`` and ``diverged`` trials are done (their ``result.json`` says so); ``failed`` ones
    run again only with ``retry_failed``.
    """
    status = read_status(workdir)
    if status is None:
        return True
    state = status.get("status")
    if state in (OK, DIVERGED):
        return not (Path(workdir) / schema.RESULT_FILE).exists()
    if state == FAILED:
        return retry_failed
    return True  # running (the sweep was killed), interrupted, or unknown


# -- running -----------------------------------------------------------------------------------
def error_summary(log_text: str, exit_code: int | None) -> str:
    """The error to record for a failed trial.

    The trainer's one-line ``train: error: ...`` if it printed one, else the last
    :data:`ERROR_TAIL_LINES` lines of its log (a traceback), capped at
    :data:`ERROR_MAX_CHARS`; for a process killed by a signal, says which.
    """
    lines = [line for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("train: error: "):
            return line[len("train: error: ") :]
    tail = "\n".join(lines[-ERROR_TAIL_LINES:])
    if exit_code is not None and exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = str(-exit_code)
        tail = f"killed by signal {name}" + (f"; log tail:\n{tail}" if tail else "")
    elif not tail:
        tail = f"exit code {exit_code}, empty log"
    return tail[-ERROR_MAX_CHARS:]


def classify(
    workdir: str | os.PathLike, exit_code: int | None, log_text: str
) -> tuple[str, str | None]:
    """``(status, error)`` of a finished trial process from its exit code and ``result.json``."""
    result_file = Path(workdir) / schema.RESULT_FILE
    result, problem = None, None
    if result_file.exists():
        try:
            result = schema.read_result(result_file)
        except (OSError, ValueError) as error:
            problem = f"invalid {schema.RESULT_FILE}: {error}"
    if exit_code == 0:
        if result is not None and result["status"] == "complete":
            return OK, None
        return FAILED, problem or f"exit code 0 but no complete {schema.RESULT_FILE}"
    if exit_code in PREEMPTED_EXIT_CODES or (
        result is not None and result["status"] == INTERRUPTED
    ):
        name = signal.Signals(abs(exit_code) % 128).name if exit_code else "a signal"
        return INTERRUPTED, f"stopped by {name} (preempted); rerun the sweep to resume"
    if exit_code == EXIT_DIVERGED or (result is not None and result["status"] == "diverged"):
        message = result["error"] if result is not None else error_summary(log_text, exit_code)
        return DIVERGED, message
    return FAILED, error_summary(log_text, exit_code)


def finish(job: TrialJob, raw: Mapping[str, Any]) -> TrialOutcome:
    """Classifies a finished trial process (see :func:`classify`) and writes ``status.json``.

    A process stopped by the sweep itself (Ctrl-C or SIGTERM to the sweep) is ``interrupted``,
    not failed.
    """
    exit_code = raw["exit_code"]
    status, error = classify(job.workdir, exit_code, raw.get("log_tail", ""))
    if raw.get("stopped") and status in (FAILED, INTERRUPTED):
        status, error = INTERRUPTED, INTERRUPTED_MESSAGE
    outcome = TrialOutcome(job.trial_id, status, exit_code, error, raw["duration_s"], raw["host"])
    write_status(
        job.workdir,
        {
            "trial_id": job.trial_id,
            "status": status,
            "exit_code": exit_code,
            "error": error,
            "attempt": raw.get("attempt"),
            "host": raw["host"],
            "started": raw.get("started"),
            "finished": time.time(),
            "duration_s": raw["duration_s"],
        },
    )
    return outcome


def execute(job: TrialJob, stop: StopFlag | None = None) -> TrialOutcome:
    """Runs one trial to its end (:func:`dirgrad_opt.sweeps.launch.launch`), then classifies
    it and writes ``status.json``; the trial's own failures are its outcome, never raised."""
    return finish(job, launch.launch(job.as_dict(), stop))
