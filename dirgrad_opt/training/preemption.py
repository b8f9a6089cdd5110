"""SIGTERM/SIGINT during training: finish the current chunk, checkpoint, stop cleanly.

A cluster preempts a job with SIGTERM (then SIGKILL after a grace period); a user stops one with
Ctrl-C (SIGINT). While :func:`catch_stop_signals` is active, the first such signal only sets a
flag; the training loop checks it at every chunk boundary (at most ``train.log_every`` steps
away), saves a checkpoint of the current step, records ``"status": "interrupted"`` in
``result.json`` and raises :class:`~dirgrad_opt.training.errors.TrainingInterrupted`;
``experiments.train`` then exits with :data:`EXIT_PREEMPTED` — TensorFlow's restartable exit
code (``tf.distribute.experimental.PreemptionCheckpointHandler`` exits with 143 on GCE after
its preemption checkpoint; 143 = 128 + SIGTERM is also what a shell reports for a job ended by
SIGTERM). Rerunning the same command resumes from that checkpoint bit-exactly. A second signal
before the checkpoint is written stops at once (``KeyboardInterrupt``; the previous
checkpoint stays the latest).

Handlers are installed only from the main thread (Python's rule) and restored on exit.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from absl import logging

#: Exit code of a run stopped by SIGTERM/SIGINT after saving its checkpoint.
EXIT_PREEMPTED = 143
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Which stop signal arrived (``None`` until one does)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def handle(self, signum: int, frame: object) -> None:
        del frame
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            raise KeyboardInterrupt(f"second stop signal ({name})")
        self.signal_name = name
        logging.warning(
            "%s received: saving a checkpoint at the next chunk boundary, then stopping "
            "(send it again to stop at once, without that checkpoint).",
            name,
        )


@contextlib.contextmanager
def catch_stop_signals() -> Iterator[StopRequest]:
    """Routes SIGTERM and SIGINT to a :class:`StopRequest` for the block (main thread only;
    elsewhere the request never fires and the signals keep their handlers)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, request.handle)
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
