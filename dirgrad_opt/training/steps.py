"""One training step for either optimizer family, with the same metrics and cost counting.

* A :class:`~dirgrad_opt.optimizers.DirectionalOptimizer` gets a loss *closure* over the step's
  fixed batch, ``L(w) = loss(model(x, training=True), y) + Σ model.losses``, and calls
  ``minimize`` (it may evaluate the closure several times); its cost counters are its own.
* A stock Keras optimizer gets ``∇L(w)`` from a ``GradientTape`` and ``apply_gradients``; the
  step costs exactly 1 forward + 1 backward pass and 0 JVPs.

Both return a dict of scalar tensors with at least ``loss`` (at the weights before the step),
``step_size`` and the per-step ``forward_passes``, ``backward_passes``, ``jvps``; with
``batch_metrics`` also the task metrics (``accuracy``) of the batch before the step. The Keras
step reads them off its forward pass; the closure step needs one extra forward pass for them
(``minimize`` does not expose the model outputs), which is *not* counted as the optimizer's cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
import tensorflow as tf

from dirgrad_opt.optimizers import DirectionalOptimizer, ModelClosure

StepFn = Callable[[tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]
MetricFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

COUNTERS = ("forward_passes", "backward_passes", "jvps")

#: Layers that make a loss closure stochastic (a new mask/noise per call) or stateful.
_STATEFUL_LAYER_NAMES = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "BatchNormalization",
)


def is_closure_optimizer(optimizer: Any) -> bool:
    """True for our closure-driven optimizers, False for gradient-only Keras ones."""
    return isinstance(optimizer, DirectionalOptimizer)


def check_optimizer(optimizer: Any) -> None:
    """Raises ``ValueError`` unless ``optimizer`` is a Keras optimizer instance."""
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            f"train.optimizer must be a Keras optimizer instance such as @Adam() or "
            f"@ArmijoLineSearch() (note the parentheses), got {optimizer!r}"
        )


def stateful_layers(model: keras.Model) -> list[str]:
    """Names and types of the layers of ``model`` that make a loss closure non-deterministic."""
    classes = tuple(
        getattr(keras.layers, name) for name in _STATEFUL_LAYER_NAMES if hasattr(keras.layers, name)
    )
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, classes):
            found.append(f"{layer.name} ({type(layer).__name__})")
    return found


def max_pooling_layers(model: keras.Model) -> list[str]:
    """Names and types of the max-pooling layers of ``model`` (XLA has no deterministic
    max-pool gradient in TF 2.21, and its max-pool JVP is wrong)."""
    names = ("MaxPooling1D", "MaxPooling2D", "MaxPooling3D")
    classes = tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))
    return [
        f"{layer.name} ({type(layer).__name__})"
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, classes)
    ]


def check_closure_model(model: keras.Model, optimizer: Any, allow_stateful_layers: bool) -> None:
    """Rejects Dropout/BatchNorm-like layers under a closure optimizer unless allowed.

    A line search re-evaluates the closure at trial points on the same batch: a new dropout mask
    per call changes the function being searched (the step collapses to 0), and BatchNorm
    updates its moving statistics at every trial point.
    """
    if not is_closure_optimizer(optimizer) or allow_stateful_layers:
        return
    found = stateful_layers(model)
    if found:
        raise ValueError(
            f"model {model.name!r} has layers that make the loss closure of "
            f"{type(optimizer).__name__} stochastic or stateful: {', '.join(found)}. Remove them, "
            "or set `train.allow_stateful_layers = True` to accept a closure whose value can "
            "change between evaluations of the same step."
        )


def _objective(model: keras.Model, loss_fn: MetricFn, x: tf.Tensor, y: tf.Tensor):
    """``(outputs, loss)``: the task loss plus any regularisation losses of the model."""
    outputs = model(x, training=True)
    loss = tf.cast(loss_fn(outputs, y), tf.float32)
    if model.losses:
        loss = loss + tf.add_n([tf.cast(v, tf.float32) for v in model.losses])
    return outputs, loss


def _batch_metrics(
    metrics: Mapping[str, MetricFn], outputs: tf.Tensor, y: tf.Tensor
) -> dict[str, tf.Tensor]:
    return {name: tf.cast(fn(outputs, y), tf.float32) for name, fn in metrics.items()}


def make_keras_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss_fn: MetricFn,
    metrics: Mapping[str, MetricFn],
    batch_metrics: bool = True,
) -> StepFn:
    """The gradient step of a stock Keras optimizer: ``w ← apply(∇L(w))``.

    Args:
      model: a built Keras model.
      optimizer: a built Keras optimizer (not a closure one).
      loss_fn: ``(outputs, labels) -> scalar`` task loss.
      metrics: task metrics ``name -> fn(outputs, labels)``.
      batch_metrics: also return the metrics of the batch (from the same forward pass).

    Returns:
      ``step(x, y) -> dict`` of scalar tensors (see the module docstring).
    """
    variables = model.trainable_variables

    def step(x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        step_size = tf.cast(optimizer.learning_rate, tf.float32)  # before `iterations` advances
        with tf.GradientTape() as tape:
            outputs, loss = _objective(model, loss_fn, x, y)
            scaled = optimizer.scale_loss(loss)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            if replicas > 1:  # Keras sums the replicas' gradients: the mean needs loss / R
                scaled = scaled / replicas
        grads = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        info = {
            "loss": loss,
            "step_size": step_size,
            "forward_passes": tf.constant(1, tf.int32),
            "backward_passes": tf.constant(1, tf.int32),
            "jvps": tf.constant(0, tf.int32),
        }
        if batch_metrics:
            info.update(_batch_metrics(metrics, outputs, y))
        return info

    return step


def make_closure_step(
    model: keras.Model,
    optimizer: DirectionalOptimizer,
    loss_fn: MetricFn,
    metrics: Mapping[str, MetricFn],
    batch_metrics: bool = True,
) -> StepFn:
    """The closure step of a :class:`DirectionalOptimizer`: ``optimizer.minimize(L, w)``.

    The closure is ``L(w) = loss(model(x, training=True), y) + Σ model.losses`` over the step's
    fixed batch ``(x, y)``, so it is deterministic for models without dropout/BatchNorm.

    Args:
      model, loss_fn, metrics, batch_metrics: as in :func:`make_keras_step`; the batch metrics
        cost one forward pass at the start point, not charged to the optimizer.
      optimizer: a built closure optimizer.

    Returns:
      ``step(x, y) -> dict``: ``minimize``'s scalars (booleans as they are) plus batch metrics.
    """
    variables = model.trainable_variables

    def step(x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        info: dict[str, tf.Tensor] = {}
        if batch_metrics and metrics:
            outputs = model(x, training=True)
            info.update(_batch_metrics(metrics, outputs, y))

        # L(w) as _objective computes it; also exposes model and batch (activity methods)
        closure = ModelClosure(model, loss_fn, x, y)
        result = optimizer.minimize(closure, variables)
        for name, value in result.items():
            value = tf.convert_to_tensor(value)
            if value.shape.rank != 0:
                raise ValueError(
                    f"{type(optimizer).__name__}.minimize returned a non-scalar {name!r} of shape "
                    f"{value.shape}; the training loop logs scalars only."
                )
            info[name] = value
        for name in ("loss", "step_size", *COUNTERS):
            if name not in info:
                raise ValueError(
                    f"{type(optimizer).__name__}.minimize did not return {name!r}; every "
                    "DirectionalOptimizer step must report loss, step_size and cost counters."
                )
        return info

    return step


def make_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss_fn: MetricFn,
    metrics: Mapping[str, MetricFn],
    batch_metrics: bool = True,
) -> StepFn:
    """The step for ``optimizer``'s family (closure or gradient); see the module docstring."""
    maker = make_closure_step if is_closure_optimizer(optimizer) else make_keras_step
    return maker(model, optimizer, loss_fn, metrics, batch_metrics)
