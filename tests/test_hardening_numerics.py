"""Issue 10, points 5 (optimizer part) and 9: a failed Armijo search carries its smallest
rejected step forward, and the searches run on bfloat16 and refuse mixed-precision variables."""

from __future__ import annotations

import pytest
import tensorflow as tf

from dirgrad_opt import optimizers


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
