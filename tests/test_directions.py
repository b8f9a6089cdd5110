"""Tests for dirgrad_opt.directions: shapes, reproducibility from a seed, and the moments."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dirgrad_opt import directions, tree


def _variables(dtype=tf.float32):
    return {
        "kernel": tf.Variable(tf.zeros((3, 4), dtype)),
        "bias": tf.Variable(tf.zeros((4,), dtype)),
    }


@pytest.mark.parametrize("name", sorted(directions.SAMPLERS))
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_shapes_dtypes_and_reproducibility(name, dtype):
    variables = _variables(dtype)
    k = 3
    a = directions.sample(name, variables, seed=5, num_directions=k)
    b = directions.sample(name, variables, seed=5, num_directions=k)
    c = directions.sample(name, variables, seed=6, num_directions=k)
    tree.check_like(a, variables, leading_dims=1)
    for x, y in zip(tree.flatten(a), tree.flatten(b), strict=True):
        assert np.array_equal(x.numpy(), y.numpy())
    assert not np.allclose(tree.flatten(a)[0].numpy(), tree.flatten(c)[0].numpy())
    # Graph mode regenerates the identical direction from the same seed.
    g = tf.function(lambda s: directions.sample(name, variables, s, k))(tf.constant([5, 0]))
    for x, y in zip(tree.flatten(a), tree.flatten(g), strict=True):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["gaussian", "rademacher", "unit_sphere"])
def test_single_direction_has_variable_shapes(name):
    variables = _variables()
    v = directions.sample(name, variables, seed=1)
    tree.check_like(v, variables)


def test_unit_sphere_and_orthogonal_geometry():
    variables = _variables(tf.float64)
    s = directions.unit_sphere(variables, seed=2, num_directions=4)
    flat = np.concatenate([x.numpy().reshape(4, -1) for x in tree.flatten(s)], axis=1)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 1.0, rtol=1e-12)
    q = directions.orthogonal(variables, seed=2, num_directions=5)
    flat = np.concatenate([x.numpy().reshape(5, -1) for x in tree.flatten(q)], axis=1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(5), atol=1e-12)
    r = directions.rademacher(variables, seed=2)
    assert set(np.unique(np.concatenate([x.numpy().ravel() for x in tree.flatten(r)]))) <= {-1, 1}


@pytest.mark.parametrize("name", sorted(set(directions.SAMPLERS) - {"orthogonal"}))
def test_second_moment_matches_documented_value(name):
    """E[v vᵀ] = s·I: the empirical second moment over many draws matches s within noise.

    (Orthogonal frames: the next test, with K < n.)
    """
    variables = [tf.Variable(tf.zeros((4,), tf.float64))]
    n, draws = 4, 4000
    v = directions.sample(name, variables, seed=[0, 7], num_directions=draws)[0].numpy()
    moment = v.T @ v / draws
    s = directions.second_moment(name, variables)
    np.testing.assert_allclose(moment, s * np.eye(n), atol=0.1 * s)


def test_orthogonal_frame_second_moment_with_fewer_directions_than_dimensions():
    """K = 2 < n = 6 orthonormal directions: E[Σ_k v_k v_kᵀ]/K = I/n (with K = n it holds for
    any frame). 1 500 frames: every entry within 0.1·(1/n). Mutant killed: a frame that
    ignores the seed (the same K directions every draw)."""
    variables = [tf.Variable(tf.zeros((2, 3), tf.float64))]  # n = 6, two axes
    n, k, frames = 6, 2, 1500

    @tf.function
    def moment_sum():
        def body(i, acc):
            v = directions.orthogonal(variables, tf.stack([i, tf.constant(11, tf.int64)]), k)[0]
            flat = tf.reshape(v, [k, n])
            return i + 1, acc + tf.matmul(flat, flat, transpose_a=True)

        _, acc = tf.while_loop(
            lambda i, acc: i < frames,
            body,
            (tf.constant(0, tf.int64), tf.zeros([n, n], tf.float64)),
        )
        return acc

    moment = moment_sum().numpy() / (frames * k)
    s = directions.second_moment("orthogonal", variables)
    assert s == pytest.approx(1.0 / n)
    np.testing.assert_allclose(moment, s * np.eye(n), atol=0.1 * s)


def test_keras_variables_and_seed_folding():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    v = directions.gaussian(layer.trainable_variables, directions.make_seed(3, 10))
    w = directions.gaussian(layer.trainable_variables, directions.make_seed(3, 11))
    tree.check_like(v, layer.trainable_variables)
    assert not np.allclose(v[0].numpy(), w[0].numpy())
    same = directions.gaussian(layer.trainable_variables, directions.make_seed(3, 10))
    assert np.array_equal(v[0].numpy(), same[0].numpy())


def test_bad_arguments():
    variables = _variables()
    with pytest.raises(ValueError, match="unknown direction distribution"):
        directions.get("cauchy")
    with pytest.raises(ValueError, match="exceeds the dimension"):
        directions.orthogonal(variables, seed=0, num_directions=17)
    with pytest.raises(ValueError, match="num_directions"):
        directions.orthogonal(variables, seed=0, num_directions=None)
    with pytest.raises(ValueError, match="num_directions must be >= 1"):
        directions.gaussian(variables, seed=0, num_directions=0)
    with pytest.raises(ValueError, match="seed"):
        directions.gaussian(variables, seed=1.5)
    with pytest.raises(ValueError, match="shape"):
        directions.gaussian(variables, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="floating"):
        directions.gaussian([tf.Variable([1, 2])], seed=0)
    with pytest.raises(ValueError, match="empty"):
        directions.gaussian([], seed=0)
