"""Warm trial workers: long-lived processes that run trial after trial without re-importing TF.

A trial process pays the TensorFlow import (~9 s on a loaded 2-core machine) before it trains
for a few seconds. A warm worker is ``python -m dirgrad_opt.sweeps.workers``, started once per
parallel slot with the trial environment (thread limits, ``PYTHONPATH``); it reads one trial
command per line on stdin and runs it in-process exactly as ``python -m experiments.train``
would (same flags, same code, its stdout/stderr redirected to the trial's ``log.txt``), then
answers ``{"exit_code": n}`` on a private pipe.

Between trials the worker resets what a fresh process would not have: the gin config, the
absl flags, Keras's global state (``keras.backend.clear_session``: layer-name counters, the
graph) — the run itself seeds Python, NumPy, TF and the global generator from ``train.seed``
and restores op determinism — so a trial's ``result.json`` finals are bit-identical warm or
fresh (``tests/test_benchmark.py`` checks it). A trial that crashes, fails (non-zero exit other
than "diverged" or "configuration error"), hangs past ``timeout_s`` or is stopped kills its
worker's process group; the next trial starts a new worker.

The driver side (:class:`WarmPool`) is standard library only, like :mod:`launch`: a Ray actor
can hold one without importing TF.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

from dirgrad_opt.sweeps import launch

#: Exit codes after which a worker is kept: 0 (done), 2 (configuration error: the trainer
#: refused the trial before training, with one line — e.g. an optimizer that does not apply to
#: the problem's model; replacing the worker would cost a TF import per refusal) and 3
#: (diverged). Any other exit (a crash, an I/O error), a hang or a stop replaces the worker.
KEEP_WORKER_CODES = (0, 2, 3)
_RESPONSE_FD_ENV = "DIRGRAD_OPT_WORKER_FD"
_EXIT_TIMEOUT = -int(signal.SIGKILL)


class WarmWorker:
    """One worker process (driver side): start it, send it a trial, wait, kill it.

    Args:
      threads: CPU threads of its trials (TF pools are sized once, at import).
      project_root: its working directory and ``PYTHONPATH`` entry.
    """

    def __init__(self, threads: int, project_root: str):
        self.threads = threads
        self.project_root = project_root
        read_fd, write_fd = os.pipe()
        env = launch.thread_env(threads, project_root)
        env[_RESPONSE_FD_ENV] = str(write_fd)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dirgrad_opt.sweeps.workers"],
            cwd=project_root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
        os.close(write_fd)
        self._responses = os.fdopen(read_fd, "rb", buffering=0)
        self._buffer = b""
        self.trials = 0
        self.ready = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL to the worker's process group; waits for it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            self._responses.close()
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin:
                self.proc.stdin.close()

    def run(
        self,
        command: list[str],
        log_path: str,
        timeout_s: float | None = None,
        stop: launch.StopFlag | None = None,
    ) -> tuple[int | None, str | None]:
        """Runs one trial command; returns ``(exit_code, problem)``.

        ``problem`` is ``None`` for a trial that ran to an exit code; otherwise it says why the
        worker was killed (``timed out``, ``stopped``, ``worker died``) and the code is that of
        a killed process (negative) or ``None``.
        """
        if not self.ready:  # the import is not charged to the trial's timeout
            answer, problem = self._read(None, stop)
            if problem is not None:
                return answer, problem
            self.ready = True
        request = json.dumps({"command": command, "log": log_path}) + "\n"
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(request.encode("utf-8"))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            return None, "the warm worker died before the trial started"
        answer, problem = self._read(timeout_s, stop)
        if problem is None:
            self.trials += 1
            return int(answer["exit_code"]), None
        return answer, problem

    def _read(
        self, timeout_s: float | None, stop: launch.StopFlag | None
    ) -> tuple[Any, str | None]:
        """The worker's next answer line (parsed), or ``(exit code, problem)`` when it is
        stopped, times out or dies."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if stop is not None and stop.is_set():
                self.kill()
                return -int(signal.SIGTERM), "stopped"
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                return _EXIT_TIMEOUT, f"timed out after {timeout_s:g} s; its worker was killed"
            ready, _, _ = select.select([self._responses], [], [], 0.2)
            if not ready:
                if not self.alive():
                    code = self.proc.returncode
                    self.kill()
                    return code, "the warm worker died during the trial"
                continue
            chunk = self._responses.read(65536)
            if not chunk:
                code = self.proc.wait()
                self.kill()
                return code, "the warm worker died during the trial"
            self._buffer += chunk
            if b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                return json.loads(line), None


