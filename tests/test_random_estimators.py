"""The issue-12 estimators: activity perturbation, ZO-Adam/momentum, LOZO, sparse ZO, fast ±1.

Each estimator is checked for (a) unbiasedness on a quadratic — the mean of many estimates
against the true gradient —, (b) cost counters equal to the passes that ran and no
``GradientTape.gradient`` during a backprop-free step, (c) a seed-exact resume through the
training runner, and (d) clear errors on bad input.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import gin
import keras
import numpy as np
import problems
import pytest
import tensorflow as tf
from tensorflow.python.eager import backprop

from dirgrad_opt import directions, training
from dirgrad_opt.optimizers import (
    ActivityForwardGradient,
    ActivityZerothOrder,
    ForwardGradient,
    GuidedForwardGradient,
    LowRankZerothOrder,
    ModelClosure,
    SparseZerothOrder,
    ZerothOrder,
    ZOAdam,
    ZOMomentum,
)
from dirgrad_opt.optimizers.activity import Taps, tap_dense_layers
from dirgrad_opt.optimizers.random_direction import variance_step_scale

# ----------------------------------------------------------------------------- helpers


def _assert_unbiased(
    samples: np.ndarray, gradient: np.ndarray, z_max: float = 4.5, power: float = 0.2
) -> None:
    """Every coordinate's mean within ``z_max`` standard errors, and the test has power."""
    mean = samples.mean(axis=0)
    stderr = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    z = np.abs(mean - gradient) / np.maximum(stderr, 1e-12)
    assert np.all(z < z_max), f"max z-score {z.max():.2f}"
    assert np.linalg.norm(stderr) < power * np.linalg.norm(gradient)


def _matrix_quadratic():
    """f(W, b) = ½ vec(W,b)ᵀ A vec(W,b) + cᵀ vec(W,b), W 4×3, b 3 (15 coordinates)."""
    rng = np.random.default_rng(1)
    m = rng.standard_normal((15, 15))
    a = tf.constant(m @ m.T / 15 + np.eye(15), tf.float64)
    c = tf.constant(rng.standard_normal(15), tf.float64)
    w = tf.Variable(tf.constant(rng.standard_normal((4, 3)), tf.float64))
    b = tf.Variable(tf.constant(rng.standard_normal(3), tf.float64))

    def loss_fn():
        x = tf.concat([tf.reshape(w, [-1]), b], 0)
        return 0.5 * tf.tensordot(x, tf.linalg.matvec(a, x), 1) + tf.tensordot(c, x, 1)

    return [w, b], loss_fn


def _estimates(opt, loss_fn, variables, samples: int, extra_state=(), held=()) -> np.ndarray:
    """``samples`` estimates ``g̃`` at ``w₀``: steps of size 1 from ``w₀`` (successive seeds).

    Before every step the variables and ``extra_state`` (optimizer state whose change is
    measured too, after the variables) go back to their start and each ``(state, value)`` of
    ``held`` is assigned; a row is the flattened change ``start − after``.
    """
    opt.build(variables)
    state = list(variables) + list(extra_state)
    start = [tf.identity(v) for v in state]

    @tf.function
    def collect():
        out = tf.TensorArray(tf.float64, size=samples)
        for i in tf.range(samples):
            for v, w in zip(state, start, strict=True):
                v.assign(w)
            for v, value in held:
                v.assign(value)
            opt.minimize(loss_fn, variables)
            flat = [
                tf.reshape(tf.cast(w - v, tf.float64), [-1])
                for v, w in zip(state, start, strict=True)
            ]
            out = out.write(i, tf.concat(flat, 0))
        return out.stack()

    result = collect().numpy()
    for v, w in zip(state, start, strict=True):
        v.assign(w)
    return result


def _true_gradient(loss_fn, variables) -> np.ndarray:
    with tf.GradientTape() as tape:
        value = loss_fn()
    grads = tape.gradient(value, variables)
    return np.concatenate([tf.reshape(tf.cast(g, tf.float64), [-1]).numpy() for g in grads])


