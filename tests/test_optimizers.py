"""Table-driven tests of the line-search optimizers on the DirectionalOptimizer base.

Every optimizer × (ill-conditioned quadratic, L2-regularised logistic regression on sklearn's
breast-cancer data, a small Keras MLP) × float32/float64; plus graph mode, serialization,
checkpoints, bad hyperparameters, NaN regions and zero gradients.
"""

import os

import keras
import numpy as np
import problems
import pytest
import tensorflow as tf

from dirgrad_opt import optimizers, tree
from dirgrad_opt.optimizers.base import step_info

OPTIMIZERS = {
    "armijo": lambda: optimizers.ArmijoLineSearch(),
    "wolfe": lambda: optimizers.WolfeLineSearch(),
    "polyak": lambda: optimizers.PolyakStep(),
    "armijo_adam": lambda: optimizers.ArmijoLineSearch(direction=keras.optimizers.Adam(0.05)),
}
DEFAULTS = ("armijo", "wolfe", "polyak")
DTYPES = (tf.float32, tf.float64)


# ----------------------------------------------------------------------------- problems

_quadratic, _logistic, _mlp = problems.quadratic, problems.logistic, problems.mlp


_run = problems.run


# ----------------------------------------------------------------------------- convergence


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", DEFAULTS)
def test_quadratic_kappa_100_reduced_1000x_in_300_steps(name, dtype):
    variables, loss_fn = _quadratic(dtype)
    f0 = float(loss_fn())
    step, infos = _run(OPTIMIZERS[name](), variables, loss_fn, 300)
    assert float(loss_fn()) <= f0 / 1e3, (name, float(loss_fn()))
    assert step.experimental_get_tracing_count() == 1


@pytest.fixture(scope="module")
def logistic_optimum():
    return problems.logistic_optimum()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", DEFAULTS)
def test_logistic_regression_reaches_lbfgs_optimum(name, dtype, logistic_optimum):
    variables, loss_fn = _logistic(dtype)
    _run(OPTIMIZERS[name](), variables, loss_fn, 300)
    gap = float(loss_fn()) - logistic_optimum
    tol = 1e-2 if name == "polyak" else 1e-3  # Polyak with f* = 0 < optimum stalls near it
    assert -1e-5 <= gap <= tol, (name, gap)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_keras_mlp_training_loss_decreases(name, dtype):
    variables, loss_fn = _mlp(dtype)
    f0 = float(loss_fn())
    _, infos = _run(OPTIMIZERS[name](), variables, loss_fn, 60)
    assert float(loss_fn()) < 0.5 * f0, (name, f0, float(loss_fn()))
    # A line search never increases the loss on its own batch.
    if name != "polyak":
        losses = [float(i["loss"]) for i in infos]
        assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:], strict=False))


def test_armijo_reset_heuristic_needs_few_evaluations_after_warmup():
    variables, loss_fn = _mlp(tf.float32)
    opt = optimizers.ArmijoLineSearch(steps_per_epoch=10)
    _, infos = _run(opt, variables, loss_fn, 100)
    trials = np.mean([int(i["evaluations"]) for i in infos[20:]])
    assert trials <= 2.0, trials


def _sls_reference(reset, steps, initial_step, c, shrink, growth, spe, max_step, w0):
    """SLS on ``½w²`` from scalar ``w0`` along ``−∇L``, written out in Python: the step sizes
    and trial counts. φ(t) = ½(1 − t)²w², so Armijo holds iff t ≤ 2(1 − c), exactly known."""
    out, prev, w = [], initial_step, w0
    for _ in range(steps):
        t0 = {
            "grow": min(prev * growth ** (1.0 / spe), max_step),
            "keep": prev,
            "reset": initial_step,
        }[reset]
        t, trials = t0, 1
        while 0.5 * (w - t * w) ** 2 > 0.5 * w * w - c * t * w * w:
            t, trials = t * shrink, trials + 1
        out.append((t, trials))
        prev, w = t, w - t * w
    return out


