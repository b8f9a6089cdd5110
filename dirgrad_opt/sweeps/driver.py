"""The sweep driver: expand a sweep file into trials, run what is not done, write the tables.

Sweep workdir::

    sweep.json         the sweep as last run: gin files, sweep-wide bindings, the sweep file's
                       content, the trial ids in order
    trials/<id>/       one folder per trial (see :mod:`dirgrad_opt.sweeps.runner`)
    summary.csv/.md    per trial and per configuration (see :mod:`dirgrad_opt.sweeps.summary`)
    analysis/          leaderboard, time to target, plots (see :mod:`dirgrad_opt.sweeps.report`)

Before any trial starts, a pre-flight check (:mod:`dirgrad_opt.sweeps.preflight`) parses and
binds the gin of one trial of every configuration that still has trials to run, in one
process with the user's modules imported; an invalid configuration stops the sweep at once
with a :class:`~dirgrad_opt.sweeps.spec.SweepError` naming it and the binding.

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
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from absl import logging

from dirgrad_opt import user_modules
from dirgrad_opt.sweeps import backends, launch, preflight, records, runner, summary
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


def _check_same_setup(
    path: Path, gin_files: list[str], gin_params: list[str], imports: list[str]
) -> None:
    old = runner.read_json(path)
    if old is None:
        return
    old = {"imports": [], **old}  # sweeps written before --import existed had none
    for key, new in (("gin_files", gin_files), ("gin_params", gin_params), ("imports", imports)):
        if old.get(key) != new:
            raise SweepError(
                f"{path.parent} is a sweep with {key} {old.get(key)}, this command has {new}; "
                "every trial would change: use a new --workdir (or delete this one)"
            )


def resolve_imports(
    imports: Sequence[str], import_paths: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """The user's modules and the absolute folders a trial needs to import them: the given
    ``import_paths`` and the folder each module is found in here (the current directory or
    ``sys.path``), since trials run in the project root. Nothing is imported.

    Raises:
      SweepError: a folder does not exist, or a module is not found.
    """
    paths = []
    for folder in import_paths:
        if not Path(folder).is_dir():
            raise SweepError(f"--import_path={folder!r} is not a folder")
        paths.append(str(Path(folder).resolve()))
    names = [name.strip() for name in imports]
    for name in names:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise SweepError(f"--import={name!r} is not a module name (e.g. 'my_opt')")
        try:
            root = user_modules.find_root(name, paths)
        except user_modules.ImportFailed as error:
            raise SweepError(str(error)) from None
        if root and root not in paths and Path(root) != runner.PROJECT_ROOT:
            paths.append(root)
    return names, paths


def plan(
    workdir: str | os.PathLike,
    spec: SweepSpec,
    gin_files: Sequence[str],
    gin_params: Sequence[str] = (),
    sweep_file: str | None = None,
    imports: Sequence[str] = (),
    import_paths: Sequence[str] = (),
    write: bool = True,
) -> tuple[list[Trial], list[str]]:
    """Expands the spec, checks and (with ``write``) writes ``sweep.json``; returns ``(trials,
    gin_files)`` with the gin files resolved as the trials will see them.

    Raises:
      SweepError: a gin file is missing, or the workdir holds a sweep of other gin files,
        bindings or imports.
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
    _check_same_setup(meta_path, files, params, list(imports))
    trials = expand(spec)
    if not write:
        return trials, files
    workdir.mkdir(parents=True, exist_ok=True)
    meta = {
        "sweep_schema_version": SWEEP_SCHEMA_VERSION,
        "gin_files": files,
        "gin_params": params,
        "imports": list(imports),
        "import_paths": list(import_paths),
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
    imports: Sequence[str] = (),
    import_paths: Sequence[str] = (),
    check: bool = True,
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
      imports: the user's modules every trial imports (``--import``).
      import_paths: folders to find them in; the folders where they are found from the
        current directory are added (see :func:`resolve_imports`).
      check: run the pre-flight check (:func:`check_configurations`) first.

    Raises:
      SweepError: see :func:`plan`; an invalid configuration (pre-flight), naming it.
    """
    backend = backend or LocalBackend(1)
    imports, import_paths = resolve_imports(imports, import_paths)
    trials, files = plan(
        workdir, spec, gin_files, gin_params, sweep_file, imports, import_paths, write=False
    )
    todo, skipped, already = [], [], []
    for trial in trials:
        folder = runner.trial_dir(workdir, trial.trial_id)
        if folder.exists() and not runner.needs_run(folder, retry_failed):
            skipped.append(trial.trial_id)
            already.append((runner.read_status(folder) or {}).get("status"))
        else:
            todo.append(trial)
    if check:
        check_configurations(todo, files, gin_params, imports, import_paths, emit)
    plan(workdir, spec, gin_files, gin_params, sweep_file, imports, import_paths)
    jobs, busy = [], []
    for trial in todo:
        folder = runner.trial_dir(workdir, trial.trial_id)
        pid = launch.alive_elsewhere(str(folder.resolve()))
        if pid is not None:
            busy.append(f"{trial.trial_id} (pid {pid})")
            continue
        jobs.append(
            runner.prepare_trial(
                workdir,
                trial,
                files,
                list(gin_params),
                backend.threads_per_trial,
                imports,
                import_paths,
            )
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


def check_configurations(
    trials: Sequence[Trial],
    gin_files: Sequence[str],
    gin_params: Sequence[str] = (),
    imports: Sequence[str] = (),
    import_paths: Sequence[str] = (),
    emit: Any = None,
) -> int:
    """Pre-flight: parses and binds one trial of each configuration among ``trials`` in one
    subprocess (:func:`dirgrad_opt.sweeps.preflight.check`); returns how many were checked.

    Raises:
      SweepError: some configurations are invalid (the message names each, up to 5, with its
        bindings and the error), or the check itself could not run.
    """
    first: dict[str, Trial] = {}
    for trial in trials:
        first.setdefault(trial.config_id, trial)
    if not first:
        return 0
    say = emit or logging.info
    say(f"pre-flight: checking the gin of {len(first)} configuration(s) in one process")
    configs = [(cid, t.gin_lines()) for cid, t in first.items()]
    try:
        problems = preflight.check(configs, gin_files, gin_params, imports, import_paths)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        raise SweepError(f"pre-flight check failed to run: {error}") from None
    if problems:
        shown = " | ".join(str(p) for p in problems[:5])
        more = f" | ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise SweepError(
            f"pre-flight: {len(problems)} of {len(first)} configuration(s) invalid, no trial "
            f"started: {shown}{more}"
        )
    return len(first)


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
