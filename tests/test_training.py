"""The training loop end to end on tiny problems: outputs, both optimizer families, resume,
divergence, workdir rules, the gin registry and the result schema."""

from __future__ import annotations

import json
from pathlib import Path

import gin
import keras
import numpy as np
import problems
import pytest
import tensorflow as tf

from dirgrad_opt import training
from dirgrad_opt.training import loop, registry, schema

# A 2-layer MLP on 8-d Gaussian blobs, 10 steps of 20 examples per epoch: ~1 s per run.
TINY = [
    *problems.TINY_RUN,
    "train.num_steps = 20",
    "train.eval_every = 10",
    "train.checkpoint_every = 10",
    "train.log_every = 5",
    "train.progress_every_s = 1000.0",
]
ROOT = Path(__file__).resolve().parents[1]
TIME_KEYS = problems.TIME_KEYS


def run_tiny(workdir: Path, *bindings: str, stop_after: int | None = None):
    gin.clear_config()
    gin.parse_config([*TINY, *bindings])
    return training.run(str(workdir), stop_after=stop_after)


def strip_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records]


def checkpoint_values(workdir: Path) -> dict[str, np.ndarray]:
    """Every variable of the latest checkpoint except the clocks (wall times differ)."""
    reader = tf.train.load_checkpoint(str(workdir / "checkpoints"))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if "clocks" not in name and not name.startswith("_CHECKPOINTABLE")
    }


def comparable(result: dict) -> dict:
    out = dict(result)
    out.pop("times")
    return out


