"""Benchmark problems: files, losses and metrics, validation splits, the LM corpus, smoke runs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from dirgrad_opt import problems
from dirgrad_opt.data import load_dataset, offline
from dirgrad_opt.models import create_model, problem_models

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = [
    "beale",
    "branin",
    "char_lm",
    "digits_mlp",
    "mnist1d_cnn",
    "mnist1d_gru",
    "mnist1d_logreg",
    "mnist1d_mlp",
    "noisy_quadratic",
    "quadratic_deep",
    "rosenbrock",
]
ANALYTIC = ["beale", "branin", "noisy_quadratic", "quadratic_deep", "rosenbrock"]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


def _load(name, *params):
    gin.clear_config()
    problems.parse_config([], [f"train.problem = '{name}'", *params])
    ds = load_dataset(seed=0)
    model = create_model(ds.input_shape, ds.num_outputs)
    return problems.Problem(), ds, model


def test_every_offline_problem_has_a_file():
    assert set(OFFLINE) <= set(problems.available())
    for name in problems.available():
        info = problems.describe(name)
        assert info["description"] and info["num_steps"].isdigit(), info
        assert info["target"].startswith("valid_"), info


@pytest.mark.parametrize("name", ANALYTIC)
def test_analytic_problem_loss_is_the_documented_function(name):
    """The loss the problem file names, on a batch, equals the function in its comment."""
    problem, ds, model = _load(name)
    assert problem.loss_name == "objective" and problem.metric_names == ()
    x, y = next(iter(ds.train))
    w = model.trainable_variables[0].numpy().astype(np.float64)
    xs = x.numpy().astype(np.float64)
    if name == "quadratic_deep":
        q = problem_models.deepobs_hessian()
        eig = np.linalg.eigvalsh(q)
        assert (eig[:90] < 1).all() and (eig[90:] > 30).all() and eig[-1] < 60
        np.testing.assert_allclose(w, 1.0)
        expected = np.mean([0.5 * (w - xi) @ q @ (w - xi) for xi in xs])
    else:
        if name == "noisy_quadratic":
            f = 0.5 * np.sum(w**2 / np.arange(1, len(w) + 1))
            w_star = np.zeros_like(w)
        elif name == "rosenbrock":
            u, v = w
            f, w_star = 100 * (v - u**2) ** 2 + (1 - u) ** 2, np.array([1.0, 1.0])
        elif name == "beale":
            u, v = w
            np.testing.assert_allclose(w, [-4.5, 4.5])
            f = (1.5 - u + u * v) ** 2 + (2.25 - u + u * v**2) ** 2 + (2.625 - u + u * v**3) ** 2
            w_star = np.array([3.0, 0.5])
        else:  # branin
            u, v = w
            np.testing.assert_allclose(w, [2.5, 12.5])
            b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
            f = (v - b * u**2 + c * u - 6) ** 2 + 10 * (1 - t) * math.cos(u) + 10
            w_star = np.array([math.pi, 2.275])
        expected = f + np.mean(xs @ (w - w_star))
    got = float(problem.loss_fn()(model(x), y))
    np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_branin_and_beale_optima():
    for fn, point, value in (
        (problem_models.branin, [math.pi, 2.275], problem_models.BRANIN_MINIMUM),
        (problem_models.branin, [9.42478, 2.475], problem_models.BRANIN_MINIMUM),
        (problem_models.beale, [3.0, 0.5], 0.0),
    ):
        model = fn((2,))
        model.trainable_variables[0].assign(point)
        assert float(tf.reduce_mean(model(tf.zeros((1, 2))))) == pytest.approx(value, abs=1e-5)


@pytest.mark.parametrize("name", ["mnist1d_logreg", "digits_mlp", "char_lm"])
def test_classification_problem_loss_and_metric(name):
    """cross-entropy and accuracy, as the files say, agree with Keras's own on a batch."""
    problem, ds, model = _load(name)
    assert problem.loss_name == "cross_entropy" and problem.metric_names == ("accuracy",)
    x, y = next(iter(ds.train))
    logits = model(x)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    np.testing.assert_allclose(float(problem.loss_fn()(logits, y)), float(ce), rtol=1e-5)
    acc = keras.metrics.SparseCategoricalAccuracy()
    acc.update_state(y, logits)
    got = float(problem.metric_fns()["accuracy"](logits, y))
    np.testing.assert_allclose(got, float(acc.result()), rtol=1e-6)


