"""Tests of the random-direction optimizers (forward gradient, zeroth order, random line search)."""

from __future__ import annotations

import copy
import functools

import keras
import numpy as np
import problems
import pytest
import tensorflow as tf

from dirgrad_opt import directional, directions
from dirgrad_opt.models import quadratic_problem
from dirgrad_opt.optimizers import LowRankZerothOrder, ModelClosure, ZOAdam
from dirgrad_opt.optimizers.random_direction import (
    ForwardGradient,
    RandomDirectionLineSearch,
    ZerothOrder,
    estimator_diagnostics,
    forward_gradient_estimate,
)

# ----------------------------------------------------------------------------- helpers


def _quadratic(dim: int = 20, kappa: float = 10.0, dtype: tf.DType = tf.float32):
    """``f(w) = ½ (w − w*)ᵀ A (w − w*)`` (eigenvalues log-spaced in [1, κ]), w₀ = 0, f* = 0."""
    a, w_star = quadratic_problem(dim, kappa, seed=0)
    a, w_star = tf.constant(a, dtype), tf.constant(w_star, dtype)
    w = tf.Variable(tf.zeros([dim], dtype))

    def loss_fn() -> tf.Tensor:
        r = w - w_star
        return 0.5 * tf.tensordot(r, tf.linalg.matvec(a, r), 1)

    def gradient() -> tf.Tensor:
        return tf.linalg.matvec(a, w - w_star)

    return w, loss_fn, gradient


def _run(opt, loss_fn, variables, steps: int, jit_compile: bool = False):
    """``steps`` optimizer steps in one ``tf.function`` (a ``tf.while_loop``); the last info."""
    opt.build(variables)

    @tf.function(jit_compile=jit_compile)
    def loop():
        info = opt.minimize(loss_fn, variables)
        for _ in tf.range(steps - 1):
            info = opt.minimize(loss_fn, variables)
        return info

    return loop()


@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def _values(variables) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


# ----------------------------------------------------------------------------- convergence

QUADRATIC_OPTIMIZERS = {
    "forward_gradient": lambda: ForwardGradient(learning_rate=0.004),
    "forward_gradient_k4_orthogonal": lambda: ForwardGradient(
        learning_rate=0.015, num_directions=4, orthogonal=True, distribution="unit_sphere"
    ),
    "forward_gradient_central_difference": lambda: ForwardGradient(
        learning_rate=0.004, method="central_difference", distribution="rademacher"
    ),
    "zeroth_order": lambda: ZerothOrder(learning_rate=0.004),
    "zeroth_order_one_sided_in_place": lambda: ZerothOrder(
        learning_rate=0.004, one_sided=True, in_place=True
    ),
    "random_direction_line_search": lambda: RandomDirectionLineSearch(),
}


@pytest.mark.parametrize("name", sorted(QUADRATIC_OPTIMIZERS))
def test_quadratic_reduced_100x_within_3000_steps(name):
    """The issue's criterion: κ = 10, 20-dim quadratic reduced 100× within 3000 steps."""
    w, loss_fn, _ = _quadratic()
    f0 = float(loss_fn())
    info = _run(QUADRATIC_OPTIMIZERS[name](), loss_fn, [w], 3000)
    assert float(loss_fn()) < f0 / 100
    assert int(info["backward_passes"]) == 0


DIGITS_OPTIMIZERS = {
    "forward_gradient": lambda: ForwardGradient(learning_rate=0.03, num_directions=4),
    "forward_gradient_adam": lambda: ForwardGradient(
        inner=keras.optimizers.Adam(0.01), num_directions=4
    ),
    "zeroth_order": lambda: ZerothOrder(learning_rate=0.03, num_directions=4),
    "random_direction_line_search": lambda: RandomDirectionLineSearch(),
}


@pytest.mark.parametrize("name", sorted(DIGITS_OPTIMIZERS))
def test_digits_logistic_regression_learns(name):
    """300 full-batch steps of logistic regression on sklearn digits: held-out accuracy ≥ 75 %."""
    (x, y), (xt, yt) = _digits()
    x, y = tf.constant(x), tf.constant(y)
    kernel = tf.Variable(tf.zeros([64, 10]))
    bias = tf.Variable(tf.zeros([10]))

    def loss_fn():
        logits = x @ kernel + bias
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    f0 = float(loss_fn())  # log 10
    _run(DIGITS_OPTIMIZERS[name](), loss_fn, [kernel, bias], 300)
    predictions = np.argmax(xt @ kernel.numpy() + bias.numpy(), axis=1)
    accuracy = float(np.mean(predictions == yt))
    assert float(loss_fn()) < 0.65 * f0
    assert accuracy > 0.75  # chance: 0.1