@gin.configurable(module="tests")
def dropout_mlp(input_shape, num_classes):
    inputs = keras.Input(shape=tuple(input_shape))
    h = keras.layers.Dropout(0.5)(keras.layers.Dense(16, activation="relu")(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(h), name="dropout_mlp")


@gin.configurable(module="tests")
def pooling_mlp(input_shape, num_classes):
    inputs = keras.Input(shape=tuple(input_shape))
    h = keras.layers.MaxPooling1D(2)(keras.layers.Reshape((*input_shape, 1))(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Flatten()(h)))


# -- end to end, per optimizer family ---------------------------------------------------------
def test_keras_adam_end_to_end_writes_every_output(tmp_path):
    result = run_tiny(
        tmp_path,
        "train.dataset = @load_dataset",
        "train.model = @create_model",
        "train.optimizer = @Adam()",
        "Adam.learning_rate = 1e-2",
    )
    training.validate_result(result)
    assert result == training.read_result(tmp_path / "result.json")
    assert result["status"] == "complete" and result["steps"] == 20
    assert result["optimizer"] == {
        "class": "Adam",
        "family": "keras",
        "config": result["optimizer"]["config"],
    }
    assert result["totals"] == {"forward_passes": 20, "backward_passes": 20, "jvps": 0}
    assert result["epochs"] == pytest.approx(2.0)

    records = training.read_metrics(tmp_path / "metrics.jsonl")
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    eval_steps = [r["step"] for r in records if r["kind"] == "eval"]
    assert train_steps == [5, 10, 15, 20] and eval_steps == [0, 10, 20]  # step 0: initial weights
    assert records[-1]["test_accuracy"] == result["final"]["test_accuracy"]
    train_records = [r for r in records if r["kind"] == "train"]
    first, last = train_records[0], train_records[-1]
    assert {"loss", "accuracy", "step_size"} <= set(first)
    assert first["step_size"] == pytest.approx(1e-2)
    assert last["loss"] < first["loss"]
    assert [r["forward_passes"] for r in records if r["kind"] == "train"] == [5, 10, 15, 20]

    operative = (tmp_path / "operative_config.gin").read_text()
    assert "Adam.learning_rate = 0.01" in operative and "train.num_steps = 20" in operative
    assert (tmp_path / "config.gin").read_text() == gin.config_str()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-20")
    assert result["final"]["test_accuracy"] > 0.5  # 4 separable blobs: chance is 0.25


DIRECTIONAL = [cls.__name__ for cls in registry.dirgrad_optimizer_classes()]


# Rates at which the fixed-step methods learn the tiny problem in 30 steps (their defaults are
# for other scales); the random-direction ones average K = 8 directions.
LEARNS_WITH = {
    "DirectionalOptimizer": ("DirectionalOptimizer.learning_rate = 0.5",),
    "ForwardGradient": (
        "ForwardGradient.learning_rate = 0.05",
        "ForwardGradient.num_directions = 8",
    ),
    "ZerothOrder": ("ZerothOrder.learning_rate = 0.05", "ZerothOrder.num_directions = 8"),
    # The backprop-free estimators of issue 12 on this 30-step problem (rates found by a scan
    # over a few values; the single-direction ZO variants need 8 directions to learn in 30).
    "ActivityForwardGradient": ("ActivityForwardGradient.learning_rate = 0.3",),
    "ActivityZerothOrder": ("ActivityZerothOrder.learning_rate = 0.1",),
    "GuidedForwardGradient": (
        "GuidedForwardGradient.learning_rate = 0.1",
        "GuidedForwardGradient.num_directions = 8",
    ),
    "LowRankZerothOrder": (
        "LowRankZerothOrder.learning_rate = 0.12",
        "LowRankZerothOrder.num_directions = 8",
    ),
    "SparseZerothOrder": (
        "SparseZerothOrder.learning_rate = 0.05",
        "SparseZerothOrder.num_directions = 8",
    ),
    "ZOAdam": ("ZOAdam.learning_rate = 0.03", "ZOAdam.num_directions = 8"),
    "ZOMomentum": ("ZOMomentum.learning_rate = 0.012", "ZOMomentum.num_directions = 8"),
}
# One random direction per step learns slowly and its 30-step progress depends on the draw.
# Over seeds 0-5, (final/first loss, test accuracy) was 0.50-0.82, 0.25-0.56 (and with another
# direction stream that was tried, 0.52-1.23, 0.24-0.55): the common 0.6 / 0.55 bar holds on
# seed 0 only, by luck. RandomDirectionLineSearch is held to (0.85, 0.35) — still red if it
# does not move (ratio 1) or does not learn (chance 0.25).
# ZerothOrder and SparseZerothOrder (K = 8 Gaussian directions) over their seeds 0-7, with the
# per-leaf streams before and after they dropped a redundant seed fold: loss ratio 0.43-0.57,
# test accuracy 0.48-0.75 (ZerothOrder 0.48-0.71; 0.55 held for the old stream's seeds by a
# margin of 0.01). Both are held to 0.4 accuracy — still red at chance (0.25).
LEARNS_BELOW = {"RandomDirectionLineSearch": 0.85}
ACCURACY_ABOVE = {"RandomDirectionLineSearch": 0.35, "ZerothOrder": 0.4, "SparseZerothOrder": 0.4}
# Passes per step (forward, backward, jvps) from each method's documented cost; `e` is the
# step's trial evaluations where a search has them.
COST_PER_STEP = {
    "ArmijoLineSearch": lambda e: (1 + e, 1, 0),
    "WolfeLineSearch": lambda e: (1 + e, 1 + e, 0),
    "PolyakStep": lambda e: (1, 1, 0),
    "DirectionalOptimizer": lambda e: (1, 1, 0),
    "ParabolicLineSearch": lambda e: (2, 1, 0),
    "DirectionalNewton": lambda e: (1, 2, 0),
    "GradientOnlyLineSearch": lambda e: (1 + e, 1 + e, 0),
    "ForwardGradient": lambda e: (8, 0, 8),
    "ZerothOrder": lambda e: (16, 0, 0),
    "RandomDirectionLineSearch": lambda e: (1 + e, 0, 1),
    # Per step, as documented in the README's optimizer table (K directions / samples):
    "ActivityForwardGradient": lambda e: (1, 0, 1),  # one forward pass with K tangents
    "ActivityZerothOrder": lambda e: (2, 0, 0),  # clean + perturbed forward pass
    "GuidedForwardGradient": lambda e: (8, 0, 8),  # K = 8 JVPs, each with its forward pass
    "LowRankZerothOrder": lambda e: (16, 0, 0),  # 2 forward passes per direction, K = 8
    "SparseZerothOrder": lambda e: (16, 0, 0),
    "ZOAdam": lambda e: (16, 0, 0),
    "ZOMomentum": lambda e: (16, 0, 0),
}


@pytest.mark.parametrize("name", DIRECTIONAL)
def test_every_directional_optimizer_learns_through_the_loop(tmp_path, name):
    """30 steps: the full training loss falls below 0.6× the first step's, test accuracy is
    above 0.55 (4 blobs: chance 0.25; per-optimizer bars in LEARNS_BELOW / ACCURACY_ABOVE),
    and the totals are the documented cost per step."""
    result = run_tiny(
        tmp_path,
        f"train.optimizer = @{name}()",
        "train.num_steps = 30",
        "train.log_every = 1",
        "train.eval_every = 30",
        "train.checkpoint_every = 30",
        *LEARNS_WITH.get(name, ()),
    )
    training.validate_result(result)
    assert result["optimizer"]["class"] == name
    assert result["optimizer"]["family"] == "directional"
    records = training.read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 31))
    first_loss = train[0]["loss"]  # one step per record: the loss at the initial weights
    below = LEARNS_BELOW.get(name, 0.6)
    assert result["final"]["train_loss"] < below * first_loss, (first_loss, result["final"])
    assert result["final"]["test_accuracy"] > ACCURACY_ABOVE.get(name, 0.55)
    expected = np.sum([COST_PER_STEP[name](r.get("evaluations", 0)) for r in train], axis=0)
    assert [result["totals"][k] for k in ("forward_passes", "backward_passes", "jvps")] == list(
        expected
    )
    # The same metrics as a Keras optimizer, plus the optimizer's own.
    assert {"loss", "accuracy", "step_size", "forward_passes", "backward_passes", "jvps"} <= set(
        train[0]
    )