class WarmPool:
    """Idle warm workers, keyed by ``(threads, project_root)``; at most one per caller at a time.

    Args:
      timeout_s: per-trial limit (seconds; ``None`` = none): a trial past it is failed and its
        worker killed.
    """

    def __init__(self, timeout_s: float | None = None):
        self.timeout_s = timeout_s
        self._idle: dict[tuple[int, str], queue.SimpleQueue[WarmWorker]] = {}
        self._lock = threading.Lock()
        self._all: set[WarmWorker] = set()
        self.started = 0

    def _take(self, threads: int, root: str) -> WarmWorker:
        with self._lock:
            slot = self._idle.setdefault((threads, root), queue.SimpleQueue())
        while True:
            try:
                worker = slot.get_nowait()
            except queue.Empty:
                worker = WarmWorker(threads, root)
                with self._lock:
                    self._all.add(worker)
                    self.started += 1
                return worker
            if worker.alive():
                return worker
            self._drop(worker)

    def _drop(self, worker: WarmWorker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)

    def execute(self, job: Mapping[str, Any], stop: launch.StopFlag | None = None) -> dict:
        """Runs a trial job (:meth:`TrialJob.as_dict`) on a warm worker; returns the same dict
        as :func:`dirgrad_opt.sweeps.launch.launch` (plus ``"worker_pid"``)."""
        workdir = job["workdir"]
        host = socket.gethostname()
        previous = launch.read_json(os.path.join(workdir, launch.STATUS_FILE)) or {}
        attempt = int(previous.get("attempt", 0)) + 1
        started = time.time()
        t0 = time.perf_counter()
        worker = self._take(int(job["threads"]), job["project_root"])
        running = {
            "trial_id": job["trial_id"],
            "status": launch.RUNNING,
            "attempt": attempt,
            "host": host,
            "started": started,
            "pid": worker.pid,
            "warm_worker": True,
        }
        launch.write_json_atomic(os.path.join(workdir, launch.STATUS_FILE), running)
        log_path = os.path.join(workdir, launch.LOG_FILE)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(
                f"\n=== attempt {attempt} on {host} at {time.ctime(started)} "
                f"(warm worker pid {worker.pid}, trial {worker.trials + 1} in it) ===\n"
            )
        command = list(job["command"])
        exit_code, problem = worker.run(command, log_path, self.timeout_s, stop)
        if problem is not None:
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"\n{problem}\n")
        if problem is not None or exit_code not in KEEP_WORKER_CODES:
            self._drop(worker)
        else:
            with self._lock:
                self._idle[(worker.threads, worker.project_root)].put(worker)
        return {
            **launch.trial_outcome(job, exit_code, t0, host, started, attempt, stop, log_path),
            "worker_pid": worker.pid,
        }

    def close(self) -> None:
        """Kills every worker."""
        with self._lock:
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
        for worker in workers:
            worker.kill()


# -- Ray: reused actors ------------------------------------------------------------------------
class TrialActor:
    """A Ray actor that keeps one :class:`WarmPool` (Ray Tune's ``reuse_actors``): the trials
    sent to it run one after another in its warm worker."""

    def __init__(self, timeout_s: float | None = None):
        self.pool = WarmPool(timeout_s)

    def execute(self, job: Mapping[str, Any]) -> dict:
        return self.pool.execute(job)

    def close(self) -> None:
        self.pool.close()