def test_line_search_is_stable_on_mini_batches():
    """A small relu MLP on digits, 40 epochs of mini-batches of 100: the full loss keeps falling.

    (With c = 0.1, which lets the search overshoot the batch's line minimum, the loss stalls
    above 1.2 and then climbs; the default c = 0.5 never overshoots on a quadratic.)
    """
    (x, y), _ = _digits()
    x, y = tf.constant(x), tf.constant(y)
    rng = np.random.default_rng(0)
    variables = [
        tf.Variable(rng.standard_normal((64, 32)).astype(np.float32) / 8.0),
        tf.Variable(tf.zeros([32])),
        tf.Variable((rng.standard_normal((32, 10)) / np.sqrt(32.0)).astype(np.float32)),
        tf.Variable(tf.zeros([10])),
    ]

    def loss_on(xb, yb):
        h = tf.nn.relu(xb @ variables[0] + variables[1])
        logits = h @ variables[2] + variables[3]
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))

    opt = RandomDirectionLineSearch()
    opt.build(variables)

    @tf.function
    def train(epochs: int) -> None:
        for step in tf.range(epochs * 14):
            i = (step % 14) * 100
            xb, yb = x[i : i + 100], y[i : i + 100]
            opt.minimize(lambda xb=xb, yb=yb: loss_on(xb, yb), variables)

    f0 = float(loss_on(x, y))
    train(20)
    f20 = float(loss_on(x, y))
    train(20)
    f40 = float(loss_on(x, y))
    assert f40 < f20 < f0
    assert f40 < 0.45 * f0


# ----------------------------------------------------------------------------- estimators


def _estimates(opt, loss_fn, w, samples: int) -> np.ndarray:
    """``samples`` gradient estimates ``g̃`` of ``opt`` at ``w₀``: run steps of size 1 from w₀."""
    w0 = tf.identity(w)
    opt.build([w])

    @tf.function
    def collect():
        out = tf.TensorArray(w.dtype, size=samples)
        for i in tf.range(samples):
            w.assign(w0)
            opt.minimize(loss_fn, [w])
            out = out.write(i, w0 - w)  # = η g̃ with η = 1
        return out.stack()

    result = collect().numpy()
    w.assign(w0)
    return result


def _assert_unbiased(samples: np.ndarray, gradient: np.ndarray) -> None:
    mean = samples.mean(axis=0)
    stderr = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    z = np.abs(mean - gradient) / stderr
    assert np.all(z < 4.0), f"max z-score {z.max():.2f}"
    # The test has power: the standard errors are small against the gradient itself.
    assert np.linalg.norm(stderr) < 0.15 * np.linalg.norm(gradient)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"distribution": "rademacher"},
        {"distribution": "unit_sphere", "num_directions": 3},
        {"orthogonal": True, "num_directions": 3},
        {"method": "central_difference", "num_directions": 2},
    ],
    ids=["gaussian", "rademacher", "sphere_k3", "orthogonal_k3", "central_difference"],
)
def test_forward_gradient_is_unbiased(kwargs):
    """Mean of 3000 estimates ≈ ∇L: every coordinate within 4 standard errors (fixed seed)."""
    rng = np.random.default_rng(0)  # logistic regression, 4 features, 3 classes: n = 15
    x = tf.constant(rng.standard_normal((16, 4)))
    y = tf.constant(rng.integers(0, 3, 16), tf.int32)
    flat = tf.Variable(0.5 * rng.standard_normal(15))

    def flat_loss():
        logits = x @ tf.reshape(flat[:12], [4, 3]) + flat[12:]
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    with tf.GradientTape() as tape:
        value = flat_loss()
    gradient = tape.gradient(value, flat).numpy()
    samples = _estimates(
        ForwardGradient(learning_rate=1.0, seed=3, **kwargs), flat_loss, flat, 3000
    )
    _assert_unbiased(samples, gradient)


def test_zeroth_order_is_unbiased_on_a_quadratic():
    """On a quadratic the two-point difference is exact, so SPSA's estimate is unbiased."""
    w, loss_fn, gradient_fn = _quadratic(dim=10, dtype=tf.float64)
    w.assign(tf.linspace(tf.constant(-1.0, tf.float64), 1.0, 10))
    gradient = gradient_fn().numpy()
    samples = _estimates(ZerothOrder(learning_rate=1.0, seed=5), loss_fn, w, 3000)
    _assert_unbiased(samples, gradient)


def test_forward_gradient_estimate_and_diagnostics_functions():
    g = [tf.constant([1.0, 2.0]), tf.constant([[3.0]])]
    v = [tf.constant([[1.0, 0.0], [0.0, 1.0]]), tf.constant([[[2.0]], [[1.0]]])]
    derivatives = tf.constant([1.0 + 6.0, 2.0 + 3.0])  # ∇L·v_k
    est = forward_gradient_estimate(derivatives, v, second_moment=1.0)
    np.testing.assert_allclose(est[0].numpy(), [3.5, 2.5])
    np.testing.assert_allclose(est[1].numpy(), [[9.5]])
    diag = estimator_diagnostics(g, g)
    assert float(diag["cosine"]) == pytest.approx(1.0)
    assert float(diag["norm_ratio"]) == pytest.approx(1.0)
    diag = estimator_diagnostics([-2.0 * x for x in g], g)
    assert float(diag["cosine"]) == pytest.approx(-1.0)
    assert float(diag["norm_ratio"]) == pytest.approx(2.0)
    assert np.isnan(float(estimator_diagnostics(g, [tf.zeros(2), tf.zeros((1,))])["cosine"]))


