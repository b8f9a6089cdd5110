"""Losses and metrics by task; every function maps ``(outputs, labels)`` to a float32 scalar."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def classification_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean softmax cross-entropy from logits: (1/B) Σᵢ [logsumexp(zᵢ) − zᵢ,yᵢ].

    Args:
      logits: ``[batch, num_classes]``.
      labels: integer class indices ``[batch]``.

    Returns:
      A float32 scalar.
    """
    logits = tf.cast(logits, tf.float32)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=logits
    )
    return tf.reduce_mean(per_example)


def accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Fraction of examples whose arg-max logit is the label: (1/B) Σᵢ [argmax zᵢ = yᵢ]."""
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32))


def regression_loss(predictions: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Mean squared error (1/(B k)) Σᵢⱼ (pᵢⱼ − tᵢⱼ)²; shapes must match exactly (no broadcast)."""
    if predictions.shape.rank is not None and targets.shape.rank is not None:
        if not predictions.shape.is_compatible_with(targets.shape):
            raise ValueError(
                f"regression_loss: predictions have shape {predictions.shape}, targets have "
                f"shape {targets.shape}; they must match (targets are [batch, k])."
            )
    diff = tf.cast(predictions, tf.float32) - tf.cast(targets, tf.float32)
    return tf.reduce_mean(tf.square(diff))


def objective_loss(outputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean of an analytic model's per-example objective values; ``labels`` are ignored."""
    del labels
    return tf.reduce_mean(tf.cast(outputs, tf.float32))


_LOSSES: dict[str, LossFn] = {
    "classification": classification_loss,
    "regression": regression_loss,
    "objective": objective_loss,
}
_METRICS: dict[str, dict[str, LossFn]] = {
    "classification": {"accuracy": accuracy},
    "regression": {},
    "objective": {},
}


def loss_for_task(task: str) -> LossFn:
    """The loss of a :class:`dirgrad_opt.data.Dataset` ``task``."""
    if task not in _LOSSES:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(_LOSSES)}.")
    return _LOSSES[task]


def metrics_for_task(task: str) -> dict[str, LossFn]:
    """Extra metrics (name -> fn(outputs, labels)) of a task, besides the loss."""
    if task not in _METRICS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(_METRICS)}.")
    return dict(_METRICS[task])
