"""``model.fit`` with closure optimizers: a ``train_step`` that hands the optimizer a loss closure.

Keras 3's ``train_step`` computes one gradient and calls ``optimizer.apply``; a line search needs
to evaluate the loss at trial points instead. Three ways to train a Keras model with a
:class:`~dirgrad_opt.optimizers.DirectionalOptimizer`::

    model = DirectionalSequential([...])                 # a Sequential that trains by closure
    model = DirectionalModel(inputs, outputs)            # a functional model that does
    model = enable_closure_training(existing_model)      # any model, patched in place

    model.compile(optimizer=ArmijoLineSearch(), loss=..., metrics=[...], jit_compile=False)
    model.fit(x, y, batch_size=100, epochs=5)

Each training step builds ``loss_fn()`` over the step's batch (``model.compute_loss``, so
regularisation losses count) and calls ``optimizer.minimize(loss_fn, model.trainable_variables)``.
The loss tracker and compiled metrics use the *first* evaluation's predictions (at the start
point, as Keras's own ``train_step`` does). A stock Keras optimizer still trains the usual way.

**Under a strategy.** Compiled and fitted inside ``strategy.scope()`` (``MirroredStrategy``,
``MultiWorkerMirroredStrategy``), each replica's closure is the mean loss of its shard and the
optimizer merges the replicas into one step whose every evaluation — line-search trial points
included — is the global-batch mean (:mod:`dirgrad_opt.distribute`): same steps as one device.

**Stochastic layers.** Dropout, noise layers and BatchNormalization make the loss change
between two calls on the same batch (new dropout mask, updated moving statistics), and a line
search over such a closure shrinks its step to nothing. With ``deterministic=True`` (default)
every evaluation within one step first restores the model's non-trainable state — the RNG
seed-generator states and BatchNormalization's moving statistics — to its value at the start of
the step: all trial points see the same dropout mask, and the state advances exactly once per
step (by the last evaluation's update). With ``deterministic=False`` a model that has such
layers is refused with a clear error.
"""

from __future__ import annotations

import types
from typing import Any

import keras
import tensorflow as tf

from dirgrad_opt.optimizers.base import DirectionalOptimizer

__all__ = [
    "DirectionalModel",
    "DirectionalSequential",
    "closure_train_step",
    "enable_closure_training",
    "step_logs",
    "stochastic_layers",
]


def stochastic_layers(model: keras.Model) -> list[str]:
    """Names of layers that make a forward pass in training mode random or stateful."""
    names = []
    for layer in model._flatten_layers(include_self=False):
        stateful = any(not v.trainable for v in layer.weights) or hasattr(layer, "seed_generator")
        if stateful and not isinstance(layer, keras.Model):
            names.append(layer.name)
    return names


def closure_train_step(model: keras.Model, data: Any, deterministic: bool = True) -> dict:
    """One training step of ``model`` on ``data`` through ``model.optimizer.minimize``.

    Args:
      model: a compiled Keras model whose optimizer is a ``DirectionalOptimizer`` (any other
        optimizer falls back to Keras's own ``train_step``).
      data: the batch as ``model.fit`` passes it: ``x``, ``(x, y)`` or ``(x, y, sample_weight)``.
      deterministic: restore non-trainable state before every evaluation (see module doc).

    Returns:
      The metrics dict Keras logs (loss, compiled metrics), plus every scalar of the step's
      ``minimize`` dict (:func:`step_logs`): ``step_size``, ``forward_passes``/
      ``backward_passes``/``jvps``, ``accepted`` and the rule's own ``ctx.metrics``.
    """
    optimizer = model.optimizer
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and isinstance(
        optimizer.inner_optimizer, DirectionalOptimizer
    ):  # compile() wraps every optimizer under mixed_float16; ours scales its own losses
        optimizer = optimizer.inner_optimizer
    if not isinstance(optimizer, DirectionalOptimizer):
        return keras.Model.train_step(model, data)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    state = [v for v in model.non_trainable_variables]
    if state and not deterministic:
        raise ValueError(
            f"{type(optimizer).__name__} evaluates the loss several times per step, but layers "
            f"{stochastic_layers(model)} change it between calls (dropout masks, moving "
            "statistics). Use deterministic=True (the default) so every evaluation in a step "
            "sees the same state, or remove these layers."
        )
    snapshot = [tf.identity(v) for v in state] if deterministic else []
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    first: dict[str, Any] = {}

    def loss_fn() -> tf.Tensor:
        for v, value in zip(state, snapshot, strict=False):
            v.assign(value)
        y_pred = model(x, training=True)
        loss = model.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
        if replicas > 1:  # Keras divides each replica's loss by R; the closure is the mean
            loss = loss * tf.cast(replicas, loss.dtype)
        first.setdefault("y_pred", y_pred)
        first.setdefault("loss", loss)
        return loss

    info = optimizer.minimize(loss_fn, model.trainable_variables)
    batch = tf.shape(tf.nest.flatten(x)[0])[0]
    model._loss_tracker.update_state(first["loss"], sample_weight=batch)
    logs = model.compute_metrics(x, y, first["y_pred"], sample_weight=sample_weight)
    logs.update(step_logs(info, exclude=logs))
    return logs


def step_logs(info: dict[str, Any], exclude: Any = ()) -> dict[str, tf.Tensor]:
    """Every scalar of a ``minimize`` dict as a float32 log value, minus the keys in ``exclude``.

    That is ``step_size``, the step's ``forward_passes``/``backward_passes``/``jvps``,
    ``accepted``/``descent`` (as 0/1), and every scalar a rule put in ``ctx.metrics``
    (``evaluations``, ``polyak_step``...). ``loss`` stays Keras's own (the loss tracker's mean).
    Non-scalar values are left out (a log line holds scalars).
    """
    out = {}
    for key, value in info.items():
        if key in exclude or key == "loss":
            continue
        value = tf.convert_to_tensor(value)
        if value.shape.rank == 0 and (value.dtype.is_numeric or value.dtype == tf.bool):
            out[key] = tf.cast(value, tf.float32)
    return out


class _ClosureTraining:
    """Mixin: ``train_step`` by closure when the optimizer is a ``DirectionalOptimizer``."""

    deterministic_closure = True

    def train_step(self, data: Any) -> dict:
        return closure_train_step(self, data, deterministic=self.deterministic_closure)


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class DirectionalModel(_ClosureTraining, keras.Model):
    """A ``keras.Model`` (functional or subclassed) that trains through ``optimizer.minimize``."""


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class DirectionalSequential(_ClosureTraining, keras.Sequential):
    """A ``keras.Sequential`` that trains through ``optimizer.minimize``."""


def enable_closure_training(model: keras.Model, deterministic: bool = True) -> keras.Model:
    """Patches ``model.train_step`` in place so ``fit`` uses ``optimizer.minimize``; returns it.

    Call it before ``compile``/``fit``. A model loaded from a ``.keras`` file is a plain Keras
    model again: call this once more (or build it as a :class:`DirectionalModel`, which keeps
    its class through saving).
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"expected a keras.Model, got {type(model).__name__}")

    def train_step(self: keras.Model, data: Any) -> dict:
        return closure_train_step(self, data, deterministic=deterministic)

    model.train_step = types.MethodType(train_step, model)
    model.train_function = None  # rebuild the compiled function around the new step
    return model