def test_orthogonal_full_frame_is_exact_and_diagnostics_say_so():
    """K = n orthonormal directions reconstruct ∇L exactly: cosine = norm ratio = 1."""
    w, loss_fn, gradient_fn = _quadratic(dim=6, dtype=tf.float64)
    opt = ForwardGradient(learning_rate=0.1, num_directions=6, orthogonal=True, diagnostics=True)
    expected = w - 0.1 * gradient_fn()
    g_norm2 = float(tf.reduce_sum(gradient_fn() ** 2))
    info = opt.minimize(loss_fn, [w])
    # slope = −(1/(K s)) Σ_k (∇L·v_k)² with s = 1/n, K = n: exactly −‖∇L‖² = ∇L·d for d = −∇L
    assert float(info["slope"]) == pytest.approx(-g_norm2, rel=1e-10)
    assert float(info["cosine"]) == pytest.approx(1.0, abs=1e-12)
    assert float(info["norm_ratio"]) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(w.numpy(), expected.numpy(), atol=1e-12)
    # the diagnostic's gradient is counted: 6 JVP passes + 1 forward/backward
    assert (int(info["forward_passes"]), int(info["backward_passes"]), int(info["jvps"])) == (
        7,
        1,
        6,
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: ForwardGradient(diagnostics=True),
        lambda: ZerothOrder(diagnostics=True),
        lambda: ZerothOrder(diagnostics=True, in_place=True),
        lambda: RandomDirectionLineSearch(diagnostics=True),
    ],
    ids=["forward_gradient", "zeroth_order", "zeroth_order_in_place", "line_search"],
)
def test_diagnostics_are_reported_only_on_request(make):
    """Diagnostics compare the estimate with the true gradient; off by default (no extra pass)."""
    w, loss_fn, gradient_fn = _quadratic(dim=20, dtype=tf.float64)
    g = gradient_fn()
    w0 = tf.identity(w)
    info = make().minimize(loss_fn, [w])
    assert int(info["backward_passes"]) == 1
    assert -1.0 <= float(info["cosine"]) <= 1.0 and float(info["norm_ratio"]) > 0
    # one gaussian direction in 20 dims: |cos| ~ 1/sqrt(20), norm ratio ~ |cos|·sqrt(22)
    step = (w0 - w).numpy()
    if isinstance(make(), (ForwardGradient, ZerothOrder)):
        cos_step = float(np.dot(step, g) / (np.linalg.norm(step) * np.linalg.norm(g)))
        assert float(info["cosine"]) == pytest.approx(cos_step, abs=1e-6)
    plain = type(make())()
    w.assign(w0)
    info = plain.minimize(loss_fn, [w])
    assert "cosine" not in info and "norm_ratio" not in info
    assert int(info["backward_passes"]) == 0


@pytest.mark.parametrize("method", ["forward", "central_difference"])
def test_line_search_is_a_descent_method_along_the_projected_gradient(method):
    """d = −(∇L·v) v/‖v‖²: slope = −cos²∠(v, ∇L)·‖∇L‖² < 0, and Armijo never lets L go up."""
    w, loss_fn, gradient_fn = _quadratic(dtype=tf.float64)
    opt = RandomDirectionLineSearch(method=method, diagnostics=True)
    losses = [float(loss_fn())]
    for _ in range(30):
        g2 = float(tf.reduce_sum(gradient_fn() ** 2))
        info = opt.minimize(loss_fn, [w])
        assert bool(info["descent"]) and float(info["cosine"]) >= 0.0
        expected_slope = -(float(info["cosine"]) ** 2) * g2
        assert float(info["slope"]) == pytest.approx(expected_slope, rel=1e-5)
        losses.append(float(loss_fn()))
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < 0.5 * losses[0]


# ----------------------------------------------------------------------------- cost accounting

