"""Tests of the directional-derivative-guided optimizers: PAL, DirectionalNewton, GOLS.

Convergence (quadratic; L2-regularised logistic regression on sklearn's breast-cancer data to
within 1e-3 of the L-BFGS optimum in 300 full-batch steps with default settings — the issue's
acceptance criterion), the documented fallbacks on concave, straight and flat lines, GOLS on
a line with a known minimiser, exact cost counters, graph mode, config and checkpoint round
trips, and bad hyperparameters.
"""

import copy

import keras
import numpy as np
import problems
import pytest
import tensorflow as tf

from dirgrad_opt.optimizers.guided import (
    PAL_CONCAVE,
    PAL_NO_DESCENT,
    PAL_PROPER,
    DirectionalNewton,
    GradientOnlyLineSearch,
    ParabolicLineSearch,
    gradient_only_search,
    newton_step,
    pal_step,
)

OPTIMIZERS = {
    "pal": ParabolicLineSearch,
    "newton": DirectionalNewton,
    "gols": GradientOnlyLineSearch,
}
DTYPES = (tf.float32, tf.float64)


# ----------------------------------------------------------------------------- problems

_quadratic, _logistic, _mlp = problems.quadratic, problems.logistic, problems.mlp


@pytest.fixture(scope="module")
def logistic_optimum():
    return problems.logistic_optimum()


def _run(opt, variables, loss_fn, steps):
    """Builds first, then steps in one tf.function (which must trace once)."""
    step, infos = problems.run(opt, variables, loss_fn, steps)
    assert step.experimental_get_tracing_count() == 1
    return infos


def _scalar_problem(loss_of_w, w0=1.0, dtype=tf.float64):
    """One scalar variable and a closure counting its calls (for exact-cost checks)."""
    w = tf.Variable([w0], dtype=dtype)
    calls = {"n": 0}

    def loss_fn():
        calls["n"] += 1
        return loss_of_w(w[0])

    return w, loss_fn, calls


# ----------------------------------------------------------------------------- convergence


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_quadratic_kappa_100_reduced_1000x_in_300_steps(name):
    variables, loss_fn = _quadratic(tf.float64)
    f0 = float(loss_fn())
    _run(OPTIMIZERS[name](), variables, loss_fn, 300)
    assert float(loss_fn()) <= f0 / 1e3, (name, float(loss_fn()))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_logistic_regression_reaches_lbfgs_optimum_with_defaults(name, dtype, logistic_optimum):
    variables, loss_fn = _logistic(dtype)
    infos = _run(OPTIMIZERS[name](), variables, loss_fn, 300)
    gap = float(loss_fn()) - logistic_optimum
    assert -1e-5 <= gap <= 1e-3, (name, gap)
    assert all(np.isfinite(float(i["step_size"])) for i in infos)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: ParabolicLineSearch(),
        lambda: DirectionalNewton(curvature_method="forward"),
        lambda: DirectionalNewton(direction=keras.optimizers.Adam(0.05)),
        lambda: GradientOnlyLineSearch(derivative_method="forward"),
    ],
    ids=["pal", "newton_forward", "newton_adam", "gols_forward"],
)
def test_keras_mlp_training_loss_decreases(factory):
    variables, loss_fn = _mlp()
    f0 = float(loss_fn())
    _run(factory(), variables, loss_fn, 40)
    assert float(loss_fn()) < 0.5 * f0, (f0, float(loss_fn()))


# ----------------------------------------------------------------------------- PAL


def test_pal_step_cases():
    l0 = tf.constant(1.0, tf.float64)
    # ψ(s) = 1 − 2s + s²: minimum at s = 1, scaled by α = 1.5.
    s, case, curv = pal_step(l0, -2.0, 0.25, 0.5, 1.5, 10.0)
    assert (float(s), int(case), float(curv)) == pytest.approx((1.5, PAL_PROPER, 2.0))
    s, case, _ = pal_step(l0, -2.0, 0.25, 0.5, 1.5, 1.2)  # capped at s_max
    assert (float(s), int(case)) == (1.2, PAL_PROPER)
    s, case, curv = pal_step(l0, -2.0, -1.0, 1.0, 1.5, 10.0)  # straight line: a = 0
    assert (float(s), int(case), float(curv)) == (1.0, PAL_CONCAVE, 0.0)
    s, case, _ = pal_step(l0, 1.0, 5.0, 1.0, 1.5, 10.0)  # uphill
    assert (float(s), int(case)) == (0.0, PAL_NO_DESCENT)
    s, case, _ = pal_step(l0, -1.0, np.nan, 1.0, 1.5, 10.0)  # non-finite measurement
    assert (float(s), int(case)) == (0.0, PAL_NO_DESCENT)


