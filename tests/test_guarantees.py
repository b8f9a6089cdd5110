"""Documented guarantees and fixed bugs, each tested through public behaviour only.

Every test here was checked against a hand-made mutant of the code it guards (the mutant is
named in the docstring): with the mutant applied the test fails, without it the test passes.
The zeroth-order tests observe the points the optimizer evaluates through the loss closure,
so they do not depend on how the perturbations are drawn.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dirgrad_opt import directional, directions
from dirgrad_opt.optimizers import (
    ArmijoLineSearch,
    DirectionalOptimizer,
    RandomDirectionLineSearch,
    ZerothOrder,
)

# ----------------------------------------------------------------------------- pass counting


class AutoCoordinateDescent(DirectionalOptimizer):
    """Steepest descent along the first coordinate, measured by ``ctx.directional_derivatives``
    with ``method="auto"`` (the public extension point a custom rule would use)."""

    def compute_direction(self, ctx):
        v = tf.one_hot(0, int(ctx.variables[0].shape[0]), dtype=ctx.variables[0].dtype)
        loss, derivatives = ctx.directional_derivatives([v[tf.newaxis]], method="auto")
        d = -derivatives[0] * v
        return loss, [d], -tf.square(derivatives[0])


@tf.custom_gradient
def _sin_without_gradient(x):
    """``sin`` whose gradient is missing: ``tape.gradient`` raises LookupError, as for an op
    with no registered gradient."""

    def grad(dy):
        raise LookupError("No gradient defined for operation 'SinWithoutGradient'")

    return tf.sin(x), grad


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_auto_fallback_to_finite_differences_is_priced_as_what_ran(graph):
    """Fixed bug (7ce9f6d): ``"auto"`` falling back to central differences (no gradient op)
    was counted as reverse mode (1 forward + 1 backward). It costs 1 + 2K forward passes and
    no backward pass. Mutant killed: price ``"auto"`` as ``choose_method(K)``."""
    w = tf.Variable([0.3, -0.2], dtype=tf.float64)
    opt = AutoCoordinateDescent(learning_rate=0.5)
    opt.build([w])

    def step():
        return opt.minimize(lambda: tf.reduce_sum(_sin_without_gradient(w)), [w])

    info = tf.function(step)() if graph else step()
    counts = (int(info["forward_passes"]), int(info["backward_passes"]), int(info["jvps"]))
    assert counts == tuple(directional.cost("central_difference", 1)) == (3, 0, 0)
    # and the derivative is the true one: w₀ ← 0.3 − 0.5 cos(0.3)
    np.testing.assert_allclose(w.numpy(), [0.3 - 0.5 * np.cos(0.3), -0.2], rtol=1e-8)
    # With a gradient available, "auto" is reverse mode and priced so.
    w2 = tf.Variable([0.3, -0.2], dtype=tf.float64)
    info = AutoCoordinateDescent(learning_rate=0.5).minimize(
        lambda: tf.reduce_sum(tf.sin(w2)), [w2]
    )
    counts = (int(info["forward_passes"]), int(info["backward_passes"]), int(info["jvps"]))
    assert counts == (1, 1, 0)


# ----------------------------------------------------------------------------- SLS along Adam


def test_armijo_along_an_inner_optimizer_never_tries_beyond_its_step():
    """Fixed bug (70cd6b9): with ``direction=`` an inner optimizer, ``t = 1`` is that
    optimizer's own step and SLS's default cap is 1 (10-fold growth made Armijo-along-Adam
    diverge). Along a tiny SGD step the search always accepts, so the trial step grows by
    ``growth`` per step until the cap: it must stop at exactly 1. Mutant killed: drop the
    default ``max_step = 1`` (the cap becomes 10)."""
    w = tf.Variable([3.0, -2.0], dtype=tf.float64)
    opt = ArmijoLineSearch(direction=keras.optimizers.SGD(1e-3), steps_per_epoch=1)
    steps = [float(opt.minimize(lambda: tf.reduce_sum(w**2), [w])["step_size"]) for _ in range(8)]
    assert steps == [1.0] * 8  # t₀ = 1 accepted, then min(2·1, cap) = 1 each step
    assert opt.get_config()["max_step"] == 1.0
    # Along −∇L the paper's cap (10) still applies; an explicit max_step wins either way.
    assert ArmijoLineSearch().get_config()["max_step"] == 10.0
    explicit = ArmijoLineSearch(direction=keras.optimizers.SGD(1e-3), max_step=4.0)
    assert explicit.get_config()["max_step"] == 4.0


# ----------------------------------------------------------------------------- ZerothOrder


def _recording_linear_problem(n=6, dtype=tf.float64):
    """``L(w) = a·w`` with ``w₀`` carrying fine low-order bits; the closure records every
    point it is evaluated at (eager mode)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal(n)
    w0 = rng.uniform(0.1, 1.0, n)  # many significant bits: an arithmetic restore loses some
    w = tf.Variable(w0, dtype=dtype)
    points: list[np.ndarray] = []

    def loss_fn():
        points.append(w.numpy().copy())
        return tf.tensordot(tf.constant(a, dtype), w, 1)

    return w, w0, a, points, loss_fn