@pytest.mark.parametrize("reset", ["grow", "keep", "reset"])
def test_armijo_reset_rules_give_the_exact_trial_steps(reset):
    """``grow``: t₀ = min(t_prev·γ^(1/steps_per_epoch), max_step); ``keep``: t₀ = t_prev;
    ``reset``: t₀ = initial_step. From initial_step = 4 the first search backtracks ten times to
    4·0.9¹⁰ ≈ 1.39, the first trial below 2(1 − c) = 1.5; the rules then differ at every step.
    Mutants killed: growth without the 1/steps_per_epoch root, no cap, keep ↔ reset."""
    kwargs = dict(initial_step=4.0, c=0.25, shrink=0.9, growth=2.0, steps_per_epoch=4)
    w = tf.Variable([1.0], dtype=tf.float64)
    opt = optimizers.ArmijoLineSearch(reset=reset, max_step=4.2, **kwargs)
    got = []
    for _ in range(8):
        info = opt.minimize(lambda: 0.5 * tf.reduce_sum(w**2), [w])
        got.append((float(info["step_size"]), int(info["evaluations"])))
    expected = _sls_reference(reset, 8, 4.0, 0.25, 0.9, 2.0, 4, 4.2, 1.0)
    assert [n for _, n in got] == [n for _, n in expected]
    # (the previous step is an optimizer variable, kept in float32)
    np.testing.assert_allclose([t for t, _ in got], [t for t, _ in expected], rtol=1e-6)
    first = 4.2 if reset == "grow" else 4.0  # grow: min(4·2^¼, 4.2)
    assert got[0][0] == pytest.approx(first * 0.9 ** (got[0][1] - 1), rel=1e-6)


# ----------------------------------------------------------------------------- the step's dict


def test_minimize_reports_exact_costs_and_totals():
    variables, loss_fn = _quadratic(tf.float64)
    calls = {"n": 0}

    def counted():
        calls["n"] += 1
        return loss_fn()

    for name in ("armijo", "wolfe", "polyak"):
        opt = OPTIMIZERS[name]()
        calls["n"] = 0
        info = opt.minimize(counted, variables)  # eager: Python counts every call
        assert int(info["forward_passes"]) == calls["n"], name
        expected_backward = {"armijo": 1, "polyak": 1, "wolfe": calls["n"]}[name]
        assert int(info["backward_passes"]) == expected_backward, name
        assert int(info["jvps"]) == 0
        for key in ("loss", "step_size", "accepted", "descent"):
            assert info[key].shape == ()
        assert int(opt.iterations) == 1
        assert int(opt.totals["forward_passes"]) == calls["n"]


def test_base_optimizer_is_gradient_descent_and_honours_schedules():
    w = tf.Variable([3.0, -2.0])
    schedule = keras.optimizers.schedules.ExponentialDecay(0.25, decay_steps=1, decay_rate=0.5)
    opt = optimizers.DirectionalOptimizer(learning_rate=schedule)
    info = opt.minimize(lambda: tf.reduce_sum(w**2), [w])
    np.testing.assert_allclose(w.numpy(), [1.5, -1.0])  # w − 0.25·2w
    assert float(info["step_size"]) == pytest.approx(0.25)
    info = opt.minimize(lambda: tf.reduce_sum(w**2), [w])
    assert float(info["step_size"]) == pytest.approx(0.125)  # the schedule read iterations


# ----------------------------------------------------------------------------- hard cases


@pytest.mark.parametrize("name", ["armijo", "wolfe"])
def test_nan_region_is_treated_as_too_far(name):
    """L(w) = (w − 3)² for w < 1, NaN beyond: the search must step into [0, 1), not NaN."""
    w = tf.Variable([0.0], dtype=tf.float64)

    def loss_fn():
        v = w[0]
        return tf.where(v < 1.0, (v - 3.0) ** 2, tf.constant(np.nan, tf.float64))

    opt = OPTIMIZERS[name]()
    for _ in range(5):
        info = opt.minimize(loss_fn, [w])
        assert np.isfinite(w.numpy()).all()
    assert 0.0 < float(w[0]) < 1.0
    assert bool(info["descent"]) or float(info["step_size"]) == 0.0


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_zero_gradient_leaves_weights_alone(name):
    w = tf.Variable([0.0, 0.0])
    opt = OPTIMIZERS[name]()
    info = opt.minimize(lambda: tf.reduce_sum(w**2) + 1.0, [w])
    np.testing.assert_array_equal(w.numpy(), [0.0, 0.0])
    assert np.isfinite(float(info["step_size"]))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_nan_loss_at_start_point_loses_nothing(name):
    w = tf.Variable([1.0, 2.0])
    opt = OPTIMIZERS[name]()
    info = opt.minimize(lambda: tf.reduce_sum(w) * np.nan, [w])
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
    assert not bool(info["accepted"])


