"""Forward mode through a Keras recurrent layer's while_loop: a clear refusal, not TF's
internal error (TF 2.21's ForwardAccumulator cannot go through the loop)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dirgrad_opt import directional


def test_forward_mode_through_a_gru_is_refused_in_one_line():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 2)), keras.layers.GRU(3), keras.layers.Dense(1)])
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 5, 2)), tf.float32)
    variables = model.trainable_variables
    direction = [tf.ones_like(v) for v in variables]

    def loss_fn():
        return tf.reduce_mean(model(x) ** 2)

    @tf.function
    def derivative(method):
        return directional.directional_derivative(loss_fn, variables, direction, method=method)

    with pytest.raises(directional.UnsafeDerivativeError) as info:
        derivative("forward")
    message = str(info.value)
    assert "\n" not in message and "tf.while_loop" in message and "unroll=True" in message
    # Reverse mode (what the message suggests) works on the same loss.
    _, slope = derivative("reverse")
    assert np.isfinite(float(slope))
