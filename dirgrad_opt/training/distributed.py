"""The runner on ``tf.distribute``: strategy, input sharding, the replicated step, chief/worker.

``train.strategy`` selects how a run is spread:

* ``None`` (default): one process, one device — the runner's original path, untouched.
* ``'mirrored'``: ``tf.distribute.MirroredStrategy`` over the local GPUs; with no GPU,
  ``train.cpu_replicas = N`` logical CPU devices (how data parallelism is tested on a laptop).
* ``'multi_worker'``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the processes named by
  the ``TF_CONFIG`` environment variable (one per machine, or several on one machine with
  ``python -m experiments.train ... --workers=N``).

``train.batch_size`` stays the *global* batch: step ``s`` consumes exactly the examples the
single-device run consumes, cut into ``R`` equal shards (replica ``r`` of ``R`` gets rows
``r·B/R … (r+1)·B/R`` of the global batch), so with the same seed a data-parallel run follows
the single-device run up to float32 reduction order. Each worker reads the whole stream and
keeps its replicas' rows (``distribute_datasets_from_function``, no auto-sharding).

Outputs under ``multi_worker``: the chief (task ``worker`` 0, or ``chief``) writes the workdir —
config, metrics, TensorBoard, checkpoints, ``result.json``; every other worker writes into a
temporary folder ``<workdir>/.workers/<task>`` that is deleted when it finishes (the TF/Keras
multi-worker convention), and restores from the chief's checkpoints, so rerunning the same
commands after any worker died resumes from the chief's last checkpoint. The workdir must be
on a filesystem all workers see.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from dirgrad_opt import distribute
from dirgrad_opt.training.errors import ConfigError

__all__ = [
    "STRATEGIES",
    "Distribution",
    "describe",
    "in_scope",
    "setup",
]

STRATEGIES = (None, "mirrored", "multi_worker")

#: Seconds a collective waits for a peer before failing (a dead worker must not hang the rest).
COLLECTIVE_TIMEOUT_S = 60.0

_CACHE: dict[Any, tf.distribute.Strategy] = {}


class Distribution:
    """A strategy and what the runner needs to know about it.

    Attributes:
      kind: ``'mirrored'`` or ``'multi_worker'``.
      strategy: the ``tf.distribute`` strategy.
      num_replicas: replicas in sync over all workers.
      num_workers: worker processes.
      task: this worker's ``(type, index)``.
      is_chief: whether this process writes the workdir.
    """

    def __init__(self, kind: str, strategy: tf.distribute.Strategy, task: tuple[str, int]):
        self.kind = kind
        self.strategy = strategy
        self.num_replicas = int(strategy.num_replicas_in_sync)
        self.num_local_replicas = len(strategy.extended.worker_devices)
        self.num_workers = max(1, self.num_replicas // self.num_local_replicas)
        self.task = task
        self.is_chief = task[0] == "chief" or (task[0] == "worker" and task[1] == 0)
        if kind == "multi_worker" and task[0] == "worker" and _has_chief_task():
            self.is_chief = False

    def describe(self) -> dict[str, Any]:
        """What ``result.json`` records under ``distribution``."""
        return {
            "strategy": self.kind,
            "num_replicas": self.num_replicas,
            "num_workers": self.num_workers,
        }

    # -- workdir -------------------------------------------------------------------------------
    def write_dir(self, workdir: Path) -> Path:
        """Where this process writes: the workdir (chief) or a temporary folder in it."""
        if self.is_chief:
            return workdir
        return workdir / ".workers" / f"{self.task[0]}_{self.task[1]}"

    def cleanup(self, workdir: Path) -> None:
        """Deletes a non-chief's temporary folder."""
        if not self.is_chief:
            folder = self.write_dir(workdir)
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):  # the last worker out removes .workers/
                folder.parent.rmdir()

    # -- data ----------------------------------------------------------------------------------
    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.num_replicas:
            raise ConfigError(
                f"train.batch_size = {batch_size} is the global batch and must be divisible by the "
                f"{self.num_replicas} replicas of train.strategy = {self.kind!r}"
            )

    def distribute(self, dataset: tf.data.Dataset, batch_size: int) -> Any:
        """The global-batch stream as per-replica shards: replica r gets rows [r·b, (r+1)·b)."""
        replicas = self.num_replicas
        per_replica = batch_size // replicas

        def shards(context: tf.distribute.InputContext) -> tf.data.Dataset:
            local = replicas // context.num_input_pipelines
            first = context.input_pipeline_id * local

            def split(x: tf.Tensor, y: tf.Tensor) -> tf.data.Dataset:
                def cut(t: tf.Tensor) -> tf.Tensor:
                    t = tf.reshape(t, [replicas, per_replica, *t.shape[1:]])
                    return t[first : first + local]

                return tf.data.Dataset.from_tensor_slices((cut(x), cut(y)))

            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.OFF
            )
            return dataset.flat_map(split).with_options(options)

        return self.strategy.distribute_datasets_from_function(shards)

    # -- the step -----------------------------------------------------------------------------
    def replicated(self, step: Callable[[tf.Tensor, tf.Tensor], dict]) -> Callable:
        """``step`` run on every replica; float scalars averaged over replicas, others as agreed.

        Closure optimizers return identical values on every replica (their step is merged);
        the losses and batch metrics of a stock Keras optimizer's step are per replica, and
        their mean is the global-batch value.
        """
        strategy = self.strategy

        def run(x: Any, y: Any) -> dict[str, tf.Tensor]:
            out = strategy.run(step, args=(x, y))
            reduced = {}
            for key, value in out.items():
                first = strategy.experimental_local_results(value)[0]
                if first.dtype.is_floating:
                    reduced[key] = strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                else:
                    reduced[key] = first
            return reduced

        return run

    def scope(self) -> Any:
        return self.strategy.scope()