def test_non_descent_direction_falls_back_to_steepest_descent():
    """An 'optimizer' that climbs (SGD with a negative rate) gives slope > 0: use −∇L instead."""

    class Climb(keras.optimizers.SGD):
        def update_step(self, gradient, variable, learning_rate):
            variable.assign_add(0.1 * gradient)

    w = tf.Variable([1.0, -1.0])
    opt = optimizers.ArmijoLineSearch(direction=Climb(0.1))
    info = opt.minimize(lambda: tf.reduce_sum(w**2), [w])
    assert bool(info["fallback"])
    assert float(tf.reduce_sum(w**2)) < 2.0


# ----------------------------------------------------------------------------- Keras options


def test_clipnorm_is_applied_to_the_direction():
    """Documented: clipping acts on d before the step-size rule, and the slope is recomputed
    from the clipped d (∇L·d = −50 here, not −‖∇L‖² = −2500)."""
    w = tf.Variable([30.0, 40.0])
    opt = optimizers.DirectionalOptimizer(learning_rate=1.0, global_clipnorm=1.0)
    info = opt.minimize(lambda: 0.5 * tf.reduce_sum(w**2), [w])
    np.testing.assert_allclose(w.numpy(), [30.0 - 0.6, 40.0 - 0.8], rtol=1e-6)
    assert float(info["slope"]) == pytest.approx(-50.0, rel=1e-6)


def test_weight_decay_is_applied_decoupled():
    w = tf.Variable([1.0])
    opt = optimizers.DirectionalOptimizer(learning_rate=0.5, weight_decay=0.1)
    opt.minimize(lambda: 0.0 * tf.reduce_sum(w), [w])  # zero gradient: only the decay acts
    np.testing.assert_allclose(w.numpy(), [1.0 - 0.1 * 1.0])  # λ·w per step, not scaled by t


@pytest.mark.parametrize(
    "kwargs",
    [{"use_ema": True}, {"gradient_accumulation_steps": 2}],  # loss_scale_factor: supported
)
def test_unsupported_keras_options_are_rejected(kwargs):
    with pytest.raises(ValueError, match="does not support"):
        optimizers.ArmijoLineSearch(**kwargs)


def test_apply_gradients_raises_a_clear_error():
    w = tf.Variable([1.0])
    opt = optimizers.ArmijoLineSearch()
    with pytest.raises(NotImplementedError, match="minimize"):
        opt.apply_gradients([(tf.ones(1), w)])
    with pytest.raises(NotImplementedError, match="keras_fit"):
        opt.apply([tf.ones(1)], [w])


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: optimizers.ArmijoLineSearch(c=0.0), "c must be"),
        (lambda: optimizers.ArmijoLineSearch(c=1.5), "c must be in"),
        (lambda: optimizers.ArmijoLineSearch(shrink=1.0), "shrink"),
        (lambda: optimizers.ArmijoLineSearch(shrink=0.0), "shrink"),
        (lambda: optimizers.ArmijoLineSearch(initial_step=-1.0), "initial_step"),
        (lambda: optimizers.ArmijoLineSearch(initial_step=20.0, max_step=10.0), "max_step"),
        (lambda: optimizers.ArmijoLineSearch(reset="sometimes"), "reset"),
        (lambda: optimizers.ArmijoLineSearch(growth=0.5), "growth"),
        (lambda: optimizers.ArmijoLineSearch(max_evaluations=0), "max_evaluations"),
        (lambda: optimizers.ArmijoLineSearch(steps_per_epoch=2.5), "steps_per_epoch"),
        (lambda: optimizers.WolfeLineSearch(c1=0.9, c2=0.1), "c1 < c2"),
        (lambda: optimizers.WolfeLineSearch(c2=1.0), "c2"),
        (lambda: optimizers.WolfeLineSearch(max_step=-1.0), "max_step"),
        (lambda: optimizers.PolyakStep(c=0.0), "c must be"),
        (lambda: optimizers.PolyakStep(max_step=0.0), "max_step"),
        (lambda: optimizers.PolyakStep(min_loss=float("nan")), "min_loss"),
        (lambda: optimizers.DirectionalOptimizer(learning_rate=-0.1), "learning_rate"),
        (lambda: optimizers.DirectionalOptimizer(learning_rate="fast"), "learning_rate"),
        (lambda: optimizers.DirectionalOptimizer(weight_decay=-1.0), "weight_decay"),
        (lambda: optimizers.DirectionalOptimizer(clipnorm=0.0), "clipnorm"),
        (lambda: optimizers.DirectionalOptimizer(direction="adam"), "direction"),
    ],
)
def test_invalid_hyperparameters_raise_at_construction(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_integer_learning_rate_from_gin_is_accepted():
    assert float(optimizers.DirectionalOptimizer(learning_rate=1).learning_rate) == 1.0


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_config_round_trip(name):
    opt = OPTIMIZERS[name]()
    config = opt.get_config()
    clone = type(opt).from_config(config)
    assert clone.get_config() == config
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is type(opt) and again.get_config() == config


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_checkpoint_round_trip_restores_state(name, tmp_path):
    problems.assert_checkpoint_round_trip(OPTIMIZERS[name], tmp_path, steps=7)


def test_jit_compiled_step_matches_eager():
    v1, f1 = _mlp(tf.float32)
    v2, f2 = _mlp(tf.float32)
    o1, o2 = optimizers.ArmijoLineSearch(), optimizers.ArmijoLineSearch()
    o2.build(v2)
    xla = tf.function(lambda: o2.minimize(f2, v2), jit_compile=True)
    for _ in range(3):
        a = o1.minimize(f1, v1)
        b = xla()
        assert float(a["step_size"]) == pytest.approx(float(b["step_size"]), rel=1e-4)
    for x, y in zip(v1, v2, strict=True):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-4, atol=1e-5)


