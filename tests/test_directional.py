"""Tests for dirgrad_opt.directional: every method against each other, finite differences and an
independent autodiff system (HIPS autograd on NumPy), in float32/float64, eager and graph mode."""

import autograd
import autograd.numpy as anp
import keras
import numpy as np
import pytest
import tensorflow as tf

from dirgrad_opt import directional, directions, tree

EXACT = ("forward", "reverse", "auto")
FD = ("central_difference", "forward_difference")


# ----------------------------------------------------------------------------- problems


def _mlp(dtype, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((6,), dtype=dtype),
            keras.layers.Dense(8, activation="tanh", dtype=dtype, name="hidden"),
            keras.layers.Dense(3, dtype=dtype, name="out"),
        ]
    )
    x = tf.random.stateless_normal((16, 6), seed=[1, 2], dtype=dtype)
    y = tf.random.stateless_uniform((16,), seed=[3, 4], minval=0, maxval=3, dtype=tf.int32)

    def loss_fn():
        logits = model(x)
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        )

    return model, loss_fn, x, y


def _cnn(dtype, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), dtype=dtype),
            keras.layers.Conv2D(4, 3, activation="tanh", dtype=dtype),
            keras.layers.MaxPool2D(dtype=dtype),
            keras.layers.Flatten(dtype=dtype),
            keras.layers.Dense(3, dtype=dtype),
        ]
    )
    x = tf.random.stateless_normal((8, 8, 8, 1), seed=[5, 6], dtype=dtype)
    y = tf.random.stateless_uniform((8,), seed=[7, 8], minval=0, maxval=3, dtype=tf.int32)

    def loss_fn():
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True)
        )

    return model, loss_fn


def _autograd_mlp_loss(params, x, y):
    """The same MLP and loss as _mlp, written in NumPy for HIPS autograd."""
    w1, b1, w2, b2 = params
    h = anp.tanh(x @ w1 + b1)
    logits = h @ w2 + b2
    shifted = logits - anp.max(logits, axis=1, keepdims=True)
    log_probs = shifted - anp.log(anp.sum(anp.exp(shifted), axis=1, keepdims=True))
    return -anp.mean(log_probs[np.arange(len(y)), y])


def _modes():
    return {
        "eager": lambda f: f,
        "graph": lambda f: tf.function(f),
    }


# ----------------------------------------------------------------------------- the classics


def test_linear_regression_weight():
    """d/dt L(w + t v) for L(w) = mean((x w - y)²): 2 mean(x v (x w - y))."""
    x = tf.constant([[1.0], [2.0], [3.0]])
    y = tf.constant([[2.0], [4.0], [7.0]])
    w = tf.Variable([[1.5]], name="w")
    v = tf.constant([[1.0]])

    def loss_fn():
        return tf.reduce_mean((x @ w - y) ** 2)

    expected = float(tf.reduce_mean(2 * (x @ v) * (x @ w - y)))
    for method in directional.METHODS:
        loss, d = directional.directional_derivative(loss_fn, [w], [v], method=method)
        assert float(loss) == pytest.approx(float(loss_fn()))
        assert float(d) == pytest.approx(expected, rel=1e-3), method


def test_article_mistake_raises_instead_of_broadcasting():
    """The classic article passes a (2, 1) direction for a (1, 1) weight; we refuse."""
    layer = keras.layers.Dense(1, name="dense")
    layer.build((None, 1))
    x = tf.constant([[1.0], [2.0]])

    def loss_fn():
        return tf.reduce_mean(layer(x) ** 2)

    bad = [tf.ones((2, 1)), tf.zeros((1,))]
    for method in directional.METHODS:
        with pytest.raises(ValueError, match=r"\(2, 1\).*\(1, 1\)"):
            directional.directional_derivative(loss_fn, layer.trainable_variables, bad, method)


