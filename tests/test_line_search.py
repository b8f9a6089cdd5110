"""Tests for dirgrad_opt.line_search, with SciPy's strong Wolfe search as the reference.

Run ``pytest tests/test_line_search.py -s`` to see the evaluation-count table against
``scipy.optimize._linesearch.scalar_search_wolfe2`` on the Moré–Thuente (1994) test functions.
"""

from __future__ import annotations

import doctest
import functools
import math
import warnings

import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf
from scipy.optimize._linesearch import scalar_search_wolfe2

from dirgrad_opt import line_search

# --------------------------------------------------------------------------------------------
# Test functions phi(t) (written with tf ops; derivatives by autodiff)
# --------------------------------------------------------------------------------------------


def more_thuente_1(t, beta=2.0):
    """phi(t) = -t / (t² + beta); minimiser sqrt(beta)."""
    return -t / (t**2 + beta)


def more_thuente_2(t, beta=0.004):
    """phi(t) = (t + beta)⁵ - 2 (t + beta)⁴; minimiser 1.6 - beta, tiny |phi'(0)|."""
    return (t + beta) ** 5 - 2.0 * (t + beta) ** 4


def more_thuente_3(t, beta=0.01, ell=39.0):
    """Piecewise |t - 1| smoothed on [1 - beta, 1 + beta] plus a sine wiggle."""
    base = tf.where(
        t <= 1.0 - beta,
        1.0 - t,
        tf.where(t >= 1.0 + beta, t - 1.0, (t - 1.0) ** 2 / (2.0 * beta) + beta / 2.0),
    )
    return base + 2.0 * (1.0 - beta) / (ell * math.pi) * tf.sin(ell * math.pi * t / 2.0)


def yanai_ozawa_kaneko(beta1, beta2):
    """phi(t) = γ(β1) sqrt((1 - t)² + β2²) + γ(β2) sqrt(t² + β1²), γ(β) = sqrt(1 + β²) - β."""

    def gamma(b):
        return math.sqrt(1.0 + b * b) - b

    def phi(t):
        return gamma(beta1) * tf.sqrt((1.0 - t) ** 2 + beta2**2) + gamma(beta2) * tf.sqrt(
            t**2 + beta1**2
        )

    return phi


# name -> (function, c1, c2). Moré & Thuente use (mu, eta) = (0.001, 0.1), (0.1, 0.1),
# (0.1, 0.1), (0.001, 0.001) x 3; both searches here need c1 < c2 strictly.
MORE_THUENTE = {
    "mt1": (more_thuente_1, 1e-3, 0.1),
    "mt2": (more_thuente_2, 1e-3, 0.1),
    "mt3": (more_thuente_3, 1e-3, 0.1),
    "yok1": (yanai_ozawa_kaneko(1e-3, 1e-3), 1e-4, 1e-3),
    "yok2": (yanai_ozawa_kaneko(1e-2, 1e-3), 1e-4, 1e-3),
    "yok3": (yanai_ozawa_kaneko(1e-3, 1e-2), 1e-4, 1e-3),
}
INITIAL_STEPS = (1e-3, 1e-1, 1e1, 1e3)
# Extra evaluations we allow over SciPy on a case SciPy solves.
SLACK = 4