def test_pal_jumps_to_the_parabola_minimum_on_a_quadratic_line():
    w, loss_fn, calls = _scalar_problem(lambda v: (v - 3.0) ** 2, w0=0.0)
    opt = ParabolicLineSearch(momentum=0.0, step_adaptation=1.0, max_step=10.0)
    info = opt.minimize(loss_fn, [w])
    assert float(w[0]) == pytest.approx(3.0)
    assert int(info["pal_case"]) == PAL_PROPER
    assert float(info["step_length"]) == pytest.approx(3.0)
    assert float(info["step_size"]) == pytest.approx(3.0 / 6.0)  # multiplier of d = −∇L = 6
    assert float(info["curvature"]) == pytest.approx(2.0)
    assert (int(info["forward_passes"]), int(info["backward_passes"]), int(info["jvps"])) == (
        2,
        1,
        0,
    )
    assert calls["n"] == 2


def test_pal_default_over_relaxes_and_caps():
    w, loss_fn, _ = _scalar_problem(lambda v: (v - 1.0) ** 2, w0=0.0)
    info = ParabolicLineSearch().minimize(loss_fn, [w])  # α = 1/0.6: s = 1/0.6
    assert float(w[0]) == pytest.approx(1.0 / 0.6)
    w, loss_fn, _ = _scalar_problem(lambda v: (v - 10.0) ** 2, w0=0.0)
    info = ParabolicLineSearch().minimize(loss_fn, [w])  # minimum at 10: capped at 3.16
    assert float(info["step_length"]) == pytest.approx(3.16)
    assert float(w[0]) == pytest.approx(3.16)


@pytest.mark.parametrize(
    "loss_of_w",
    [lambda v: -(v**2), lambda v: -3.0 * v],
    ids=["concave", "straight"],
)
def test_pal_concave_or_straight_line_takes_the_measuring_step(loss_of_w):
    w, loss_fn, _ = _scalar_problem(loss_of_w, w0=1.0)
    f0 = float(loss_fn())
    info = ParabolicLineSearch(measuring_step=0.5).minimize(loss_fn, [w])
    assert int(info["pal_case"]) == PAL_CONCAVE
    assert float(info["step_length"]) == pytest.approx(0.5)
    assert float(w[0]) == pytest.approx(1.5)
    assert float(loss_fn()) < f0  # the measured point, known to be lower
    assert bool(info["accepted"])


def test_pal_flat_line_takes_no_step_and_skips_the_measurement():
    w, loss_fn, calls = _scalar_problem(lambda v: 0.0 * v + 5.0, w0=1.0)
    info = ParabolicLineSearch().minimize(loss_fn, [w])
    assert float(w[0]) == 1.0
    assert int(info["pal_case"]) == PAL_NO_DESCENT
    assert not bool(info["accepted"])
    assert int(info["forward_passes"]) == calls["n"] == 1


def test_pal_momentum_direction_and_restart():
    w, loss_fn, _ = _scalar_problem(lambda v: (v - 3.0) ** 2, w0=0.0)
    opt = ParabolicLineSearch(momentum=0.5, step_adaptation=1.0, max_step=0.5)
    opt.minimize(loss_fn, [w])  # d₀ = −∇L(0) = 6; w → 0.5
    np.testing.assert_allclose(opt._buffers[0].numpy(), [6.0])
    info = opt.minimize(loss_fn, [w])  # d₁ = −∇L(0.5) + 0.5·6 = 5 + 3 = 8
    assert not bool(info["restart"])
    np.testing.assert_allclose(opt._buffers[0].numpy(), [8.0])
    # A buffer pointing uphill makes d = −∇L + β m an ascent direction: restart with −∇L.
    opt._buffers[0].assign([-100.0])
    w_before = float(w[0])
    info = opt.minimize(loss_fn, [w])
    assert bool(info["restart"])
    np.testing.assert_allclose(opt._buffers[0].numpy(), [-2.0 * (w_before - 3.0)])
    assert int(info["pal_case"]) == PAL_PROPER


