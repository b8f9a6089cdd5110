"""Step scales that may be a number or a Keras ``LearningRateSchedule`` (``max_step``...).

A line search's scales — the first trial step, the cap on a trial step, Polyak's bound γ_b —
may follow a schedule exactly like a learning rate::

    ArmijoLineSearch(max_step=keras.optimizers.schedules.CosineDecay(10.0, decay_steps=8000))

The schedule is evaluated at the optimizer's ``iterations`` (the number of completed steps, as
for ``learning_rate``) and is serialized in ``get_config`` the way Keras serializes a
learning-rate schedule (``DirectionalOptimizer.from_config`` deserializes it).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from dirgrad_opt.optimizers.base import check_positive

__all__ = ["Scale", "check_scale", "initial_value", "scale_at", "serialize_scale"]

Schedule = keras.optimizers.schedules.LearningRateSchedule
Scale = float | Schedule


def check_scale(name: str, value: Any) -> Scale:
    """``value`` as a float > 0, or a schedule (a serialized one is deserialized)."""
    if isinstance(value, dict) and "class_name" in value:
        value = keras.saving.deserialize_keras_object(value)
    if isinstance(value, Schedule):
        return value
    return check_positive(name, value)


def is_schedule(value: Any) -> bool:
    return isinstance(value, Schedule)


def scale_at(value: Scale, iterations: Any, dtype: tf.DType) -> tf.Tensor:
    """The scale at step ``iterations``: ``value(iterations)`` for a schedule, else ``value``."""
    if isinstance(value, Schedule):
        return tf.cast(value(iterations), dtype)
    return tf.constant(value, dtype)


def initial_value(value: Scale) -> float:
    """The scale at step 0, as a Python float (for a variable's initializer)."""
    if isinstance(value, Schedule):
        return float(value(0))
    return float(value)


def serialize_scale(value: Scale) -> Any:
    """A float as is; a schedule as Keras serializes a learning-rate schedule."""
    if isinstance(value, Schedule):
        return keras.saving.serialize_keras_object(value)
    return value