def with_derivative(f):
    """phi(t) -> (f(t), f'(t)) by autodiff; works eagerly, in tf.function and under XLA."""

    def phi(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            value = f(t)
        return value, tape.gradient(value, t)

    return phi


def at(f, t, dtype=tf.float64):
    """(f(t), f'(t)) as Python floats."""
    value, derivative = with_derivative(f)(tf.constant(t, dtype))
    return float(value), float(derivative)


def assert_strong_wolfe(f, result, c1, c2, dtype=tf.float64):
    """The returned step satisfies both conditions, re-evaluated independently."""
    value0, derivative0 = at(f, 0.0, dtype)
    step = float(result.step)
    value, derivative = at(f, step, dtype)
    # float32 (and XLA's different rounding) gets an absolute tolerance on O(1) functions.
    tol = 1e-12 if dtype == tf.float64 else 1e-6
    assert step > 0
    assert float(result.value) == pytest.approx(value, rel=1e-6, abs=tol)
    assert float(result.derivative) == pytest.approx(derivative, rel=1e-6, abs=tol)
    assert value <= value0 + c1 * step * derivative0 + tol * abs(value0), "sufficient decrease"
    assert abs(derivative) <= c2 * abs(derivative0) * (1 + tol), "curvature"


def assert_armijo(f, result, c1, dtype=tf.float64):
    value0, derivative0 = at(f, 0.0, dtype)
    step = float(result.step)
    value, _ = at(f, step, dtype)
    assert step > 0
    assert float(result.value) == pytest.approx(value, rel=1e-6, abs=1e-12)
    tol = 1e-12 if dtype == tf.float64 else 1e-6
    assert value <= value0 + c1 * step * derivative0 + tol * abs(value0)


def counted(phi, counter):
    """phi that also increments a tf.Variable counter (the true number of calls)."""

    def wrapped(t):
        counter.assign_add(1)
        return phi(t)

    return wrapped


# --------------------------------------------------------------------------------------------
# Against SciPy on the Moré–Thuente functions
# --------------------------------------------------------------------------------------------


@functools.cache
def scipy_and_ours(name, initial_step):
    """(scipy_converged, scipy_evaluations, our result) for one case, in float64.

    SciPy always starts at 1, so it searches the rescaled line s -> phi(initial_step · s);
    both conditions are invariant under that rescaling, so the trial counts compare.
    """
    f, c1, c2 = MORE_THUENTE[name]
    value0, derivative0 = at(f, 0.0)
    calls = []

    def phi_scaled(s):
        calls.append(s)
        return at(f, initial_step * s)[0]

    def derphi_scaled(s):
        return initial_step * at(f, initial_step * s)[1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, _, derphi_star = scalar_search_wolfe2(
            phi_scaled,
            derphi_scaled,
            value0,
            None,
            initial_step * derivative0,
            c1=c1,
            c2=c2,
            maxiter=100,
        )
    ours = line_search.strong_wolfe(
        with_derivative(f),
        tf.constant(value0, tf.float64),
        tf.constant(derivative0, tf.float64),
        initial_step=initial_step,
        c1=c1,
        c2=c2,
        max_evaluations=100,
    )
    return derphi_star is not None, len(calls), ours


@pytest.mark.parametrize("initial_step", INITIAL_STEPS)
@pytest.mark.parametrize("name", list(MORE_THUENTE))
def test_strong_wolfe_more_thuente_vs_scipy(name, initial_step):
    f, c1, c2 = MORE_THUENTE[name]
    scipy_ok, scipy_evals, ours = scipy_and_ours(name, initial_step)
    print(
        f"\n{name:5s} t0={initial_step:7.0e}"
        f"  scipy: converged={scipy_ok!s:5s} evals={scipy_evals:3d}"
        f"  ours: converged={bool(ours.converged)!s:5s} evals={int(ours.evaluations):3d}"
        f" step={float(ours.step):.6g}"
    )
    assert bool(ours.converged)
    assert bool(ours.descent)
    assert_strong_wolfe(f, ours, c1, c2)
    if scipy_ok:
        assert int(ours.evaluations) <= scipy_evals + SLACK


def test_strong_wolfe_more_thuente_table():
    """All 24 cases in one table; in total we need fewer evaluations than SciPy."""
    lines = [
        f"{'case':5s} {'t0':>7s} | {'scipy ok':8s} {'evals':>5s} | {'ours ok':8s} {'evals':>5s}"
    ]
    total_scipy = total_ours = 0
    for name in MORE_THUENTE:
        for initial_step in INITIAL_STEPS:
            scipy_ok, scipy_evals, ours = scipy_and_ours(name, initial_step)
            total_scipy += scipy_evals
            total_ours += int(ours.evaluations)
            lines.append(
                f"{name:5s} {initial_step:7.0e} | {scipy_ok!s:8s} {scipy_evals:5d} | "
                f"{bool(ours.converged)!s:8s} {int(ours.evaluations):5d}"
            )
    lines.append(f"{'total':13s} | {'':8s} {total_scipy:5d} | {'':8s} {total_ours:5d}")
    print("\n" + "\n".join(lines))
    assert total_ours <= total_scipy


def two_valleys(t):
    """phi(t) = -t + 2.3t² - 3.55t³ + 2.2t⁴ - 0.45t⁵, the quintic with phi(0) = 0,
    phi'(0) = -1, phi(1) = -0.5, phi'(1) = -0.5, phi(2) = -0.4, phi'(2) = 0 (by hand: six
    linear conditions on six coefficients). Its first valley (minimum near t = 1.362, value
    about -0.61) lies between the bracketing trials 1 and 2, and t = 2 is the top of the next
    hill (phi''(2) = -4.4): a strong Wolfe point, but higher than the trial at 1."""
    return -t + 2.3 * t**2 - 3.55 * t**3 + 2.2 * t**4 - 0.45 * t**5


def test_strong_wolfe_zooms_into_a_valley_between_bracketing_trials():
    """Nocedal & Wright Alg. 3.5 (SciPy issue 12157): phi(2) >= phi(1) means zoom(1, 2), not
    accepting the hill top at 2, even though it satisfies both strong Wolfe conditions."""
    c1, c2 = 1e-4, 0.1
    assert at(two_valleys, 2.0) == pytest.approx((-0.4, 0.0), abs=1e-12)  # a trap for Wolfe
    calls = []

    def phi_scipy(s):
        calls.append(s)
        return at(two_valleys, s)[0]

    scipy_step, scipy_value, _, _ = scalar_search_wolfe2(
        phi_scipy, lambda s: at(two_valleys, s)[1], 0.0, None, -1.0, c1=c1, c2=c2
    )
    ours = line_search.strong_wolfe(
        with_derivative(two_valleys),
        tf.constant(0.0, tf.float64),
        tf.constant(-1.0, tf.float64),
        c1=c1,
        c2=c2,
    )
    assert calls[:2] == [1.0, 2.0]  # SciPy brackets with the same trials, then zooms
    assert 1.0 < scipy_step < 2.0 and scipy_value < -0.5
    assert bool(ours.converged)
    assert_strong_wolfe(two_valleys, ours, c1, c2)
    assert 1.0 < float(ours.step) < 2.0
    assert float(ours.value) < at(two_valleys, 1.0)[0]  # lower than every trial before it
    assert float(ours.value) == pytest.approx(scipy_value, abs=0.01)  # same valley as SciPy
    assert int(ours.evaluations) <= len(calls)


# The first zoom trial on two_valleys (cubic through phi, phi' at 1 and 2), and a narrow bump
# (height 0.2, width 0.05) centred just past it so that phi'(ZOOM_TRIAL) = 0 there: a strong
# Wolfe point of value about -0.39, higher than the trial at 1 (-0.5).
ZOOM_TRIAL = 1.2380952380952377


def _bump_centre() -> float:
    import scipy.optimize

    def slope_at_trial(m):
        bump_slope = (
            -0.2 * 2 * (ZOOM_TRIAL - m) / 0.05**2 * math.exp(-(((ZOOM_TRIAL - m) / 0.05) ** 2))
        )
        return at(two_valleys, ZOOM_TRIAL)[1] + bump_slope

    return scipy.optimize.brentq(slope_at_trial, ZOOM_TRIAL, ZOOM_TRIAL + 0.02, xtol=1e-15)


def test_strong_wolfe_zoom_never_accepts_a_trial_above_lo():
    """Algorithm 3.6: a zoom trial not lower than lo becomes hi even if it meets both strong
    Wolfe conditions (here the top of a bump inside the bracket [1, 2])."""
    centre = _bump_centre()

    def bumped(t):
        return two_valleys(t) + 0.2 * tf.exp(-(((t - centre) / 0.05) ** 2))

    value1 = at(bumped, 1.0)[0]
    top_value, top_slope = at(bumped, ZOOM_TRIAL)
    assert top_value > value1 + 0.1 and abs(top_slope) < 1e-9  # a Wolfe point above the trial at 1
    calls = []

    def phi(t):
        calls.append(float(t))
        return with_derivative(bumped)(t)

    ours = line_search.strong_wolfe(
        phi, tf.constant(0.0, tf.float64), tf.constant(-1.0, tf.float64), c1=1e-4, c2=0.1
    )
    assert calls[:3] == pytest.approx([1.0, 2.0, ZOOM_TRIAL], abs=1e-9)  # the case is exercised
    assert bool(ours.converged)
    assert_strong_wolfe(bumped, ours, 1e-4, 0.1)
    assert float(ours.value) < value1


# --------------------------------------------------------------------------------------------
# Quadratic and Rosenbrock along a line, against scipy.optimize.line_search
# --------------------------------------------------------------------------------------------


def rosenbrock_np(x):
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def rosenbrock_grad_np(x):
    return np.array(
        [-2.0 * (1.0 - x[0]) - 400.0 * x[0] * (x[1] - x[0] ** 2), 200.0 * (x[1] - x[0] ** 2)]
    )


QUADRATIC_A = np.array([[3.0, 0.5, 0.0], [0.5, 2.0, 0.1], [0.0, 0.1, 0.7]])
QUADRATIC_B = np.array([1.0, -2.0, 0.5])


def quadratic_np(x):
    return 0.5 * x @ QUADRATIC_A @ x - QUADRATIC_B @ x


def quadratic_grad_np(x):
    return QUADRATIC_A @ x - QUADRATIC_B


def rosenbrock_tf(x):
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def quadratic_tf(x):
    a = tf.constant(QUADRATIC_A, x.dtype)
    b = tf.constant(QUADRATIC_B, x.dtype)
    return 0.5 * tf.tensordot(x, tf.linalg.matvec(a, x), 1) - tf.tensordot(b, x, 1)


LINE_PROBLEMS = {
    # name: (numpy f, numpy grad, tf f, start)
    "quadratic": (quadratic_np, quadratic_grad_np, quadratic_tf, np.array([2.0, 1.0, -1.0])),
    "rosenbrock": (rosenbrock_np, rosenbrock_grad_np, rosenbrock_tf, np.array([-1.2, 1.0])),
}


def along_steepest_descent(f_tf, x0, dtype=tf.float64):
    """t -> f(x0 + t·p) with p = -∇f(x0), as a scalar tf function."""
    x0 = tf.constant(x0, dtype)
    with tf.GradientTape() as tape:
        tape.watch(x0)
        value = f_tf(x0)
    p = -tape.gradient(value, x0)
    return lambda t: f_tf(x0 + t * p)


@pytest.mark.parametrize("c2", [0.9, 0.1])
@pytest.mark.parametrize("problem", list(LINE_PROBLEMS))
def test_strong_wolfe_steepest_descent_vs_scipy(problem, c2):
    f_np, grad_np, f_tf, x0 = LINE_PROBLEMS[problem]
    c1 = 1e-4
    p = -grad_np(x0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alpha, scipy_fc, _, _, _, _ = scipy.optimize.line_search(
            f_np, grad_np, x0, p, c1=c1, c2=c2, maxiter=100
        )
    phi = along_steepest_descent(f_tf, x0)
    value0, derivative0 = at(phi, 0.0)
    r = line_search.strong_wolfe(
        with_derivative(phi), tf.constant(value0, tf.float64), derivative0, c1=c1, c2=c2
    )
    print(
        f"\n{problem} c2={c2}: scipy step={alpha} evals={scipy_fc}; "
        f"ours step={float(r.step):.6g} evals={int(r.evaluations)}"
    )
    assert bool(r.converged)
    assert_strong_wolfe(phi, r, c1, c2)
    assert alpha is not None
    assert int(r.evaluations) <= scipy_fc + SLACK


@pytest.mark.parametrize("problem", list(LINE_PROBLEMS))
def test_armijo_steepest_descent(problem):
    _, _, f_tf, x0 = LINE_PROBLEMS[problem]
    phi = along_steepest_descent(f_tf, x0)
    value0, derivative0 = at(phi, 0.0)
    r = line_search.backtracking_armijo(phi, tf.constant(value0, tf.float64), derivative0)
    assert bool(r.converged) and bool(r.descent)
    assert_armijo(phi, r, 1e-4)
    # The accepted step is the first of 1, 1/2, 1/4, ... satisfying Armijo.
    k = round(-math.log2(float(r.step)))
    assert float(r.step) == 2.0**-k
    assert int(r.evaluations) == k + 1
    if k > 0:
        larger = 2.0 ** -(k - 1)
        assert at(phi, larger)[0] > value0 + 1e-4 * larger * derivative0
    assert math.isnan(float(r.derivative))


def test_armijo_accepts_initial_step_and_exact_shrink_sequence():
    # phi(t) = (t - 3)², phi(0) = 9, phi'(0) = -6: t = 8 fails (25 > 9 - 0.0048), t = 4 passes.
    r = line_search.backtracking_armijo(lambda t: (t - 3.0) ** 2, 9.0, -6.0, initial_step=8.0)
    assert float(r.step) == 4.0 and float(r.value) == 1.0
    assert int(r.evaluations) == 2 and bool(r.converged)


# --------------------------------------------------------------------------------------------
# Graph mode, XLA, dtypes, and the evaluation counter
# --------------------------------------------------------------------------------------------

MODES = ["eager", "function", "xla"]


def run_in_mode(mode, fn):
    if mode == "eager":
        return fn()
    return tf.function(fn, jit_compile=(mode == "xla"))()


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["mt1", "yok1", "mt3"])
def test_strong_wolfe_graph_modes_and_counter(name, mode, dtype):
    f, c1, c2 = MORE_THUENTE[name]
    counter = tf.Variable(0, dtype=tf.int32)
    weight = tf.Variable(0.0, dtype=dtype)  # assigned inside phi, like an optimizer would

    def phi(t):
        counter.assign_add(1)
        weight.assign(t)
        return with_derivative(f)(tf.convert_to_tensor(weight))

    def search():
        value0, derivative0 = with_derivative(f)(tf.constant(0.0, dtype))
        return line_search.strong_wolfe(
            phi, value0, derivative0, initial_step=0.1, c1=c1, c2=c2, max_evaluations=30
        )

    r = run_in_mode(mode, search)
    assert r.step.dtype == dtype and r.value.dtype == dtype and r.derivative.dtype == dtype
    assert r.evaluations.dtype == tf.int32
    assert bool(r.converged) and bool(r.descent)
    assert int(r.evaluations) == int(counter.numpy())
    assert_strong_wolfe(f, r, c1, c2, dtype)
    # Same trial sequence in every mode (float64 exactly, float32 up to rounding).
    eager = scipy_and_ours(name, 0.1)[2]
    if dtype == tf.float64:
        assert int(r.evaluations) == int(eager.evaluations)
        assert float(r.step) == pytest.approx(float(eager.step), rel=1e-9)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("mode", MODES)
def test_armijo_graph_modes_and_counter(mode, dtype):
    counter = tf.Variable(0, dtype=tf.int32)
    f = MORE_THUENTE["mt1"][0]

    def search():
        value0, derivative0 = with_derivative(f)(tf.constant(0.0, dtype))
        return line_search.backtracking_armijo(
            counted(f, counter), value0, derivative0, initial_step=100.0, c1=0.1, shrink=0.5
        )

    r = run_in_mode(mode, search)
    assert r.step.dtype == dtype and r.evaluations.dtype == tf.int32
    assert bool(r.converged)
    assert int(r.evaluations) == int(counter.numpy())
    assert_armijo(f, r, 0.1, dtype)
    # First of 100·2^-k with -t/(t²+2) <= -0.05 t  <=>  t² <= 18: 100/32 = 3.125.
    assert float(r.step) == 3.125 and int(r.evaluations) == 6


@pytest.mark.parametrize("mode", MODES)
def test_counter_matches_on_budget_exhaustion_and_scipy_cases(mode):
    """evaluations == number of phi calls, also when the budget (here a tensor) ends the search."""
    for name in MORE_THUENTE:
        f, c1, c2 = MORE_THUENTE[name]
        counter = tf.Variable(0, dtype=tf.int32)

        def search(budget, f=f, c1=c1, c2=c2, counter=counter):
            value0, derivative0 = with_derivative(f)(tf.constant(0.0, tf.float64))
            return line_search.strong_wolfe(
                counted(with_derivative(f), counter),
                value0,
                derivative0,
                initial_step=10.0,
                c1=c1,
                c2=c2,
                max_evaluations=budget,
            )

        if mode != "eager":
            search = tf.function(search, jit_compile=(mode == "xla"))
        for budget in (1, 3, 100):
            counter.assign(0)
            r = search(tf.constant(budget))
            assert int(r.evaluations) == int(counter.numpy()) <= budget
            assert bool(r.converged) or int(r.evaluations) == budget
            assert bool(r.converged) or budget < 100


def test_tf_function_traces_once_for_new_values():
    traces = []

    @tf.function
    def search(value0, derivative0):
        traces.append(1)
        return line_search.strong_wolfe(
            lambda t: (value0 + derivative0 * t + t * t, derivative0 + 2.0 * t),
            value0,
            derivative0,
        )

    for v, d in [(1.0, -1.0), (2.0, -3.0), (0.5, -0.1)]:
        r = search(tf.constant(v), tf.constant(d))
        assert bool(r.converged)
    assert len(traces) == 1


# --------------------------------------------------------------------------------------------
# Non-finite regions
# --------------------------------------------------------------------------------------------


def nan_beyond(f, limit, bad=float("nan")):
    """f(t) for t < limit, else `bad` (NaN or inf): a loss that blows up past a point."""

    def g(t):
        return tf.where(t >= limit, tf.constant(bad, t.dtype), f(t))

    return g


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("initial_step", [1.0, 1000.0])
@pytest.mark.parametrize("mode", ["eager", "function"])
def test_strong_wolfe_nan_region(bad, initial_step, mode):
    f = nan_beyond(lambda t: (t - 0.4) ** 2, 0.5, bad)
    counter = tf.Variable(0, dtype=tf.int32)

    def search():
        return line_search.strong_wolfe(
            counted(with_derivative(f), counter),
            tf.constant(0.16, tf.float64),
            tf.constant(-0.8, tf.float64),
            initial_step=initial_step,
        )

    r = run_in_mode(mode, search)
    assert bool(r.converged)
    assert math.isfinite(float(r.step)) and 0 < float(r.step) < 0.5
    assert math.isfinite(float(r.value)) and math.isfinite(float(r.derivative))
    assert_strong_wolfe(f, r, 1e-4, 0.9)
    assert int(r.evaluations) == int(counter.numpy())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_armijo_nan_region(bad):
    f = nan_beyond(lambda t: (t - 0.4) ** 2, 0.5, bad)
    r = line_search.backtracking_armijo(f, tf.constant(0.16, tf.float64), -0.8, initial_step=3.0)
    assert bool(r.converged)
    assert float(r.step) == 0.375  # 3, 1.5, 0.75 are non-finite
    assert int(r.evaluations) == 4
    assert_armijo(f, r, 1e-4)


def test_strong_wolfe_nan_derivative_is_too_far():
    """A finite value with a NaN derivative is not accepted either."""

    def phi(t):
        value = (t - 0.4) ** 2
        return value, tf.where(t >= 0.5, tf.constant(float("nan"), t.dtype), 2.0 * (t - 0.4))

    r = line_search.strong_wolfe(phi, tf.constant(0.16, tf.float64), -0.8)
    assert bool(r.converged)
    assert 0 < float(r.step) < 0.5 and math.isfinite(float(r.derivative))


def test_strong_wolfe_unsatisfiable_in_finite_region_returns_best_finite():
    # phi(t) = -t up to 0.5, NaN beyond: no point meets the curvature condition
    # (|phi'| = 1 > 0.9), so the budget runs out; the result is the lowest finite trial.
    f = nan_beyond(lambda t: -t, 0.5)
    trials = []

    def phi(t):
        trials.append(float(t))
        return with_derivative(f)(t)

    r = line_search.strong_wolfe(phi, tf.constant(0.0, tf.float64), -1.0, max_evaluations=12)
    assert not bool(r.converged) and bool(r.descent)
    assert int(r.evaluations) == len(trials) == 12
    finite = [t for t in trials if t < 0.5]
    assert float(r.step) == max(finite)
    assert float(r.value) == -max(finite)
    assert 0 < float(r.step) < 0.5


# --------------------------------------------------------------------------------------------
# Budget exhaustion, max_step, non-descent
# --------------------------------------------------------------------------------------------


def test_strong_wolfe_budget_returns_best_decreasing_trial():
    f, c1, c2 = MORE_THUENTE["mt2"]
    value0, derivative0 = at(f, 0.0)
    trials = []

    def phi(t):
        trials.append(float(t))
        return with_derivative(f)(t)

    r = line_search.strong_wolfe(
        phi, tf.constant(value0, tf.float64), derivative0, 1e-3, c1, c2, max_evaluations=5
    )
    assert not bool(r.converged) and bool(r.descent)
    assert int(r.evaluations) == len(trials) == 5
    values = [at(f, t)[0] for t in trials]
    best = int(np.argmin(values))
    assert values[best] < value0
    assert float(r.step) == trials[best]
    assert float(r.value) == pytest.approx(values[best], rel=1e-12)
    assert float(r.derivative) == pytest.approx(at(f, trials[best])[1], rel=1e-12)


def test_strong_wolfe_budget_without_decrease_returns_zero():
    # phi(t) = (t - 0.001)⁴ from t = 1000: every trial within the budget increases the loss.
    trials = []

    def phi(t):
        trials.append(float(t))
        return (t - 0.001) ** 4, 4.0 * (t - 0.001) ** 3

    r = line_search.strong_wolfe(
        phi, tf.constant(1e-12, tf.float64), -4e-9, 1000.0, max_evaluations=3
    )
    assert all((t - 0.001) ** 4 > 1e-12 for t in trials)
    assert not bool(r.converged) and bool(r.descent)
    assert float(r.step) == 0.0 and float(r.value) == 1e-12 and float(r.derivative) == -4e-9
    assert int(r.evaluations) == len(trials) == 3


def test_armijo_budget_returns_best_decreasing_trial():
    # c1 = 0.99 makes Armijo need t <= 0.06; trials 5, 2.5, 1.25 all fail, 2.5 decreases most.
    f = lambda t: (t - 3.0) ** 2  # noqa: E731
    r = line_search.backtracking_armijo(f, 9.0, -6.0, 5.0, c1=0.99, max_evaluations=3)
    assert not bool(r.converged)
    assert float(r.step) == 2.5 and float(r.value) == 0.25 and int(r.evaluations) == 3


def test_armijo_budget_without_decrease_returns_zero():
    f = lambda t: (t - 3.0) ** 2  # noqa: E731
    r = line_search.backtracking_armijo(f, 9.0, -6.0, 1000.0, max_evaluations=3)
    assert not bool(r.converged)
    assert float(r.step) == 0.0 and float(r.value) == 9.0 and int(r.evaluations) == 3


def test_strong_wolfe_stops_when_bracket_reaches_rounding_level():
    # mt2 needs |t - t*| <~ 2.5e-9 near t* = 1.596, below float32 resolution (1.2e-7): the zoom
    # stops once the bracket is a few ulps wide, well before the budget, with a decreasing step.
    f, c1, c2 = MORE_THUENTE["mt2"]
    value0, derivative0 = with_derivative(f)(tf.constant(0.0, tf.float32))
    r = line_search.strong_wolfe(
        with_derivative(f), value0, derivative0, 10.0, c1, c2, max_evaluations=1000
    )
    assert not bool(r.converged)
    assert int(r.evaluations) < 40
    assert float(r.value) < float(value0)
    assert float(r.step) == pytest.approx(1.596, abs=1e-5)


def test_strong_wolfe_max_step():
    # Unbounded descent: bracketing doubles 1, 2, 4, 8 and stops at max_step unconverged.
    r = line_search.strong_wolfe(lambda t: (-t, -tf.ones_like(t)), 0.0, -1.0, max_step=8.0)
    assert not bool(r.converged)
    assert float(r.step) == 8.0 and int(r.evaluations) == 4
    # initial_step is clipped to max_step.
    r = line_search.strong_wolfe(lambda t: (-t, -tf.ones_like(t)), 0.0, -1.0, 50.0, max_step=8.0)
    assert float(r.step) == 8.0 and int(r.evaluations) == 1


@pytest.mark.parametrize(
    "value0, derivative0",
    [(1.0, 1.0), (1.0, 0.0), (1.0, float("nan")), (float("nan"), -1.0), (1.0, float("-inf"))],
)
@pytest.mark.parametrize("mode", ["eager", "function"])
def test_non_descent_returns_zero_without_evaluating(value0, derivative0, mode):
    counter = tf.Variable(0, dtype=tf.int32)
    f = lambda t: (t - 3.0) ** 2  # noqa: E731

    def searches():
        v0, d0 = tf.constant(value0, tf.float64), tf.constant(derivative0, tf.float64)
        return (
            line_search.strong_wolfe(counted(with_derivative(f), counter), v0, d0),
            line_search.backtracking_armijo(counted(f, counter), v0, d0),
        )

    for r in run_in_mode(mode, searches):
        assert float(r.step) == 0.0
        assert int(r.evaluations) == 0
        assert not bool(r.converged) and not bool(r.descent)
        np.testing.assert_equal(float(r.value), value0)
    assert int(counter.numpy()) == 0


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

QUAD = lambda t: ((t - 1.0) ** 2, 2.0 * (t - 1.0))  # noqa: E731


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"c1": 0.0}, "c1"),
        ({"c1": 1.0}, "c1"),
        ({"c2": 1.0}, "c2"),
        ({"c2": -0.5}, "c2"),
        ({"c1": 0.5, "c2": 0.5}, "c1 < c2"),
        ({"c1": 0.9, "c2": 0.1}, "c1 < c2"),
        ({"initial_step": 0.0}, "initial_step"),
        ({"initial_step": -1.0}, "initial_step"),
        ({"initial_step": float("inf")}, "initial_step"),
        ({"max_evaluations": 0}, "max_evaluations"),
        ({"max_evaluations": 2.5}, "max_evaluations"),
        ({"max_step": 0.0}, "max_step"),
    ],
)
def test_strong_wolfe_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        line_search.strong_wolfe(QUAD, 1.0, -2.0, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"c1": 0.0}, "c1"),
        ({"c1": 1.5}, "c1"),
        ({"shrink": 1.0}, "shrink"),
        ({"shrink": 0.0}, "shrink"),
        ({"initial_step": -2.0}, "initial_step"),
        ({"max_evaluations": 0}, "max_evaluations"),
        ({"max_evaluations": True}, "max_evaluations"),
    ],
)
def test_armijo_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        line_search.backtracking_armijo(lambda t: QUAD(t)[0], 1.0, -2.0, **kwargs)