COST_CASES = {
    # name: (factory, forward passes, backward passes, jvps) per step; None = from evaluations
    "fg_forward_k3": (lambda: ForwardGradient(num_directions=3), 3, 0, 3),
    "fg_central_k2": (
        lambda: ForwardGradient(num_directions=2, method="central_difference"),
        5,
        0,
        0,
    ),
    "fg_forward_difference_k2": (
        lambda: ForwardGradient(num_directions=2, method="forward_difference"),
        3,
        0,
        0,
    ),
    "fg_reverse_k4": (lambda: ForwardGradient(num_directions=4, method="reverse"), 1, 1, 0),
    "fg_forward_k2_diagnostics": (
        lambda: ForwardGradient(num_directions=2, diagnostics=True),
        3,
        1,
        2,
    ),
    "fg_adam": (lambda: ForwardGradient(inner=keras.optimizers.Adam(1e-3)), 1, 0, 1),
    "zo_k3": (lambda: ZerothOrder(num_directions=3), 6, 0, 0),
    "zo_one_sided_k3": (lambda: ZerothOrder(num_directions=3, one_sided=True), 4, 0, 0),
    "zo_in_place_k2": (lambda: ZerothOrder(num_directions=2, in_place=True), 4, 0, 0),
    "zo_diagnostics": (lambda: ZerothOrder(diagnostics=True), 3, 1, 0),
    "rdls_forward": (lambda: RandomDirectionLineSearch(), None, 0, 1),
    "rdls_central": (lambda: RandomDirectionLineSearch(method="central_difference"), None, 0, 0),
}


@pytest.mark.parametrize("name", sorted(COST_CASES))
def test_cost_counters_are_exact(name):
    """Counters equal the table, equal the closure's actual calls (eager), and sum into totals."""
    make, forward, backward, jvps = COST_CASES[name]
    variables, loss_fn = problems.mlp_problem()
    calls = []

    def counted_loss():
        calls.append(1)
        return loss_fn()

    opt = make()
    sums = np.zeros(3, np.int64)
    for _ in range(3):
        calls.clear()
        info = opt.minimize(counted_loss, variables)
        step = (int(info["forward_passes"]), int(info["backward_passes"]), int(info["jvps"]))
        if forward is None:  # line search: derivative + one pass per trial step
            base = 1 if name == "rdls_forward" else 3
            expected_forward = base + int(info["evaluations"])
        else:
            expected_forward = forward
        assert step == (expected_forward, backward, jvps)
        assert len(calls) == expected_forward  # every loss evaluation is a counted forward pass
        sums += step
    totals = opt.totals
    assert [int(totals[k]) for k in ("forward_passes", "backward_passes", "jvps")] == list(sums)


# ----------------------------------------------------------------------------- SPSA restore


def test_zeroth_order_exact_mode_leaves_weights_bit_identical_over_10000_steps():
    """10 000 two-point steps (and 2 000 one-sided K=2) change no bit when the estimate is 0.

    The rate is not 0 (η = 0 writes the start point back without computing an update): the
    loss is flat in w, so every step perturbs w by ±εz, evaluates, and writes ``w₀ − η·0``.
    """
    variables, mlp_loss = problems.mlp_problem(seed=1)

    def loss_fn():
        return 0.0 * mlp_loss() + 1.0

    before = _values(variables)
    opt = ZerothOrder(learning_rate=0.5, eps=1e-2)
    info = _run(opt, loss_fn, variables, 10_000)
    for b, v in zip(before, variables, strict=True):
        assert b.tobytes() == v.numpy().tobytes()
    assert int(opt.totals["forward_passes"]) == 20_000
    assert int(opt.iterations) == 10_000
    assert float(info["step_size"]) == 0.5
    _run(
        ZerothOrder(learning_rate=0.5, one_sided=True, num_directions=2),
        loss_fn,
        variables,
        2000,
    )
    for b, v in zip(before, variables, strict=True):
        assert b.tobytes() == v.numpy().tobytes()


def _sequential(monkeypatch):
    """Forces ZerothOrder's probes to move the variables (the path for tf.Variables)."""
    monkeypatch.setattr(ZerothOrder, "_side_by_side", staticmethod(lambda ctx: False))