def _linear_net(seed: int = 0, dtype: str = "float64"):
    """A 2-layer *linear* Dense net 3→4→2 with MSE on 8 examples: quadratic in its weights."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,), dtype=dtype)
    h = keras.layers.Dense(4, dtype=dtype, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, dtype=dtype, name="out")(h))
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((8, 3)), dtype)
    y = tf.constant(rng.standard_normal((8, 2)), dtype)

    def mse(outputs, labels):
        return tf.reduce_mean(tf.square(outputs - labels))

    return model, ModelClosure(model, mse, x, y)


# ----------------------------------------------------------------------------- ±1 sampler


def test_rademacher_bits_are_fair_independent_signs_and_reproducible():
    seed = directions.make_seed(3)
    z = directions.rademacher_bits([100, 1000], seed, tf.float32).numpy()
    assert set(np.unique(z)) == {-1.0, 1.0}
    assert abs(z.mean()) < 4 / np.sqrt(z.size)  # fair
    lag = np.mean(z.ravel()[:-1] * z.ravel()[1:])  # neighbouring bits of one word
    assert abs(lag) < 4 / np.sqrt(z.size)
    np.testing.assert_array_equal(z, directions.rademacher_bits([100, 1000], seed, tf.float32))
    dynamic = directions.rademacher_bits(tf.constant([100, 1000]), seed, tf.float32)
    np.testing.assert_array_equal(z, dynamic)
    other = directions.rademacher_bits([100, 1000], directions.make_seed(4), tf.float32)
    assert np.mean(z != other.numpy()) > 0.45


@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_rademacher_tree_is_one_stream_and_each_leaf_regenerates_alone(k, jit):
    """``rademacher_leaf(i)`` is leaf i of the one-stream tree draw (mixed dtypes, odd sizes)."""
    tree_ = [
        tf.zeros([7, 5]),
        tf.zeros([33], tf.bfloat16),
        tf.zeros([7, 5]),
        tf.zeros([1]),
        tf.zeros([40, 256]),
    ]
    seed = directions.make_seed(11)
    both = tf.function(
        lambda: (
            directions.rademacher(tree_, seed, k),
            [directions.rademacher_leaf(tree_, seed, i, k) for i in range(len(tree_))],
        ),
        jit_compile=jit,
    )
    whole, alone = both()
    for w, a, leaf in zip(whole, alone, tree_, strict=True):
        assert w.dtype == leaf.dtype and w.shape == ([k] if k else []) + leaf.shape
        np.testing.assert_array_equal(w.numpy().astype(np.float32), a.numpy().astype(np.float32))
        assert set(np.unique(w.numpy().astype(np.float32))) <= {-1.0, 1.0}
    assert np.mean(whole[0].numpy() != whole[2].numpy()) > 0.25  # disjoint segments
    big = whole[4].numpy().ravel()
    assert abs(big.mean()) < 4 / np.sqrt(big.size)
    opt = ZerothOrder(distribution="rademacher")
    variables = [tf.Variable(t) for t in tree_]
    for i, z in enumerate(opt.perturbations(variables, seed)):
        np.testing.assert_array_equal(z.numpy(), opt.perturbation(variables, seed, i).numpy())


def test_rademacher_leaf_refuses_a_bad_index_and_offsets_off_a_counter():
    variables = [tf.zeros([3, 2]), tf.zeros([5])]
    with pytest.raises(ValueError, match="out of range for 2 leaves"):
        directions.rademacher_leaf(variables, 0, 2)
    with pytest.raises(ValueError, match="multiple of 4"):
        directions._words(directions.make_seed(0), 8, offset=6)


def test_spread_signs_table_and_shift_paths_give_the_documented_mapping():
    """Entry 32 i + b is −1 iff bit b of word i, by the table (graph) and shift (XLA) paths."""
    words = tf.random.stateless_uniform(
        [64], directions.make_seed(5), minval=None, maxval=None, dtype=tf.int32
    )
    value_bits = (words.numpy().astype(np.int64)[:, None] >> np.arange(32)[None, :]) & 1
    expected = np.where(value_bits.ravel() == 1, -1.0, 1.0)
    for by_table in (True, False):
        got = directions.spread_signs(words, tf.float32, by_table=by_table)
        np.testing.assert_array_equal(got.numpy(), expected)
        compiled = tf.function(
            lambda w, t=by_table: directions.spread_signs(w, tf.float32, by_table=t),
            jit_compile=True,
        )
        np.testing.assert_array_equal(compiled(words).numpy(), expected)
    # the automatic choice: the table (a gather) outside XLA, the shifts under XLA
    for jit in (False, True):
        graph = (
            tf.function(lambda w: directions.spread_signs(w, tf.float32), jit_compile=jit)
            .get_concrete_function(words)
            .graph
        )
        ops = {op.type for op in graph.get_operations()}
        assert ("GatherV2" in ops) is (not jit), (jit, sorted(ops))
        assert ("LeftShift" in ops) is jit, (jit, sorted(ops))


# ----------------------------------------------------------------------------- unbiasedness


@pytest.mark.parametrize(
    "make",
    [
        lambda: ZerothOrder(1.0, distribution="rademacher", seed=2),
        lambda: LowRankZerothOrder(1.0, rank=2, lazy_steps=1, seed=2),
        lambda: SparseZerothOrder(1.0, density=0.3, seed=2),
    ],
    ids=["zo_rademacher", "lozo", "sparse"],
)
def test_weight_perturbation_estimates_are_unbiased_on_a_quadratic(make):
    """The central difference is exact on a quadratic, so E[c z] = E[z zᵀ] ∇f = ∇f."""
    variables, loss_fn = _matrix_quadratic()
    gradient = _true_gradient(loss_fn, variables)
    _assert_unbiased(_estimates(make(), loss_fn, variables, 4000), gradient)


def test_lozo_with_lazy_v_is_biased_within_a_window_as_documented():
    """With V fixed (ν > samples) the mean is the gradient projected on span(V), not ∇f."""
    variables, loss_fn = _matrix_quadratic()
    gradient = _true_gradient(loss_fn, variables)
    lazy = LowRankZerothOrder(1.0, rank=1, lazy_steps=10**6)
    samples = _estimates(lazy, loss_fn, variables, 3000)
    mean = samples.mean(0)
    stderr = samples.std(0, ddof=1) / np.sqrt(len(samples))
    assert np.max(np.abs(mean - gradient)[:12] / stderr[:12]) > 6  # the matrix part is biased


@pytest.mark.parametrize("cls", [ActivityForwardGradient, ActivityZerothOrder])
def test_activity_perturbation_is_unbiased_on_a_linear_net(cls):
    """Linear net + MSE: the loss is quadratic in the pre-activations, so both the JVP and
    the central difference are exact and the local weight gradients are unbiased."""
    model, closure = _linear_net()
    variables = model.trainable_variables
    gradient = _true_gradient(closure, variables)
    opt = cls(learning_rate=1.0, seed=4)
    _assert_unbiased(_estimates(opt, closure, variables, 4000), gradient)


def test_activity_estimate_with_one_perturbation_per_unit_is_not_the_gradient():
    """The test above has teeth: a single estimate is far from the gradient (noise)."""
    model, closure = _linear_net()
    variables = model.trainable_variables
    gradient = _true_gradient(closure, variables)
    one = _estimates(ActivityForwardGradient(learning_rate=1.0, seed=4), closure, variables, 1)[0]
    assert np.linalg.norm(one - gradient) > 0.2 * np.linalg.norm(gradient)


# ----------------------------------------------------------------------------- no backprop


class _GradientCalls:
    """Patches ``GradientTape.gradient`` to record callers other than TF's forward mode.

    TF 2.21 implements the JVP of many ops inside ``tf.autodiff.ForwardAccumulator`` by
    transposing that op's own VJP (``forwardprop._jvp_helper``): an op-local computation that
    is part of a forward-mode pass, not a backward pass through the model. Those calls are
    allowed; every other call is recorded.
    """

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        original = backprop.GradientTape.gradient

        def gradient(tape, *args, **kwargs):
            import inspect

            frames = [f.function for f in inspect.stack()[1:6]]
            if "_jvp_helper" not in frames:
                self.calls.append(" < ".join(frames))
            return original(tape, *args, **kwargs)

        monkeypatch.setattr(backprop.GradientTape, "gradient", gradient)


BACKPROP_FREE = {
    "zo_exact": (lambda: ZerothOrder(1e-3), (2, 0, 0)),
    "zo_in_place_k2": (lambda: ZerothOrder(1e-3, in_place=True, num_directions=2), (4, 0, 0)),
    "zo_adam": (lambda: ZOAdam(1e-3), (2, 0, 0)),
    "zo_momentum_k3": (lambda: ZOMomentum(1e-3, num_directions=3), (6, 0, 0)),
    "lozo_one_sided": (lambda: LowRankZerothOrder(1e-3, one_sided=True), (2, 0, 0)),
    "sparse": (lambda: SparseZerothOrder(1e-3), (2, 0, 0)),
    "fg_forward": (lambda: ForwardGradient(1e-3, distribution="rademacher"), (1, 0, 1)),
    "afg": (lambda: ActivityForwardGradient(1e-3), (1, 0, 1)),
    "afg_adam_k3": (
        lambda: ActivityForwardGradient(inner=keras.optimizers.Adam(1e-3), num_samples=3),
        (3, 0, 3),
    ),
    "azo": (lambda: ActivityZerothOrder(1e-3, distribution="rademacher"), (2, 0, 0)),
    "afg_local": (lambda: ActivityForwardGradient(1e-3, local_losses=True), (1, 0, 1)),
    "azo_local_adam_k2": (
        lambda: ActivityZerothOrder(
            inner=keras.optimizers.Adam(1e-3), local_losses=True, num_samples=2
        ),
        (4, 0, 0),
    ),
    "fg_variance_control": (
        lambda: ForwardGradient(1e-3, num_directions=3, variance_control=True),
        (3, 0, 3),
    ),
}


class _CountingClosure(ModelClosure):
    """Counts the forward passes that actually ran (the model's calls)."""

    runs = 0

    def outputs(self):
        type(self).runs += 1
        return super().outputs()


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("name", sorted(BACKPROP_FREE))
def test_counters_match_what_ran_and_no_backward_pass_runs(name, graph, monkeypatch):
    make, (fwd, bwd, jvps) = BACKPROP_FREE[name]
    model, closure = _linear_net(dtype="float32")
    counting = _CountingClosure(model, closure.loss_fn, closure.inputs, closure.labels)
    opt = make()
    opt.build(model.trainable_variables)  # else tf.function traces twice (variable creation)
    calls = _GradientCalls(monkeypatch)
    step = lambda: opt.minimize(counting, model.trainable_variables)  # noqa: E731
    if graph:
        step = tf.function(step)
    _CountingClosure.runs = 0
    info = step()  # eager: runs once; graph: traced once (each pass traced once)
    assert (int(info["forward_passes"]), int(info["backward_passes"]), int(info["jvps"])) == (
        fwd,
        bwd,
        jvps,
    )
    # every counted forward pass is one model call (a replicated batch is one call of K·B)
    samples = getattr(opt, "num_samples", 1)
    assert _CountingClosure.runs * samples == fwd
    assert calls.calls == [], f"GradientTape.gradient ran: {calls.calls}"
    assert int(opt.totals["backward_passes"]) == 0


def test_the_no_backprop_check_can_fail(monkeypatch):
    """Mutant guard: a method that does backprop is caught by the patched tape."""
    model, closure = _linear_net(dtype="float32")
    calls = _GradientCalls(monkeypatch)
    ZerothOrder(1e-3, diagnostics=True).minimize(closure, model.trainable_variables)
    assert calls.calls


# ----------------------------------------------------------------------------- layer access


def test_taps_record_layer_inputs_and_leave_the_model_unchanged_outside():
    model, closure = _linear_net()
    before = model(closure.inputs).numpy()
    layers = tap_dense_layers(model)
    assert [layer.name for layer in layers] == ["hidden", "out"]
    np.testing.assert_array_equal(before, model(closure.inputs).numpy())
    with Taps(layers) as record:
        out = model(closure.inputs)
    np.testing.assert_array_equal(before, out.numpy())
    np.testing.assert_array_equal(record.inputs[0].numpy(), closure.inputs.numpy())
    hidden = closure.inputs @ layers[0].kernel + layers[0].bias
    np.testing.assert_allclose(record.inputs[1].numpy(), hidden.numpy())
    shift = [tf.zeros([8, 4], tf.float64), tf.ones([8, 2], tf.float64)]
    with Taps(layers, shift):
        np.testing.assert_allclose(model(closure.inputs).numpy(), before + 1.0)
    assert tap_dense_layers(model, ["out"]) == [layers[1]]  # idempotent


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda m, c: lambda: c.loss_fn(m(c.inputs), c.labels), "ModelClosure"),
        (lambda m, c: ModelClosure(m, c.loss_fn, c.inputs, c.labels), "does not belong"),
    ],
    ids=["plain_closure", "untapped_variable"],
)
def test_activity_methods_explain_what_they_need(build, match):
    model, closure = _linear_net()
    opt = ActivityForwardGradient(1e-3, layers=["out"] if match == "does not belong" else None)
    with pytest.raises(ValueError, match=match):
        opt.minimize(build(model, closure), model.trainable_variables)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ActivityForwardGradient(num_samples=0), "num_samples"),
        (lambda: ActivityForwardGradient(distribution="cauchy"), "distribution"),
        (lambda: ActivityForwardGradient(layers="dense"), "list of layer names"),
        (lambda: ActivityZerothOrder(eps=0.0), "eps"),
        (lambda: ZOAdam(in_place=True), "in_place"),
        (lambda: ZOMomentum(momentum=1.0), "momentum"),
        (lambda: LowRankZerothOrder(rank=0), "rank"),
        (lambda: LowRankZerothOrder(distribution="rademacher"), "Gaussian"),
        (lambda: SparseZerothOrder(density=0.0), "density"),
        (
            lambda: ActivityForwardGradient(learning_rate=0.1, inner=keras.optimizers.Adam()),
            "inner",
        ),
    ],
)
def test_bad_hyperparameters_raise_a_clear_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unknown_tap_layer_is_named():
    model, closure = _linear_net()
    with pytest.raises(ValueError, match="'nope' is not in model"):
        ActivityForwardGradient(1e-3, layers=["nope"]).minimize(closure, model.trainable_variables)