def test_dtype_and_shape_errors():
    with pytest.raises(ValueError, match="dtype float32.*float64"):
        line_search.strong_wolfe(
            lambda t: (tf.constant(1.0, tf.float32), tf.constant(-1.0, tf.float32)),
            tf.constant(2.0, tf.float64),
            -1.0,
        )
    with pytest.raises(ValueError, match="pair"):
        line_search.strong_wolfe(lambda t: (t - 1.0) ** 2, 1.0, -2.0)
    with pytest.raises(ValueError, match="scalar"):
        line_search.backtracking_armijo(lambda t: tf.stack([t, t]), 1.0, -2.0)
    with pytest.raises(ValueError, match="floating"):
        line_search.backtracking_armijo(lambda t: t, tf.constant(1), -2.0)


def test_hyperparameters_may_be_tensors():
    r = line_search.strong_wolfe(
        QUAD, 1.0, -2.0, initial_step=tf.constant(0.25), c1=tf.constant(1e-4), c2=tf.constant(0.5)
    )
    # φ = (t − 1)²: the trial 0.25 fails the curvature condition (|φ'| = 1.5 > 0.5·2), the
    # doubled trial 0.5 meets it with equality (|φ'| = 1 = c2·|φ'(0)|): exactly 0.5, 2 calls.
    assert bool(r.converged) and float(r.step) == 0.5 and int(r.evaluations) == 2