# ----------------------------------------------------------------------------- Newton


def test_newton_step_rule():
    one = tf.constant(1.0, tf.float64)
    # σ = −4, κ = 2, ‖d‖ = 2: Newton t = 2; damping λ = 0.5 → t = 4 / (2 + 2) = 1.
    assert float(newton_step(-4.0 * one, 2.0, 2.0, 0.0, 100.0, 0.1)[0]) == 2.0
    assert float(newton_step(-4.0 * one, 2.0, 2.0, 0.5, 100.0, 0.1)[0]) == 1.0
    t, newton = newton_step(-4.0 * one, 2.0, 2.0, 0.0, 1.0, 0.1)  # trust radius: ‖t d‖ ≤ 1
    assert (float(t), bool(newton)) == (0.5, True)
    t, newton = newton_step(-4.0 * one, -3.0, 2.0, 0.0, 100.0, 0.1)  # concave: fallback
    assert (float(t), bool(newton)) == (0.1, False)
    t, newton = newton_step(0.0 * one, 0.0, 0.0, 0.0, 100.0, 0.1)  # flat: nothing to do
    assert (float(t), bool(newton)) == (0.0, False)


@pytest.mark.parametrize(
    "method, cost", [("auto", (1, 2, 0)), ("reverse", (1, 2, 0)), ("forward", (2, 2, 1))]
)
def test_newton_is_exact_on_a_quadratic_line_and_counts_exactly(method, cost):
    w, loss_fn, calls = _scalar_problem(lambda v: 2.0 * (v - 3.0) ** 2, w0=0.0)
    info = DirectionalNewton(curvature_method=method).minimize(loss_fn, [w])
    assert float(w[0]) == pytest.approx(3.0)
    assert float(info["curvature"]) == pytest.approx(4.0 * 12.0**2)  # dᵀHd, d = 12
    assert bool(info["accepted"])
    counts = (int(info["forward_passes"]), int(info["backward_passes"]), int(info["jvps"]))
    assert counts == cost
    assert calls["n"] == cost[0]


def test_newton_with_inner_direction_optimizer_costs_and_descends():
    variables, loss_fn = _quadratic(tf.float32)
    f0 = float(loss_fn())
    for method, cost in (("forward", (2, 2, 1)), ("reverse", (2, 3, 0))):
        opt = DirectionalNewton(curvature_method=method, direction=keras.optimizers.Adam(0.1))
        info = opt.minimize(loss_fn, variables)
        counts = (int(info["forward_passes"]), int(info["backward_passes"]), int(info["jvps"]))
        assert counts == cost, method
    assert float(loss_fn()) < f0


@pytest.mark.parametrize(
    "loss_of_w", [lambda v: -(v**2), lambda v: -3.0 * v], ids=["concave", "straight"]
)
def test_newton_non_positive_curvature_falls_back_to_the_learning_rate(loss_of_w):
    w, loss_fn, _ = _scalar_problem(loss_of_w, w0=1.0)
    f0 = float(loss_fn())
    info = DirectionalNewton(learning_rate=0.05).minimize(loss_fn, [w])
    assert float(info["step_size"]) == pytest.approx(0.05)
    assert not bool(info["accepted"])
    assert float(loss_fn()) < f0


def test_newton_damping_and_trust_region_on_a_straight_line():
    w, loss_fn, _ = _scalar_problem(lambda v: -3.0 * v, w0=0.0)  # σ = −9, κ = 0, ‖d‖ = 3
    info = DirectionalNewton(damping=2.0).minimize(loss_fn, [w])  # t = 9 / (2·9) = 0.5
    assert float(info["step_size"]) == pytest.approx(0.5) and bool(info["accepted"])
    w, loss_fn, _ = _scalar_problem(lambda v: -3.0 * v, w0=0.0)
    info = DirectionalNewton(damping=1e-3, max_step=0.3).minimize(loss_fn, [w])
    assert float(w[0]) == pytest.approx(0.3)  # moved exactly the trust radius


def test_newton_flat_loss_takes_no_step():
    w, loss_fn, _ = _scalar_problem(lambda v: 0.0 * v + 5.0, w0=1.0)
    info = DirectionalNewton().minimize(loss_fn, [w])
    assert float(w[0]) == 1.0 and float(info["step_size"]) == 0.0


