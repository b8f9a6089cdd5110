"""Start one trial process and wait for it — standard library only.

This is the part of a trial that runs on a worker (a local thread or a Ray task). It imports
nothing from TensorFlow or the rest of dirgrad_opt, so a Ray worker (which receives these
functions pickled by value) starts in milliseconds instead of importing TF just to launch a
subprocess. Classifying the outcome (reading ``result.json`` through the schema) happens on
the driver, in :mod:`dirgrad_opt.sweeps.runner`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

STATUS_FILE = "status.json"
LOG_FILE = "log.txt"
RUNNING = "running"
LOG_TAIL_BYTES = 64 * 1024


def thread_env(
    threads: int, project_root: str, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a trial process: thread limits, quiet TF, the project importable.

    TF sizes its thread pools from ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS``
    (default: one thread per core), so two trials on two cores would each start two-thread
    pools and contend; limiting each to ``cores / parallel`` avoids the oversubscription.
    ``OMP_NUM_THREADS`` does the same for OpenMP/oneDNN kernels.
    """
    env = dict(os.environ if base is None else base)
    n = str(max(1, int(threads)))
    env.update(
        {
            "TF_NUM_INTRAOP_THREADS": n,
            "TF_NUM_INTEROP_THREADS": n,
            "OMP_NUM_THREADS": n,
            "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if project_root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([project_root, *parts])
    return env


def write_json_atomic(path: str, data: Mapping[str, Any]) -> None:
    """Writes JSON via a temporary file and ``os.replace`` (never half-written)."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".status.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(data), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str) -> dict[str, Any] | None:
    """A JSON object from a file, or ``None`` if missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def log_tail(path: str, max_bytes: int = LOG_TAIL_BYTES) -> str:
    """The last ``max_bytes`` of a log file ('' if missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


class StopFlag:
    """Set by the sweep on Ctrl-C: running trial processes get SIGTERM (their process group)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._processes: set[subprocess.Popen] = set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._processes.add(proc)
        if self.is_set():
            terminate(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._processes.discard(proc)

    def stop(self) -> None:
        """Sets the flag and terminates every registered process group."""
        self._event.set()
        with self._lock:
            processes = list(self._processes)
        for proc in processes:
            terminate(proc)


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group of ``proc`` (it was started in its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def wait_interruptibly(proc: subprocess.Popen, poll_s: float = 0.2) -> int:
    """``proc.wait()`` in short slices, so an exception raised asynchronously in this thread
    (Ray's task cancellation) lands within ``poll_s`` instead of after the trial ends: a
    blocking ``waitpid`` runs no Python code to deliver it."""
    while True:
        try:
            return proc.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            continue


def alive_elsewhere(workdir: str) -> int | None:
    """The pid of a trial process still running in ``workdir`` on this host, started by an
    earlier sweep that was killed (``status.json`` says ``running``), else ``None``.

    The pid must be alive and, where ``/proc`` exists, be an ``experiments.train`` process for
    this workdir (so a reused pid is not mistaken for the trial).
    """
    status = read_json(os.path.join(workdir, STATUS_FILE)) or {}
    pid = status.get("pid")
    if status.get("status") != RUNNING or not isinstance(pid, int) or pid <= 0:
        return None
    if status.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode("utf-8", errors="replace")
    except OSError:
        return pid
    if status.get("warm_worker"):  # a warm worker (sweeps.workers) running this trial
        return pid if "dirgrad_opt.sweeps.workers" in cmdline else None
    return pid if "experiments.train" in cmdline and workdir in cmdline else None


def launch(job: Mapping[str, Any], stop: StopFlag | None = None) -> dict[str, Any]:
    """Runs one trial process to its end.

    Writes ``status.json`` = ``running`` first, then again with the process id (so a killed
    sweep leaves a visibly unfinished trial, and a rerun does not start it twice while the
    orphaned process still runs: :func:`alive_elsewhere`). Runs ``job["command"]`` (a leading
    ``"python"`` becomes this interpreter) in its own session with ``cwd =
    job["project_root"]`` and the thread limits of :func:`thread_env`, appending its stdout and
    stderr to ``log.txt``. If the caller is interrupted once the process exists (a cancelled
    Ray task), the trial process gets SIGTERM (it checkpoints and exits) and is waited for
    before the exception propagates.

    Args:
      job: ``{"trial_id", "workdir", "command", "threads", "project_root"}``.
      stop: the sweep's stop flag (local backend).

    Returns:
      ``{"trial_id", "exit_code" (None if it could not start; negative for a signal),
      "duration_s", "host", "started", "attempt", "stopped", "log_tail"}``.
    """
    workdir = job["workdir"]
    host = socket.gethostname()
    previous = read_json(os.path.join(workdir, STATUS_FILE)) or {}
    attempt = int(previous.get("attempt", 0)) + 1
    started = time.time()
    running = {
        "trial_id": job["trial_id"],
        "status": RUNNING,
        "attempt": attempt,
        "host": host,
        "started": started,
    }
    write_json_atomic(os.path.join(workdir, STATUS_FILE), running)
    command = list(job["command"])
    if command and command[0] == "python":
        command[0] = sys.executable
    log_path = os.path.join(workdir, LOG_FILE)
    t0 = time.perf_counter()
    exit_code = None
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n=== attempt {attempt} on {host} at {time.ctime(started)} ===\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                command,
                cwd=job["project_root"],
                env=thread_env(job["threads"], job["project_root"]),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            proc = None
            log.write(f"could not start the trial: {error}\n")
        if proc is not None:
            try:
                write_json_atomic(os.path.join(workdir, STATUS_FILE), {**running, "pid": proc.pid})
                if stop is not None:
                    stop.add(proc)
                exit_code = wait_interruptibly(proc)
            except BaseException:  # the task was cancelled (Ray raises KeyboardInterrupt here)
                terminate(proc)
                proc.wait()
                raise
            finally:
                if stop is not None:
                    stop.discard(proc)
    return trial_outcome(job, exit_code, t0, host, started, attempt, stop, log_path)


def trial_outcome(
    job: Mapping[str, Any],
    exit_code: int | None,
    t0: float,
    host: str,
    started: float,
    attempt: int,
    stop: Any,
    log_path: str,
) -> dict[str, Any]:
    """The raw outcome of a trial that ran to an end, as :func:`launch` (and a warm worker)
    returns it: ``duration_s`` since ``t0`` (``time.perf_counter``), ``stopped`` if the sweep's
    stop flag ``stop`` is set, and the tail of the trial's log."""
    return {
        "trial_id": job["trial_id"],
        "exit_code": exit_code,
        "duration_s": time.perf_counter() - t0,
        "host": host,
        "started": started,
        "attempt": attempt,
        "stopped": bool(stop is not None and stop.is_set()),
        "log_tail": log_tail(log_path),
    }