# --------------------------------------------------------------------------------------------
# parabolic_minimum
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("step", [0.1, 0.7, 1.5, 4.0])
def test_parabolic_minimum_exact_on_parabola(dtype, step):
    # q(t) = 2 (t - 1.5)² + 3: q(0) = 7.5, q'(0) = -6, minimiser 1.5.
    def q(t):
        return 2.0 * (t - 1.5) ** 2 + 3.0

    t_star, ok = line_search.parabolic_minimum(
        tf.constant(7.5, dtype), tf.constant(-6.0, dtype), step, q(step)
    )
    assert t_star.dtype == dtype and bool(ok)
    # float32 loses digits in q(step) - q(0) - q'(0)·step for small steps.
    assert float(t_star) == pytest.approx(1.5, rel=1e-4 if dtype == tf.float32 else 1e-12)


@pytest.mark.parametrize(
    "value0, derivative0, step, value_at_step",
    [
        (1.0, -1.0, 1.0, -1.0),  # concave: -t² - t + 1
        (1.0, -1.0, 1.0, 0.0),  # linear: curvature exactly 0
        (1.0, -1.0, 0.0, 1.0),  # step 0: no information
        (1.0, -1.0, 1.0, float("nan")),
    ],
)
def test_parabolic_minimum_not_ok(value0, derivative0, step, value_at_step):
    t_star, ok = line_search.parabolic_minimum(value0, derivative0, step, value_at_step)
    assert not bool(ok)
    assert float(t_star) == 0.0


def test_parabolic_minimum_in_xla():
    fn = tf.function(
        lambda: line_search.parabolic_minimum(
            tf.constant(7.5, tf.float64), tf.constant(-6.0, tf.float64), 0.5, 5.0
        ),
        jit_compile=True,
    )
    t_star, ok = fn()
    assert bool(ok) and float(t_star) == pytest.approx(1.5)


# --------------------------------------------------------------------------------------------
# Docs
# --------------------------------------------------------------------------------------------


def test_docstring_examples():
    failures, tried = doctest.testmod(line_search, verbose=False)
    assert tried >= 2 and failures == 0


def test_public_surface():
    assert set(line_search.__all__) == {
        "LineSearchResult",
        "backtracking_armijo",
        "parabolic_minimum",
        "strong_wolfe",
    }
    assert line_search.LineSearchResult._fields == (
        "step",
        "value",
        "derivative",
        "evaluations",
        "converged",
        "descent",
    )
