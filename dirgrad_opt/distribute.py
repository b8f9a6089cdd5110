"""Data parallelism on ``tf.distribute``: one closure-optimizer step agreed by every replica.

Under a ``tf.distribute`` strategy each replica holds a shard of the global batch and its
closure computes the per-replica mean loss ``L_r(w)``. The global-batch mean is

    L(w) = (1/R) Σ_r L_r(w)            (R replicas, equal shards)

and so are its gradient ``∇L = (1/R) Σ_r ∇L_r``, the slope ``∇L·d``, any directional
derivative and the curvature ``dᵀ∇²L d`` (all linear in the per-replica losses). A line search
compares ``L(w0 + t d)`` with ``L(w0) + c t ∇L·d`` at every trial point: if each replica used its
own ``L_r`` they would accept different steps and the mirrored weights would drift apart.

How a step runs. ``opt.minimize(loss_fn, vars)`` called inside ``strategy.run`` (a replica
context) hands its closure to one ``merge_call``: the step's rules then run *once*, in the
cross-replica context, and every evaluation the :class:`~dirgrad_opt.optimizers.StepContext`
makes — the loss at every trial point, the gradient, slopes, JVPs, finite differences,
curvatures — calls each replica's closure on that replica's device and averages the results
(:class:`ReplicaClosures`). Updates are written to the mirrored variables in the cross-replica
context, i.e. to every copy, and the step's scalars are returned to every replica. Why not
all-reduce inside the replicas: a line search's trial points live in a ``tf.while_loop``, and
on CPU devices ``ReplicaContext.all_reduce`` needs a ``merge_call`` (illegal in a loop body)
while the raw collective ops deadlock there (measured on TF 2.21, 2 logical CPUs).

Across workers (``MultiWorkerMirroredStrategy``) the local mean is all-reduced once more
between workers with the strategy's own collectives — one collective per evaluation, which
packs the loss with the gradient, or the loss with the slope.

Random directions need no communication: optimizers draw them from stateless seeds derived from
``(seed, iterations)``, and ``iterations`` is one mirrored variable.

Outside a strategy nothing here runs: ``minimize`` takes its usual path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf
from tensorflow.python.distribute import values as tf_values

__all__ = [
    "ReplicaClosures",
    "num_replicas",
    "replica_context",
    "set_cpu_replicas",
]


def replica_context() -> tf.distribute.ReplicaContext | None:
    """The replica context of a running ``strategy.run``, or ``None`` outside any strategy.

    ``None`` also in the default strategy and in a strategy's cross-replica context (inside
    ``strategy.scope()`` but not in ``strategy.run``): there is nothing to merge.
    """
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    return tf.distribute.get_replica_context()


def num_replicas() -> int:
    """Replicas in sync of the current strategy (1 outside a strategy)."""
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


class ReplicaClosures:
    """The per-replica loss closures of one step, evaluated together in a cross-replica context.

    Args:
      strategy: the running strategy.
      loss_fns: the closures regrouped by ``merge_call`` (a ``PerReplica`` of callables, or one
        callable when there is one local replica).
    """

    def __init__(self, strategy: tf.distribute.Strategy, loss_fns: Any):
        self.strategy = strategy
        self.loss_fns = list(strategy.experimental_local_results(loss_fns))
        self.devices = list(strategy.extended.worker_devices)
        if len(self.devices) != len(self.loss_fns):
            raise ValueError(
                f"{len(self.loss_fns)} loss closures for {len(self.devices)} local replicas"
            )
        self.num_replicas = int(strategy.num_replicas_in_sync)
        self.multi_worker = self.num_replicas > len(self.devices)

    def mean_loss(self) -> tf.Tensor:
        """The global-batch loss ``(1/R) Σ_r L_r(w)`` (differentiable within one worker)."""
        return self.mean(lambda loss_fn: tf.convert_to_tensor(loss_fn()))

    def apply(self, optimizer: Any, grads: list[tf.Tensor], variables: list[Any]) -> None:
        """``optimizer.apply(grads, variables)`` for a stock Keras optimizer, cross-replica.

        ``grads`` is already the global mean; Keras's TF optimizer would reach its per-variable
        update through a ``merge_call``, which does not exist in the cross-replica context, so
        the strategy is told for this call that no merge is needed: each update then goes
        straight to ``strategy.extended.update`` (every copy of the variable).
        """
        extended = self.strategy.extended
        had = "_use_merge_call" in vars(extended)
        saved = vars(extended).get("_use_merge_call")
        extended._use_merge_call = lambda: False
        try:
            optimizer.apply(grads, variables)
        finally:
            if had:
                extended._use_merge_call = saved
            else:
                del extended._use_merge_call

    def mean(self, fn: Callable[[Callable[[], Any]], Any]) -> Any:
        """``(1/R) Σ_r fn(loss_fn_r)`` with ``fn(loss_fn_r)`` run on replica r's device.

        ``fn`` returns a nest of float tensors (a loss, gradients, derivatives...). Integer and
        boolean leaves are taken from the first replica (flags that agree by construction).
        """
        per_replica = self.strategy.run(fn, args=(tf_values.PerReplica(tuple(self.loss_fns)),))
        local = [self.strategy.experimental_local_results(x) for x in tf.nest.flatten(per_replica)]
        outputs = [
            tf.nest.pack_sequence_as(per_replica, leaves) for leaves in zip(*local, strict=True)
        ]
        if len(outputs) == 1 and not self.multi_worker:
            return outputs[0]
        flat = [tf.nest.flatten(o) for o in outputs]
        local = []
        for leaves in zip(*flat, strict=True):
            leaves = [tf.convert_to_tensor(x) for x in leaves]
            if leaves[0].dtype.is_floating and len(leaves) > 1:
                with tf.device(self.devices[0]):
                    total = tf.add_n([tf.identity(x) for x in leaves])
                    local.append(total / tf.cast(len(leaves), total.dtype))
            else:
                local.append(leaves[0])
        if self.multi_worker:
            local = self._across_workers(local)
        return tf.nest.pack_sequence_as(outputs[0], local)

    def _across_workers(self, local: list[tf.Tensor]) -> list[tf.Tensor]:
        """Mean of the local means over workers (equal local replica counts): one collective."""
        floats = [i for i, x in enumerate(local) if x.dtype.is_floating]
        if not floats:
            return local
        n_local = len(self.devices)
        per_replica = [
            tf_values.PerReplica(tuple([local[i]] * n_local)) if n_local > 1 else local[i]
            for i in floats
        ]
        if n_local == 1:
            per_replica = [tf_values.PerReplica((x,)) for x in per_replica]
        reduced = self.strategy.extended.batch_reduce_to(
            tf.distribute.ReduceOp.MEAN, [(x, self.devices[0]) for x in per_replica]
        )
        out = list(local)
        for i, value in zip(floats, reduced, strict=True):
            out[i] = self.strategy.experimental_local_results(value)[0]
        return out


def set_cpu_replicas(count: int) -> list[str]:
    """Splits the host CPU into ``count`` logical devices; returns their names.

    Must run before TensorFlow initialises its devices (before the first op). Calling it again
    with the same count is a no-op; another count after initialisation is a ``RuntimeError``
    saying so.

    Example:
      >>> set_cpu_replicas(2)          # doctest: +SKIP
      ['/device:CPU:0', '/device:CPU:1']
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"cpu_replicas must be an integer >= 1, got {count!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return [d.name for d in tf.config.list_logical_devices("CPU")][:count]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have >= count:
            return [d.name for d in tf.config.list_logical_devices("CPU")][:count]
        raise RuntimeError(
            f"cannot split the CPU into {count} logical devices: TensorFlow already initialised "
            f"its devices ({have} CPU device(s)) in this process. Set the CPU replicas before "
            "any TensorFlow op runs (a fresh process: python -m experiments.train ...)."
        ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")][:count]