def test_validation_split_is_deterministic_disjoint_and_carved_from_train():
    gin.clear_config()
    full = load_dataset("mnist1d", batch_size=100, seed=0)
    a = load_dataset("mnist1d", batch_size=100, seed=0, validation_size=500)
    b = load_dataset("mnist1d", batch_size=100, seed=7, validation_size=500)
    assert (a.num_train_examples, a.num_valid_examples) == (3500, 500)
    xa = np.concatenate([x for x, _ in a.valid.as_numpy_iterator()])
    xb = np.concatenate([x for x, _ in b.valid.as_numpy_iterator()])
    np.testing.assert_array_equal(xa, xb)  # the run's seed does not move the split
    train = np.concatenate([x for x, _ in a.train_eval.as_numpy_iterator()])
    everything = np.concatenate([x for x, _ in full.train_eval.as_numpy_iterator()])
    rows = {r.tobytes() for r in train}
    assert not any(r.tobytes() in rows for r in xa)
    assert len(rows | {r.tobytes() for r in xa}) == len({r.tobytes() for r in everything})
    with pytest.raises(ValueError, match="validation_size"):
        load_dataset("mnist1d", validation_size=4000)


def test_targets_must_be_on_the_validation_split():
    with pytest.raises(problems.ProblemError, match="validation split"):
        problems.Problem("p", 10, "test_accuracy>=0.5", metrics=["accuracy"])
    with pytest.raises(problems.ProblemError, match="unknown loss"):
        problems.Problem("p", 10, "valid_loss<=1", loss="hinge")
    p = problems.Problem("p", 1000, "valid_accuracy>=0.5", metrics=["accuracy"], budget=0.01)
    assert (p.num_steps, p.eval_every) == (10, 1)


def test_selecting_by_name_equals_including_the_file():
    gin.clear_config()
    problems.parse_config([], ["train.problem = 'digits_mlp'", "Problem.num_steps = 7"])
    by_name = (problems.Problem().num_steps, gin.query_parameter("load_dataset.name"))
    gin.clear_config()
    problems.parse_config([str(problems.problem_file("digits_mlp"))], ["Problem.num_steps = 7"])
    assert (problems.Problem().num_steps, gin.query_parameter("load_dataset.name")) == by_name
    assert by_name == (7, "digits")  # the user's binding overrides the problem file
    gin.clear_config()
    with pytest.raises(problems.ProblemError, match="unknown problem 'nope'; available: beale"):
        problems.parse_config([], ["train.problem = 'nope'"])


def test_char_lm_corpus_is_pinned_and_hashed():
    first = offline.corpus_hash()
    assert offline.corpus_hash() == first
    recorded = offline.KNOWN_CORPUS_HASHES.get(__import__("platform").python_version())
    if recorded is not None:
        assert first == recorded
    assert first in (ROOT / "configs/problems/char_lm.gin").read_text() or recorded is None
    a, b = offline.python_chars(), offline.python_chars()
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(a.x_train[:, 1:], a.y_train[:, :-1])  # next-char targets
    assert offline.corpus_hash(offline.CORPUS_FILES[::-1]) != first


def test_list_problems(capsys):
    from absl import flags

    import experiments.train as cli

    flags.FLAGS.unparse_flags()
    try:
        cli.main(flags.FLAGS(["train", "--list_problems"]))
    finally:
        flags.FLAGS.unparse_flags()
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert set(OFFLINE) <= set(listed)


