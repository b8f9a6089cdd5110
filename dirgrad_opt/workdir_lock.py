"""One live process per workdir: an OS file lock plus the holder's pid and host — stdlib only.

    with workdir_lock.hold("runs/x"):          # WorkdirLocked if another process holds it
        ...                                    # train / run the sweep

The lock is ``fcntl.flock`` on ``<workdir>/.lock``. The OS releases it when the holder dies
(even by SIGKILL), so a lock left by a dead process is simply taken over; the file's content —
``{"pid", "host", "started", "argv"}`` of the holder — only serves the refusal message (and
says, when taken over, whose stale lock it was). ``flock`` locks are per open file, so two
holders in one process exclude each other too. On a network filesystem the lock is as good as
its ``flock`` support (NFSv4 and Lustre forward it; some FUSE filesystems do not).

This module imports only the standard library (like :mod:`dirgrad_opt.sweeps.launch`), so it
can be shipped by value to a worker that never imports TensorFlow. Importing it as
``dirgrad_opt.workdir_lock`` still runs ``dirgrad_opt/__init__`` (TensorFlow).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

LOCK_FILE = ".lock"


class WorkdirLocked(RuntimeError):
    """The workdir is held by another live process; the message names its pid and host."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None):
        super().__init__(message)
        self.holder = holder or {}


def _read_holder(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another process (it has not written its pid yet)"
    started = holder.get("started")
    since = f", since {time.ctime(started)}" if isinstance(started, int | float) else ""
    return f"pid {holder['pid']} on host {holder.get('host', '?')}{since}"


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _still_running(holder: dict[str, Any]) -> bool:
    """Whether the recorded holder is a live process on this host running the same command.

    Only consulted when the flock was free: normally the holder died (the OS dropped its lock)
    and its pid is gone or reused by another program — both mean the lock is stale.
    """
    if holder.get("host") != socket.gethostname() or not _pid_alive(holder.get("pid")):
        return False
    try:
        with open(f"/proc/{holder['pid']}/cmdline", "rb") as f:
            argv = f.read().decode("utf-8", errors="replace").split("\0")[:-1]
    except OSError:
        return False
    args = list(holder.get("argv") or [])[1:]  # argv[0] differs (``-m`` gives a file path)
    return bool(args) and argv[-len(args) :] == args


class WorkdirLock:
    """A held lock on ``<workdir>/.lock``; :meth:`release` (or process exit) frees it.

    Attributes:
      path: the lock file.
      stale: the content of a lock file left by a process that is gone (on this host), which
        this lock took over; ``None`` otherwise.
    """

    def __init__(self, path: str, fd: int, stale: dict[str, Any] | None):
        self.path = path
        self._fd: int | None = fd
        self.stale = stale

    def release(self) -> None:
        """Empties the pid record and releases the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> WorkdirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(workdir: str | os.PathLike, what: str = "workdir") -> WorkdirLock:
    """Locks ``workdir`` (which must exist) for this process, or refuses at once.

    Args:
      workdir: an existing folder.
      what: how messages name it (``"workdir"``, ``"sweep workdir"``).

    Returns:
      The held :class:`WorkdirLock`.

    Raises:
      WorkdirLocked: another live process holds it (the message names its pid and host).
      OSError: the lock file cannot be created (unwritable folder...).
    """
    path = os.path.join(os.fspath(workdir), LOCK_FILE)
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = _read_holder(path)
            for _ in range(20):  # the holder may be between its flock and its pid record
                if holder.get("pid"):
                    break
                time.sleep(0.01)
                holder = _read_holder(path)
            raise WorkdirLocked(
                f"{what} {os.fspath(workdir)!r} is in use by {_describe(holder)}: one process "
                "at a time owns a workdir. Wait for it to end (or stop it), or use another "
                "--workdir.",
                holder,
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the file was replaced between our open and our flock: lock the new one
            os.close(fd)
            continue
        previous = _read_holder(path)
        stale = None
        if previous.get("pid") and previous.get("pid") != os.getpid():
            if _still_running(previous):  # a filesystem whose flock does not exclude
                os.close(fd)
                raise WorkdirLocked(
                    f"{what} {os.fspath(workdir)!r} is in use by {_describe(previous)} (its "
                    "lock file is not enforced by this filesystem). Wait for it to end, or use "
                    "another --workdir.",
                    previous,
                )
            stale = previous  # left by a process that died holding it: taken over
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "argv": sys.argv,
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        return WorkdirLock(path, fd, stale)
    raise OSError(errno.EAGAIN, "the lock file keeps being replaced", path)


@contextlib.contextmanager
def hold(workdir: str | os.PathLike, what: str = "workdir") -> Iterator[WorkdirLock]:
    """``with hold(workdir): ...`` — :func:`acquire`, then release on exit."""
    lock = acquire(workdir, what)
    try:
        yield lock
    finally:
        lock.release()
