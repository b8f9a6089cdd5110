"""A researcher's own optimizer, data, loss and model, from a folder outside the repo.

The user module (``my_opt.py``) and gin files are written into ``tmp_path`` and driven through
the real command (``python -m experiments.train``, cwd = tmp_path, the folder on PYTHONPATH);
unit tests cover the registration API, the subclass-config capture, losses, schedules for
line-search scales and ``keras_fit`` logs in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

import dirgrad_opt
from dirgrad_opt import optimizers, training

ROOT = Path(__file__).resolve().parents[1]

#: The user's module, as a researcher would write it (README "Writing a new optimizer").
USER_MODULE = '''
import keras
import numpy as np
import tensorflow as tf

import dirgrad_opt
from dirgrad_opt import optimizers, tree


@dirgrad_opt.register_optimizer
class MomentumArmijo(optimizers.ArmijoLineSearch):
    """Armijo backtracking along a heavy-ball direction d = -g + beta * d_prev."""

    def __init__(self, beta=0.5, **kwargs):
        super().__init__(**kwargs)
        self.beta = beta

    def build_state(self, var_list):
        super().build_state(var_list)
        self.previous = [self.add_variable_from_reference(v, "previous") for v in var_list]

    def compute_direction(self, ctx):
        loss, grads = ctx.loss_and_gradient()
        ctx.gradient = grads
        d = [-g + self.beta * p for g, p in zip(grads, self.previous)]
        slope = tf.cast(tree.dot(grads, d), loss.dtype)
        descent = slope < 0
        d = [tf.where(descent, x, -g) for x, g in zip(d, grads)]
        slope = tf.where(descent, slope, -tf.cast(tree.dot(grads, grads), loss.dtype))
        for p, x in zip(self.previous, d):
            p.assign(x)
        ctx.metrics["momentum_used"] = descent
        return loss, d, slope


def blobs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(8, 3)), axis=1)
    return (x[:200], y[:200]), (x[200:], y[200:])


def line(noise=0.01):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5))
    y = x @ np.arange(1.0, 6.0) + noise * rng.normal(size=300)  # float targets [n]
    return (x[:200], y[:200]), (x[200:], y[200:])


dirgrad_opt.register_dataset("my_blobs", blobs)
dirgrad_opt.register_dataset("my_line", line)
'''

COMMON = """
import my_opt
load_dataset.batch_size = 20
create_model.model_fn = @mlp
mlp.widths = (16,)
train.num_steps = 40
train.eval_every = 20
train.checkpoint_every = 20
train.log_every = 10
"""


def _env(tmp_path: Path) -> dict[str, str]:
    path = os.pathsep.join([str(tmp_path), str(ROOT)])
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path}


def _train(tmp_path: Path, gin_text: str, name: str) -> subprocess.CompletedProcess:
    gin_file = tmp_path / f"{name}.gin"
    gin_file.write_text(gin_text)
    cmd = [sys.executable, "-m", "experiments.train", f"--gin_file={gin_file.name}"]
    return subprocess.run(
        [*cmd, f"--workdir={name}"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _python(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    (tmp_path / "my_opt.py").write_text(USER_MODULE)
    return tmp_path


def _save_directional_model(path: Path) -> None:
    from dirgrad_opt.keras_fit import DirectionalModel

    inputs = keras.Input((3,))
    model = DirectionalModel(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=optimizers.PolyakStep(max_step=0.5), loss="mse")
    model.fit(np.ones((8, 3)), np.zeros((8, 2)), batch_size=4, epochs=1, verbose=0)
    model.save(path)


# -- the whole flow through the real command ---------------------------------------------------
@pytest.mark.slow
def test_user_optimizer_and_dataset_train_save_and_reload_in_a_fresh_process(user_dir):
    proc = _train(
        user_dir,
        COMMON
        + "load_dataset.name = 'my_blobs'\n"
        + "train.optimizer = @MomentumArmijo()\nMomentumArmijo.beta = 0.25\n"
        + "MomentumArmijo.max_step = 2\n",  # an int for a float parameter: converted
        "run",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    workdir = user_dir / "run"
    result = json.loads((workdir / "result.json").read_text())
    assert result["status"] == "complete"
    assert result["optimizer"]["class"] == "MomentumArmijo"
    assert result["optimizer"]["config"]["beta"] == 0.25  # no get_config written by the user
    assert result["final"]["test_accuracy"] > 0.5
    assert (workdir / "model.keras").is_file()
    _save_directional_model(user_dir / "dm.keras")

    # A fresh process: `import dirgrad_opt` alone loads a DirectionalModel file (keras_fit not
    # imported by hand); then the user module registers its class for load_run.
    check = _python(
        user_dir,
        """
        import json
        import keras
        import dirgrad_opt
        m = keras.models.load_model("dm.keras")
        print(type(m).__name__, type(m.optimizer).__name__, int(m.optimizer.iterations))
        import my_opt
        from dirgrad_opt import training
        run = training.load_run("run")
        opt = run.optimizer
        print(json.dumps({
            "type": type(opt).__name__, "beta": opt.beta, "max_step": opt.max_step,
            "iterations": int(opt.iterations),
            "previous_norm": float(sum(float((v ** 2).numpy().sum()) for v in opt.previous)),
            "accuracy": run.result["final"]["test_accuracy"],
            "config_has_import": "import my_opt" in run.operative_config,
        }))
        """,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    lines = check.stdout.strip().splitlines()
    assert lines[-2].split() == ["DirectionalModel", "PolyakStep", "2"]
    loaded = json.loads(lines[-1])
    assert loaded["type"] == "MomentumArmijo"
    assert loaded["beta"] == 0.25 and loaded["max_step"] == 2.0
    assert loaded["iterations"] == 40
    assert loaded["previous_norm"] > 0  # the add_variable state came back, not zeros
    assert loaded["accuracy"] == result["final"]["test_accuracy"]


@pytest.mark.slow
def test_mean_squared_error_trains_a_registered_regression_dataset(user_dir):
    proc = _train(
        user_dir,
        COMMON
        + "load_dataset.name = 'my_line'\n"
        + "train.loss = 'mean_squared_error'\n"
        + "train.optimizer = @Adam()\nAdam.learning_rate = 0.03\n",
        "reg",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((user_dir / "reg" / "result.json").read_text())
    assert result["dataset"]["task"] == "regression"
    records = [json.loads(line) for line in (user_dir / "reg" / "metrics.jsonl").open()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals[-1]["test_loss"] < 0.5 * evals[0]["test_loss"]
    operative = (user_dir / "reg" / "operative_config.gin").read_text()
    assert "train.loss = 'mean_squared_error'" in operative


# -- registration API ---------------------------------------------------------------------------
class _Scaled(optimizers.DirectionalOptimizer):
    """Steepest descent with the step multiplied by ``scale``."""

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def compute_step_size(self, ctx, loss, direction, slope):
        t, ok = super().compute_step_size(ctx, loss, direction, slope)
        return t * tf.cast(self.scale, t.dtype), ok


def test_register_optimizer_checks_names_and_converts_ints():
    assert dirgrad_opt.register_optimizer(_Scaled) is _Scaled
    assert dirgrad_opt.register_optimizer(_Scaled) is _Scaled  # idempotent
    from dirgrad_opt.training import registry

    gin.parse_config(["_Scaled.scale = 2"])
    opt = registry.REGISTERED["_Scaled"]()
    assert type(opt) is _Scaled and opt.scale == 2.0 and isinstance(opt.scale, float)
    gin.clear_config()
    with pytest.raises(ValueError, match="scael"):
        gin.parse_config(["_Scaled.scael = 2"])
    # The name of another class (a built-in) is refused, naming the owner.
    with pytest.raises(ValueError, match="already taken by .*Adam"):
        dirgrad_opt.register_optimizer(_Scaled, name="Adam")
    with pytest.raises(TypeError, match="keras.optimizers.Optimizer"):
        dirgrad_opt.register_optimizer(object)


def test_register_dataset_infers_the_task_and_loads_by_name():
    from dirgrad_opt.data import load_dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype("float32")
    dirgrad_opt.register_dataset(
        "ext_cls", lambda: ((x[:40], np.arange(40) % 3), (x[40:], np.arange(10) % 3))
    )
    ds = load_dataset("ext_cls", batch_size=10)
    assert (ds.task, ds.num_classes, ds.num_outputs, ds.input_shape) == (
        "classification",
        3,
        3,
        (4,),
    )
    train = tf.data.Dataset.from_tensor_slices((x[:40], x[:40, :2])).batch(7)  # batched, [n, 2]
    test = tf.data.Dataset.from_tensor_slices((x[40:], x[40:, :2]))
    dirgrad_opt.register_dataset("ext_reg", lambda: (train, test))
    ds = load_dataset("ext_reg", batch_size=10)
    assert (ds.task, ds.num_outputs, ds.num_train_examples) == ("regression", 2, 40)
    _, y = next(iter(ds.train))
    assert y.shape == (10, 2) and y.dtype == tf.float32

    def scaled(scale=1.0):  # the function's own parameters are gin-bindable under its name
        return (x[:40] * scale, x[:40, 0]), (x[40:] * scale, x[40:, 0])

    dirgrad_opt.register_dataset("ext_scaled", scaled)
    gin.parse_config(["ext_scaled.scale = 3.0"])
    xb, _ = next(iter(load_dataset("ext_scaled", batch_size=40, seed=0).train_eval))
    np.testing.assert_allclose(xb.numpy(), 3.0 * x[:40], rtol=1e-6)


def test_bad_datasets_give_short_one_line_errors():
    from dirgrad_opt.data import load_dataset

    big = np.zeros((5000, 20), np.float32)
    dirgrad_opt.register_dataset("ext_bad_layout", lambda: (big, big))
    dirgrad_opt.register_dataset(
        "ext_bad_rows", lambda: ((big, np.zeros(3, np.int64)), (big, np.zeros(5000, np.int64)))
    )
    dirgrad_opt.register_dataset(
        "ext_bad_dtype", lambda: ((big, big[:, 0].astype(str)), (big, big[:, 0].astype(str)))
    )
    for name, match in (
        ("ext_bad_layout", r"must be an \(x, y\) pair"),
        ("ext_bad_rows", "same non-zero number of rows"),
        ("ext_bad_dtype", "integer labels for classification"),
    ):
        with pytest.raises(ValueError, match=match) as info:
            load_dataset(name, batch_size=10)
        assert len(training.one_line(info.value)) < 500, str(info.value)[:600]
    with pytest.raises(ValueError, match="built-in"):
        dirgrad_opt.register_dataset("blobs", lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        dirgrad_opt.register_dataset("ext_bad_rows", lambda: None)


def test_array_data_from_train_dataset_is_a_short_error(tmp_path):
    """The 36,000-character line: train.dataset returning ArrayData printed both arrays."""
    from dirgrad_opt.data import gaussian_blobs

    gin.external_configurable(
        lambda seed=0, batch_size=None: gaussian_blobs(num_train=5000), name="ext_arrays"
    )
    gin.parse_config(
        ["train.dataset = @ext_arrays", "train.optimizer = @Adam()", "train.num_steps = 1"]
    )
    with pytest.raises(training.ConfigError) as info:
        training.run(str(tmp_path / "run"))
    message = training.one_line(info.value)
    assert len(message) < 400, message[:600]
    assert "register_dataset" in message and "shape=(5000, 10)" in message


@pytest.fixture
def restore_models():
    """The models this test registers leave the registry afterwards (test_models pins it)."""
    from dirgrad_opt import models

    before = dict(models.MODELS)
    yield
    models.MODELS.clear()
    models.MODELS.update(before)


def test_register_model_by_name_and_gin_reference(tmp_path, restore_models):
    def tiny_net(input_shape, num_classes, width=4):
        return keras.Sequential(
            [keras.Input(input_shape), keras.layers.Dense(width), keras.layers.Dense(num_classes)]
        )

    dirgrad_opt.register_model("ext_tiny", tiny_net)
    from dirgrad_opt.models import create_model

    assert create_model((3,), 2, model_fn="ext_tiny").count_params() == 3 * 4 + 4 + 4 * 2 + 2
    gin.parse_config(["create_model.model_fn = @ext_tiny", "ext_tiny.width = 5"])
    assert create_model((3,), 2).layers[0].units == 5
    with pytest.raises(ValueError, match="built-in"):
        dirgrad_opt.register_model("mlp", tiny_net)
    dirgrad_opt.register_model("ext_broken", lambda input_shape, num_classes: np.zeros(10**5))
    with pytest.raises(ValueError, match="must return a keras.Model") as info:
        create_model((3,), 2, model_fn="ext_broken")
    assert len(str(info.value)) < 300


# -- subclass config without get_config ---------------------------------------------------------
def test_subclass_arguments_round_trip_without_get_config():
    schedule = keras.optimizers.schedules.ExponentialDecay(1.0, 10, 0.5)
    opt = _Scaled(scale=3.0, learning_rate=schedule)
    config = opt.get_config()
    assert config["scale"] == 3.0
    again = _Scaled.from_config(json.loads(json.dumps(config)))
    assert again.scale == 3.0 and isinstance(again._learning_rate, type(schedule))
    # Arguments of every class along the hierarchy (none writes get_config), most derived
    # winning: the middle class's argument arrives through **kwargs.

    class Outer(_Scaled):
        def __init__(self, offset: float = 0.0, **kwargs):
            super().__init__(**kwargs)
            self.offset = offset

    config = Outer(offset=0.5, scale=4.0).get_config()
    assert (config["offset"], config["scale"]) == (0.5, 4.0)
    again = Outer.from_config(config)
    assert (again.offset, again.scale) == (0.5, 4.0)


def test_an_argument_get_config_cannot_carry_is_refused_at_construction():
    class WithFunction(optimizers.DirectionalOptimizer):
        def __init__(self, transform=None, **kwargs):
            super().__init__(**kwargs)
            self.transform = transform

    WithFunction(transform=None)
    with pytest.raises(TypeError, match="argument 'transform' cannot be saved"):
        WithFunction(transform=lambda d: d)


def test_added_state_survives_a_runner_checkpoint_resume(tmp_path):
    import problems

    class Counting(optimizers.DirectionalOptimizer):
        def build_state(self, var_list):
            self.seen = self.add_variable((), initializer="zeros", name="seen")

        def compute_step_size(self, ctx, loss, direction, slope):
            self.seen.assign_add(1.0)
            return super().compute_step_size(ctx, loss, direction, slope)

    dirgrad_opt.register_optimizer(Counting, name="ExtCounting")
    bindings = [*problems.TINY_RUN, "train.optimizer = @ExtCounting()", "train.num_steps = 6"]
    bindings += ["train.checkpoint_every = 3", "train.eval_every = 3", "train.log_every = 3"]
    gin.parse_config(bindings)
    assert training.run(str(tmp_path / "run"), stop_after=3) is None
    gin.clear_config()
    gin.parse_config(bindings)
    training.run(str(tmp_path / "run"))  # resumes at step 3
    run = training.load_run(tmp_path / "run")
    assert int(run.optimizer.iterations) == 6
    assert float(run.optimizer.seen) == 6.0  # 3 before the restart + 3 after


# -- losses -------------------------------------------------------------------------------------
def test_resolve_loss_accepts_names_instances_and_functions():
    from dirgrad_opt.models import resolve_loss

    logits = tf.constant([[2.0, 0.0], [0.0, 1.0]])
    labels = tf.constant([0, 1])
    expected = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)))
    by_name = resolve_loss("sparse_categorical_crossentropy", "classification")
    assert float(by_name(logits, labels)) == pytest.approx(expected)  # from logits
    assert float(resolve_loss(None, "classification")(logits, labels)) == pytest.approx(expected)
    y = tf.constant([[1.0], [3.0]])
    p = tf.constant([[0.0], [1.0]])
    assert float(resolve_loss(keras.losses.MeanAbsoluteError(), "regression")(p, y)) == 1.5
    assert float(resolve_loss(lambda t, q: tf.abs(t - q) ** 3, "regression")(p, y)) == 4.5
    with pytest.raises(ValueError, match="not a Keras loss name"):
        resolve_loss("mean_sqared_error", "regression")
    with pytest.raises(ValueError, match="train.loss must be"):
        resolve_loss(3, "regression")


def test_train_loss_gin_instance_is_used_and_recorded(tmp_path):
    regression = [
        "load_dataset.name = 'linear_regression'",
        "load_dataset.batch_size = 20",
        "linear_regression.num_train = 100",
        "linear_regression.num_test = 50",
        "create_model.model_fn = @mlp",
        "mlp.widths = (8,)",
        "train.optimizer = @Adam()",
        "train.num_steps = 2",
    ]
    results = {}
    for name, extra in (("default", []), ("huber", ["train.loss = @Huber()", "Huber.delta = 0.5"])):
        gin.clear_config()
        gin.parse_config(regression + extra)
        results[name] = training.run(str(tmp_path / name))
    operative = (tmp_path / "huber" / "operative_config.gin").read_text()
    assert "train.loss = @Huber()" in operative and "Huber.delta = 0.5" in operative
    # Same seed, same weights at step 0: Huber(δ=½) is below the squared error everywhere.
    assert results["huber"]["final"]["test_loss"] != results["default"]["final"]["test_loss"]


# -- keras_fit logs -----------------------------------------------------------------------------
def test_keras_fit_logs_every_scalar_of_the_rule():
    from dirgrad_opt.keras_fit import DirectionalSequential

    model = DirectionalSequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizers.PolyakStep(), loss="mse")
    history = model.fit(np.ones((8, 3)), np.ones((8, 1)), batch_size=4, epochs=1, verbose=0)
    for key in ("polyak_step", "step_size", "accepted", "forward_passes", "slope"):
        assert key in history.history, (key, sorted(history.history))


# -- schedules for step scales ------------------------------------------------------------------
def test_line_search_scales_accept_schedules():
    piecewise = keras.optimizers.schedules.PiecewiseConstantDecay([1], [1.0, 0.01])  # 1 to step 1
    opt = optimizers.PolyakStep(max_step=piecewise)
    w = tf.Variable([3.0, -2.0])
    # f* = 0 underestimates min L = 1, so the Polyak step grows past the cap near w = 0.
    steps = [
        float(opt.minimize(lambda: tf.reduce_sum(w**2) + 1.0, [w])["step_size"]) for _ in range(4)
    ]
    assert steps == pytest.approx([14.0 / 26.0, 1.0, 0.01, 0.01])  # cap at iterations 0..3
    config = json.loads(json.dumps(opt.get_config()))
    again = optimizers.PolyakStep.from_config(config)
    assert isinstance(again.max_step, keras.optimizers.schedules.PiecewiseConstantDecay)

    armijo = optimizers.ArmijoLineSearch(
        initial_step=keras.optimizers.schedules.ExponentialDecay(1.0, 1, 0.5), reset="reset"
    )
    v = tf.Variable([1.0])
    first = [
        float(armijo.minimize(lambda: 1e-3 * tf.reduce_sum(v**2), [v])["step_size"])
        for _ in range(3)
    ]
    assert first == pytest.approx([1.0, 0.5, 0.25])  # the schedule at iterations 0, 1, 2
    wolfe = optimizers.WolfeLineSearch(max_step=keras.optimizers.schedules.CosineDecay(10.0, 100))
    assert optimizers.WolfeLineSearch.from_config(wolfe.get_config()).max_step.decay_steps == 100
    with pytest.raises(ValueError, match="max_step"):
        optimizers.PolyakStep(max_step=-1.0)


def test_one_line_bounds_a_huge_value_and_keeps_both_ends():
    error = ValueError("bad value " + repr(np.zeros(10**4)) + "\n  In file 'x.gin', line 3")
    line = training.one_line(error)
    assert len(line) <= 1000
    assert line.startswith("ValueError: bad value") and line.endswith("In file 'x.gin', line 3")


def test_a_model_keras_cannot_save_does_not_fail_the_run(tmp_path, monkeypatch):
    import problems

    def refuse(self, *args, **kwargs):
        raise ValueError("this layer cannot be serialized")

    monkeypatch.setattr(keras.Model, "save", refuse)
    gin.parse_config([*problems.TINY_RUN, "train.optimizer = @Adam()", "train.num_steps = 2"])
    assert training.run(str(tmp_path / "run"))["status"] == "complete"
    assert not (tmp_path / "run" / "model.keras").exists()
    assert not list((tmp_path / "run").glob("*.keras"))  # no partial file left behind
    with pytest.raises(FileNotFoundError, match="has no model.keras"):
        training.load_run(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="no finished run"):
        training.load_run(tmp_path / "nothing")