def run_on_actors(
    ray: Any,
    jobs: list[Any],
    num_actors: int,
    cpus_per_trial: int,
    timeout_s: float | None,
    on_queued: Any,
    on_done: Any,
) -> None:
    """Runs ``jobs`` (:class:`~dirgrad_opt.sweeps.runner.TrialJob`) on ``num_actors`` reused
    actors, each job on the next free actor; ``on_done(job, raw_or_exception)`` per job.

    On an exception (Ctrl-C) the actors are killed; their warm workers end with their stdin.
    """
    remote_cls = ray.remote(num_cpus=cpus_per_trial, max_restarts=0)(TrialActor)
    actors = [remote_cls.remote(timeout_s) for _ in range(max(1, min(num_actors, len(jobs))))]
    free, queue_ = list(actors), list(jobs)
    pending: dict[Any, tuple[Any, Any]] = {}
    clean = False
    try:
        while queue_ or pending:
            while free and queue_:
                job, actor = queue_.pop(0), free.pop()
                pending[actor.execute.remote(job.as_dict())] = (job, actor)
                on_queued(job)
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)  # signals between waits
            for ref in done:
                job, actor = pending.pop(ref)
                try:
                    on_done(job, ray.get(ref))
                except Exception as error:  # noqa: BLE001 - a lost actor is one failed trial
                    on_done(job, error)
                    actor = remote_cls.remote(timeout_s)  # replace the lost actor
                    actors.append(actor)
                free.append(actor)
        clean = True
    except BaseException:  # Ctrl-C / SIGTERM: stop the running trials' workers, mark them
        for job, _ in pending.values():
            interrupt_running(job.workdir, job.trial_id)
        raise
    finally:
        for actor in actors:
            if clean:  # idle actors: let them stop their workers
                with contextlib.suppress(Exception):
                    ray.get(actor.close.remote(), timeout=10)
            with contextlib.suppress(Exception):
                ray.kill(actor)


def interrupt_running(workdir: str, trial_id: str) -> None:
    """Kills the warm worker running a trial on this host (its pid is in ``status.json``) and
    records the trial ``interrupted`` (it resumes from its checkpoint on the next run)."""
    path = os.path.join(workdir, launch.STATUS_FILE)
    status = launch.read_json(path) or {}
    if status.get("status") != launch.RUNNING:
        return
    pid = status.get("pid")
    if (
        status.get("warm_worker")
        and isinstance(pid, int)
        and status.get("host") == socket.gethostname()
    ):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    launch.write_json_atomic(
        path,
        {**status, "status": "interrupted", "exit_code": None, "finished": time.time(),
         "error": "stopped by the sweep; rerun the sweep to resume"},
    )  # fmt: skip


# -- the worker process -------------------------------------------------------------------------
@contextlib.contextmanager
def _redirected(log_path: str) -> Any:
    """Points fds 1 and 2 (and sys.stdout/err) at the trial's log for a block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def reset_state() -> None:
    """What a fresh process would not carry over: gin config, Keras global state (the dtype
    policy included), flags."""
    import gin
    import keras
    from absl import flags

    gin.clear_config()
    keras.backend.clear_session()
    keras.config.set_dtype_policy("float32")  # a mixed-precision trial's policy must not leak
    flags.FLAGS.unparse_flags()


def run_trial(command: list[str]) -> int:
    """Runs ``python -m experiments.train FLAGS...`` in this process; returns its exit code."""
    if command[1:3] != ["-m", "experiments.train"]:
        print(f"warm worker: can only run experiments.train, got {command[:3]}", file=sys.stderr)
        return 2
    from absl import flags

    import experiments.train as train_main

    reset_state()
    try:
        flags.FLAGS(["experiments.train", *command[3:]])
        train_main.main(["experiments.train"])
    except SystemExit as exit_:
        code = exit_.code
        return 0 if code is None else code if isinstance(code, int) else 1
    except flags.Error as error:
        print(f"FATAL Flags parsing error: {error}", file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - a crash is this trial's outcome
        traceback.print_exc()
        return 1
    return 0


def serve() -> None:
    """The worker loop: one JSON request per stdin line, one JSON answer per trial."""
    response = os.fdopen(int(os.environ[_RESPONSE_FD_ENV]), "wb", buffering=0)
    from absl import logging

    import experiments.train  # noqa: F401  (the import this worker exists to pay once)

    logging.use_absl_handler()  # the log format of `python -m experiments.train`
    logging.set_verbosity(logging.INFO)
    response.write(b'{"ready": true}\n')
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        with _redirected(request["log"]):
            code = run_trial(list(request["command"]))
        response.write((json.dumps({"exit_code": int(code)}) + "\n").encode("utf-8"))


if __name__ == "__main__":
    serve()