# ----------------------------------------------------------------------------- runner, resume

TINY = [
    *problems.TINY_RUN,
    "train.num_steps = 30",
    "train.eval_every = 10",
    "train.checkpoint_every = 10",
    "train.log_every = 5",
    "train.progress_every_s = 1000.0",
]
RUNNER_CASES = {
    "afg_adam": [
        "train.optimizer = @ActivityForwardGradient()",
        "ActivityForwardGradient.inner = @Adam()",
        "ActivityForwardGradient.num_samples = 2",
    ],
    "zo_adam": ["train.optimizer = @ZOAdam()", "ZOAdam.distribution = 'rademacher'"],
    "afg_local_adam": [
        "train.optimizer = @ActivityForwardGradient()",
        "ActivityForwardGradient.inner = @Adam()",
        "ActivityForwardGradient.local_losses = True",
    ],
}


def _run(workdir: Path, bindings: list[str], stop_after: int | None = None):
    gin.clear_config()
    gin.parse_config([*TINY, *bindings])
    return training.run(str(workdir), stop_after=stop_after)


def _checkpoint(workdir: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(workdir / "checkpoints"))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if "clocks" not in name and not name.startswith("_CHECKPOINTABLE")
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNNER_CASES))
def test_runner_resume_is_seed_exact(name, tmp_path):
    """Interrupted at step 25 (checkpoint at 20) and resumed = the uninterrupted run, bitwise."""
    bindings = RUNNER_CASES[name]
    full = _run(tmp_path / "full", bindings)
    assert _run(tmp_path / "resumed", bindings, stop_after=25) is None
    resumed = _run(tmp_path / "resumed", bindings)
    for result in (full, resumed):
        result.pop("times")
        inner = result["optimizer"]["config"].get("inner") or {}
        inner.get("config", {}).pop("name", None)  # Keras numbers same-process instances
    assert resumed == full
    a, b = _checkpoint(tmp_path / "full"), _checkpoint(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ----------------------------------------------------------------------------- guided


def _guided_samples(opt, loss_fn, variables, guess, samples: int) -> np.ndarray:
    """Estimates at ``w₀`` with the guess held at ``guess`` (reset before every step)."""
    opt.build(variables)
    return _estimates(
        opt, loss_fn, variables, samples, held=list(zip(opt._guess, guess, strict=True))
    )


@pytest.mark.parametrize("unbiased", [True, False], ids=["corrected", "uncorrected"])
def test_guided_forward_gradient_mean_matches_its_documented_expectation(unbiased):
    """Corrected: E[g̃] = ∇L. Uncorrected: E[g̃] = ((1−α)∇L + αn(u·∇L)u)/(1−α+αn)."""
    variables, loss_fn = _matrix_quadratic()
    gradient = _true_gradient(loss_fn, variables)
    rng = np.random.default_rng(7)
    guess_flat = gradient + 2.0 * rng.standard_normal(15)  # a rough guess of the gradient
    guess = [
        tf.constant(guess_flat[:12].reshape(4, 3), tf.float64),
        tf.constant(guess_flat[12:], tf.float64),
    ]
    alpha, n = 0.5, 15
    opt = GuidedForwardGradient(1.0, guide_weight=alpha, unbiased=unbiased, seed=1)
    samples = _guided_samples(opt, loss_fn, variables, guess, 4000)
    u = guess_flat / np.linalg.norm(guess_flat)
    expected = gradient
    if not unbiased:
        expected = ((1 - alpha) * gradient + alpha * n * (u @ gradient) * u) / (
            1 - alpha + alpha * n
        )
        assert np.linalg.norm(expected - gradient) > 0.1 * np.linalg.norm(gradient)
    _assert_unbiased(samples, expected, power=0.3)  # the Σ⁻¹ correction adds variance


# ----------------------------------------------------------------------------- local losses


def _local_gradient(closure, heads) -> np.ndarray:
    """The local-loss gradients with stop-gradient between blocks (Ren et al. 2022, sec. 4):
    layer 0 and its head from the head's loss, the output layer from the model's loss."""
    hidden, out = tap_dense_layers(closure.model)
    (kernel, bias) = (hidden.kernel, hidden.bias)
    hk, hb = (tf.convert_to_tensor(h) for h in heads[0])  # optimizer variables: not trainable
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([hk, hb])
        a = closure.inputs @ kernel + bias  # linear activation
        local = closure.loss_fn(a @ hk + hb, closure.labels)
        final = closure.loss_fn(tf.stop_gradient(a) @ out.kernel + out.bias, closure.labels)
    grads = tape.gradient(local, [kernel, bias]) + tape.gradient(final, [out.kernel, out.bias])
    grads += tape.gradient(local, [hk, hb])
    return np.concatenate([tf.reshape(g, [-1]).numpy() for g in grads])


def _local_estimates(opt, closure, samples: int) -> np.ndarray:
    """Steps of size 1 from the same weights and heads: model deltas, then head deltas."""
    variables = closure.model.trainable_variables
    opt.build(variables)
    return _estimates(opt, closure, variables, samples, extra_state=opt._head_vars)


@pytest.mark.parametrize("cls", [ActivityForwardGradient, ActivityZerothOrder])
def test_local_loss_estimates_are_unbiased_for_the_local_gradients(cls):
    """Linear net + MSE: every local loss is quadratic in its block's pre-activation and its
    head's logits, so E[ĝ] is exactly the stop-gradient local-loss gradient (heads included)."""
    model, closure = _linear_net()
    opt = cls(learning_rate=1.0, seed=4, local_losses=True)
    opt.build(model.trainable_variables)
    assert [tuple(k.shape) for k, _ in opt.local_heads] == [(4, 2)]
    expected = _local_gradient(closure, opt.local_heads)
    global_part = _true_gradient(closure, model.trainable_variables)
    assert np.linalg.norm(expected[:16] - global_part[:16]) > 0.3 * np.linalg.norm(global_part)
    _assert_unbiased(_local_estimates(opt, closure, 4000), expected, power=0.25)


def test_stop_inputs_isolates_each_tapped_layer_in_forward_mode():
    """With stop_inputs, a perturbation of layer 0 no longer reaches the model's output."""
    model, closure = _linear_net()
    layers = tap_dense_layers(model)
    tangents = [tf.ones([8, 4], tf.float64), tf.zeros([8, 2], tf.float64)]
    for stop, moves in ((False, True), (True, False)):
        zeros = [tf.zeros_like(t) for t in tangents]
        with tf.autodiff.ForwardAccumulator(zeros, tangents) as acc:
            with Taps(layers, zeros, stop_inputs=stop) as record:
                out = model(closure.inputs)
        jvp = acc.jvp(out, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        assert (np.abs(jvp.numpy()).max() > 0) == moves
        np.testing.assert_array_equal(record.outputs[1].numpy(), out.numpy())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ActivityForwardGradient(local_losses="yes"), "local_losses"),
        (lambda: ForwardGradient(1e-3, variance_control=True), "num_directions >= 2"),
        (
            lambda: ForwardGradient(
                num_directions=2, variance_control=True, inner=keras.optimizers.Adam()
            ),
            "inner",
        ),
        (lambda: GuidedForwardGradient(1e-3, variance_control=True), "variance_control"),
    ],
)
def test_bad_local_loss_and_variance_control_settings_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_local_losses_need_two_dense_layers():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="at least two Dense layers"):
        ActivityForwardGradient(1e-3, local_losses=True).build(model.trainable_variables)