def _zo_models(seed: int = 3):
    """A Keras MLP with BatchNorm (its statistics are assigned inside the closure)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.BatchNormalization(momentum=0.5),
            keras.layers.Dense(3),
        ]
    )
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((16, 5)), tf.float32)
    y = tf.constant(rng.integers(0, 3, 16), tf.int32)

    def ce(logits, labels):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

    return model, ModelClosure(model, ce, x, y)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ZerothOrder(0.05, eps=1e-2, seed=2),
        lambda: ZerothOrder(0.05, distribution="rademacher", num_directions=2, seed=2),
        lambda: ZerothOrder(0.05, one_sided=True, seed=2),
        lambda: ZOAdam(0.01, distribution="rademacher", seed=2),
        lambda: LowRankZerothOrder(0.05, seed=2),
    ],
    ids=["gaussian", "rademacher_k2", "one_sided", "zo_adam", "lozo"],
)
def test_zeroth_order_side_by_side_probes_are_the_moved_variables_probes(make, monkeypatch):
    """On a Keras model the probes run in a StatelessScope (variables never moved, BatchNorm's
    statistics assigned after each probe): the same weights, statistics and counts as moving
    the variables, and no probe assignment is traced."""
    results, assigns = [], []
    for sequential in (False, True):
        if sequential:
            _sequential(monkeypatch)
        model, closure = _zo_models()
        opt = make()
        step = tf.function(
            lambda opt=opt, c=closure, m=model: opt.minimize(c, m.trainable_variables)
        )
        opt.build(model.trainable_variables)
        graph = step.get_concrete_function().graph
        assigns.append(sum(op.type == "AssignVariableOp" for op in graph.get_operations()))
        for _ in range(4):
            info = step()
        results.append(
            (
                [v.numpy() for v in model.variables],
                {k: float(v) for k, v in info.items()},
                int(opt.totals["forward_passes"]),
            )
        )
    (side, side_info, side_fp), (moved, moved_info, moved_fp) = results
    for a, b in zip(side, moved, strict=True):  # weights and BatchNorm statistics
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert side_info.keys() == moved_info.keys() and side_fp == moved_fp
    np.testing.assert_allclose(side_info["loss"], moved_info["loss"], rtol=1e-6)
    trainable = len(model.trainable_variables)
    assert assigns[0] <= assigns[1] - 2 * trainable, assigns  # no w0 ± εz written


def test_zeroth_order_side_by_side_leaves_keras_weights_bit_identical():
    """Side by side nothing is written when the estimate is 0 or the loss is not finite."""
    variables, mlp_loss = problems.mlp_problem(seed=1, variable=keras.Variable)
    before = _values(variables)
    opt = ZerothOrder(learning_rate=0.5, eps=1e-2)
    info = _run(opt, lambda: 0.0 * mlp_loss() + 1.0, variables, 500)
    assert float(info["step_size"]) == 0.5
    info = _run(ZerothOrder(), lambda: mlp_loss() * float("nan"), variables, 3)
    assert not bool(info["accepted"])
    for b, v in zip(before, variables, strict=True):
        assert b.tobytes() == v.numpy().tobytes()


def test_zeroth_order_in_place_mode_drifts_only_by_rounding():
    """MeZO's in-place perturbations (w+εz, w−2εz, w+εz) are not exact, but drift is ~ulps."""
    variables, loss_fn = problems.mlp_problem(seed=1)
    before = _values(variables)
    _run(ZerothOrder(learning_rate=problems.ZeroRate(), in_place=True), loss_fn, variables, 2000)
    drift = max(
        float(np.max(np.abs(v.numpy() - b))) for b, v in zip(before, variables, strict=True)
    )
    scale = max(float(np.max(np.abs(b))) for b in before)
    assert drift < 1e-5 * scale  # a random walk of rounding errors, ~1e-7 relative per step


def test_zeroth_order_update_matches_the_formula():
    """One exact-mode step equals w − η (L(w+εz) − L(w−εz))/(2ε) z with z regenerated."""
    w, loss_fn, _ = _quadratic(dim=5, dtype=tf.float64)
    w.assign([0.5, -1.0, 2.0, 0.0, 1.5])
    w0 = w.numpy()
    opt = ZerothOrder(learning_rate=0.125, eps=1e-3, seed=7)
    opt.build([w])
    seed = directions.make_seed(directions.make_seed(7, 0), 0)  # (seed, iterations), k
    z = opt.perturbation([w], seed, 0).numpy()
    w.assign(w0 + 1e-3 * z)
    plus = float(loss_fn())
    w.assign(w0 - 1e-3 * z)
    minus = float(loss_fn())
    w.assign(w0)
    info = opt.minimize(loss_fn, [w])
    coef = (plus - minus) / 2e-3
    np.testing.assert_allclose(w.numpy(), w0 - 0.125 * coef * z, rtol=1e-9, atol=1e-12)
    assert float(info["slope"]) == pytest.approx(-(coef**2), rel=1e-6)
    assert float(info["loss"]) == pytest.approx(0.5 * (plus + minus), rel=1e-12)


def test_non_finite_loss_leaves_weights_untouched():
    """Bit-exact where w0 is kept; MeZO's in-place mode undoes w + εz − 2εz + εz, exact only to
    rounding (as documented: bit-exact here for some draws, not others), so it is checked to
    float32 rounding."""
    w = tf.Variable([1.0, 2.0])
    for opt in (ZerothOrder(), ForwardGradient(), ZerothOrder(in_place=True)):
        info = opt.minimize(lambda: tf.reduce_sum(w) * float("nan"), [w])
        assert not bool(info["accepted"])
        if getattr(opt, "in_place", False):
            np.testing.assert_allclose(w.numpy(), [1.0, 2.0], rtol=4e-7, atol=0)
        else:
            np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])


class _GenericForwardGradient(ForwardGradient):
    """Takes the base class's generic step (a ``_move`` override turns the fast path off)."""

    def _move(self, ctx, t, d, ok):
        return super()._move(ctx, t, d, ok)


