"""What a run may do in its workdir: own it, recognise it, restore and save its checkpoints.

* :func:`open_workdir` — refuses an empty ``--workdir``, creates the folder, takes the
  one-process lock (:mod:`dirgrad_opt.workdir_lock`) and refuses a non-empty folder that is
  not one of our runs; :func:`close_workdir` releases it and removes folders it created if
  nothing was written in them (a configuration error leaves nothing behind).
* :func:`checkpoint_prefixes` — the ``ckpt-<step>`` checkpoints on disk, found by listing the
  files (never by trusting the ``checkpoint`` state file, which can be damaged).
* :func:`restore_newest_readable` — walks back from the newest checkpoint to the newest one
  that reads completely, saying which it skipped; refuses (``ConfigError``) rather than
  restart from step 0 when checkpoints exist but none reads.
* :func:`save_checkpoint` — ``CheckpointManager.save``; a failed save (disk full) removes its
  ``*_temp`` folder and raises :class:`RunIOError` naming the path and the error.
* :func:`check_learning_rates` — constant learning rates must be finite and ≥ 0.

Nothing here deletes a file it did not write: the only removals are the ``*_temp`` folder of
a save that failed and the empty folders :func:`open_workdir` itself created.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from dirgrad_opt import workdir_lock
from dirgrad_opt.training import schema
from dirgrad_opt.training.errors import ConfigError, RunIOError

CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
#: What a run of ``experiments.train`` writes into its workdir.
RUN_ENTRIES = frozenset(
    {
        schema.CONFIG_FILE,
        schema.OPERATIVE_CONFIG_FILE,
        schema.METRICS_FILE,
        schema.RESULT_FILE,
        CHECKPOINT_DIR,
        TENSORBOARD_DIR,
    }
)
#: What a sweep writes into a trial's folder before it starts the trial's run there.
SWEEP_TRIAL_ENTRIES = frozenset({"trial.json", "bindings.gin", "status.json", "log.txt"})
_CHECKPOINT = re.compile(r"^ckpt-(\d+)\.index$")


def os_error_line(error: BaseException, doing: str) -> str:
    """``'<doing> <path>: [Errno 28 ENOSPC] No space left on device'`` for an ``OSError``;
    the first line of the message for a TensorFlow I/O error (it names the file)."""
    if isinstance(error, OSError) and error.errno is not None:
        name = errno.errorcode.get(error.errno, "")
        where = f" {error.filename!r}" if error.filename else ""
        return f"{doing}{where}: [Errno {error.errno} {name}] {error.strerror}"
    message = getattr(error, "message", None) or str(error)
    return f"{doing}: {type(error).__name__}: {message.strip().splitlines()[0]}"


class Workdir:
    """A locked workdir: its path, its lock, and the folders this process created for it."""

    def __init__(self, path: Path, lock: workdir_lock.WorkdirLock, created: list[Path]):
        self.path = path
        self.lock = lock
        self.created = created


def open_workdir(workdir: str | os.PathLike) -> Workdir:
    """Creates (if needed) and locks ``workdir``; refuses one that is not a run of ours.

    Raises:
      ConfigError: empty path; a path below a file or not writable (naming the errno); a
        workdir held by another live process (naming its pid and host); a non-empty folder
        without ``config.gin`` holding anything but a sweep trial's files.
    """
    if not str(workdir).strip():
        raise ConfigError("--workdir is empty: give the run's output folder, e.g. runs/my_run")
    path = Path(workdir)
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _remove_empty(created)
        raise ConfigError(os_error_line(error, "cannot create the workdir")) from None
    if not path.is_dir():
        raise ConfigError(f"workdir {str(path)!r} exists and is not a directory")
    check_owned(path)  # before writing the lock file into a foreign folder; again under the lock
    try:
        lock = workdir_lock.acquire(path)
    except workdir_lock.WorkdirLocked as error:
        raise ConfigError(str(error)) from None
    except OSError as error:
        _remove_empty(created)
        raise ConfigError(os_error_line(error, "cannot write in the workdir")) from None
    handle = Workdir(path, lock, sorted(created, key=lambda p: len(p.parts), reverse=True))
    try:
        check_owned(path)
    except BaseException:
        close_workdir(handle)
        raise
    return handle


def close_workdir(handle: Workdir) -> None:
    """Releases the lock; removes the folders :func:`open_workdir` created if still empty."""
    handle.lock.release()
    if not handle.path.is_dir():  # a non-chief worker's temporary folder, removed at its end
        return
    if handle.created and set(os.listdir(handle.path)) <= {workdir_lock.LOCK_FILE}:
        lock_file = handle.path / workdir_lock.LOCK_FILE
        lock_file.unlink(missing_ok=True)
        _remove_empty(handle.created)


def _remove_empty(folders: list[Path]) -> None:
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            return


def check_owned(path: Path) -> None:
    """Refuses a non-empty folder that is not one of our runs (or a sweep trial's folder).

    A run's folder holds ``config.gin`` from its first moment; a sweep trial's folder holds
    ``trial.json``... before its run starts. Dot-files (the lock, editors' files) are ignored.
    """
    entries = sorted(e for e in os.listdir(path) if not e.startswith("."))
    if not entries or (path / schema.CONFIG_FILE).is_file():
        return
    foreign = [e for e in entries if e not in SWEEP_TRIAL_ENTRIES]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigError(
            f"workdir {str(path)!r} is not empty and is not a run of experiments.train (no "
            f"{schema.CONFIG_FILE}; it holds {shown}): nothing there is touched. Use a new or "
            "empty --workdir."
        )


# -- checkpoints ---------------------------------------------------------------------------------
def checkpoint_prefixes(directory: str | os.PathLike) -> list[tuple[int, str]]:
    """``[(step, prefix), ...]`` of the ``ckpt-<step>.index`` files in ``directory``, newest
    first (an empty list if the folder does not exist)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = sorted(
        (
            (int(m.group(1)), name[: -len(".index")])
            for name in names
            if (m := _CHECKPOINT.match(name))
        ),
        reverse=True,
    )
    return [(step, os.path.join(os.fspath(directory), stem)) for step, stem in found]


def _read_fully(prefix: str) -> None:
    """Reads every tensor of a checkpoint (the reader checks each one's checksum)."""
    reader = tf.train.load_checkpoint(prefix)
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)


def restore_newest_readable(
    checkpoint: tf.train.Checkpoint,
    directory: str | os.PathLike,
    max_to_keep: int,
    log: Callable[[str], None],
) -> tuple[tf.train.CheckpointManager, str | None]:
    """Restores the newest checkpoint that reads, and a manager that knows the ones on disk.

    Args:
      checkpoint: what to restore into (every object must match the checkpoint).
      directory: the ``checkpoints/`` folder.
      max_to_keep: the manager's ``max_to_keep``.
      log: where to say which checkpoints were skipped, and why.

    Returns:
      ``(manager, prefix)``; ``prefix`` is ``None`` when there is no checkpoint at all.

    Raises:
      ConfigError: checkpoints exist but none can be read (each one's error is named).
    """
    directory = os.fspath(directory)
    found = checkpoint_prefixes(directory)
    problems = []
    chosen = None
    for step, prefix in found:
        try:
            _read_fully(prefix)
            checkpoint.restore(prefix).assert_existing_objects_matched()
        except Exception as error:  # noqa: BLE001 - any failure to read means "damaged"
            reason = os_error_line(error, os.path.basename(prefix)).split("\n")[0]
            problems.append(reason)
            log(f"skipping damaged checkpoint {prefix} (step {step}): {reason}")
            continue
        chosen = (step, prefix)
        break
    if found and chosen is None:
        raise ConfigError(
            f"none of the {len(found)} checkpoints in {directory!r} can be read "
            f"({'; '.join(problems)[:600]}); refusing to restart from step 0 over them: move "
            f"{directory!r} away (or delete the workdir) to start over."
        )
    if chosen is not None:
        # The state file may be garbage or name a damaged checkpoint: rewrite it from the files
        # (the chosen one and every older one, so the manager keeps rotating them).
        older = [p for s, p in sorted(found) if s <= chosen[0]]
        tf.compat.v1.train.update_checkpoint_state(
            directory, chosen[1], all_model_checkpoint_paths=older
        )
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep)
    return manager, None if chosen is None else chosen[1]


