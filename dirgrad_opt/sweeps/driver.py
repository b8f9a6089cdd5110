"""The sweep driver: expand a sweep file into trials, run what is not done, write the tables.

Sweep workdir::

    sweep.json         the sweep as last run: gin files, sweep-wide bindings, the sweep file's
                       content, the trial ids in order
    trials/<id>/       one folder per trial (see :mod:`dirgrad_opt.sweeps.runner`)
    summary.csv/.md    per trial and per configuration (see :mod:`dirgrad_opt.sweeps.summary`)
    analysis/          leaderboard, time to target, plots (see :mod:`dirgrad_opt.sweeps.report`)

Rerunning the same command skips ``ok`` and ``diverged`` trials, resumes interrupted ones from
their checkpoints (the trainer does that by itself) and, with ``retry_failed``, reruns failed
ones. The sweep file may grow between runs (more values, more seeds): existing trials keep their
ids. The gin files and sweep-wide bindings may not change (every trial would differ): that is a
:class:`~dirgrad_opt.sweeps.spec.SweepError` naming the difference.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dirgrad_opt.sweeps import backends, launch, records, runner, summary
from dirgrad_opt.sweeps.backends import Backend, LocalBackend, Progress
from dirgrad_opt.sweeps.runner import TrialOutcome
from dirgrad_opt.sweeps.spec import SweepError, SweepSpec, Trial, expand
from dirgrad_opt.training import schema

SWEEP_SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SweepReport:
    """What one call of :func:`run_sweep` did.

    Attributes:
      trials: every trial of the sweep.
      ran: outcomes of the trials run by this call.
      skipped: ids of trials already finished before this call.
      counts: final status counts over all trials (``ok``, ``diverged``, ``failed``, others).
    """

    trials: list[Trial]
    ran: list[TrialOutcome]
    skipped: list[str]
    counts: dict[str, int]


def _check_same_setup(path: Path, gin_files: list[str], gin_params: list[str]) -> None:
    old = runner.read_json(path)
    if old is None:
        return
    for key, new in (("gin_files", gin_files), ("gin_params", gin_params)):
        if old.get(key) != new:
            raise SweepError(
                f"{path.parent} is a sweep with {key} {old.get(key)}, this command has {new}; "
                "every trial would change: use a new --workdir (or delete this one)"
            )


def plan(
    workdir: str | os.PathLike,
    spec: SweepSpec,
    gin_files: Sequence[str],
    gin_params: Sequence[str] = (),
    sweep_file: str | None = None,
) -> tuple[list[Trial], list[str]]:
    """Expands the spec, checks and writes ``sweep.json``; returns ``(trials, gin_files)`` with
    the gin files resolved as the trials will see them.

    Raises:
      SweepError: a gin file is missing, or the workdir holds a sweep of other gin files.
    """
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise SweepError(f"workdir {str(workdir)!r} exists and is not a folder")
    try:
        files = [runner.gin_path_for_trial(f) for f in gin_files]
    except FileNotFoundError as error:
        raise SweepError(str(error)) from None
    params = [p.strip() for p in gin_params]
    meta_path = workdir / records.SWEEP_FILE
    _check_same_setup(meta_path, files, params)
    trials = expand(spec)
    workdir.mkdir(parents=True, exist_ok=True)
    meta = {
        "sweep_schema_version": SWEEP_SCHEMA_VERSION,
        "gin_files": files,
        "gin_params": params,
        "sweep_file": sweep_file,
        "spec": spec.to_json(),
        "trials": [t.trial_id for t in trials],
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    schema.write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    return trials, files


def run_sweep(
    workdir: str | os.PathLike,
    spec: SweepSpec,
    gin_files: Sequence[str],
    gin_params: Sequence[str] = (),
    backend: Backend | None = None,
    retry_failed: bool = False,
    sweep_file: str | None = None,
    emit: Any = None,
) -> SweepReport:
    """Runs every unfinished trial of a sweep on a backend (default: one local process at a
    time), then returns what happened. Trial failures never raise; they are in the report.

    Args:
      workdir: the sweep's folder (created).
      spec: the validated sweep file.
      gin_files: gin files every trial loads, in order.
      gin_params: bindings every trial gets after the files (before its own).
      backend: :class:`LocalBackend` or :class:`~dirgrad_opt.sweeps.backends.RayBackend`.
      retry_failed: rerun trials whose status is ``failed``.
      sweep_file: path of the sweep file, recorded in ``sweep.json``.
      emit: progress-line sink (default absl logging).

    Raises:
      SweepError: see :func:`plan`.
    """
    backend = backend or LocalBackend(1)
    trials, files = plan(workdir, spec, gin_files, gin_params, sweep_file)
    jobs, skipped, already, busy = [], [], [], []
    for trial in trials:
        folder = runner.trial_dir(workdir, trial.trial_id)
        if folder.exists() and not runner.needs_run(folder, retry_failed):
            skipped.append(trial.trial_id)
            already.append((runner.read_status(folder) or {}).get("status"))
            continue
        pid = launch.alive_elsewhere(str(folder.resolve()))
        if pid is not None:
            busy.append(f"{trial.trial_id} (pid {pid})")
            continue
        jobs.append(
            runner.prepare_trial(workdir, trial, files, list(gin_params), backend.threads_per_trial)
        )
    progress = Progress(len(trials), backends.count_statuses(already), emit)
    if skipped:
        progress.emit(f"{len(skipped)} of {len(trials)} trials already finished; skipping them")
    if busy:
        progress.emit(
            f"{len(busy)} trial(s) still running from an earlier sweep, not started twice: "
            f"{', '.join(busy)}; rerun when they are done"
        )
    ran = backends.run_jobs(jobs, backend, progress)
    final = [
        (runner.read_status(runner.trial_dir(workdir, t.trial_id)) or {}).get("status", "pending")
        for t in trials
    ]
    counts: dict[str, int] = {}
    for status in final:
        counts[status] = counts.get(status, 0) + 1
    progress.emit(progress.line())
    return SweepReport(trials, ran, skipped, counts)


def write_tables(
    workdir: str | os.PathLike,
    select: str = summary.DEFAULT_SELECT,
    title: str | None = None,
) -> tuple[Path, Path]:
    """Writes ``summary.csv`` and ``summary.md`` of a sweep workdir; returns their paths."""
    found = records.read_sweep(workdir)
    return summary.write_summary(workdir, found, select, title or f"Sweep {Path(workdir).name}")


class SweepInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT reached the sweep driver (a ``KeyboardInterrupt``, so every backend's
    Ctrl-C path — stop the running trials, mark them ``interrupted`` — handles it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell convention for death by a signal: ``128 + signum`` (130, 143)."""
        return 128 + self.signum