class _HalfStepForwardGradient(ForwardGradient):
    """A user's step-size rule: half the learning rate. The fast path must not bypass it."""

    def compute_step_size(self, ctx, loss, direction, slope):
        t, accepted = super().compute_step_size(ctx, loss, direction, slope)
        return 0.5 * t, accepted


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"distribution": "rademacher"},
        {"num_directions": 3},
        {"method": "central_difference", "fd_step": 1e-2},
    ],
    ids=["gaussian", "rademacher", "k3", "central_difference"],
)
def test_forward_gradient_fast_path_is_the_generic_step(kwargs):
    """Plain SGD on g̃ takes a shortcut (w += Σ_k a_k v_k in place); same step, same metrics."""
    x = tf.constant(np.random.default_rng(0).standard_normal((32, 5)), tf.float32)
    y = tf.constant(np.random.default_rng(1).standard_normal((32, 1)), tf.float32)
    runs = []
    for cls in (ForwardGradient, _GenericForwardGradient):
        w = tf.Variable(tf.fill([5, 1], 0.3))
        opt = cls(learning_rate=0.05, seed=4, **kwargs)
        assert opt._plain_sgd() is (cls is ForwardGradient)
        info = _run(opt, lambda w=w: tf.reduce_mean(tf.square(x @ w - y)), [w], 6)
        runs.append((w.numpy(), {k: float(v) for k, v in info.items()}))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-6, atol=1e-7)
    assert runs[0][1].keys() == runs[1][1].keys()
    for key, value in runs[0][1].items():
        np.testing.assert_allclose(value, runs[1][1][key], rtol=1e-5, err_msg=key)
    # a non-finite loss: no move, not accepted, step size 0, on both paths
    for cls in (ForwardGradient, _GenericForwardGradient):
        w = tf.Variable([1.0, 2.0])
        info = cls(seed=1, **kwargs).minimize(lambda w=w: tf.reduce_sum(w) * float("inf"), [w])
        np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
        assert not bool(info["accepted"]) and float(info["step_size"]) == 0.0


def test_forward_gradient_fast_path_keeps_a_subclass_rule():
    """A subclass's own step-size rule is used (the shortcut is only for the unchanged rules)."""
    moves = []
    for cls in (ForwardGradient, _HalfStepForwardGradient):
        w = tf.Variable([1.0, -2.0, 0.5])
        cls(learning_rate=0.1, seed=2).minimize(lambda w=w: tf.reduce_sum(w**2), [w])
        moves.append(w.numpy() - np.array([1.0, -2.0, 0.5], np.float32))
    np.testing.assert_allclose(moves[1], 0.5 * moves[0], rtol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ForwardGradient(learning_rate=0.1, weight_decay=0.1),
        lambda: ForwardGradient(inner=keras.optimizers.Adam(0.1), weight_decay=0.1),
        lambda: ZerothOrder(0.1, weight_decay=0.1),
        lambda: ZerothOrder(0.1, weight_decay=0.1, in_place=True),
    ],
    ids=["forward_gradient", "forward_gradient_adam", "zeroth_order", "zeroth_order_in_place"],
)
def test_weight_decay_is_decoupled(make):
    """On a constant loss the estimate is 0 and the step is the base's decay: w ← w − λ w."""
    w = tf.Variable([1.0, -2.0])
    make().minimize(lambda: 0.0 * tf.reduce_sum(w) + 3.0, [w])
    np.testing.assert_allclose(w.numpy(), [0.9, -1.8], rtol=1e-6)


def test_no_state_of_model_size():
    """Directions are regenerated from the seed, never stored: all state is scalar."""
    variables, loss_fn = problems.mlp_problem()
    for opt in (ForwardGradient(num_directions=2), ZerothOrder(), RandomDirectionLineSearch()):
        opt.minimize(loss_fn, variables)
        assert all(tuple(v.shape) == () for v in opt.variables), type(opt).__name__


def test_same_seed_same_trajectory_different_seed_differs():
    results = []
    for seed in (4, 4, 5):
        variables, loss_fn = problems.mlp_problem()
        opt = ForwardGradient(learning_rate=0.1, seed=seed)
        for _ in range(3):
            opt.minimize(loss_fn, variables)
        results.append(np.concatenate([v.numpy().ravel() for v in variables]))
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.allclose(results[0], results[2])


def test_learning_rate_schedule_sets_the_step():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    variables, loss_fn = problems.mlp_problem()
    for opt in (ForwardGradient(schedule), ZerothOrder(schedule)):
        steps = [float(opt.minimize(loss_fn, variables)["step_size"]) for _ in range(3)]
        np.testing.assert_allclose(steps, [0.1, 0.05, 0.025], rtol=1e-6)


# ----------------------------------------------------------------------------- serialisation