def save_checkpoint(manager: tf.train.CheckpointManager, step: int) -> str:
    """``manager.save(checkpoint_number=step)``; on failure removes the half-written
    ``ckpt-<step>*_temp`` folder and raises :class:`RunIOError` naming the path and error."""
    try:
        return manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as error:
        for name in os.listdir(manager.directory):
            if name.startswith(f"ckpt-{step}") and "_temp" in name:
                shutil.rmtree(os.path.join(manager.directory, name), ignore_errors=True)
        prefix = os.path.join(manager.directory, f"ckpt-{step}")
        raise RunIOError(os_error_line(error, f"cannot write checkpoint {prefix}")) from None


# -- learning rates --------------------------------------------------------------------------
def check_learning_rates(optimizer: keras.optimizers.Optimizer) -> None:
    """Refuses a constant learning rate that is not finite or is negative (a schedule is
    checked by its own constructor; its values are only known during training).

    Covers the optimizer and the inner ``direction`` optimizer of a line search; optimizers
    whose step-size rule ignores ``learning_rate`` are skipped.
    """
    pending = [optimizer]
    while pending:
        opt = pending.pop()
        inner = getattr(opt, "direction_optimizer", None)
        if inner is not None:
            pending.append(inner)
        if getattr(opt, "uses_learning_rate", True) is False:
            continue
        value = getattr(opt, "_learning_rate", None)
        if value is None or isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
            continue
        if callable(value) and not isinstance(value, tf.Variable | keras.Variable):
            continue
        try:
            number = float(keras.ops.convert_to_numpy(value))
        except (TypeError, ValueError):
            continue
        if not (math.isfinite(number) and number >= 0):
            raise ConfigError(
                f"{type(opt).__name__}.learning_rate must be finite and >= 0, got {number}"
            )


def read_or_refuse(reader: Callable[[Any], Any], path: Path) -> Any:
    """``reader(path)``, turning a damaged file into a one-line ``ConfigError``."""
    try:
        return reader(path)
    except schema.SchemaError as error:
        raise ConfigError(
            f"{error}; the run cannot be resumed over a damaged {path.name}: repair or move it "
            "away (a fresh run needs a new --workdir)"
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not text ({error.reason}); repair or move it away") from None
    except OSError as error:
        raise ConfigError(os_error_line(error, "cannot read")) from None
