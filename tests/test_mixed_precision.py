"""Mixed precision: every optimizer under ``mixed_bfloat16``/``mixed_float16``, loss scaling, the
runner's ``train.mixed_precision`` and the warm workers' policy reset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import problems
import pytest
import tensorflow as tf

from dirgrad_opt import optimizers
from dirgrad_opt.optimizers import ModelClosure

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("mixed_bfloat16", "mixed_float16")

#: Every optimizer of the package, with settings that take a visible step on a tiny MLP.
EVERY_OPTIMIZER = {
    "DirectionalOptimizer": lambda: optimizers.DirectionalOptimizer(learning_rate=0.1),
    "ArmijoLineSearch": optimizers.ArmijoLineSearch,
    "ArmijoLineSearch_adam": lambda: optimizers.ArmijoLineSearch(
        direction=keras.optimizers.Adam(0.01)
    ),
    "WolfeLineSearch": optimizers.WolfeLineSearch,
    "PolyakStep": optimizers.PolyakStep,
    "ParabolicLineSearch": optimizers.ParabolicLineSearch,
    "GradientOnlyLineSearch": optimizers.GradientOnlyLineSearch,
    "DirectionalNewton": optimizers.DirectionalNewton,
    "ForwardGradient": optimizers.ForwardGradient,
    "GuidedForwardGradient": optimizers.GuidedForwardGradient,
    "RandomDirectionLineSearch": optimizers.RandomDirectionLineSearch,
    "ZerothOrder": optimizers.ZerothOrder,
    "SparseZerothOrder": optimizers.SparseZerothOrder,
    "LowRankZerothOrder": optimizers.LowRankZerothOrder,
    "ZOMomentum": optimizers.ZOMomentum,
    "ZOAdam": optimizers.ZOAdam,
    "ActivityForwardGradient": optimizers.ActivityForwardGradient,
    "ActivityZerothOrder": optimizers.ActivityZerothOrder,
}


@pytest.fixture
def policy():
    """Sets a global dtype policy for the test; always restores float32."""
    previous = keras.config.dtype_policy()

    def set_policy(name: str) -> None:
        keras.config.set_dtype_policy(name)

    yield set_policy
    keras.config.set_dtype_policy(previous)


def _tiny_mlp_closure() -> tuple[keras.Model, ModelClosure]:
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)]
    )
    x = tf.random.stateless_normal((16, 5), seed=(1, 2))
    y = tf.random.stateless_uniform((16,), seed=(3, 4), minval=0, maxval=3, dtype=tf.int32)
    xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return model, ModelClosure(model, lambda out, labels: xent(labels, out), x, y)


def test_every_optimizer_is_listed():
    exported = set(optimizers.__all__) - {"StepContext", "ModelClosure"}
    assert exported <= {name.split("_")[0] for name in EVERY_OPTIMIZER}


#: One of each kind of pass (backward, line search, Hessian, forward mode, zeroth order, inner
#: optimizer state); the rest run in the slow-marked sweep.
FAST = {
    "ArmijoLineSearch_adam",
    "WolfeLineSearch",
    "PolyakStep",
    "DirectionalNewton",
    "ForwardGradient",
    "ZerothOrder",
}
CASES = [
    pytest.param(name, marks=() if name in FAST else pytest.mark.slow)
    for name in sorted(EVERY_OPTIMIZER)
]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("policy_name", POLICIES)
def test_every_optimizer_steps_under_mixed_precision(policy, policy_name, name):
    policy(policy_name)
    model, closure = _tiny_mlp_closure()
    assert model.layers[0].compute_dtype == policy_name.split("_")[1]
    assert closure().dtype == tf.float32  # the closure's loss leaves the model in float32
    opt = EVERY_OPTIMIZER[name]()
    start = [v.numpy() for v in model.trainable_variables]
    info = opt.minimize(closure, model.trainable_variables)
    assert all(v.dtype == "float32" for v in model.trainable_variables)  # master weights
    assert info["loss"].dtype == tf.float32 and np.isfinite(float(info["loss"]))
    if "step_size" in info:
        assert info["step_size"].dtype == tf.float32
    moved = [
        not np.array_equal(v.numpy(), w)
        for v, w in zip(model.trainable_variables, start, strict=True)
    ]
    assert any(moved), name
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
    # dynamic loss scaling is on exactly under mixed_float16
    assert ("loss_scale" in info) == (policy_name == "mixed_float16")


# -- loss scaling ----------------------------------------------------------------------------


def _underflowing_problem():
    """``L(w) = Σ (1e-4 · (1e-4 · w))`` computed in float16, w ∈ float32, w0 = 0.

    ∂L/∂w = 1e-8 per element: below float16's smallest subnormal (6e-8), so the unscaled
    float16 backward pass returns exactly 0; with S = 2¹⁵ the float16 cotangents are ~3e-4.
    """
    w = tf.Variable(tf.zeros([8]), name="w")

    def loss_fn() -> tf.Tensor:
        tiny = tf.constant(1e-4, tf.float16)
        return tf.reduce_sum(tf.cast(w, tf.float16) * tiny * tiny)

    return w, loss_fn


@pytest.mark.parametrize(
    "kwargs", [{"dynamic_loss_scale": True}, {"loss_scale_factor": 2.0**15}], ids=["dyn", "static"]
)
def test_loss_scaling_recovers_a_gradient_that_underflows_in_float16(kwargs):
    w, loss_fn = _underflowing_problem()
    plain = optimizers.DirectionalOptimizer(learning_rate=1.0, dynamic_loss_scale=False)
    info = plain.minimize(loss_fn, [w])
    assert float(info["slope"]) == 0.0 and not w.numpy().any()  # the gradient flushed to zero
    scaled = optimizers.DirectionalOptimizer(learning_rate=1.0, **kwargs)
    info = scaled.minimize(loss_fn, [w])
    np.testing.assert_allclose(w.numpy(), -1e-8, rtol=2e-3)  # w ← 0 − 1·∇L
    np.testing.assert_allclose(float(info["slope"]), -8e-16, rtol=5e-3)
    assert info["loss"].dtype == tf.float32


def test_overflow_skips_the_step_restores_state_and_halves_the_scale():
    """``L = Σ 100·w`` in float16: S·100 overflows float16 until S ≤ 512. Each overflowing
    step is skipped (weights and the inner Adam's moments untouched) and halves S."""
    w = tf.Variable(tf.ones([4]), name="w")

    def loss_fn() -> tf.Tensor:
        return tf.reduce_sum(tf.cast(w, tf.float16) * tf.constant(100.0, tf.float16))

    opt = optimizers.DirectionalOptimizer(
        learning_rate=0.01, direction=keras.optimizers.Adam(0.1), dynamic_loss_scale=True
    )
    scales = []
    for _ in range(7):
        before = w.numpy().copy()
        info = opt.minimize(loss_fn, [w])
        scales.append(float(info["loss_scale"]))
        if bool(info["loss_scale_overflow"]):
            assert not bool(info["accepted"]) and float(info["step_size"]) == 0.0
            np.testing.assert_array_equal(w.numpy(), before)
            inner = opt.direction_optimizer
            moments = [v.numpy() for v in inner.variables if v.shape.rank]  # m, v
            assert len(moments) == 2 and int(inner.iterations) == 0
            assert all(not m.any() for m in moments), "Adam's state moved on a skipped step"
    assert scales == [2.0**15 / 2**k for k in range(7)]  # 32768 ... 512
    assert not bool(info["loss_scale_overflow"]) and bool(info["accepted"])
    assert (w.numpy() < 1).all()  # the first finite step moved
    assert int(opt.iterations) == 7


def test_an_overflow_at_a_trial_point_skips_the_whole_line_search_step():
    """``L = Σ 10·w²`` in float16 from w0 = 0.05: the scaled gradient is finite at w0
    (2¹⁵·20·0.05 ≈ 3.3e4) but overflows at Wolfe's first trial w0 − 1·∇L = −0.95. The
    search may go on to accept a smaller step; the step is skipped all the same."""
    w = tf.Variable(tf.fill([3], 0.05), name="w")

    def loss_fn() -> tf.Tensor:
        x = tf.cast(w, tf.float16)
        return tf.reduce_sum(tf.constant(10.0, tf.float16) * x * x)

    opt = optimizers.WolfeLineSearch(dynamic_loss_scale=True)
    info = opt.minimize(loss_fn, [w])
    assert bool(info["loss_scale_overflow"]) and not bool(info["accepted"])
    np.testing.assert_array_equal(w.numpy(), np.full(3, 0.05, np.float32))
    assert float(opt.loss_scale) == 2.0**14


def test_scale_doubles_after_growth_steps_and_survives_checkpoints(tmp_path):
    w, loss_fn = _underflowing_problem()
    opt = optimizers.DirectionalOptimizer(
        learning_rate=1.0, dynamic_loss_scale=True, initial_loss_scale=4.0, dynamic_growth_steps=3
    )
    scales = [float(opt.minimize(loss_fn, [w])["loss_scale"]) for _ in range(7)]
    assert scales == [4.0, 4.0, 4.0, 8.0, 8.0, 8.0, 16.0]
    assert float(opt.loss_scale) == 16.0  # the next step's scale; 1 of 3 growth steps done
    path = tf.train.Checkpoint(optimizer=opt, w=w).save(str(tmp_path / "ckpt"))

    w2 = tf.Variable(tf.zeros([8]), name="w")
    restored = optimizers.DirectionalOptimizer.from_config(opt.get_config())
    restored.build([w2])
    tf.train.Checkpoint(optimizer=restored, w=w2).restore(path).assert_consumed()
    assert float(restored.loss_scale) == 16.0
    np.testing.assert_array_equal(w2.numpy(), w.numpy())
    for _ in range(3):  # resumed and uninterrupted runs agree: the scale doubles on schedule
        a = opt.minimize(loss_fn, [w])
        b = restored.minimize(lambda: loss_fn_of(w2), [w2])
        assert float(a["loss_scale"]) == float(b["loss_scale"])
    assert float(restored.loss_scale) == 32.0
    np.testing.assert_array_equal(w2.numpy(), w.numpy())


def loss_fn_of(w: tf.Variable) -> tf.Tensor:
    tiny = tf.constant(1e-4, tf.float16)
    return tf.reduce_sum(tf.cast(w, tf.float16) * tiny * tiny)


def test_loss_scaling_arguments_round_trip_and_bad_values_are_refused():
    static = optimizers.ArmijoLineSearch(loss_scale_factor=1024.0)
    config = static.get_config()
    assert config["loss_scale_factor"] == 1024.0
    assert optimizers.ArmijoLineSearch.from_config(config).loss_scale_factor == 1024.0
    dynamic = optimizers.WolfeLineSearch(
        dynamic_loss_scale=True, initial_loss_scale=256.0, dynamic_growth_steps=10
    )
    again = optimizers.WolfeLineSearch.from_config(dynamic.get_config())
    assert (again.dynamic_loss_scale, again.initial_loss_scale, again.dynamic_growth_steps) == (
        True,
        256.0,
        10,
    )
    assert "loss_scale_factor" not in optimizers.PolyakStep().get_config()  # unchanged default
    for kwargs, culprit in [
        ({"loss_scale_factor": -1.0}, "loss_scale_factor"),
        ({"loss_scale_factor": 8.0, "dynamic_loss_scale": True}, "exclude each other"),
        ({"dynamic_loss_scale": "yes"}, "dynamic_loss_scale"),
        ({"initial_loss_scale": 0.5}, "initial_loss_scale"),
        ({"dynamic_growth_steps": 0}, "dynamic_growth_steps"),
    ]:
        with pytest.raises(ValueError, match=culprit):
            optimizers.ArmijoLineSearch(**kwargs)


def test_dynamic_scaling_follows_the_policy_at_build_time(policy):
    w = tf.Variable([1.0, 2.0])
    loss = lambda: tf.reduce_sum(tf.cast(w, keras.config.dtype_policy().compute_dtype) ** 2)  # noqa: E731
    policy("mixed_float16")
    assert "loss_scale" in optimizers.PolyakStep().minimize(loss, [w])
    policy("mixed_bfloat16")
    assert "loss_scale" not in optimizers.PolyakStep().minimize(loss, [w])
    policy("mixed_float16")
    assert "loss_scale" not in optimizers.PolyakStep(dynamic_loss_scale=False).minimize(loss, [w])


def test_zeroth_order_default_fd_step_accounts_for_the_compute_dtype(policy):
    from dirgrad_opt import directional

    w = tf.Variable(tf.ones([3]))
    v = [tf.ones([3])]
    h32 = float(directional.default_fd_step([w], v, "central_difference"))
    policy("mixed_bfloat16")
    h16 = float(directional.default_fd_step([w], v, "central_difference"))
    assert h16 == pytest.approx(h32 * (2.0**-7 / 2.0**-23) ** (1 / 3), rel=1e-5)


# -- keras_fit -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy_name", POLICIES)
def test_keras_fit_under_a_mixed_policy(policy, policy_name):
    from dirgrad_opt.keras_fit import DirectionalModel

    policy(policy_name)
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(3)(keras.layers.Dense(8, activation="relu")(inputs))
    model = DirectionalModel(inputs, outputs)
    model.compile(
        optimizer=optimizers.ArmijoLineSearch(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.default_rng(0).normal(size=(64, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert model.layers[1].compute_dtype == policy_name.split("_")[1]


# -- the runner ------------------------------------------------------------------------------

TINY = "\n".join(
    [
        *problems.TINY_RUN,
        "train.optimizer = @ArmijoLineSearch()",
        "train.num_steps = 6",
        "train.eval_every = 6",
        "train.checkpoint_every = 6",
        "train.log_every = 3",
    ]
)


def test_bad_mixed_precision_value_is_a_one_line_config_error(tmp_path, capsys):
    from absl import flags

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from experiments import train as cli

    gin_file = tmp_path / "tiny.gin"
    gin_file.write_text(TINY)
    flags.FLAGS.unparse_flags()
    argv = flags.FLAGS(
        [
            "train",
            f"--gin_file={gin_file}",
            "--gin_param=train.mixed_precision = 'float16'",
            f"--workdir={tmp_path / 'run'}",
        ]
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == cli.EXIT_CONFIG_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.mixed_precision = 'float16'" in err[0], err
    assert all(p in err[0] for p in ("None", "'float32'", "'mixed_bfloat16'", "'mixed_float16'"))
    assert not (tmp_path / "run" / "result.json").exists()
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow  # a subprocess: ~15 s idle, more on a loaded machine
def test_runner_cli_records_the_policy(tmp_path):
    policy_name = "mixed_bfloat16"
    gin_file = tmp_path / "tiny.gin"
    gin_file.write_text(TINY)
    workdir = tmp_path / "run"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            f"--gin_file={gin_file}",
            f"--gin_param=train.mixed_precision='{policy_name}'",
            f"--workdir={workdir}",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    result = json.loads((workdir / "result.json").read_text())
    assert result["status"] == "complete" and result["mixed_precision"] == policy_name
    assert np.isfinite(result["final"]["test_loss"])
    assert (
        f"train.mixed_precision = '{policy_name}'" in (workdir / "operative_config.gin").read_text()
    )
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert "loss_scale" not in [r for r in metrics if r["kind"] == "train"][-1]  # bfloat16


@pytest.mark.slow  # two trials in-process: ~15 s
def test_warm_worker_trial_after_a_leaked_policy_runs_in_float32(tmp_path, policy, monkeypatch):
    """A warm worker runs trials in one process: a policy left over by an earlier trial (here
    set by hand, as a user module might) must not reach the next float32 trial."""
    from dirgrad_opt.sweeps import workers

    monkeypatch.chdir(tmp_path)
    gin_file = tmp_path / "tiny.gin"
    gin_file.write_text(TINY.replace("num_steps = 6", "num_steps = 3"))
    command = [sys.executable, "-m", "experiments.train", f"--gin_file={gin_file}"]
    code = workers.run_trial(
        [
            *command,
            "--gin_param=train.mixed_precision='mixed_float16'",
            f"--workdir={tmp_path / 'a'}",
        ]
    )
    assert code == 0 and keras.config.dtype_policy().name == "float32"
    first = json.loads((tmp_path / "a" / "result.json").read_text())
    assert first["mixed_precision"] == "mixed_float16" and first["status"] == "complete"
    records = [json.loads(r) for r in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r["kind"] == "train"][-1]["loss_scale"] == 2.0**15
    policy("mixed_bfloat16")  # leaked
    assert workers.run_trial([*command, f"--workdir={tmp_path / 'b'}"]) == 0
    result = json.loads((tmp_path / "b" / "result.json").read_text())
    assert result["mixed_precision"] == "float32"
    final = keras.saving.load_model(tmp_path / "b" / "model.keras", compile=False)
    assert all(layer.compute_dtype == "float32" for layer in final.layers)


@pytest.mark.slow  # three short runs each: ~20-30 s on a loaded machine
@pytest.mark.parametrize("optimizer", ["Adam", "PolyakStep"])
def test_runner_mixed_float16_resumes_exactly_with_its_loss_scale(tmp_path, optimizer):
    """In-process runs under mixed_float16: a stock Keras optimizer is wrapped in Keras's
    LossScaleOptimizer, ours scales itself; a run stopped at step 3 and resumed ends where an
    uninterrupted run ends (the loss scale is checkpointed with the optimizer)."""
    import gin

    from dirgrad_opt import training

    bindings = [
        *problems.TINY_RUN,
        f"train.optimizer = @{optimizer}()",
        "train.num_steps = 6",
        "train.eval_every = 3",
        "train.checkpoint_every = 3",
        "train.log_every = 3",
        "train.mixed_precision = 'mixed_float16'",
    ]
    results = {}
    for name, stops in (("straight", [None]), ("resumed", [3, None])):
        for stop in stops:
            gin.clear_config()
            gin.parse_config(bindings)
            results[name] = training.run(str(tmp_path / name), stop_after=stop)
            assert keras.config.dtype_policy().name == "float32"
    result = results["resumed"]
    assert result["mixed_precision"] == "mixed_float16" and result["status"] == "complete"
    expected = "LossScaleOptimizer" if optimizer == "Adam" else optimizer
    assert result["optimizer"]["class"] == expected
    assert result["final"] == results["straight"]["final"]