# ----------------------------------------------------------------------------- GOLS


def test_gradient_only_search_is_exact_on_a_quadratic_line():
    r = gradient_only_search(lambda t: t - 3.0, tf.constant(-3.0, tf.float64), 0.25)
    # Trials 0.25, 0.5, 1, 2, 4: the bracket [2, 4] holds the sign change; the secant is exact.
    assert float(r.step) == pytest.approx(3.0)
    assert int(r.evaluations) == 5 and bool(r.converged)
    r = gradient_only_search(lambda t: t - 3.0, tf.constant(-3.0, tf.float64), 40.0)
    # Shrinking: 40, 20, 10, then 5 with 0 ≤ φ'(5) = 2 ≤ c2·|φ'(0)| = 2.7: accepted at once.
    assert float(r.step) == pytest.approx(3.0) and int(r.evaluations) == 4
    r = gradient_only_search(lambda t: t - 3.0, tf.constant(1.0, tf.float64), 1.0)
    assert (float(r.step), int(r.evaluations), bool(r.descent)) == (0.0, 0, False)


def test_gradient_only_search_bounds_budget_and_non_finite_derivatives():
    neg = tf.constant(-1.0, tf.float64)
    r = gradient_only_search(lambda t: -1.0 + 0.0 * t, neg, 1.0, max_step=5.0)
    assert (float(r.step), bool(r.converged)) == (5.0, False)  # grew to the cap
    r = gradient_only_search(lambda t: -1.0 + 0.0 * t, neg, 1.0, max_evaluations=3)
    assert (float(r.step), int(r.evaluations), bool(r.converged)) == (4.0, 3, False)
    # NaN beyond t = 1.5 counts as "too far"; the minimum of (t − 1)² is bracketed in [1, 2].
    r = gradient_only_search(
        lambda t: tf.where(t < 1.5, 2.0 * (t - 1.0), tf.constant(np.nan, tf.float64)),
        tf.constant(-2.0, tf.float64),
        0.25,
    )
    assert float(r.step) == 1.0 and bool(r.converged)  # no secant through NaN: lo
    # All trials positive until the budget runs out: no step (never an unbracketed uphill one).
    r = gradient_only_search(lambda t: t - 1e-3, neg, 1.0, max_evaluations=4, c2=0.1)
    assert (float(r.step), bool(r.converged), float(r.next_step)) == (0.0, False, 1.0 / 16)


def test_gols_on_a_quartic_locates_the_known_minimiser_with_exact_costs():
    """L(w) = w⁴/4 − w from w = 0: d = −L'(0) = 1, φ'(t) = t³ − 1, minimiser t = 1."""
    w, loss_fn, calls = _scalar_problem(lambda v: v**4 / 4.0 - v, w0=0.0)
    opt = GradientOnlyLineSearch(initial_step=0.1, max_step_length=10.0, interpolate=False)
    info = opt.minimize(loss_fn, [w])
    # Trials 0.1, 0.2, 0.4, 0.8 (φ' < 0), 1.6 (φ' > c2·|φ'(0)|): the step is lo = 0.8.
    assert int(info["evaluations"]) == 5
    assert float(w[0]) == pytest.approx(0.8)
    assert bool(info["accepted"])
    assert (int(info["forward_passes"]), int(info["backward_passes"]), int(info["jvps"])) == (
        6,
        6,
        0,
    )
    assert calls["n"] == 6
    assert float(opt.previous_step) == pytest.approx(0.8)  # the next first trial
    for _ in range(15):
        opt.minimize(loss_fn, [w])
    assert float(w[0]) == pytest.approx(1.0, abs=1e-3)


def test_gols_forward_mode_derivatives_count_jvps_and_agree():
    results = {}
    for method, cost in (("reverse", (6, 6, 0)), ("forward", (6, 1, 5))):
        w, loss_fn, calls = _scalar_problem(lambda v: v**4 / 4.0 - v, w0=0.0)
        opt = GradientOnlyLineSearch(
            initial_step=0.1, max_step_length=10.0, derivative_method=method
        )
        info = opt.minimize(loss_fn, [w])
        counts = (int(info["forward_passes"]), int(info["backward_passes"]), int(info["jvps"]))
        assert counts == cost and calls["n"] == cost[0], method
        results[method] = float(w[0])
    # Secant in the bracket [0.8, 1.6] of φ'(t) = t³ − 1.
    expected = 0.8 + (1 - 0.8**3) * 0.8 / (1.6**3 - 0.8**3)
    assert results["forward"] == pytest.approx(expected)
    assert results["reverse"] == pytest.approx(expected)