def test_variables_of_inner_direction_optimizer_are_tracked():
    variables, loss_fn = _quadratic(tf.float32)
    opt = optimizers.ArmijoLineSearch(direction=keras.optimizers.Adam(0.1))
    opt.minimize(loss_fn, variables)
    names = [v.path for v in opt.variables]
    assert any("momentum" in n for n in names) and any("velocity" in n for n in names)
    assert tree.num_elements(opt.variables) > 40


# ----------------------------------------------------------------------------- model.fit


def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32"), y


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_model_fit_trains_and_save_load_restores_optimizer(name, tmp_path):
    from dirgrad_opt.keras_fit import DirectionalSequential

    x, y = _digits()
    keras.utils.set_random_seed(0)
    model = DirectionalSequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=OPTIMIZERS[name](),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    hist = model.fit(x, y, batch_size=128, epochs=4, verbose=0)
    assert hist.history["loss"][-1] < 0.6 * hist.history["loss"][0]
    assert hist.history["accuracy"][-1] > 0.75
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 4 * 15
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    loaded.fit(x, y, batch_size=128, epochs=1, verbose=0)  # and it keeps training


def test_model_fit_with_jit_compile():
    from dirgrad_opt.keras_fit import enable_closure_training

    x, y = _digits()
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    enable_closure_training(model)
    model.compile(
        optimizer=optimizers.ArmijoLineSearch(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    hist = model.fit(x, y, batch_size=256, epochs=2, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_plain_keras_model_with_closure_optimizer_gets_clear_error():
    x, y = _digits()
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(optimizer=optimizers.ArmijoLineSearch(), loss="mse")
    with pytest.raises(NotImplementedError, match="enable_closure_training"):
        model.fit(x, y.astype("float32")[:, None].repeat(10, 1), epochs=1, verbose=0)


def test_stochastic_layers_deterministic_closure_and_refusal():
    from dirgrad_opt.keras_fit import closure_train_step, enable_closure_training

    x, y = _digits()
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16),
            keras.layers.Dropout(0.5),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=optimizers.ArmijoLineSearch(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with pytest.raises(ValueError, match="deterministic=True"):
        closure_train_step(model, (x[:32], y[:32]), deterministic=False)

    # With deterministic=True every evaluation in a step sees the same mask and statistics:
    # a line search along a zero step reproduces the start loss exactly.
    seen = []

    class Record(optimizers.DirectionalOptimizer):
        def compute_step_size(self, ctx, loss, direction, slope):
            seen.append((float(loss), float(ctx.loss_at(0.0, direction))))
            return tf.constant(0.0, loss.dtype), tf.constant(True)

    model.compile(optimizer=Record(), loss=model.loss, run_eagerly=True)
    enable_closure_training(model)
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    assert seen and all(a == b for a, b in seen)


def test_directional_model_trains_by_closure_and_keeps_its_class_through_saving(tmp_path):
    """A functional ``DirectionalModel`` trains through ``minimize`` (its logs carry the step's
    passes: a gradient plus ≥ 1 trial per step) and a ``.keras`` file loads back as one, so
    it keeps training by closure without ``enable_closure_training``."""
    from dirgrad_opt.keras_fit import DirectionalModel

    x, y = _digits()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    outputs = keras.layers.Dense(10)(keras.layers.Dense(16, activation="relu")(inputs))
    model = DirectionalModel(inputs, outputs)
    model.compile(
        optimizer=optimizers.ArmijoLineSearch(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    hist = model.fit(x, y, batch_size=128, epochs=3, verbose=0).history
    assert hist["loss"][-1] < 0.6 * hist["loss"][0] and hist["accuracy"][-1] > 0.75
    assert min(hist["forward_passes"]) >= 2.0 and hist["backward_passes"] == [1.0] * 3
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is DirectionalModel
    again = loaded.fit(x, y, batch_size=128, epochs=1, verbose=0).history
    assert again["forward_passes"][0] >= 2.0  # the closure step, not Keras's gradient step


def test_closure_training_advances_batchnorm_and_dropout_state_once_per_step():
    """Armijo evaluates the loss several times per step, yet BatchNormalization's moving
    statistics take exactly one update per step (from the batch: BN sits on the inputs, so
    its batch statistics do not depend on the weights) and Dropout's RNG state ends where one
    model call per step (Keras SGD) leaves it. Mutant killed: not restoring the
    non-trainable state before each evaluation."""
    from dirgrad_opt.keras_fit import DirectionalSequential

    x, y = _digits()
    x, y = x[:128], y[:128]

    def build(optimizer):
        keras.utils.set_random_seed(0)
        model = DirectionalSequential(
            [
                keras.Input((64,)),
                keras.layers.BatchNormalization(momentum=0.9),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dropout(0.3, seed=1),
                keras.layers.Dense(10),
            ]
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        hist = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0).history
        return model, hist

    model, hist = build(optimizers.ArmijoLineSearch())
    assert hist["forward_passes"][0] >= 2.0  # several evaluations per step
    mean, var = np.zeros(64), np.ones(64)
    for i in range(4):  # moving = 0.9 · moving + 0.1 · batch statistic, once per batch
        batch = x[32 * i : 32 * (i + 1)].astype(np.float64)
        mean = 0.9 * mean + 0.1 * batch.mean(axis=0)
        var = 0.9 * var + 0.1 * batch.var(axis=0)
    bn = model.layers[0]
    np.testing.assert_allclose(np.asarray(bn.moving_mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), var, rtol=1e-5, atol=1e-6)

    reference, _ = build(keras.optimizers.SGD(0.1))  # Keras's own step: one call per step
    rng = [np.asarray(m.layers[2].seed_generator.state) for m in (model, reference)]
    np.testing.assert_array_equal(rng[0], rng[1])


@pytest.mark.parametrize("mode", ["eager", "graph", "loop"])
def test_step_counts_sum_static_passes_and_count_loop_passes_each_time(mode):
    """Counts made where the step runs are summed at trace time; those in a loop body or a
    branch run a data-dependent number of times and must be counted every time — and start
    from 0 in every step (here step t runs t % 3 + 1 extra evaluations in a while loop and
    one more in a cond branch on odd steps)."""

    class Loops(optimizers.DirectionalOptimizer):
        def step(self, ctx):
            loss = ctx.loss()  # static: 1 forward
            ctx.count(jvps=2)  # static, no pass
            trips = tf.cast(self.iterations % 3, tf.int32) + 1

            def body(i, total):
                return i + 1, total + ctx.loss()

            _, total = tf.while_loop(lambda i, _: i < trips, body, (0, tf.zeros_like(loss)))

            def odd():
                ctx.count(backward_passes=1)
                return ctx.loss()

            extra = tf.cond(self.iterations % 2 == 1, odd, lambda: tf.zeros_like(loss))
            slope = tf.constant(-1.0)
            return step_info(loss + 0 * (total + extra), tf.constant(0.0), tf.constant(True), slope)

    w = tf.Variable([1.0, 2.0])
    opt = Loops(learning_rate=0.1)
    opt.build([w])

    def one():
        return opt.minimize(lambda: tf.reduce_sum(w * w), [w])

    if mode == "loop":  # minimize itself inside a tf.while_loop body (as tests/_run do)

        @tf.function
        def run(n):
            out = tf.TensorArray(tf.int32, size=n)
            for t in tf.range(n):
                info = one()
                out = out.write(t, tf.stack([info["forward_passes"], info["backward_passes"]]))
            return out.stack()

        rows = run(6).numpy().tolist()
    else:
        step = one if mode == "eager" else tf.function(one)
        rows = [
            [int(i["forward_passes"]), int(i["backward_passes"])]
            for i in map(lambda _: step(), range(6))
        ]
    expected = [[1 + t % 3 + 1 + t % 2, t % 2] for t in range(6)]
    assert rows == expected
    totals = opt.totals
    assert int(totals["forward_passes"]) == sum(r[0] for r in expected)
    assert int(totals["backward_passes"]) == 3 and int(totals["jvps"]) == 12