def test_line_search_counts_its_trial_evaluations(tmp_path):
    result = run_tiny(tmp_path, "train.optimizer = @ArmijoLineSearch()")
    records = training.read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    # 1 forward + 1 backward for the gradient, plus one forward per trial step.
    mean_evaluations = np.mean([r["evaluations"] for r in train])
    assert result["totals"]["backward_passes"] == 20
    assert result["totals"]["forward_passes"] == pytest.approx(20 * (1 + mean_evaluations))
    # Every search on this smooth loss finds sufficient decrease within its budget.
    assert [r["accepted"] for r in train] == [1.0] * len(train)


def test_analytic_quadratic_runs_through_the_same_loop(tmp_path):
    gin.clear_config()
    gin.parse_config_file(str(ROOT / "configs" / "models" / "quadratic.gin"))
    gin.parse_config(
        [
            "analytic_noise.dim = 5",
            "quadratic.condition_number = 10.0",
            "train.optimizer = @WolfeLineSearch()",
            "train.num_steps = 30",
            "train.eval_every = 10",
            "train.checkpoint_every = 30",
        ]
    )
    result = training.run(str(tmp_path))
    assert result["dataset"]["task"] == "objective"
    assert result["final"]["test_accuracy"] is None
    evals = [r for r in training.read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals[0]["test_loss"] > evals[-1]["test_loss"] == result["final"]["test_loss"]
    assert result["final"]["test_loss"] < 1e-4  # f* = 0


def test_jit_compile_runs_a_closure_optimizer_like_graph_mode(tmp_path):
    """XLA changes rounding, not the run: the same losses (to 1e-4), trial counts and costs."""
    bindings = ("train.optimizer = @ArmijoLineSearch()", "train.num_steps = 10")
    xla = run_tiny(tmp_path / "xla", *bindings, "train.jit_compile = True")
    graph = run_tiny(tmp_path / "graph", *bindings)
    assert xla["jit_compile"] is True and graph["jit_compile"] is False
    assert xla["totals"] == graph["totals"]
    for key in ("test_loss", "train_loss", "test_accuracy"):
        assert xla["final"][key] == pytest.approx(graph["final"][key], rel=1e-4), key
    runs = [training.read_metrics(tmp_path / d / "metrics.jsonl") for d in ("xla", "graph")]
    for a, b in zip(*runs, strict=True):
        assert a["step"] == b["step"] and a.get("evaluations") == b.get("evaluations")
        assert a.get("loss", a.get("test_loss")) == pytest.approx(
            b.get("loss", b.get("test_loss")), rel=1e-4
        )


@pytest.mark.parametrize("optimizer", ["Adam", "ArmijoLineSearch"])
def test_the_step_is_traced_once_and_the_chunk_loop_once(tmp_path, monkeypatch, optimizer):
    """The loop's claim: the step function is traced once, and the chunk loop is traced once
    although its chunks have different lengths (logging every 3 steps, eval every 10: chunks
    of 3, 3, 3, 1, 2, ...). Counted: Python runs of the step body (one per trace) and the
    chunk function's tracing count."""
    from dirgrad_opt.training import steps as steps_module

    traces, chunks = [], []
    make_step = steps_module.make_step

    def counting_make_step(*args, **kwargs):
        step = make_step(*args, **kwargs)

        def counted(x, y):
            traces.append(1)
            return step(x, y)

        return counted

    make_chunk = loop._Runner._make_chunk_fn

    def keep_chunk(self):
        chunks.append(make_chunk(self))
        return chunks[-1]

    monkeypatch.setattr(steps_module, "make_step", counting_make_step)
    monkeypatch.setattr(loop._Runner, "_make_chunk_fn", keep_chunk)
    result = run_tiny(tmp_path, f"train.optimizer = @{optimizer}()", "train.log_every = 3")
    assert result["status"] == "complete" and result["steps"] == 20
    assert len(traces) == 1
    assert len(chunks) == 1 and chunks[0].experimental_get_tracing_count() == 1


def test_batch_metrics_can_be_turned_off(tmp_path):
    run_tiny(tmp_path, "train.optimizer = @Adam()", "train.batch_metrics = False")
    train = [r for r in training.read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert "accuracy" not in train[0] and "loss" in train[0]


# -- resume ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "optimizer, jit_compile",
    [("Adam", False), ("ArmijoLineSearch", False), ("ArmijoLineSearch", True)],
    ids=["Adam", "ArmijoLineSearch", "ArmijoLineSearch-xla"],
)
def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, optimizer, jit_compile):
    bindings = (
        f"train.optimizer = @{optimizer}()",
        "train.num_steps = 30",
        f"train.jit_compile = {jit_compile}",
    )
    full = run_tiny(tmp_path / "full", *bindings)
    # Stops at step 25 like a killed process: checkpoint at 20, records up to 25 on disk.
    assert run_tiny(tmp_path / "resumed", *bindings, stop_after=25) is None
    assert not (tmp_path / "resumed" / "result.json").exists()
    partial = training.read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert partial[-1]["step"] == 25
    resumed = run_tiny(tmp_path / "resumed", *bindings)

    assert comparable(resumed) == comparable(full)
    full_records = training.read_metrics(tmp_path / "full" / "metrics.jsonl")
    resumed_records = training.read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert strip_times(resumed_records) == strip_times(full_records)
    a, b = checkpoint_values(tmp_path / "full"), checkpoint_values(tmp_path / "resumed")
    assert a.keys() == b.keys() and len(a) > 5
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_complete_run_is_not_retrained(tmp_path):
    first = run_tiny(tmp_path, "train.optimizer = @Adam()")
    stamp = (tmp_path / "result.json").stat().st_mtime_ns
    again = run_tiny(tmp_path, "train.optimizer = @Adam()")
    assert again == training.read_result(tmp_path / "result.json")
    assert again["final"] == first["final"]
    assert (tmp_path / "result.json").stat().st_mtime_ns == stamp