def test_gols_caps_the_distance_moved():
    w, loss_fn, _ = _scalar_problem(lambda v: -3.0 * v, w0=0.0)  # no minimum along the line
    info = GradientOnlyLineSearch(max_step_length=2.0).minimize(loss_fn, [w])
    assert float(w[0]) == pytest.approx(2.0)
    assert not bool(info["accepted"])


def test_gols_flat_loss_takes_no_step_and_keeps_its_step():
    w, loss_fn, _ = _scalar_problem(lambda v: 0.0 * v + 5.0, w0=1.0)
    opt = GradientOnlyLineSearch(initial_step=0.3)
    info = opt.minimize(loss_fn, [w])
    assert float(w[0]) == 1.0 and int(info["evaluations"]) == 0
    assert float(opt.previous_step) == pytest.approx(0.3)


# ----------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_nan_loss_at_start_point_loses_nothing(name):
    w = tf.Variable([1.0, 2.0])
    info = OPTIMIZERS[name]().minimize(lambda: tf.reduce_sum(w) * np.nan, [w])
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
    assert not bool(info["accepted"])


# ----------------------------------------------------------------------------- round trips


NON_DEFAULT = {
    "pal": lambda: ParabolicLineSearch(
        measuring_step=0.1, step_adaptation=1.2, max_step=2.0, momentum=0.0, clipnorm=5.0
    ),
    "newton": lambda: DirectionalNewton(
        learning_rate=keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5),
        damping=0.1,
        max_step=3.0,
        curvature_method="forward",
        direction=keras.optimizers.SGD(0.1, momentum=0.9),
    ),
    "gols": lambda: GradientOnlyLineSearch(
        initial_step=0.01,
        growth=3.0,
        c2=0.5,
        min_step=1e-6,
        max_step=100.0,
        max_step_length=5.0,
        max_evaluations=7,
        interpolate=False,
        derivative_method="forward",
    ),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("defaults", [True, False], ids=["defaults", "custom"])
def test_config_round_trip(name, defaults):
    opt = OPTIMIZERS[name]() if defaults else NON_DEFAULT[name]()
    config = opt.get_config()
    clone = type(opt).from_config(copy.deepcopy(config))  # Keras' from_config mutates it
    assert clone.get_config() == config
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is type(opt) and again.get_config() == config


def test_step_chosen_optimizers_have_no_learning_rate_in_config():
    assert "learning_rate" not in ParabolicLineSearch().get_config()
    assert "learning_rate" not in GradientOnlyLineSearch().get_config()
    assert DirectionalNewton(learning_rate=0.2).get_config()["learning_rate"] == pytest.approx(0.2)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_checkpoint_round_trip_restores_state(name, tmp_path):
    problems.assert_checkpoint_round_trip(OPTIMIZERS[name], tmp_path, steps=5)


