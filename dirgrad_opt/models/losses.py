"""Losses and metrics by task; every function maps ``(outputs, labels)`` to a float32 scalar.

:func:`resolve_loss` turns ``train.loss`` (a Keras loss name, a ``keras.losses.Loss``, a
function ``(y_true, y_pred)``, or ``None`` for the task's default) into such a function.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import keras
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


def resolve_loss(loss: Any, task: str) -> LossFn:
    """The training loss ``(outputs, labels) -> scalar`` for ``train.loss`` and a task.

    Args:
      loss: ``None`` for the task's default (:func:`loss_for_task`); a Keras loss name
        (``"mean_squared_error"``, ``"huber"``, ``"sparse_categorical_crossentropy"``...); a
        ``keras.losses.Loss`` instance; or any callable ``(y_true, y_pred) -> loss`` (Keras's
        argument order). A name whose Keras loss takes ``from_logits`` gets
        ``from_logits=True``: dirgrad_opt's networks output logits. A per-example result is
        averaged over the batch: ``L = mean(loss(y, model(x)))``.
      task: the dataset's task (for the default).

    Returns:
      A function of ``(outputs, labels)`` (the order the loop uses) returning a float32 scalar.

    Raises:
      ValueError: an unknown loss name or a value that is not a loss.
    """
    if loss is None:
        return loss_for_task(task)
    if isinstance(loss, str):
        try:
            fn = keras.losses.get(loss)
        except ValueError:
            raise ValueError(
                f"train.loss = {loss!r} is not a Keras loss name; use e.g. 'mean_squared_error', "
                "'huber' or 'sparse_categorical_crossentropy', a keras.losses.Loss, or a "
                "function (y_true, y_pred) -> loss"
            ) from None
        if _accepts(fn, "from_logits"):
            fn = functools.partial(fn, from_logits=True)
        name = loss
    elif callable(loss):
        fn, name = loss, getattr(loss, "name", None) or getattr(loss, "__name__", "loss")
    else:
        text = repr(loss)
        raise ValueError(
            "train.loss must be None, a Keras loss name, a keras.losses.Loss or a function "
            f"(y_true, y_pred) -> loss; got {text if len(text) <= 200 else text[:197] + '...'}"
        )

    def user_loss(outputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.cast(fn(labels, outputs), tf.float32))

    user_loss.__name__ = str(name)
    return user_loss


def _accepts(fn: Callable, parameter: str) -> bool:
    try:
        return parameter in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