def test_workdir_of_another_config_is_refused(tmp_path):
    run_tiny(tmp_path, "train.optimizer = @Adam()", stop_after=10)
    with pytest.raises(training.ConfigError, match="different configuration.*learning_rate"):
        run_tiny(tmp_path, "train.optimizer = @Adam()", "Adam.learning_rate = 0.5")


# -- divergence -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bindings",
    [
        ("train.optimizer = @SGD()", "SGD.learning_rate = 1e30"),
        ("train.optimizer = @DirectionalOptimizer()", "DirectionalOptimizer.learning_rate = 1e30"),
    ],
    ids=["keras", "directional"],
)
def test_divergence_stops_with_clear_error_and_status(tmp_path, bindings):
    pattern = r"loss is (nan|inf) at step \d+|weights are not finite after step \d+"
    with pytest.raises(training.TrainingDiverged, match=pattern):
        run_tiny(tmp_path, *bindings, "train.checkpoint_every = 1")
    result = training.read_result(tmp_path / "result.json")
    assert result["status"] == "diverged" and "last finite loss" in result["error"]
    assert result["steps"] < 20 and result["final"]["test_loss"] is None
    # Only good steps are checkpointed: the latest checkpoint holds finite weights.
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    if latest is not None:
        assert int(latest.rsplit("-", 1)[1]) <= result["steps"]
        reader = tf.train.load_checkpoint(latest)
        for name, _ in tf.train.list_variables(latest):
            value = reader.get_tensor(name)
            if name.startswith("model/") and np.issubdtype(np.asarray(value).dtype, np.floating):
                assert np.isfinite(value).all(), name
    records = training.read_metrics(tmp_path / "metrics.jsonl")
    assert all(r["step"] <= result["steps"] for r in records)
    # Rerunning reports the divergence again without retraining.
    with pytest.raises(training.TrainingDiverged, match="delete the workdir"):
        run_tiny(tmp_path, *bindings, "train.checkpoint_every = 1")