def test_mlp_first_weight_matrix_only():
    model, loss_fn, x, y = _mlp(tf.float64)
    kernel = model.get_layer("hidden").kernel
    v = tf.random.stateless_normal(kernel.shape, seed=[0, 1], dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = loss_fn()
    expected = float(tf.reduce_sum(tape.gradient(loss, kernel) * v))
    for method in directional.METHODS:
        _, d = directional.directional_derivative(loss_fn, [kernel], [v], method=method)
        rel = 1e-5 if method == "forward_difference" else 1e-7  # O(h) vs O(h²) or exact
        assert float(d) == pytest.approx(expected, rel=rel), method


def test_several_tensors_per_tensor_and_joint_direction():
    model, loss_fn, _, _ = _mlp(tf.float64)
    variables = model.trainable_variables
    joint = directions.gaussian(variables, seed=3)
    _, d_joint = directional.directional_derivative(loss_fn, variables, joint, "reverse")
    # One direction per tensor (zeros elsewhere): the joint derivative is their sum.
    parts = []
    for i in range(len(variables)):
        _, d_i = directional.directional_derivative(loss_fn, [variables[i]], [joint[i]], "forward")
        parts.append(float(d_i))
    assert sum(parts) == pytest.approx(float(d_joint), rel=1e-10)
    # ...and the same per-tensor numbers come out of one batched call with block directions.
    batched = [
        tf.stack([joint[i] if j == i else tf.zeros_like(joint[i]) for j in range(len(variables))])
        for i in range(len(variables))
    ]
    _, d_k = directional.directional_derivatives(loss_fn, variables, batched, "reverse")
    np.testing.assert_allclose(d_k.numpy(), parts, rtol=1e-10)


# ----------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_mlp_all_methods_agree(dtype, mode):
    model, loss_fn, _, _ = _mlp(dtype)
    variables = model.trainable_variables
    v = directions.gaussian(variables, seed=7)
    results = {}
    for method in directional.METHODS:
        fn = _modes()[mode](
            lambda m=method: directional.directional_derivative(loss_fn, variables, v, m)
        )
        loss, d = fn()
        assert d.dtype == dtype and d.shape == ()
        results[method] = float(d)
    ref = results["reverse"]
    exact_tol = 1e-12 if dtype == tf.float64 else 1e-5
    fd_tol = {tf.float64: (1e-7, 1e-5), tf.float32: (2e-2, 5e-2)}[dtype]
    for method in EXACT:
        assert results[method] == pytest.approx(ref, rel=exact_tol, abs=exact_tol), method
    assert results["central_difference"] == pytest.approx(ref, rel=fd_tol[0], abs=1e-6)
    assert results["forward_difference"] == pytest.approx(ref, rel=fd_tol[1], abs=1e-4)


def test_matches_independent_autodiff_to_float64_precision():
    model, loss_fn, x, y = _mlp(tf.float64)
    variables = model.trainable_variables  # hidden/kernel, hidden/bias, out/kernel, out/bias
    params = [v.numpy() for v in variables]
    v = [d.numpy() for d in directions.gaussian(variables, seed=11)]
    grads = autograd.grad(_autograd_mlp_loss)(params, x.numpy(), y.numpy())
    expected = sum(float(np.sum(g * d)) for g, d in zip(grads, v, strict=True))
    assert float(loss_fn()) == pytest.approx(
        _autograd_mlp_loss(params, x.numpy(), y.numpy()), rel=1e-14
    )
    for method in ("forward", "reverse", "auto"):
        _, d = directional.directional_derivative(loss_fn, variables, v, method)
        assert float(d) == pytest.approx(expected, rel=1e-12, abs=1e-14), method
    _, d = directional.directional_derivative(loss_fn, variables, v, "central_difference")
    assert float(d) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_cnn_all_methods_agree(dtype, mode):
    model, loss_fn = _cnn(dtype)
    variables = model.trainable_variables
    v = directions.gaussian(variables, seed=2)
    results = {}
    for method in directional.METHODS:
        fn = _modes()[mode](
            lambda m=method: directional.directional_derivative(loss_fn, variables, v, m)
        )
        results[method] = float(fn()[1])
    ref = results["reverse"]
    tol = 1e-10 if dtype == tf.float64 else 1e-4
    for method in EXACT:
        assert results[method] == pytest.approx(ref, rel=tol, abs=tol), method
    if dtype == tf.float64:
        assert results["central_difference"] == pytest.approx(ref, rel=1e-5)
    else:
        # Max-pooling is piecewise: in float32 the default step (~5e-3·(1+‖w‖)) crosses kinks,
        # so only the sign and rough size are meaningful. Exact methods are checked above.
        assert results["central_difference"] == pytest.approx(ref, rel=0.25)


@pytest.mark.parametrize("method", directional.METHODS)
def test_batched_equals_looped(method):
    model, loss_fn, _, _ = _mlp(tf.float64)
    variables = model.trainable_variables
    k = 5
    vs = directions.gaussian(variables, seed=4, num_directions=k)
    loss, d_k = directional.directional_derivatives(loss_fn, variables, vs, method)
    assert d_k.shape == (k,)
    looped = [
        float(
            directional.directional_derivative(
                loss_fn, variables, [leaf[i] for leaf in vs], method
            )[1]
        )
        for i in range(k)
    ]
    np.testing.assert_allclose(d_k.numpy(), looped, rtol=1e-9)
    assert float(loss) == pytest.approx(float(loss_fn()))


def test_batched_in_graph_mode_traces_once():
    model, loss_fn, _, _ = _mlp(tf.float32)
    variables = model.trainable_variables

    @tf.function
    def fn(seed):
        vs = directions.rademacher(variables, seed, num_directions=3)
        return directional.directional_derivatives(loss_fn, variables, vs)

    a = fn(tf.constant([1, 2], tf.int64))[1]
    b = fn(tf.constant([1, 3], tf.int64))[1]
    assert fn.experimental_get_tracing_count() == 1
    assert not np.allclose(a.numpy(), b.numpy())


# ----------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("method", FD)
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_finite_differences_restore_weights_bit_exactly(method, mode):
    model, loss_fn, _, _ = _mlp(tf.float32)
    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    vs = directions.gaussian(variables, seed=9, num_directions=3)
    fn = _modes()[mode](lambda: directional.directional_derivatives(loss_fn, variables, vs, method))
    for _ in range(3):
        fn()
    for b, v in zip(before, variables, strict=True):
        assert np.array_equal(b, v.numpy()), v.path  # bit-identical, not merely close


def test_finite_difference_step_scales_and_overrides():
    w = tf.Variable(tf.fill([4], tf.constant(100.0, tf.float64)))
    v = [tf.fill([4], tf.constant(2.0, tf.float64))]
    h64 = float(directional.default_fd_step([w], v, "central_difference"))
    eps = np.finfo(np.float64).eps
    assert h64 == pytest.approx(eps ** (1 / 3) * (1 + 200.0) / 4.0)
    w32 = tf.Variable(tf.fill([4], 100.0))
    h32 = float(directional.default_fd_step([w32], [tf.fill([4], 2.0)], "forward_difference"))
    assert h32 == pytest.approx(np.finfo(np.float32).eps ** 0.5 * 201.0 / 4.0, rel=1e-5)

    # A user step is honoured: on a cubic, forward differences carry the O(h) error 3 w h v².
    x = tf.Variable([1.0], dtype=tf.float64)

    def cubic():
        return tf.reduce_sum(x**3)

    _, d = directional.directional_derivative(
        cubic, [x], [tf.constant([1.0], tf.float64)], "forward_difference", step=0.1
    )
    assert float(d) == pytest.approx(((1.1**3) - 1.0) / 0.1, rel=1e-12)


# ----------------------------------------------------------------------------- curvature


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("method", ["auto", "forward", "reverse"])
def test_curvature_on_analytic_quadratic(dtype, method):
    """L(w) = ½ wᵀAw + bᵀw: ∇L·v = (Aw + b)·v and vᵀHv = vᵀAv exactly."""
    rng = np.random.default_rng(0)
    m = rng.normal(size=(5, 5))
    a = (m @ m.T + 5 * np.eye(5)).astype(dtype.as_numpy_dtype)
    b = rng.normal(size=5).astype(dtype.as_numpy_dtype)
    w0 = rng.normal(size=5).astype(dtype.as_numpy_dtype)
    v = rng.normal(size=5).astype(dtype.as_numpy_dtype)
    w = tf.Variable(w0)
    at, bt = tf.constant(a), tf.constant(b)

    def loss_fn():
        return 0.5 * tf.tensordot(w, tf.linalg.matvec(at, w), 1) + tf.tensordot(bt, w, 1)

    loss, d, curv = directional.directional_curvature(loss_fn, [w], [v], method)
    rel = 1e-12 if dtype == tf.float64 else 1e-5
    assert float(d) == pytest.approx(float((a @ w0 + b) @ v), rel=rel)
    assert float(curv) == pytest.approx(float(v @ a @ v), rel=rel)
    assert float(loss) == pytest.approx(float(0.5 * w0 @ a @ w0 + b @ w0), rel=rel)


def test_curvature_on_mlp_graph_mode_matches_finite_difference_of_derivative():
    model, loss_fn, _, _ = _mlp(tf.float64)
    variables = model.trainable_variables
    v = directions.gaussian(variables, seed=5)
    _, d, curv = tf.function(lambda: directional.directional_curvature(loss_fn, variables, v))()
    h = 1e-5
    before = [x.numpy() for x in variables]
    derivs = []
    for sign in (1, -1):
        for var, w0, vi in zip(variables, before, v, strict=True):
            var.assign(w0 + sign * h * vi.numpy())
        derivs.append(
            float(directional.directional_derivative(loss_fn, variables, v, "reverse")[1])
        )
    for var, w0 in zip(variables, before, strict=True):
        var.assign(w0)
    assert float(curv) == pytest.approx((derivs[0] - derivs[1]) / (2 * h), rel=1e-6)


# ----------------------------------------------------------------------------- XLA trap


def _maxpool_jvp(jit_compile):
    keras.utils.set_random_seed(0)
    conv, pool = keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPool2D()
    x = tf.random.stateless_normal((32, 28, 28, 1), seed=[0, 0])
    conv.build(x.shape)
    tangents = [
        tf.random.stateless_normal(v.shape, seed=[1, i])
        for i, v in enumerate(conv.trainable_variables)
    ]

    def jvp():
        with tf.autodiff.ForwardAccumulator(
            [v.value for v in conv.trainable_variables], tangents
        ) as acc:
            out = pool(conv(x))
        return acc.jvp(out)

    return jvp().numpy(), tf.function(jvp, jit_compile=jit_compile)().numpy()


def test_tf_still_has_the_xla_maxpool_jvp_bug():
    """Evidence for the guard below. If this fails, TF fixed the bug: the guard can be relaxed."""
    eager, xla = _maxpool_jvp(jit_compile=True)
    off = np.mean(np.abs(eager - xla) > 1e-4 * (1 + np.abs(eager)))
    assert off > 1e-4, "XLA max-pool JVP now matches eager: revisit _XLA_UNSAFE_JVP_OPS"
    eager, graph = _maxpool_jvp(jit_compile=False)
    np.testing.assert_allclose(eager, graph, rtol=1e-5, atol=1e-5)


def test_forward_mode_refuses_maxpool_under_xla_and_auto_stays_correct():
    model, loss_fn = _cnn(tf.float32)
    variables = model.trainable_variables
    v = directions.gaussian(variables, seed=1)
    ref = float(directional.directional_derivative(loss_fn, variables, v, "reverse")[1])
    xla = tf.function(jit_compile=True)
    with pytest.raises(directional.UnsafeDerivativeError, match="MaxPool"):
        xla(lambda: directional.directional_derivative(loss_fn, variables, v, "forward"))()
    with pytest.raises(directional.UnsafeDerivativeError):
        xla(lambda: directional.directional_curvature(loss_fn, variables, v, "forward"))()
    d = float(xla(lambda: directional.directional_derivative(loss_fn, variables, v, "auto"))()[1])
    assert d == pytest.approx(ref, rel=1e-4)
    for method in ("auto", "reverse"):  # reverse-over-reverse is wrong there too (measured)
        with pytest.raises(directional.UnsafeDerivativeError, match="vᵀHv"):
            xla(lambda m=method: directional.directional_curvature(loss_fn, variables, v, m))()
    # Without XLA both curvature methods agree through max-pooling.
    _, _, c_fwd = directional.directional_curvature(loss_fn, variables, v, "forward")
    _, _, c_rev = tf.function(
        lambda: directional.directional_curvature(loss_fn, variables, v, "reverse")
    )()
    assert float(c_fwd) == pytest.approx(float(c_rev), rel=1e-4)
    # Without XLA forward mode through max-pooling is right and allowed.
    d3 = float(
        tf.function(lambda: directional.directional_derivative(loss_fn, variables, v, "forward"))()[
            1
        ]
    )
    assert d3 == pytest.approx(ref, rel=1e-4)


def test_mlp_forward_mode_allowed_under_xla():
    model, loss_fn, _, _ = _mlp(tf.float32)
    variables = model.trainable_variables
    v = directions.gaussian(variables, seed=1)
    ref = float(directional.directional_derivative(loss_fn, variables, v, "reverse")[1])
    fn = tf.function(
        lambda: directional.directional_derivative(loss_fn, variables, v, "forward"),
        jit_compile=True,
    )
    assert float(fn()[1]) == pytest.approx(ref, rel=1e-4)


# ----------------------------------------------------------------------------- auto


def test_choose_method_rules():
    assert directional.choose_method(1) == "reverse"
    assert directional.choose_method(16) == "reverse"
    assert directional.choose_method(1, reverse_available=False) == "forward"
    assert (
        directional.choose_method(4, reverse_available=False, forward_safe=False)
        == "central_difference"
    )
    with pytest.raises(ValueError):
        directional.choose_method(0)


def test_auto_falls_back_to_finite_differences_when_reverse_mode_is_unavailable():
    """An op with no registered gradient makes tape.gradient raise LookupError; auto recovers."""
    w = tf.Variable([0.3, -0.2], dtype=tf.float64)

    @tf.custom_gradient
    def no_gradient_sin(x):
        def grad(dy):
            raise LookupError("No gradient defined for operation 'MySin'")

        return tf.sin(x), grad

    def loss_fn():
        return tf.reduce_sum(no_gradient_sin(w))

    with pytest.raises(LookupError):
        directional.directional_derivative(loss_fn, [w], [tf.ones(2, tf.float64)], "reverse")
    before = w.numpy().copy()
    loss, d = directional.directional_derivative(loss_fn, [w], [tf.ones(2, tf.float64)], "auto")
    assert float(d) == pytest.approx(float(np.sum(np.cos([0.3, -0.2]))), rel=1e-8)
    assert np.array_equal(w.numpy(), before)


def test_cost_table():
    assert directional.cost("reverse", 16) == directional.Cost(1, 1, 0)
    assert directional.cost("forward", 4) == directional.Cost(4, 0, 4)
    assert directional.cost("central_difference", 2) == directional.Cost(5, 0, 0)
    assert directional.cost("forward_difference", 2) == directional.Cost(3, 0, 0)
    with pytest.raises(ValueError, match="unknown method"):
        directional.cost("auto")


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_get_clear_errors():
    w = tf.Variable(tf.ones((2, 2)), name="w")

    def loss_fn():
        return tf.reduce_sum(w**2)

    with pytest.raises(ValueError, match="unknown method 'fwd'"):
        directional.directional_derivative(loss_fn, [w], [tf.ones((2, 2))], "fwd")
    with pytest.raises(ValueError, match="structure"):
        directional.directional_derivative(loss_fn, [w], [tf.ones((2, 2)), tf.ones(2)])
    with pytest.raises(ValueError, match="int32"):
        directional.directional_derivative(loss_fn, [w], [tf.ones((2, 2), tf.int32)])
    with pytest.raises(ValueError, match="float64"):
        directional.directional_derivative(loss_fn, [w], [tf.ones((2, 2), tf.float64)])
    with pytest.raises(ValueError, match="scalar"):
        directional.directional_derivative(lambda: w * 2.0, [w], [tf.ones((2, 2))])
    with pytest.raises(ValueError, match="callable"):
        directional.directional_derivative(3.0, [w], [tf.ones((2, 2))])
    with pytest.raises(ValueError, match="empty"):
        directional.directional_derivative(loss_fn, [], [])
    with pytest.raises(ValueError, match="not a tf.Variable"):
        directional.directional_derivative(loss_fn, [tf.ones((2, 2))], [tf.ones((2, 2))])
    with pytest.raises(ValueError, match="dtype int32"):
        directional.directional_derivative(loss_fn, [tf.Variable([1, 2])], [tf.ones(2)])
    with pytest.raises(ValueError, match="leading batch"):
        directional.directional_derivatives(loss_fn, [w], [tf.ones((2, 2))])


@pytest.mark.parametrize("method", directional.METHODS)
def test_unconnected_variable_gives_zero_not_none(method):
    used = tf.Variable([1.0, 2.0])
    unused = tf.Variable([3.0])

    def loss_fn():
        return tf.reduce_sum(used**2)

    _, d = directional.directional_derivative(loss_fn, [unused], [tf.ones(1)], method)
    assert d is not None and float(d) == 0.0
    _, d_both = directional.directional_derivative(
        loss_fn,
        {"used": used, "unused": unused},
        {"used": tf.ones(2), "unused": tf.ones(1)},
        method,
    )
    assert float(d_both) == pytest.approx(6.0, rel=1e-2)


def test_numpy_directions_are_accepted():
    w = tf.Variable([1.0, 2.0])
    _, d = directional.directional_derivative(
        lambda: tf.reduce_sum(w**2), [w], [np.array([1.0, 0.0])]
    )
    assert float(d) == pytest.approx(2.0)


def test_nan_loss_propagates_and_weights_survive():
    w = tf.Variable([1.0, -1.0])
    before = w.numpy().copy()

    def loss_fn():
        return tf.reduce_sum(tf.math.log(w))  # log(-1) = NaN

    for method in directional.METHODS:
        loss, d = directional.directional_derivative(loss_fn, [w], [tf.ones(2)], method)
        assert np.isnan(float(loss))
        assert np.array_equal(w.numpy(), before)


def test_tree_utils_reexported_consistently():
    assert tree.flatten({"a": 1, "b": 2}) == [1, 2]


def test_gradient_curvature_on_analytic_quadratic():
    """L = ½ wᵀAw + bᵀw: g = Aw + b and gᵀHg = gᵀAg."""
    rng = np.random.default_rng(1)
    m = rng.normal(size=(4, 4))
    a = m @ m.T + np.eye(4)
    b = rng.normal(size=4)
    w0 = rng.normal(size=4)
    w = tf.Variable(w0)
    at, bt = tf.constant(a), tf.constant(b)

    def loss_fn():
        return 0.5 * tf.tensordot(w, tf.linalg.matvec(at, w), 1) + tf.tensordot(bt, w, 1)

    loss, grads, curv = tf.function(lambda: directional.gradient_curvature(loss_fn, [w]))()
    g = a @ w0 + b
    np.testing.assert_allclose(grads[0].numpy(), g, rtol=1e-12)
    assert float(curv) == pytest.approx(float(g @ a @ g), rel=1e-12)


@pytest.mark.parametrize("method", FD)
def test_finite_differences_restore_weights_when_the_loss_raises(method):
    w = tf.Variable([1.0, 2.0])
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 2:  # the first perturbed evaluation
            raise RuntimeError("data pipeline hiccup")
        return tf.reduce_sum(w**2)

    with pytest.raises(RuntimeError, match="hiccup"):
        directional.directional_derivative(flaky, [w], [tf.ones(2)], method)
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