def test_local_loss_config_round_trips():
    opt = ActivityZerothOrder(inner=keras.optimizers.Adam(1e-3), local_losses=True, eps=0.1)
    again = ActivityZerothOrder.from_config(opt.get_config())
    assert again.local_losses and again.eps == 0.1


# ----------------------------------------------------------------------------- variance control


def _quadratic_gradient() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    m = rng.standard_normal((15, 15))
    return m @ m.T / 15 + np.eye(15), rng.standard_normal(15)


@pytest.mark.parametrize("orthogonal", [False, True], ids=["iid", "orthogonal"])
def test_variance_estimate_makes_the_signal_unbiased(orthogonal):
    """E[‖g̃‖² − V̂] = ‖∇f‖² (the numerator of ρ), for i.i.d. and orthonormal directions."""
    _, g = _quadratic_gradient()
    rng = np.random.default_rng(0)
    k, n, values = 3, 15, []
    for _ in range(1500):
        v = rng.standard_normal((k, n))
        if orthogonal:
            v = np.linalg.qr(v.T)[0].T  # K orthonormal rows
        s = 1.0 / n if orthogonal else 1.0
        _, signal, variance = variance_step_scale(
            tf.constant(v @ g), [tf.constant(v)], s, n if orthogonal else None
        )
        values.append(float(signal) - float(variance))
    values = np.array(values)
    stderr = values.std(ddof=1) / np.sqrt(len(values))
    assert abs(values.mean() - g @ g) < 4.5 * stderr
    assert stderr < 0.1 * (g @ g)