# -- configuration errors -------------------------------------------------------------------
def test_stateful_layers_are_rejected_for_closure_optimizers(tmp_path):
    bindings = ("create_model.model_fn = @dropout_mlp", "train.optimizer = @ArmijoLineSearch()")
    with pytest.raises(training.ConfigError, match=r"Dropout.*allow_stateful_layers"):
        run_tiny(tmp_path, *bindings)
    assert not tmp_path.joinpath("result.json").exists()
    result = run_tiny(tmp_path, *bindings, "train.allow_stateful_layers = True")
    assert result["status"] == "complete"
    # Gradient optimizers do not re-evaluate the loss: no objection.
    assert (
        run_tiny(
            tmp_path / "adam", "create_model.model_fn = @dropout_mlp", "train.optimizer = @Adam()"
        )["status"]
        == "complete"
    )


@pytest.mark.parametrize(
    ("binding", "pattern"),
    [
        ("train.num_steps = -5", r"train.num_steps must be an integer >= 1, got -5"),
        ("train.batch_size = 0", r"train.batch_size must be an integer >= 1"),
        ("train.jit_compile = 'yes'", r"train.jit_compile must be True or False"),
        ("Adam.learning_rate = 'fast'", r"learning_rate.*fast.*Adam"),
        ("load_dataset.seed = 3", r"load_dataset.seed is bound; bind train.seed"),
        ("train.optimizer = @Adam", None),  # a factory is accepted and called
    ],
)
def test_bad_values_raise_config_error_before_writing(tmp_path, binding, pattern):
    workdir = tmp_path / "run"
    if pattern is None:
        assert run_tiny(workdir, "train.optimizer = @Adam()", binding)["status"] == "complete"
        return
    with pytest.raises(training.ConfigError, match=pattern):
        run_tiny(workdir, "train.optimizer = @Adam()", binding)
    assert not workdir.exists()


def test_xla_with_max_pooling_needs_nondeterminism_and_determinism_is_restored(tmp_path):
    from tensorflow.python.framework import config as tf_config

    before = tf_config.is_op_determinism_enabled()
    bindings = ("create_model.model_fn = @pooling_mlp", "train.optimizer = @Adam()")
    with pytest.raises(training.ConfigError, match="no deterministic XLA max-pool gradient"):
        run_tiny(tmp_path / "xla", *bindings, "train.jit_compile = True")
    assert run_tiny(tmp_path / "plain", *bindings)["status"] == "complete"
    assert tf_config.is_op_determinism_enabled() == before  # the switch is process-wide


def test_train_batch_size_overrides_the_dataset_file(tmp_path):
    result = run_tiny(tmp_path, "train.optimizer = @Adam()", "train.batch_size = 40")
    assert result["dataset"]["batch_size"] == 40 and result["epochs"] == pytest.approx(4.0)