def _tf_config() -> dict[str, Any]:
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({error}): {text[:80]!r}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"TF_CONFIG must be a JSON object, got {text[:80]!r}")
    return config


def _has_chief_task() -> bool:
    return bool(_tf_config().get("cluster", {}).get("chief"))


def setup(kind: str | None, cpu_replicas: int | None) -> Distribution | None:
    """Validates ``train.strategy`` / ``train.cpu_replicas`` and builds the strategy (once per
    process: a strategy owns devices and, across workers, a server). ``None`` for ``None``.

    Raises:
      ConfigError: an unknown strategy, bad replica count, missing ``TF_CONFIG``, or CPU
        replicas asked for after TensorFlow initialised its devices.
    """
    if kind not in STRATEGIES:
        raise ConfigError(
            f"train.strategy must be one of None, 'mirrored', 'multi_worker'; got {kind!r}"
        )
    if cpu_replicas is not None and (
        isinstance(cpu_replicas, bool) or not isinstance(cpu_replicas, int) or cpu_replicas < 1
    ):
        raise ConfigError(f"train.cpu_replicas must be an integer >= 1, got {cpu_replicas!r}")
    if kind is None:
        if cpu_replicas not in (None, 1):
            raise ConfigError(
                "train.cpu_replicas needs train.strategy = 'mirrored' (it splits the CPU into "
                "that many data-parallel replicas)"
            )
        return None
    key = (kind, cpu_replicas)
    if kind == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if gpus and cpu_replicas is not None:
            raise ConfigError(
                f"train.cpu_replicas = {cpu_replicas}, but this machine has {len(gpus)} GPU(s): "
                "'mirrored' uses all of them; remove train.cpu_replicas"
            )
        if key not in _CACHE:
            if gpus:
                _CACHE[key] = tf.distribute.MirroredStrategy()
            else:
                try:
                    names = distribute.set_cpu_replicas(cpu_replicas or 1)
                except RuntimeError as error:
                    raise ConfigError(str(error)) from None
                _CACHE[key] = tf.distribute.MirroredStrategy(names)
        return Distribution(kind, _CACHE[key], ("worker", 0))
    config = _tf_config()
    if not config.get("cluster") or not config.get("task"):
        raise ConfigError(
            "train.strategy = 'multi_worker' needs the TF_CONFIG environment variable "
            '(\'{"cluster": {"worker": ["host1:port", ...]}, "task": {"type": "worker", '
            '"index": 0}}\'); to try it on one machine: python -m experiments.train ... '
            "--workers=2"
        )
    if cpu_replicas not in (None, 1):
        raise ConfigError("train.cpu_replicas applies to 'mirrored' only; each worker is 1 replica")
    if key not in _CACHE:
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=COLLECTIVE_TIMEOUT_S
        )
        _CACHE[key] = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    task = config["task"]
    return Distribution(kind, _CACHE[key], (str(task.get("type")), int(task.get("index", 0))))


def in_scope(
    dist: Distribution, optimizer: Any, variables: list[Any]
) -> Any:  # keras.optimizers.Optimizer
    """A copy of ``optimizer`` (same config) created and built inside the strategy's scope.

    Gin builds ``@Adam()`` before the runner picks the strategy; Keras optimizers tie their
    variables (``iterations`` included) to the strategy in scope when they are created.
    """
    with dist.scope():
        fresh = type(optimizer).from_config(optimizer.get_config())
        fresh.build(variables)
    return fresh


def describe(dist: Distribution | None) -> dict[str, Any]:
    """``result.json``'s ``distribution``: strategy, replicas, workers (one device: None, 1, 1)."""
    if dist is None:
        return {"strategy": None, "num_replicas": 1, "num_workers": 1}
    return dist.describe()