def test_variance_control_scales_the_plain_step_and_is_exact_with_a_full_frame():
    """The step is ρ times the plain forward-gradient step (same seed), 0 ≤ ρ ≤ 1; with K = n
    orthonormal directions the estimate is ∇f and the corrected variance is 0, so ρ = 1."""
    variables, loss_fn = _matrix_quadratic()
    start = [tf.identity(v) for v in variables]
    deltas, scales = [], []
    for control in (False, True):
        for v, w in zip(variables, start, strict=True):
            v.assign(w)
        opt = ForwardGradient(0.1, num_directions=4, seed=5, variance_control=control)
        info = opt.minimize(loss_fn, variables)
        scales.append(float(info.get("step_scale", 1.0)))
        deltas.append(
            np.concatenate([(v - w).numpy().ravel() for v, w in zip(variables, start, strict=True)])
        )
    assert 0.0 <= scales[1] < 1.0
    np.testing.assert_allclose(deltas[1], scales[1] * deltas[0], rtol=1e-9, atol=1e-12)

    for v, w in zip(variables, start, strict=True):
        v.assign(w)
    gradient = _true_gradient(loss_fn, variables)
    full = ForwardGradient(0.1, num_directions=15, orthogonal=True, variance_control=True)
    info = full.minimize(loss_fn, variables)
    np.testing.assert_allclose(float(info["step_scale"]), 1.0, atol=1e-9)
    moved = np.concatenate([(w - v).numpy().ravel() for v, w in zip(variables, start, strict=True)])
    np.testing.assert_allclose(moved, 0.1 * gradient, rtol=1e-6)  # lr is float32


@pytest.mark.parametrize("local_losses", [False, True], ids=["plain", "local_losses"])
def test_activity_forward_gradient_warns_that_xla_recompiles_every_step(local_losses):
    """Under XLA the step is recompiled on every call (TF 2.21): a warning says so at trace
    time; graph mode traces without it."""
    model, closure = _linear_net(dtype="float32")
    opt = ActivityForwardGradient(1e-3, local_losses=local_losses)
    opt.build(model.trainable_variables)
    step = lambda: opt.minimize(closure, model.trainable_variables)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tf.function(step).get_concrete_function()
    with pytest.warns(RuntimeWarning, match="recompiled on every step"):
        tf.function(step, jit_compile=True).get_concrete_function()