CONFIG_CASES = {
    "fg": lambda: ForwardGradient(
        learning_rate=0.02,
        num_directions=3,
        distribution="rademacher",
        method="central_difference",
        fd_step=1e-3,
        seed=9,
        diagnostics=True,
        weight_decay=0.01,
        clipnorm=1.0,
    ),
    "fg_adam": lambda: ForwardGradient(inner=keras.optimizers.Adam(0.003), orthogonal=True),
    "fg_schedule": lambda: ForwardGradient(
        keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.9)
    ),
    "zo": lambda: ZerothOrder(
        learning_rate=0.5,
        eps=1e-2,
        num_directions=2,
        one_sided=True,
        distribution="rademacher",
        in_place=True,
        seed=3,
        diagnostics=True,
    ),
    "rdls": lambda: RandomDirectionLineSearch(
        distribution="unit_sphere",
        method="forward_difference",
        seed=2,
        c=0.2,
        shrink=0.7,
        max_step=50.0,
        max_evaluations=7,
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_config_round_trip(name):
    opt = CONFIG_CASES[name]()
    config = opt.get_config()
    clone = type(opt).from_config(copy.deepcopy(config))  # Keras edits the dict it is given
    assert clone.get_config() == config
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is type(opt) and again.get_config() == config


@pytest.mark.parametrize(
    "make",
    [
        lambda: ForwardGradient(inner=keras.optimizers.Adam(0.01), num_directions=2),
        lambda: ZerothOrder(learning_rate=0.05),
        lambda: RandomDirectionLineSearch(),
    ],
    ids=["forward_gradient_adam", "zeroth_order", "line_search"],
)
def test_checkpoint_round_trip_resumes_the_same_trajectory(make, tmp_path):
    """Restoring iterations (so the direction stream), counters and inner state resumes exactly."""
    variables, loss_fn = problems.mlp_problem()
    opt = make()
    for _ in range(3):
        opt.minimize(loss_fn, variables)
    path = tf.train.Checkpoint(opt=opt, variables=variables).save(str(tmp_path / "ckpt"))
    for _ in range(2):
        opt.minimize(loss_fn, variables)
    expected = _values(variables)
    state = [np.array(v.numpy()) for v in opt.variables]

    variables2, loss_fn2 = problems.mlp_problem()
    for v in variables2:
        v.assign(tf.zeros_like(v))  # overwritten by the restore
    opt2 = make()
    opt2.build(variables2)
    tf.train.Checkpoint(opt=opt2, variables=variables2).restore(path).assert_consumed()
    assert int(opt2.iterations) == 3
    for _ in range(2):
        opt2.minimize(loss_fn2, variables2)
    for a, b in zip(expected, _values(variables2), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(state, opt2.variables, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


# ----------------------------------------------------------------------------- graph mode

GRAPH_CASES = {
    "fg": lambda: ForwardGradient(learning_rate=0.1, num_directions=2),
    "fg_adam_diag": lambda: ForwardGradient(inner=keras.optimizers.Adam(0.01), diagnostics=True),
    "zo": lambda: ZerothOrder(learning_rate=0.1, num_directions=2),
    "zo_in_place": lambda: ZerothOrder(learning_rate=0.1, in_place=True),
    "rdls": lambda: RandomDirectionLineSearch(),
}


@pytest.mark.parametrize("name", sorted(GRAPH_CASES))
def test_graph_mode_traces_once_and_matches_eager(name):
    make = GRAPH_CASES[name]
    variables, loss_fn = problems.mlp_problem(dtype=tf.float64)
    opt = make()
    opt.build(variables)
    step = tf.function(lambda: opt.minimize(loss_fn, variables))
    graph_losses = [float(step()["loss"]) for _ in range(4)]
    assert step.experimental_get_tracing_count() == 1
    graph_weights = _values(variables)

    variables2, loss_fn2 = problems.mlp_problem(dtype=tf.float64)
    eager = make()
    eager_losses = [float(eager.minimize(loss_fn2, variables2)["loss"]) for _ in range(4)]
    np.testing.assert_allclose(graph_losses, eager_losses, rtol=1e-10)
    for a, b in zip(graph_weights, _values(variables2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def _compiled_steps(opt, loss_fn, variables, steps: int) -> list[dict]:
    """``steps`` calls of one XLA-compiled step; asserts it was traced once."""
    opt.build(variables)
    step = tf.function(lambda: opt.minimize(loss_fn, variables), jit_compile=True)
    infos = [{k: v.numpy() for k, v in step().items()} for _ in range(steps)]
    assert step.experimental_get_tracing_count() == 1
    return infos


# Under XLA, TF 2.21's stateless RNG (``alg="auto_select"``, used by dirgrad_opt.directions)
# draws different numbers than without XLA (measured on CPU), so XLA runs are checked on
# properties that do not depend on the particular directions.


def test_xla_forward_gradient_with_a_full_orthogonal_frame_is_gradient_descent():
    """K = n orthonormal directions by forward mode under XLA: exactly a gradient step."""
    variables, loss_fn = problems.mlp_problem(dtype=tf.float64, widths=(3,), inputs=3)  # n = 12
    with tf.GradientTape() as tape:
        loss = loss_fn()
    expected = [v - 0.5 * g for v, g in zip(variables, tape.gradient(loss, variables), strict=True)]
    opt = ForwardGradient(learning_rate=0.5, num_directions=12, orthogonal=True)
    (info,) = _compiled_steps(opt, loss_fn, variables, 1)
    for v, e in zip(variables, expected, strict=True):
        np.testing.assert_allclose(v.numpy(), e.numpy(), rtol=1e-10, atol=1e-12)
    assert (info["forward_passes"], info["backward_passes"], info["jvps"]) == (12, 0, 12)


def test_xla_zeroth_order_descends_and_restores_exactly():
    """Restore under XLA at a non-zero rate: on a loss flat in w the estimate is 0 but the
    update ``w₀ − η·0`` is computed, and it must give w₀ back bit for bit."""
    w, loss_fn, _ = _quadratic()
    before = w.numpy().copy()
    infos = _compiled_steps(
        ZerothOrder(learning_rate=0.5, eps=0.1), lambda: 0.0 * tf.reduce_sum(w) + 2.0, [w], 20
    )
    assert infos[-1]["step_size"] == pytest.approx(0.5)  # the update branch ran
    assert w.numpy().tobytes() == before.tobytes()
    f0 = float(loss_fn())
    infos = _compiled_steps(ZerothOrder(learning_rate=0.004), loss_fn, [w], 400)
    assert float(loss_fn()) < f0 / 10
    assert (infos[-1]["forward_passes"], infos[-1]["backward_passes"]) == (2, 0)


def test_xla_random_direction_line_search_never_increases_the_loss():
    w, loss_fn, _ = _quadratic()
    f0 = float(loss_fn())
    infos = _compiled_steps(RandomDirectionLineSearch(), loss_fn, [w], 200)
    losses = [float(i["loss"]) for i in infos] + [float(loss_fn())]
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < f0 / 10
    assert all(i["forward_passes"] == 1 + i["evaluations"] for i in infos)


def test_forward_mode_through_maxpool_under_xla_is_refused():
    """TF 2.21 computes Conv2D→MaxPool JVPs wrongly under XLA: the step refuses, loudly."""
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(2, 3),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    x = tf.random.stateless_normal((4, 6, 6, 1), seed=[0, 0])
    y = tf.constant([0, 1, 0, 1])

    def loss_fn():
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x)))

    opt = ForwardGradient()
    opt.build(model.trainable_variables)
    step = tf.function(lambda: opt.minimize(loss_fn, model.trainable_variables), jit_compile=True)
    with pytest.raises(directional.UnsafeDerivativeError):
        step()


# ----------------------------------------------------------------------------- validation

BAD_HYPERPARAMETERS = [
    (ForwardGradient, {"learning_rate": -0.1}, "learning_rate"),
    (ForwardGradient, {"num_directions": 0}, "num_directions"),
    (ForwardGradient, {"num_directions": 1.5}, "num_directions"),
    (ForwardGradient, {"distribution": "cauchy"}, "distribution"),
    (ForwardGradient, {"orthogonal": True, "distribution": "rademacher"}, "orthogonal"),
    (ForwardGradient, {"method": "auto"}, "method"),
    (ForwardGradient, {"fd_step": 0.0}, "fd_step"),
    (ForwardGradient, {"seed": 1.5}, "seed"),
    (ForwardGradient, {"inner": "adam"}, "inner must"),
    (ForwardGradient, {"inner": keras.optimizers.Adam(), "learning_rate": 0.1}, "learning rate"),
    (ForwardGradient, {"direction": keras.optimizers.Adam()}, "inner="),
    (ZerothOrder, {"eps": 0.0}, "eps"),
    (ZerothOrder, {"eps": float("nan")}, "eps"),
    (ZerothOrder, {"num_directions": -1}, "num_directions"),
    (ZerothOrder, {"distribution": "unit_sphere"}, "distribution"),
    (ZerothOrder, {"clipnorm": 1.0}, "clipnorm"),
    (ZerothOrder, {"direction": keras.optimizers.Adam()}, "direction"),
    (ZerothOrder, {"learning_rate": 0.0}, "learning_rate"),
    (RandomDirectionLineSearch, {"c": 1.0}, "c must"),
    (RandomDirectionLineSearch, {"shrink": 0.0}, "shrink"),
    (RandomDirectionLineSearch, {"method": "newton"}, "method"),
    (RandomDirectionLineSearch, {"distribution": "orthogonal"}, "distribution"),
    (RandomDirectionLineSearch, {"initial_step": 2.0, "max_step": 1.0}, "max_step"),
    (RandomDirectionLineSearch, {"max_evaluations": 0}, "max_evaluations"),
    (RandomDirectionLineSearch, {"global_clipnorm": 1.0}, "global_clipnorm"),
]


@pytest.mark.parametrize(
    "cls,kwargs,match",
    BAD_HYPERPARAMETERS,
    ids=[f"{c.__name__}-{'-'.join(k)}" for c, k, _ in BAD_HYPERPARAMETERS],
)
def test_bad_hyperparameters_raise_at_construction(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