def test_unknown_problem_is_a_one_line_error_through_the_cli(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--gin_file=configs/optimizers/adam.gin",
         "--gin_param=train.problem = 'mnist1d_mpl'", f"--workdir={tmp_path / 'run'}"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("train: error: ") and "unknown problem 'mnist1d_mpl'" in last
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_every_offline_problem_trains_through_the_runner(tmp_path):
    """Smoke: every offline problem, a few Adam steps, through experiments.benchmark (one warm
    worker runs them all); the results carry the problem, its validation and test metrics."""
    grids = tmp_path / "grids"
    grids.mkdir()
    (grids / "Adam.json").write_text(json.dumps({"grid": {"Adam.learning_rate": [0.01]}}))
    workdir = tmp_path / "bench"
    out = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", f"--problems={','.join(OFFLINE)}",
         "--optimizers=Adam", "--seeds=0", "--budget=0.003", f"--grids_dir={grids}",
         f"--workdir={workdir}", "--gin_param=Problem.eval_points = 1", "--noplots"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    for name in OFFLINE:
        (trial,) = (workdir / name / "Adam" / "trials").iterdir()
        result = json.loads((trial / "result.json").read_text())
        assert result["status"] == "complete", (name, result["error"])
        assert result["problem"]["name"] == name
        problem = result["problem"]
        assert problem["num_steps"] == max(1, round(problem["base_num_steps"] * 0.003))
        evals = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
        keys = {k for r in evals if r["kind"] == "eval" for k in r}
        for split in ("train", "valid", "test"):
            assert f"{split}_loss" in keys
            for metric in problem["metrics"]:
                assert f"{split}_{metric}" in keys
        assert math.isfinite(result["final"]["valid_loss"])
    assert "Problem.eval_points = 1" in (workdir / "char_lm/Adam/sweep.json").read_text()


GATED = {  # problem: (parameters, TFDS data)
    "fashion_mnist_2c2d": 3_274_634,
    "cifar10_3c3d": 895_210,
    "cifar10_resnet20": None,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GATED))
def test_data_gated_problem_trains_on_tfds_mock_data(name, tmp_path, monkeypatch):
    """The TFDS problems load through the real TFDS path (tfds.testing.mock_data: random
    examples of the real feature spec) and train two steps; their models are DeepOBS-sized."""
    import tensorflow_datasets as tfds

    from dirgrad_opt import training
    from dirgrad_opt.data import tfds_source

    # mock_data fakes the examples but not the preparation check of our fail-fast loader, and
    # without the real dataset's metadata it cannot serve a whole split as one batch
    # (batch_size=-1): batch it here instead.
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    original = tfds_source.tfds_dataset

    def whole_split(name, split, data_dir=None, download=False, batch_size=None):
        ds = original(name, split, data_dir=data_dir, download=download)
        return ds.batch(1 << 20).get_single_element() if batch_size == -1 else ds

    monkeypatch.setattr(tfds_source, "tfds_dataset", whole_split)
    gin.clear_config()
    problems.parse_config(
        ["configs/optimizers/adam.gin"],
        [f"train.problem = '{name}'", "Problem.num_steps = 2", "load_dataset.batch_size = 8",
         "load_dataset.validation_size = 8", "load_dataset.train_eval_size = 16",
         "load_dataset.eval_batch_size = 16"],
    )  # fmt: skip
    with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
        result = training.run(str(tmp_path / "run"))
    assert result["status"] == "complete" and result["problem"]["name"] == name
    assert result["dataset"]["num_valid_examples"] == 8
    assert set(result["final"]) >= {"valid_loss", "valid_accuracy", "test_accuracy"}
    if GATED[name] is not None:
        assert result["model"]["num_parameters"] == GATED[name]
    else:  # ResNet-20: ~0.27 M parameters (He et al. 2016, Table 6)
        assert 0.26e6 < result["model"]["num_parameters"] < 0.28e6