@pytest.mark.parametrize("diagnostics", [False, True], ids=["plain", "diagnostics"])
@pytest.mark.parametrize("k", [1, 3])
def test_zeroth_order_probes_mirror_points_and_update_from_the_kept_start(k, diagnostics):
    """Exact mode, η = 1/64 ≠ 0: the probes are w₀ + δ_k and ``2w₀ − (w₀ + δ_k)`` (to
    rounding); with diagnostics the gradient is taken at w₀ bit for bit; the new weights are
    ``w₀ − η (1/K) Σ_k (L₊ − L₋)/(2ε) z_k`` with ``z_k = δ_k/ε`` recovered from the probes.

    ε·z ~ 1e3 while w₀ ~ 0.5: writing back ``(w₀ − εz) + εz`` instead of the kept w₀ would
    be off by ~1e-13, 100× the tolerance below. Mutants killed: shift the mirrored point
    (e.g. ``2w₀ − w + 1e-9``, or ``w₀ − 0.5 εz``); update from the variable's current value
    plus εz instead of the kept start.
    """
    eps, lr = 1e3, 1.0 / 64  # exact in float32 (Keras keeps the rate in float32)
    w, w0, a, points, loss_fn = _recording_linear_problem()
    opt = ZerothOrder(learning_rate=lr, eps=eps, num_directions=k, diagnostics=diagnostics)
    info = opt.minimize(loss_fn, [w])

    expected_calls = 2 * k + (1 if diagnostics else 0)
    assert len(points) == expected_calls
    plus, minus = points[0 : 2 * k : 2], points[1 : 2 * k : 2]
    estimate = np.zeros_like(w0)
    for p, m in zip(plus, minus, strict=True):
        # The mirror w₀ − εz up to the rounding of w₀ ± εz (the direction is drawn once and
        # both probes are formed from the kept w₀): a few ulps of |εz| ~ 1e3, i.e. ~1e-13;
        # the shifted-mirror mutants are off by ≥ 1e-9.
        np.testing.assert_allclose(m, 2.0 * w0 - p, rtol=0, atol=4 * np.spacing(np.abs(p).max()))
        z = (p - w0) / eps
        assert 0.1 < np.linalg.norm(z) < 10.0  # a real perturbation of scale ε
        coef = (a @ p - a @ m) / (2.0 * eps)
        estimate += coef * z / k
    if diagnostics:
        assert points[-1].tobytes() == w0.tobytes()  # ∇L taken at the restored start
        est_norm, grad_norm = np.linalg.norm(estimate), np.linalg.norm(a)
        cosine = estimate @ a / (est_norm * grad_norm)
        assert float(info["cosine"]) == pytest.approx(cosine, abs=1e-9)
        assert float(info["norm_ratio"]) == pytest.approx(est_norm / grad_norm, rel=1e-9)
    np.testing.assert_allclose(w.numpy(), w0 - lr * estimate, rtol=0, atol=1e-15)
    assert float(info["step_size"]) == lr