# -- gin registry ---------------------------------------------------------------------------
def test_registry_covers_keras_and_dirgrad_optimizers_and_schedules():
    names = set(registry.register_optimizers())
    assert {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Nadam"} <= names
    assert set(DIRECTIONAL) <= names and "ArmijoLineSearch" in names
    assert {"ExponentialDecay", "CosineDecay", "PiecewiseConstantDecay"} <= names
    assert "LossScaleOptimizer" not in names


def test_registered_factory_returns_the_real_class_and_casts_ints():
    gin.parse_config(["Adam.learning_rate = 1", "Adam.beta_1 = 0", "ArmijoLineSearch.c = 1e-1"])
    adam = registry.REGISTERED["Adam"]()
    assert type(adam) is keras.optimizers.Adam
    assert float(adam.learning_rate) == 1.0 and adam.beta_1 == 0.0
    assert isinstance(registry.REGISTERED["ArmijoLineSearch"]().c, float)


@pytest.mark.parametrize(
    ("binding", "pattern"),
    [
        ("Adam.learnig_rate = 0.1", "learnig_rate"),
        ("ArmijoLineSearch.learning_rate = 0.1", "learning_rate"),  # line searches ignore it
        ("train.optimiser = @Adam()", "optimiser"),
    ],
)
def test_misspelt_parameters_fail_at_parse_time(binding, pattern):
    with pytest.raises(ValueError, match=pattern):
        gin.parse_config([binding])


def test_direction_of_a_line_search_and_schedules_are_configurable(tmp_path):
    result = run_tiny(
        tmp_path,
        "train.optimizer = @SGD()",
        "SGD.learning_rate = @ExponentialDecay()",
        "ExponentialDecay.initial_learning_rate = 1",
        "ExponentialDecay.decay_steps = 10",
        "ExponentialDecay.decay_rate = 0.5",
    )
    train = [r for r in training.read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert train[0]["step_size"] > train[-1]["step_size"] > 0  # the logged step size decays
    assert result["status"] == "complete"
    inner = run_tiny(
        tmp_path / "inner",
        "train.optimizer = @ArmijoLineSearch()",
        "ArmijoLineSearch.direction = @Adam()",
    )
    assert inner["optimizer"]["config"]["direction"]["class_name"] == "Adam"


# -- schema and helpers ---------------------------------------------------------------------
def test_validate_result_names_the_bad_field(tmp_path):
    result = run_tiny(tmp_path, "train.optimizer = @Adam()")
    broken = json.loads(json.dumps(result))
    broken["final"]["test_loss"] = None
    with pytest.raises(schema.SchemaError, match=r"result.final.test_loss"):
        training.validate_result(broken)
    broken = json.loads(json.dumps(result))
    del broken["totals"]["jvps"]
    with pytest.raises(schema.SchemaError, match=r"result.totals.*jvps"):
        training.validate_result(broken)
    broken = json.loads(json.dumps(result))
    broken["schema_version"] = 99
    with pytest.raises(schema.SchemaError, match="schema_version"):
        training.validate_result(broken)
    with pytest.raises(schema.SchemaError, match="record.kind"):
        training.validate_record({"kind": "test", "step": 1})


def test_results_never_contain_nan_and_truncated_metrics_lines_are_ignored(tmp_path):
    assert (
        schema.dumps({"a": float("nan"), "b": [float("inf"), 1.0]})
        == '{"a": null, "b": [null, 1.0]}'
    )
    path = tmp_path / "metrics.jsonl"
    record = {
        "kind": "train",
        "step": 1,
        "epoch": 0.1,
        "wall_s": 1.0,
        "train_time_s": 1.0,
        "forward_passes": 1,
        "backward_passes": 1,
        "jvps": 0,
        "loss": 2.0,
    }
    path.write_text(schema.records_to_lines([record]) + '{"kind": "tr')
    assert training.read_metrics(path) == [record]


def test_pure_helpers():
    assert loop.next_event(250, (100, 1000), 8000) == 300
    assert loop.next_event(7950, (100, 1000), 7960) == 7960
    assert loop.is_event(300, 100, 8000) and loop.is_event(8000, 3000, 8000)
    assert not loop.is_event(301, 100, 8000)
    records = [
        {"kind": "eval", "step": 1, "test_accuracy": 0.5, "test_loss": 2.0, "train_loss": 1.0},
        {"kind": "eval", "step": 2, "test_accuracy": 0.7, "test_loss": 2.0, "train_loss": 0.5},
        {"kind": "train", "step": 2, "loss": 0.1},
    ]
    assert loop.best_of(records) == {
        "test_accuracy": {"value": 0.7, "step": 2},
        "test_loss": {"value": 2.0, "step": 1},
        "train_loss": {"value": 0.5, "step": 2},
    }
    assert training.one_line(
        ValueError("bad\n  In call to configurable 'Adam' (<function x>)")
    ) == ("ValueError: bad | In call to configurable 'Adam'")
