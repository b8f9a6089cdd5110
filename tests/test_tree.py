"""Tests for dirgrad_opt.tree: leafwise arithmetic and the check_like guard."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dirgrad_opt import tree


def test_arithmetic_over_nests():
    x = {"a": tf.constant([1.0, 2.0]), "b": [tf.constant([[3.0]])]}
    y = {"a": tf.constant([4.0, 5.0]), "b": [tf.constant([[6.0]])]}
    assert float(tree.dot(x, y)) == pytest.approx(1 * 4 + 2 * 5 + 3 * 6)
    assert float(tree.norm(x)) == pytest.approx(np.sqrt(1 + 4 + 9))
    z = tree.axpy(2.0, x, y)
    np.testing.assert_allclose(z["a"].numpy(), [6.0, 9.0])
    np.testing.assert_allclose(z["b"][0].numpy(), [[12.0]])
    np.testing.assert_allclose(tree.scale(-1.0, x)["a"].numpy(), [-1.0, -2.0])
    np.testing.assert_allclose(tree.sub(y, x)["b"][0].numpy(), [[3.0]])
    zeros = tree.zeros_like(x)
    assert float(tree.norm(zeros)) == 0.0 and zeros["b"][0].shape == (1, 1)
    assert tree.num_elements(x) == 3


def test_variables_and_keras_variables_are_leaves():
    v = tf.Variable([1.0, 2.0])
    k = keras.Variable(np.array([3.0], np.float32))
    assert float(tree.dot([v, k], [v, k])) == pytest.approx(14.0)
    snap = tree.as_tensors([v, k])
    tree.assign([v, k], tree.scale(2.0, [v, k]))
    np.testing.assert_allclose(v.numpy(), [2.0, 4.0])
    np.testing.assert_allclose(snap[0].numpy(), [1.0, 2.0])  # the snapshot did not move


def test_check_like_names_leaf_and_both_shapes():
    layer = keras.layers.Dense(1, name="dense")
    layer.build((None, 1))
    expected = r"'dense/kernel' has shape \(2, 1\); variable has shape \(1, 1\)"
    with pytest.raises(ValueError, match=expected):
        tree.check_like([tf.zeros((2, 1)), tf.zeros((1,))], layer.trainable_variables)


def test_check_like_structure_dtype_and_leading_axis():
    ref = [tf.Variable(tf.zeros((2,))), tf.Variable(tf.zeros((3,)))]
    with pytest.raises(ValueError, match="structure"):
        tree.check_like([tf.zeros((2,))], ref)
    with pytest.raises(ValueError, match="int32"):
        tree.check_like([tf.zeros((2,), tf.int32), tf.zeros((3,))], ref)
    with pytest.raises(ValueError, match="float64.*float32"):
        tree.check_like([tf.zeros((2,), tf.float64), tf.zeros((3,))], ref)
    with pytest.raises(ValueError, match="integer|int32|floating"):
        tree.check_like([tf.zeros((2,))], [tf.Variable([1, 2])])
    tree.check_like([tf.zeros((4, 2)), tf.zeros((4, 3))], ref, leading_dims=1)
    with pytest.raises(ValueError, match="leading size"):
        tree.check_like([tf.zeros((4, 2)), tf.zeros((5, 3))], ref, leading_dims=1)
    with pytest.raises(ValueError, match="leading batch"):
        tree.check_like([tf.zeros((2,)), tf.zeros((3,))], ref, leading_dims=1)


def test_leaf_names_fall_back_to_nest_paths():
    names = tree.leaf_names({"w": tf.zeros(()), "b": [tf.zeros(())]})
    assert names == ["['b'][0]", "['w']"]
