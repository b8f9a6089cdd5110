"""Forward mode through a Keras recurrent layer's while_loop: a clear refusal, not TF's
internal error (TF 2.21's ForwardAccumulator cannot go through the loop)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dirgrad_opt import directional


@pytest.mark.parametrize("embedding", [False, True])
def test_forward_mode_through_a_gru_is_refused_in_one_line(embedding):
    """Two ways TF fails: after the loop op exists (a GRU on floats: ValueError), and inside
    the loop's construction (an embedding feeding a GRU, unknown batch size, as char_lm:
    TypeError on a 'variant' dtype) — both become the same one-line error."""
    keras.utils.set_random_seed(0)
    if embedding:
        layers = [keras.Input((5,), dtype="int32"), keras.layers.Embedding(7, 2)]
        x = np.random.default_rng(0).integers(0, 7, (4, 5)).astype(np.int32)
    else:
        layers = [keras.Input((5, 2))]
        x = np.random.default_rng(0).normal(size=(4, 5, 2)).astype(np.float32)
    model = keras.Sequential([*layers, keras.layers.GRU(3), keras.layers.Dense(1)])
    variables = model.trainable_variables
    direction = [tf.ones_like(v) for v in variables]

    def derivative(method):
        @tf.function(input_signature=[tf.TensorSpec([None, *x.shape[1:]], x.dtype)])
        def run(inputs):
            loss_fn = lambda: tf.reduce_mean(model(inputs) ** 2)  # noqa: E731
            return directional.directional_derivative(loss_fn, variables, direction, method=method)

        return run(tf.constant(x))

    with pytest.raises(directional.UnsafeDerivativeError) as info:
        derivative("forward")
    message = str(info.value)
    assert "\n" not in message and "tf.while_loop" in message and "unroll=True" in message
    # Reverse mode (what the message suggests) works on the same loss.
    _, slope = derivative("reverse")
    assert np.isfinite(float(slope))