def test_pal_state_is_one_momentum_buffer_and_none_without_momentum():
    """PAL's model-sized state (what checkpoints hold, via the public ``variables``) is one
    momentum buffer per weight; with ``momentum=0`` there is none and each step depends on
    the current point only: a fresh optimizer takes the same second step."""
    variables, loss_fn = _quadratic(tf.float32)
    pal = ParabolicLineSearch()
    pal.build(variables)
    assert sorted(int(np.prod(v.shape)) for v in pal.variables if v.shape.rank)[-1:] == [20]
    assert sum(int(np.prod(v.shape)) > 1 for v in pal.variables) == 1

    no_momentum = ParabolicLineSearch(momentum=0.0)
    no_momentum.build(variables)
    assert all(int(np.prod(v.shape)) == 1 for v in no_momentum.variables)
    no_momentum.minimize(loss_fn, variables)
    start = [v.numpy().copy() for v in variables]
    no_momentum.minimize(loss_fn, variables)
    second = [v.numpy().copy() for v in variables]
    for v, w in zip(variables, start, strict=True):
        v.assign(w)
    ParabolicLineSearch(momentum=0.0).minimize(loss_fn, variables)
    for v, w in zip(variables, second, strict=True):
        np.testing.assert_array_equal(v.numpy(), w)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: ParabolicLineSearch(measuring_step=0.0), "measuring_step"),
        (lambda: ParabolicLineSearch(step_adaptation=-1.0), "step_adaptation"),
        (lambda: ParabolicLineSearch(max_step=float("inf")), "max_step"),
        (lambda: ParabolicLineSearch(momentum=-0.1), "momentum"),
        (lambda: ParabolicLineSearch(momentum=1.0), "momentum"),
        (lambda: ParabolicLineSearch(use_ema=True), "does not support"),
        (lambda: DirectionalNewton(damping=-1.0), "damping"),
        (lambda: DirectionalNewton(max_step=0.0), "max_step"),
        (lambda: DirectionalNewton(learning_rate=-0.1), "learning_rate"),
        (lambda: DirectionalNewton(curvature_method="exact"), "curvature_method"),
        (lambda: GradientOnlyLineSearch(growth=1.0), "growth"),
        (lambda: GradientOnlyLineSearch(c2=1.0), "c2"),
        (lambda: GradientOnlyLineSearch(initial_step=0.0), "initial_step"),
        (lambda: GradientOnlyLineSearch(min_step=1.0, max_step=0.5), "min_step"),
        (lambda: GradientOnlyLineSearch(max_step_length=-2.0), "max_step_length"),
        (lambda: GradientOnlyLineSearch(max_evaluations=0), "max_evaluations"),
        (lambda: GradientOnlyLineSearch(max_evaluations=2.5), "max_evaluations"),
        (lambda: GradientOnlyLineSearch(interpolate="yes"), "interpolate"),
        (lambda: GradientOnlyLineSearch(derivative_method="magic"), "derivative_method"),
    ],
)
def test_invalid_hyperparameters_raise_at_construction(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


# ----------------------------------------------------------------------------- Keras integration


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_model_fit_trains_and_keras_file_restores_optimizer_state(name, tmp_path):
    from sklearn.datasets import load_digits

    from dirgrad_opt.keras_fit import DirectionalSequential

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    keras.utils.set_random_seed(0)
    model = DirectionalSequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile(
        optimizer=OPTIMIZERS[name](),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    hist = model.fit(x, y, batch_size=128, epochs=3, verbose=0)
    assert hist.history["loss"][-1] < 0.6 * hist.history["loss"][0], hist.history["loss"]
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is type(model.optimizer)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("method", ["auto", "forward"])
def test_newton_refuses_curvature_through_max_pool_under_xla(method):
    from dirgrad_opt.directional import UnsafeDerivativeError

    keras.utils.set_random_seed(0)
    x = tf.random.stateless_normal((4, 8, 8, 1), seed=[1, 2])
    y = tf.constant([0, 1, 0, 1])
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )

    def loss_fn():
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True)
        )

    opt = DirectionalNewton(curvature_method=method)
    variables = model.trainable_variables
    opt.build(variables)
    with pytest.raises(UnsafeDerivativeError, match="MaxPool under XLA"):
        tf.function(lambda: opt.minimize(loss_fn, variables), jit_compile=True)()

    # Without XLA it runs, and the curvature is dᵀHd for d = −∇L(w₀), by nested tapes.
    def dot(a, b):
        return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b, strict=True)])

    with tf.GradientTape() as tape:
        loss = loss_fn()
    d = [-g for g in tape.gradient(loss, variables)]
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = loss_fn()
        slope = dot(inner.gradient(loss, variables), d)  # ∇L·d with d held fixed
    expected = float(dot(outer.gradient(slope, variables), d))  # (H d)·d
    info = tf.function(lambda: opt.minimize(loss_fn, variables))()
    assert float(info["curvature"]) == pytest.approx(expected, rel=1e-3)


def test_pal_nan_gradient_does_not_poison_the_momentum_buffer():
    w = tf.Variable([1.0])
    opt = ParabolicLineSearch()
    opt.minimize(lambda: (w[0] - 3.0) ** 2, [w])
    before = opt._buffers[0].numpy().copy()
    info = opt.minimize(lambda: (w[0] - 3.0) ** 2 * np.nan, [w])
    assert not bool(info["accepted"])
    np.testing.assert_array_equal(opt._buffers[0].numpy(), before)
