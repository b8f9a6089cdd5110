"""Issue 10, points 5 (optimizer part) and 9: a failed Armijo search carries its smallest
rejected step forward; the searches run on bfloat16 variables and refuse mixed dtypes."""

from __future__ import annotations

import pytest
import tensorflow as tf

from dirgrad_opt import directional, optimizers


def _failing_square(max_evaluations: int = 3):
    """L(w) = w², w = 1, d = −∇L = −2: L(w + td) = (1 − 2t)² meets Armijo (c = 0.1) only for
    t ≤ 0.9, so trials 8, 4, 2 (β = 0.5) all fail."""
    w = tf.Variable([1.0], dtype=tf.float64)
    opt = optimizers.ArmijoLineSearch(
        c=0.1, shrink=0.5, initial_step=8.0, max_step=8.0, max_evaluations=max_evaluations
    )
    return w, opt, lambda: tf.reduce_sum(w**2)


def test_failed_armijo_search_carries_its_smallest_trial_forward():
    w, opt, loss_fn = _failing_square()
    info = opt.minimize(loss_fn, [w])
    assert not bool(info["accepted"])  # a stall is visible per step
    assert int(info["evaluations"]) == 3
    # Rejected 8, 4, 2: the next search continues at 8·0.5³ = 1 (times the grow factor),
    # not at 8·0.5 = 4 as before (a shrink of only ×0.5·2^(1/100) per failed step).
    assert float(opt.previous_step) == pytest.approx(1.0)
    assert float(opt.trial_step()) == pytest.approx(2.0 ** (1 / 100))
    info = opt.minimize(loss_fn, [w])  # trials 1.007 (fails), 0.503 (meets Armijo)
    assert bool(info["accepted"])
    assert int(info["evaluations"]) == 2
    assert float(opt.previous_step) == pytest.approx(0.5 * 2.0 ** (1 / 100))


def test_search_without_a_trial_keeps_its_step():
    """At a stationary point (slope 0) nothing is tried, and the carried step is unchanged."""
    w = tf.Variable([0.0], dtype=tf.float64)
    opt = optimizers.ArmijoLineSearch(reset="keep", initial_step=0.3)
    info = opt.minimize(lambda: tf.reduce_sum(w**2), [w])
    assert int(info["evaluations"]) == 0
    assert float(opt.previous_step) == pytest.approx(0.3)


def test_bfloat16_wolfe_step_and_central_difference():
    """np.finfo knows no bfloat16 (an ml_dtypes type); both used to raise 'not inexact'."""
    w = tf.Variable([1.0, -2.0], dtype=tf.bfloat16)

    def loss_fn():
        return tf.reduce_sum((w - 0.5) ** 2)

    _, d = directional.directional_derivative(
        loss_fn, [w], [tf.ones(2, tf.bfloat16)], method="central_difference"
    )
    # a half-precision loss leaves loss_fn as float32 (the mixed-precision rule, issue 11), so
    # the derivative is reported in float32; its value has bf16 precision
    assert d.dtype == tf.float32
    assert float(d) == pytest.approx(2 * (0.5 - 2.5), abs=0.1)  # 2(w − ½)·v, bf16 precision
    opt = optimizers.WolfeLineSearch()
    info = opt.minimize(loss_fn, [w])
    assert bool(info["accepted"]) and int(info["evaluations"]) >= 1
    assert float(loss_fn()) < 0.01 * 6.5  # exact on a quadratic up to bf16 rounding


@pytest.mark.parametrize("method", ["reverse", "forward", "central_difference"])
def test_mixed_float32_float64_variables_are_refused_by_name(method):
    a = tf.Variable([1.0], dtype=tf.float32, name="a")
    b = tf.Variable([1.0], dtype=tf.float64, name="b")

    def loss_fn():
        return tf.reduce_sum(a**2) + tf.cast(tf.reduce_sum(b**2), tf.float32)

    match = r"mixed dtypes \(float32: 'a'; float64: 'b'\)"
    with pytest.raises(ValueError, match=match):
        directional.directional_derivative(
            loss_fn, [a, b], [tf.ones(1, tf.float32), tf.ones(1, tf.float64)], method=method
        )
    if method == "reverse":
        for opt in (optimizers.WolfeLineSearch(), optimizers.ArmijoLineSearch()):
            with pytest.raises(ValueError, match=match):
                opt.minimize(loss_fn, [a, b])
    assert float(a[0]) == 1.0 and float(b[0]) == 1.0  # nothing moved