@contextlib.contextmanager
def interrupt_on_signals(
    received: list[int] | None = None,
    signums: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
) -> Iterator[list[int]]:
    """Within the block, SIGTERM and SIGINT raise :class:`SweepInterrupted` in the main thread.

    Python's default SIGTERM action kills the driver on the spot, orphaning its trial processes
    (they run in their own sessions) with ``status.json`` left ``running``. Raised as an
    exception instead, the signal unwinds through the backend, which forwards SIGTERM to its
    running trials (they checkpoint and exit) and records them ``interrupted``. Only the first
    signal raises: a second one, while the trials are being stopped, is reported and otherwise
    ignored so the clean-up finishes (SIGKILL still ends everything at once). Outside the main
    thread (where handlers cannot be set) this does nothing.

    Yields (and appends to ``received``, if given) the signals caught, so the caller knows
    which one it was even when a library turned the exception into a plain
    ``KeyboardInterrupt`` (Ray's ``ray.wait`` does).
    """
    fired: list[int] = received if received is not None else []
    if threading.current_thread() is not threading.main_thread():
        yield fired
        return

    def handler(signum: int, frame: object) -> None:
        if fired:
            print(
                f"sweep: {signal.Signals(signum).name} again; still stopping the running trials",
                file=sys.stderr,
            )
            return
        fired.append(signum)
        raise SweepInterrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield fired
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
