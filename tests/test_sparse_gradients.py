"""Closure optimizers on a model with an embedding, whose gradient TF returns as IndexedSlices."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dirgrad_opt.optimizers import GradientOnlyLineSearch, PolyakStep


def _embedding_problem():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((3,), dtype="int32"), keras.layers.Embedding(7, 4),
         keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)]
    )  # fmt: skip
    x = tf.constant(np.random.default_rng(0).integers(0, 7, (8, 3)), tf.int32)
    y = tf.constant([0, 1] * 4)

    def loss_fn():
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x))
        )

    return model, loss_fn


@pytest.mark.parametrize("make", [GradientOnlyLineSearch, PolyakStep])
def test_a_sparse_embedding_gradient_takes_a_descent_step(make):
    model, loss_fn = _embedding_problem()
    with tf.GradientTape() as tape:
        loss0 = loss_fn()
    assert isinstance(tape.gradient(loss0, model.trainable_variables)[0], tf.IndexedSlices)
    opt = make()
    step = tf.function(lambda: opt.minimize(loss_fn, model.trainable_variables))
    for _ in range(3):
        step()
    assert float(loss_fn()) < float(loss0)
