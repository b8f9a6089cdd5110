"""Where trials run: local worker processes or Ray tasks; the sweep driver and its progress line.

Both backends start each trial with :func:`dirgrad_opt.sweeps.launch.launch` — one ``python -m
experiments.train`` process per trial — and classify it on the driver with
:func:`dirgrad_opt.sweeps.runner.finish`, so their outputs are identical; only the scheduling
differs:

* :class:`LocalBackend` — ``parallel`` trials at a time on this machine, each limited to
  ``cores // parallel`` threads (TF's default of one pool thread per core would oversubscribe).
* :class:`RayBackend` — one Ray task per trial, requesting ``cpus_per_trial`` CPUs (the trial
  is limited to as many threads); Ray places tasks on the cluster's nodes. With an
  ``address`` it joins an existing cluster, else it starts a local Ray instance with
  ``parallel × cpus_per_trial`` CPUs. The sweep workdir must be on a filesystem every node
  sees, and the project installed on every node.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from absl import logging

from dirgrad_opt.sweeps import launch, runner, workers
from dirgrad_opt.sweeps.runner import TrialJob, TrialOutcome

OnEvent = Callable[[str, str, TrialOutcome | None], None]


def available_cores() -> int:
    """CPU cores this process may use (affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


class BackendError(RuntimeError):
    """The backend cannot run trials at all (e.g. the Ray cluster is unreachable)."""


class Backend(Protocol):
    """Runs trial jobs; calls ``on_event(kind, trial_id, outcome)`` as they go, with ``kind``
    ``"start"`` (local: the process starts), ``"queued"`` (Ray: the task is submitted) or
    ``"finish"`` (with the outcome)."""

    name: str
    threads_per_trial: int

    def run(self, jobs: Sequence[TrialJob], on_event: OnEvent) -> list[TrialOutcome]: ...


class LocalBackend:
    """``parallel`` trial processes at a time on this machine.

    Args:
      parallel: concurrent trials (≥ 1).
      threads_per_trial: CPU threads per trial; ``None`` = ``max(1, cores // parallel)``.
      warm: run trials in warm workers (:mod:`dirgrad_opt.sweeps.workers`), one per slot,
        instead of a fresh process each.
      trial_timeout_s: warm workers only: fail a trial running longer (seconds) and replace
        its worker.
    """

    name = "local"

    def __init__(
        self,
        parallel: int = 1,
        threads_per_trial: int | None = None,
        warm: bool = False,
        trial_timeout_s: float | None = None,
    ):
        if not isinstance(parallel, int) or parallel < 1:
            raise ValueError(f"parallel must be an integer >= 1, got {parallel!r}")
        if threads_per_trial is not None and threads_per_trial < 1:
            raise ValueError(f"threads_per_trial must be >= 1, got {threads_per_trial!r}")
        self.parallel = parallel
        self.threads_per_trial = threads_per_trial or max(1, available_cores() // parallel)
        self.stop = launch.StopFlag()
        self.warm = warm
        self.trial_timeout_s = trial_timeout_s

    def run(self, jobs: Sequence[TrialJob], on_event: OnEvent) -> list[TrialOutcome]:
        outcomes = []
        pool = concurrent.futures.ThreadPoolExecutor(self.parallel, thread_name_prefix="trial")
        warm = workers.WarmPool(self.trial_timeout_s) if self.warm else None

        def task(job: TrialJob) -> TrialOutcome:
            if self.stop.is_set():
                return TrialOutcome(job.trial_id, runner.INTERRUPTED, None, None, 0.0, "")
            on_event("start", job.trial_id, None)
            if warm is not None:
                return runner.finish(job, warm.execute(job.as_dict(), self.stop))
            return runner.execute(job, self.stop)

        futures = {pool.submit(task, job): job for job in jobs}
        try:
            for future in concurrent.futures.as_completed(futures):
                outcome = future.result()
                outcomes.append(outcome)
                if outcome.status != runner.INTERRUPTED or outcome.host:
                    on_event("finish", outcome.trial_id, outcome)
        except BaseException:  # Ctrl-C: stop the running trials, leave them resumable
            self.stop.stop()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            if warm is not None:
                warm.close()
        pool.shutdown(wait=True)
        return outcomes


class RayBackend:
    """One Ray task per trial with ``num_cpus=cpus_per_trial``.

    Args:
      address: an existing cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
        ``None`` starts a local instance with ``parallel × cpus_per_trial`` CPUs and stops it
        at the end.
      parallel: trials at a time on a local instance (ignored with ``address``).
      cpus_per_trial: Ray CPUs per task, and the thread limit of its trial.
      connect_timeout_s: how long to try reaching ``address`` before giving up with a
        :class:`BackendError` (``ray.init`` alone may retry for minutes).
      stop_timeout_s: on Ctrl-C/SIGTERM, how long to wait for the cancelled trials to
        checkpoint and exit before leaving the rest ``running`` (with their pid).
      warm: reuse ``parallel`` actors, each with a warm trial worker
        (:class:`dirgrad_opt.sweeps.workers.TrialActor`), instead of a task per trial.
      trial_timeout_s: warm actors only: fail a trial running longer (seconds).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        parallel: int = 1,
        cpus_per_trial: int = 1,
        connect_timeout_s: float = 10.0,
        stop_timeout_s: float = 30.0,
        warm: bool = False,
        trial_timeout_s: float | None = None,
    ):
        if parallel < 1 or cpus_per_trial < 1:
            raise ValueError(
                f"parallel and cpus_per_trial must be >= 1, got {parallel}, {cpus_per_trial}"
            )
        if not connect_timeout_s > 0 or not stop_timeout_s > 0:
            raise ValueError(
                f"connect_timeout_s and stop_timeout_s must be > 0, got {connect_timeout_s}, "
                f"{stop_timeout_s}"
            )
        self.connect_timeout_s = float(connect_timeout_s)
        self.stop_timeout_s = float(stop_timeout_s)
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ImportError(
                "--backend=ray needs Ray: pip install 'dirgrad_opt[ray]' (or pip install ray)"
            ) from None
        self.address = address
        self.parallel = parallel
        self.threads_per_trial = cpus_per_trial
        self.warm = warm
        self.trial_timeout_s = trial_timeout_s

    def run(self, jobs: Sequence[TrialJob], on_event: OnEvent) -> list[TrialOutcome]:
        import ray
        from ray import cloudpickle

        started_here = False
        if not ray.is_initialized():
            if self.address:
                _connect_ray(self.address, self.connect_timeout_s)
            else:
                cpus = self.parallel * self.threads_per_trial
                try:
                    with _keep_signal_handlers():
                        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
                except (ConnectionError, RuntimeError, ValueError) as error:
                    # ray.init() joins a cluster recorded by `ray start` on this machine (even a
                    # dead one) instead of starting its own.
                    raise BackendError(
                        f"cannot start a local Ray instance: {str(error).splitlines()[0]} (a "
                        "cluster from `ray start` on this machine? use it with "
                        "--ray_address=auto, or `ray stop` it)"
                    ) from error
                started_here = True
        # launch() is stdlib-only and shipped by value: workers never import TF or dirgrad_opt.
        cloudpickle.register_pickle_by_value(launch)
        if self.warm:
            return self._run_warm(ray, jobs, on_event, started_here)
        remote = ray.remote(num_cpus=self.threads_per_trial, max_retries=0)(launch.launch)
        pending = {}
        for job in jobs:
            pending[remote.remote(job.as_dict())] = job
            on_event("queued", job.trial_id, None)
        outcomes = []
        try:
            while pending:
                # A short timeout: a signal to the driver is only handled between waits.
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        outcome = runner.finish(job, ray.get(ref))
                    except Exception as error:  # noqa: BLE001 - a lost worker is one failed trial
                        outcome = _lost(job, error)
                    outcomes.append(outcome)
                    on_event("finish", outcome.trial_id, outcome)
        except BaseException:  # Ctrl-C or SIGTERM: cancel the tasks, mark them interrupted
            _cancel_ray_tasks(ray, pending, self.stop_timeout_s)
            raise
        finally:
            if started_here:
                ray.shutdown()
        return outcomes

    def _run_warm(
        self, ray, jobs: Sequence[TrialJob], on_event: OnEvent, started_here: bool
    ) -> list[TrialOutcome]:
        """RayBackend.run with reused actors (:func:`dirgrad_opt.sweeps.workers.run_on_actors`)."""
        outcomes = []

        def done(job: TrialJob, raw) -> None:
            outcome = _lost(job, raw) if isinstance(raw, BaseException) else runner.finish(job, raw)
            outcomes.append(outcome)
            on_event("finish", outcome.trial_id, outcome)

        try:
            workers.run_on_actors(
                ray, list(jobs), self.parallel, self.threads_per_trial, self.trial_timeout_s,
                lambda job: on_event("queued", job.trial_id, None), done,
            )  # fmt: skip
        finally:
            if started_here:
                ray.shutdown()
        return outcomes


@contextlib.contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """Restores the SIGTERM/SIGINT handlers that ``ray.init`` replaces in the main thread (its
    SIGTERM handler exits at once, skipping the sweep's forwarding to its trials)."""
    main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)


def _connect_ray(address: str, timeout_s: float) -> None:
    """``ray.init(address=...)`` bounded by ``timeout_s``.

    Ray retries an unreachable address for a minute or more (GCS connection retries), so the
    call runs in a daemon thread; if it has not connected within ``timeout_s`` the sweep stops
    with a :class:`BackendError` instead of hanging.
    """
    import ray

    box: dict[str, BaseException | bool] = {}

    def connect() -> None:
        try:
            ray.init(address=address, log_to_driver=False)
            box["ok"] = True
        except BaseException as error:  # noqa: BLE001 - reported on the main thread
            box["error"] = error

    hint = "is it running? `ray status` on its head node shows the address"
    thread = threading.Thread(target=connect, name="ray-connect", daemon=True)
    with _keep_signal_handlers():
        thread.start()
        thread.join(timeout_s)
    if "error" in box:
        error = box["error"]
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raise BackendError(f"cannot connect to the Ray cluster at {address!r}: {first} ({hint})")
    if not box.get("ok"):
        raise BackendError(
            f"cannot connect to the Ray cluster at {address!r}: no answer within "
            f"{timeout_s:g} s ({hint})"
        )


def _cancel_ray_tasks(ray: Any, pending: dict[Any, TrialJob], timeout_s: float) -> None:
    """Cancels the sweep's unfinished Ray tasks and records their trials ``interrupted``.

    Cancelling raises ``KeyboardInterrupt`` inside a running task; :func:`launch.launch` then
    sends SIGTERM to its trial (which checkpoints and exits) and waits for it. Trials whose
    task ended within ``timeout_s`` and whose ``status.json`` still says ``running`` become
    ``interrupted`` (queued tasks never started and stay pending); a task still running after
    the timeout keeps ``running`` with its pid, so a rerun does not start it twice.
    """
    if not pending:
        return
    for ref in pending:
        ray.cancel(ref)
    done, not_done = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
    for ref in done:
        job = pending[ref]
        status = runner.read_status(job.workdir) or {}
        if status.get("status") == runner.RUNNING:
            runner.write_status(
                job.workdir,
                {
                    "trial_id": job.trial_id,
                    "status": runner.INTERRUPTED,
                    "exit_code": None,
                    "error": runner.INTERRUPTED_MESSAGE,
                    "attempt": status.get("attempt"),
                    "host": status.get("host"),
                    "started": status.get("started"),
                    "finished": time.time(),
                },
            )
    if not_done:
        ids = ", ".join(pending[ref].trial_id for ref in not_done)
        logging.warning(
            "%d trial(s) did not stop within %g s and stay 'running': %s",
            len(not_done),
            timeout_s,
            ids,
        )


def _lost(job: TrialJob, error: BaseException) -> TrialOutcome:
    """A trial whose Ray task itself failed (worker died): recorded as failed."""
    message = f"Ray task failed: {type(error).__name__}: {error}"[: runner.ERROR_MAX_CHARS]
    runner.write_status(
        job.workdir,
        {"trial_id": job.trial_id, "status": runner.FAILED, "exit_code": None, "error": message},
    )
    return TrialOutcome(job.trial_id, runner.FAILED, None, message, 0.0, "")


# -- progress ----------------------------------------------------------------------------------
def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (``?`` when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts trials and prints ``done / running / failed, ETA`` lines.

    ETA = remaining trials × (elapsed time / trials finished in this session), i.e. the
    throughput so far, which accounts for parallelism.

    Args:
      total: trials in the sweep.
      already: trials finished before this session (skipped), by status.
      emit: where lines go (default: absl ``logging.info``).
    """

    def __init__(
        self, total: int, already: dict[str, int], emit: Callable[[str], None] | None = None
    ):
        self.total = total
        self.counts = {s: already.get(s, 0) for s in runner.FINISHED}
        self.skipped = sum(self.counts.values())
        self.running: set[str] = set()
        self.finished_now = 0
        self.interrupted = 0
        self.started = time.perf_counter()
        self.emit = emit or logging.info

    def event(self, kind: str, trial_id: str, outcome: TrialOutcome | None) -> None:
        if kind == "start":
            self.running.add(trial_id)
            return
        if kind == "queued":
            return
        self.running.discard(trial_id)
        assert outcome is not None
        if outcome.status in self.counts:
            self.counts[outcome.status] += 1
            self.finished_now += 1
        else:
            self.interrupted += 1
        detail = f"{trial_id} {outcome.status} in {outcome.duration_s:.1f} s"
        if outcome.error and outcome.status != runner.OK:
            detail += f": {outcome.error.splitlines()[-1][:160]}"
        self.emit(f"{detail}\n  {self.line()}")

    def done(self) -> int:
        return sum(self.counts.values())

    def eta_s(self) -> float:
        remaining = self.total - self.done() - self.interrupted
        if remaining <= 0:
            return 0.0
        if self.finished_now == 0:
            return float("nan")
        return remaining * (time.perf_counter() - self.started) / self.finished_now

    def line(self) -> str:
        c = self.counts
        pending = self.total - self.done() - len(self.running) - self.interrupted
        parts = [
            f"sweep: {self.done()}/{self.total} done (ok {c[runner.OK]}, diverged "
            f"{c[runner.DIVERGED]}, failed {c[runner.FAILED]})",
        ]
        if self.running:
            parts.append(f"{len(self.running)} running")
        parts.append(f"{max(0, pending)} pending")
        parts.append(f"elapsed {format_duration(time.perf_counter() - self.started)}")
        parts.append(f"ETA {format_duration(self.eta_s())}")
        return " | ".join(parts)


def run_jobs(
    jobs: Sequence[TrialJob],
    backend: Backend,
    progress: Progress,
) -> list[TrialOutcome]:
    """Runs jobs on a backend, reporting to ``progress``."""
    if not jobs:
        return []
    progress.emit(
        f"running {len(jobs)} trial(s) on the {backend.name} backend, "
        f"{backend.threads_per_trial} thread(s) each\n  {progress.line()}"
    )
    return backend.run(jobs, progress.event)


def count_statuses(statuses: Iterable[str | None]) -> dict[str, int]:
    """``{status: count}`` over finished statuses."""
    out: dict[str, int] = {}
    for s in statuses:
        if s in runner.FINISHED:
            out[s] = out.get(s, 0) + 1
    return out