def test_zeroth_order_exact_mode_restores_bit_exactly_at_a_nonzero_rate():
    """η = 0.1, a loss that is flat in w (so g̃ = 0 but the update w₀ − η·g̃ is computed):
    60 steps leave every bit of w as it was, with and without diagnostics. Mutant killed:
    update from ``(w₀ − εz) + εz`` instead of the kept start."""
    rng = np.random.default_rng(1)
    variables = [tf.Variable(rng.standard_normal(s).astype(np.float32)) for s in [(5, 7), (7,)]]
    before = [v.numpy().tobytes() for v in variables]

    def flat_loss():
        return 0.0 * tf.add_n([tf.reduce_sum(v) for v in variables]) + 1.5

    for opt in (
        ZerothOrder(learning_rate=0.1, eps=0.5, num_directions=2),
        ZerothOrder(learning_rate=0.1, eps=0.5, diagnostics=True),
    ):
        opt.build(variables)

        @tf.function
        def loop(opt=opt):
            info = opt.minimize(flat_loss, variables)
            for _ in tf.range(59):
                info = opt.minimize(flat_loss, variables)
            return info

        info = loop()
        assert float(info["step_size"]) == pytest.approx(0.1)  # the update branch ran
        assert [v.numpy().tobytes() for v in variables] == before
        assert int(opt.iterations) == 60


def test_zeroth_order_in_place_at_a_nonzero_rate_matches_the_formula_up_to_rounding():
    """MeZO's in-place mode at η ≠ 0: the probes are w₀ ± εz (up to rounding) and the update
    is the same formula; only rounding separates it from the exact mode."""
    eps, lr = 1e-2, 1.0 / 32
    w, w0, a, points, loss_fn = _recording_linear_problem()
    ZerothOrder(learning_rate=lr, eps=eps, in_place=True).minimize(loss_fn, [w])
    p, m = points
    np.testing.assert_allclose(m, 2.0 * w0 - p, rtol=0, atol=1e-15)
    z = (p - w0) / eps
    expected = w0 - lr * (a @ p - a @ m) / (2.0 * eps) * z
    np.testing.assert_allclose(w.numpy(), expected, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- random line search


def test_random_direction_line_search_takes_the_exact_backtracking_step_on_a_quadratic():
    """On ``½ wᵀAw`` the step is known in closed form from this step's direction v (drawn from
    ``make_seed(seed, iterations)``, as documented): d = −(∇L·v) v/‖v‖², and with c = ½ Armijo
    accepts exactly the trials ``t ≤ t* = ‖v‖²/vᵀAv``, so t is the first of
    ``t₀, t₀/2, ...`` below t*, with ``t₀ = min(2·t_prev, max_step)`` (t_prev = initial_step
    before the first step). Mutants killed: c = 0.1 (overshoots t*), no growth, d not
    rescaled by ∇L·v/‖v‖²."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    a_np = (q * np.logspace(0, 1, 8)) @ q.T
    a = tf.constant(a_np)
    w = tf.Variable(np.ones(8))
    opt = RandomDirectionLineSearch(seed=4, initial_step=1.0, max_step=50.0)
    t_prev = 1.0  # initial_step: the first trial is already grown from it (as in SLS)
    for step in range(12):
        w0 = w.numpy().copy()
        v = directions.sample("gaussian", [w], directions.make_seed(4, step), 1)[0].numpy()[0]
        g = a_np @ w0
        t_star = (v @ v) / (v @ a_np @ v)
        t = min(2.0 * t_prev, 50.0)
        trials = 1
        while t > t_star * (1 + 1e-9):
            t, trials = t / 2.0, trials + 1
        info = opt.minimize(lambda: 0.5 * tf.tensordot(w, tf.linalg.matvec(a, w), 1), [w])
        d = -(g @ v) / (v @ v) * v
        assert float(info["step_size"]) == pytest.approx(t, rel=1e-12), step
        assert int(info["evaluations"]) == trials, (step, t_star, t)
        assert float(info["slope"]) == pytest.approx(g @ d, rel=1e-9)
        np.testing.assert_allclose(w.numpy(), w0 + t * d, rtol=1e-10, atol=1e-12)
        t_prev = t
