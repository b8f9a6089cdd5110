"""A local multi-worker launcher: N ``experiments.train`` processes on 127.0.0.1 (free ports).

    python -m experiments.train --gin_file=configs/quickstart.gin --workdir=runs/mw --workers=2

starts ``python -m experiments.train`` (same flags, plus ``train.strategy = 'multi_worker'``) N
times with ``TF_CONFIG = {"cluster": {"worker": ["127.0.0.1:p0", ...]}, "task": {"type":
"worker", "index": i}}`` on free ports. Worker 0 is the chief: its log goes to this terminal
and it writes the workdir; the others log to ``<workdir>/logs/worker_<i>.log``. The launcher
waits for all of them and reports each exit. When one fails, the others fail too within
:data:`GRACE_S` seconds (a collective times out) or are stopped; the launcher exits with the
first failure's code. Rerunning the same command resumes from the chief's last checkpoint.

The module itself uses only the standard library (the workers import TensorFlow, not it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["GRACE_S", "free_ports", "launch", "tf_config"]

#: Seconds the surviving workers get to fail on their own after one worker failed.
GRACE_S = 90.0


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free on ``host`` a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(addresses: list[str], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of ``addresses`` (host:port)."""
    return json.dumps(
        {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}}
    )


def _describe(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return "done" if code == 0 else f"exit code {code}"


def launch(args: list[str], workers: int, workdir: str, poll_s: float = 0.5) -> int:
    """Runs ``python -m experiments.train *args`` as ``workers`` local workers; returns a code.

    Args:
      args: the train flags (without ``--workers``).
      workers: number of worker processes (≥ 1).
      workdir: the run's workdir (non-chief logs go to ``<workdir>/logs/``).
      poll_s: seconds between checks of the processes.

    Returns:
      0 when every worker finished cleanly, else the first failing worker's exit code (1 for a
      worker killed by a signal).
    """
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    logs = Path(workdir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        *args,
        "--gin_param=train.strategy = 'multi_worker'",
    ]
    procs: list[subprocess.Popen] = []
    files = []
    print(f"train: launching {workers} workers on {', '.join(addresses)}", file=sys.stderr)
    for i in range(workers):
        env = dict(os.environ, TF_CONFIG=tf_config(addresses, i))
        if i == 0:
            out = None
        else:
            out = open(logs / f"worker_{i}.log", "w", encoding="utf-8")  # noqa: SIM115
            files.append(out)
        procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=out))
    first_failure: tuple[int, int] | None = None
    failed_at = None
    try:
        while any(p.poll() is None for p in procs):
            for i, p in enumerate(procs):
                code = p.poll()
                if code not in (None, 0) and first_failure is None:
                    first_failure, failed_at = (i, code), time.monotonic()
                    print(
                        f"train: worker {i} failed ({_describe(code)}); waiting up to "
                        f"{GRACE_S:.0f} s for the others",
                        file=sys.stderr,
                    )
            if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                for p in procs:
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
        raise
    finally:
        for f in files:
            f.close()
    for i, p in enumerate(procs):
        where = "" if i == 0 else f" (log: {logs / f'worker_{i}.log'})"
        print(f"train: worker {i}: {_describe(p.returncode)}{where}", file=sys.stderr)
    if first_failure is None:
        bad = [p.returncode for p in procs if p.returncode != 0]
        return 0 if not bad else (bad[0] if bad[0] > 0 else 1)
    index, code = first_failure
    print(
        f"train: error: worker {index} failed ({_describe(code)}); rerun the same command to "
        "resume from the last checkpoint",
        file=sys.stderr,
    )
    return code if code > 0 else 1
