"""Data parallelism on tf.distribute: every optimizer, and the runner, on 2 replicas reproduce
one device (same global batch and seed). conftest.py splits the CPU into 2 logical devices."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf
from multiworker_driver import QUICK, RUNNER_OPTIMIZERS

from dirgrad_opt import distribute, keras_fit, training
from dirgrad_opt import optimizers as O
from dirgrad_opt.training import distributed, schema, workers

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def strategy():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPU devices (set in conftest.py before TF starts)")
    return distributed.setup("mirrored", 2).strategy


# -- optimizers inside strategy.run -------------------------------------------------------------
X = tf.random.stateless_normal((64, 8), seed=[0, 1])
Y = tf.cast(tf.reduce_sum(X[:, :2], axis=1) > 0, tf.int32)


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)]
    )


def _loss(model, x, y):
    logits = model(x)
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, True))


def _train(make_opt, strategy, steps):
    """``steps`` steps on the 64 points; under ``strategy`` each replica gets 32 of them."""
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = _model()
        opt = make_opt()
        opt.build(model.trainable_variables)
    variables = model.trainable_variables

    def replica_step(x, y):
        if isinstance(opt, O.DirectionalOptimizer):
            info = opt.minimize(lambda: _loss(model, x, y), variables)
            return info["step_size"], info["forward_passes"]
        with tf.GradientTape() as tape:
            scaled = _loss(model, x, y) / distribute.num_replicas()
        opt.apply_gradients(zip(tape.gradient(scaled, variables), variables, strict=True))
        return tf.constant(0.0), tf.constant(1)

    if strategy is None:
        step = tf.function(lambda: replica_step(X, Y))
    else:

        def shard(t):
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: t[32 * ctx.replica_id_in_sync_group :][:32]
            )

        xs, ys = shard(X), shard(Y)

        @tf.function
        def step():
            t, passes = strategy.run(replica_step, args=(xs, ys))
            local = strategy.experimental_local_results
            return local(t)[0], local(passes)[0]

    sizes = [float(step()[0]) for _ in range(steps)]
    if strategy is not None:  # the copies of every weight stayed identical
        for v in variables:
            copies = [c.numpy() for c in strategy.experimental_local_results(v.value)]
            np.testing.assert_array_equal(copies[0], copies[1], err_msg=v.path)
    return sizes, float(_loss(model, X, Y)), [v.numpy() for v in variables]


FAST = {
    "SGD": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "Adam": lambda: keras.optimizers.Adam(0.01),
    "ArmijoLineSearch": O.ArmijoLineSearch,
    "WolfeLineSearch": O.WolfeLineSearch,
    "PolyakStep": O.PolyakStep,
    "ZerothOrder": lambda: O.ZerothOrder(learning_rate=0.01, seed=3),
}
SLOW = {
    "ParabolicLineSearch": O.ParabolicLineSearch,
    "DirectionalNewton": O.DirectionalNewton,
    "DirectionalNewton-forward": lambda: O.DirectionalNewton(curvature_method="forward"),
    "GradientOnlyLineSearch": O.GradientOnlyLineSearch,
    "ForwardGradient": lambda: O.ForwardGradient(learning_rate=0.01, seed=2),
    "RandomDirectionLineSearch": O.RandomDirectionLineSearch,
    "Armijo-along-Adam": lambda: O.ArmijoLineSearch(direction=keras.optimizers.Adam(0.01)),
}


@pytest.mark.parametrize(
    "name",
    [*FAST, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOW)],
)
def test_two_replicas_take_the_single_device_step(strategy, name):
    make = {**FAST, **SLOW}[name]
    sizes1, loss1, w1 = _train(make, None, 4)
    sizes2, loss2, w2 = _train(make, strategy, 4)
    np.testing.assert_allclose(sizes2, sizes1, rtol=2e-5)  # the same accepted steps
    assert loss2 == pytest.approx(loss1, rel=1e-5, abs=1e-6)
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)


def test_user_subclass_through_step_context_agrees(strategy):
    """A new rule written against StepContext (loss_at) is data-parallel with no extra code."""

    class Halving(O.DirectionalOptimizer):
        uses_learning_rate = False

        def compute_step_size(self, ctx, loss, direction, slope):
            t = tf.constant(4.0)
            for _ in range(6):  # halve until the loss decreases (6 trial points)
                t = tf.where(ctx.loss_at(t, direction) < loss, t, t / 2)
            return t, tf.constant(True)

    s1, l1, _ = _train(lambda: Halving(learning_rate=1.0), None, 3)
    s2, l2, _ = _train(lambda: Halving(learning_rate=1.0), strategy, 3)
    assert s1 == s2
    assert l2 == pytest.approx(l1, rel=1e-5)


def test_outside_a_strategy_the_step_is_untouched():
    """No strategy: minimize builds no ReplicaClosures and traces the same graph ops as before."""
    assert distribute.replica_context() is None
    model = _model()
    opt = O.ArmijoLineSearch()
    opt.build(model.trainable_variables)
    graph = tf.function(lambda: opt.minimize(lambda: _loss(model, X, Y), model.trainable_variables))
    ops = {op.type for op in graph.get_concrete_function().graph.get_operations()}
    assert not any("Collective" in t or "NcclAllReduce" in t for t in ops)


# -- the runner ------------------------------------------------------------------------------------
def _run(workdir: Path, *files: str, bindings=(), stop_after=None):
    gin.clear_config()
    gin.add_config_file_search_path(str(ROOT))
    gin.parse_config_files_and_bindings(
        [str(ROOT / f) for f in files], [*QUICK, *bindings], skip_unknown=False
    )
    return training.run(str(workdir), stop_after=stop_after)


def _train_records(workdir: Path) -> list[dict]:
    return [r for r in schema.read_metrics(workdir / schema.METRICS_FILE) if r["kind"] == "train"]


@pytest.mark.parametrize(
    "name",
    [
        n if n in ("SGD", "ArmijoLineSearch") else pytest.param(n, marks=pytest.mark.slow)
        for n in RUNNER_OPTIMIZERS
    ],
)
def test_mirrored_run_reproduces_the_single_device_run(strategy, tmp_path, name):
    """MNIST-1D quickstart (global batch 100, seed 0), 6 steps: 2 replicas vs 1 device."""
    files = ("configs/quickstart.gin", RUNNER_OPTIMIZERS[name])
    one = _run(tmp_path / "one", *files)
    two = _run(
        tmp_path / "two",
        *files,
        bindings=["train.strategy = 'mirrored'", "train.cpu_replicas = 2"],
    )
    assert one["distribution"] == {"strategy": None, "num_replicas": 1, "num_workers": 1}
    assert two["distribution"] == {"strategy": "mirrored", "num_replicas": 2, "num_workers": 1}
    schema.validate_result(two)
    for key, bad in (("num_replicas", 0), ("strategy", "mirror")):
        broken = {**two, "distribution": {**two["distribution"], key: bad}}
        with pytest.raises(ValueError, match=f"distribution.{key}"):
            schema.validate_result(broken)
    r1, r2 = _train_records(tmp_path / "one"), _train_records(tmp_path / "two")
    assert [r["step"] for r in r1] == [r["step"] for r in r2] == list(range(1, 7))
    for a, b in zip(r1, r2, strict=True):
        assert b["step_size"] == pytest.approx(a["step_size"], rel=1e-5)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["forward_passes"] == a["forward_passes"]  # passes per replica = single device
    assert two["final"]["train_loss"] == pytest.approx(one["final"]["train_loss"], rel=1e-5)
    assert two["final"]["test_accuracy"] == pytest.approx(one["final"]["test_accuracy"], abs=2e-3)


@pytest.mark.slow
def test_mirrored_run_resumes_bit_identically(strategy, tmp_path):
    files = ("configs/quickstart.gin",)
    bindings = ["train.strategy = 'mirrored'", "train.cpu_replicas = 2"]
    full = _run(tmp_path / "full", *files, bindings=bindings)
    assert _run(tmp_path / "cut", *files, bindings=bindings, stop_after=3) is None
    resumed = _run(tmp_path / "cut", *files, bindings=bindings)
    assert resumed["final"] == full["final"]
    a = [r["step_size"] for r in _train_records(tmp_path / "full")]
    b = [r["step_size"] for r in _train_records(tmp_path / "cut")]
    assert a == b


@pytest.mark.parametrize(
    "bindings, message",
    [
        (["train.strategy = 'mirror'"], "train.strategy must be one of"),
        (["train.cpu_replicas = 2"], "train.cpu_replicas needs train.strategy = 'mirrored'"),
        (["train.strategy = 'mirrored'", "train.cpu_replicas = 0"], "integer >= 1"),
        (
            ["train.strategy = 'mirrored'", "train.cpu_replicas = 2", "train.batch_size = 99"],
            "must be divisible by the 2 replicas",
        ),
        (["train.strategy = 'multi_worker'"], "needs the TF_CONFIG environment variable"),
        (
            ["train.strategy = 'mirrored'", "train.cpu_replicas = 2", "train.jit_compile = True"],
            "jit_compile",
        ),
    ],
)
def test_bad_distribution_settings_are_one_line_config_errors(
    strategy, tmp_path, monkeypatch, bindings, message
):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(training.ConfigError, match=message):
        _run(tmp_path / "w", "configs/quickstart.gin", bindings=bindings)
    assert not (tmp_path / "w" / schema.RESULT_FILE).exists()


def test_cpu_replicas_after_devices_started_is_a_clear_error():
    with pytest.raises(RuntimeError, match="already initialised its devices"):
        distribute.set_cpu_replicas(3)


# -- keras_fit -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [O.ArmijoLineSearch, pytest.param(O.WolfeLineSearch, marks=pytest.mark.slow)],
    ids=["armijo", "wolfe"],
)
def test_keras_fit_under_mirrored_strategy_matches_one_device(strategy, make):
    def fit(scope):
        with scope:
            keras.utils.set_random_seed(0)
            model = keras_fit.DirectionalSequential(
                [
                    keras.Input((8,)),
                    keras.layers.Dense(16, activation="tanh"),
                    keras.layers.Dense(2),
                ]
            )
            model.compile(optimizer=make(), loss=keras.losses.SparseCategoricalCrossentropy(True))
        history = model.fit(X, Y, batch_size=64, epochs=4, shuffle=False, verbose=0)
        return history.history, float(_loss(model, X, Y))

    h1, l1 = fit(contextlib.nullcontext())
    h2, l2 = fit(strategy.scope())
    np.testing.assert_allclose(h2["step_size"], h1["step_size"], rtol=1e-5)
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-5)
    assert l2 == pytest.approx(l1, rel=1e-5)
    assert h2["forward_passes"] == h1["forward_passes"]


# -- multi_worker: 2 processes on 127.0.0.1 ------------------------------------------------------
def _env(tf_config: str | None = None) -> dict:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    env.pop("TF_CONFIG", None)
    if tf_config:
        env["TF_CONFIG"] = tf_config
    return env


@pytest.mark.slow
@pytest.mark.xdist_group("cluster")
def test_two_workers_reproduce_the_single_device_runs(strategy, tmp_path):
    """Both workers train the six optimizers' quickstart runs in one cluster start."""
    names = list(RUNNER_OPTIMIZERS)
    addresses = [f"127.0.0.1:{p}" for p in workers.free_ports(2)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "multiworker_driver.py"),
                str(tmp_path / "mw"),
                *names,
            ],
            env=_env(workers.tf_config(addresses, i)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for name in names:  # the single-device references, while the workers run
        _run(tmp_path / "one" / name, "configs/quickstart.gin", RUNNER_OPTIMIZERS[name])
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert not (tmp_path / "mw" / names[0] / ".workers").exists()  # worker 1's folder is gone
    for name in names:
        result = schema.read_result(tmp_path / "mw" / name / schema.RESULT_FILE)
        assert result["distribution"] == {
            "strategy": "multi_worker",
            "num_replicas": 2,
            "num_workers": 2,
        }
        one = schema.read_result(tmp_path / "one" / name / schema.RESULT_FILE)
        r1 = _train_records(tmp_path / "one" / name)
        r2 = _train_records(tmp_path / "mw" / name)
        assert [r["step"] for r in r2] == [r["step"] for r in r1], name
        for a, b in zip(r1, r2, strict=True):
            assert b["step_size"] == pytest.approx(a["step_size"], rel=1e-5), name
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), name
        assert result["final"]["train_loss"] == pytest.approx(one["final"]["train_loss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.xdist_group("cluster")
def test_killed_worker_fails_in_bounded_time_and_the_rerun_resumes(tmp_path):
    """Kill worker 1 after the first checkpoint: worker 0 fails within the collective timeout;
    rerunning the same command with the launcher resumes from that checkpoint and finishes."""
    workdir = tmp_path / "run"
    args = [
        "-m",
        "experiments.train",
        "--gin_file=configs/quickstart.gin",
        "--gin_param=train.num_steps = 400",
        "--gin_param=train.checkpoint_every = 20",
        "--gin_param=train.eval_every = 400",
        "--gin_param=train.log_every = 20",
        f"--workdir={workdir}",
    ]
    addresses = [f"127.0.0.1:{p}" for p in workers.free_ports(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, *args, "--gin_param=train.strategy = 'multi_worker'"],
            cwd=ROOT,
            env=_env(workers.tf_config(addresses, i)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 600
    while tf.train.latest_checkpoint(str(workdir / "checkpoints")) is None:
        assert time.monotonic() < deadline and procs[0].poll() is None, "no checkpoint written"
        time.sleep(0.5)
    procs[1].kill()
    killed = time.monotonic()
    _, err = procs[0].communicate(timeout=distributed.COLLECTIVE_TIMEOUT_S + 120)
    assert procs[0].returncode == 4, err[-3000:]
    assert time.monotonic() - killed < distributed.COLLECTIVE_TIMEOUT_S + 120
    assert "train: error: lost contact with another worker" in err
    procs[1].wait()
    done = subprocess.run(
        [sys.executable, *args, "--workers=2"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resuming" in done.stderr
    result = schema.read_result(workdir / schema.RESULT_FILE)
    assert result["status"] == "complete" and result["steps"] == 400
    assert result["distribution"]["num_workers"] == 2


def test_mixed_precision_under_mirrored_strategy_follows_the_single_device_run(strategy, tmp_path):
    """mixed_float16 + 2 replicas, Armijo: one loss scale for all replicas (an optimizer
    variable), float32 trial losses, and the run follows the mixed one-device run up to the
    half-precision rounding of per-replica matmuls (the two half batches vs one batch)."""
    files = ("configs/quickstart.gin", RUNNER_OPTIMIZERS["ArmijoLineSearch"])
    mixed = ["train.mixed_precision = 'mixed_float16'"]
    one = _run(tmp_path / "one", *files, bindings=mixed)
    two = _run(
        tmp_path / "two",
        *files,
        bindings=[*mixed, "train.strategy = 'mirrored'", "train.cpu_replicas = 2"],
    )
    assert one["mixed_precision"] == two["mixed_precision"] == "mixed_float16"
    assert two["distribution"]["num_replicas"] == 2
    r1, r2 = _train_records(tmp_path / "one"), _train_records(tmp_path / "two")
    assert [r["step"] for r in r2] == list(range(1, 7))
    for a, b in zip(r1, r2, strict=True):
        assert b["loss_scale"] == a["loss_scale"]  # dynamic scale, no overflow: 2^15 throughout
        assert b["accepted"] == a["accepted"] == 1.0
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-2)
    assert two["final"]["train_loss"] == pytest.approx(one["final"]["train_loss"], rel=1e-2)
