"""Analysis: summary aggregation (NaN/diverged/failed seeds), best configuration per optimizer,
time to target, performance profiles, PNG plots, the loss slice at a checkpoint, the CLI.

Most tests build synthetic sweeps from result files written through the schema module (fast, and
exact numbers to check); the slice test trains a tiny model in-process.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import gin
import numpy as np
import problems
import pytest

from dirgrad_opt import sweeps, training
from dirgrad_opt.sweeps import analysis, landscape, plots, records, summary
from dirgrad_opt.training import schema

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVAL_STEPS = (10, 20, 30)


def fake_result(seed: int, status: str, optimizer: str, train_loss, test_acc, steps=30) -> dict:
    complete = status == "complete"
    final = {"step": steps, "train_loss": train_loss, "train_accuracy": None,
             "test_loss": None if train_loss is None else train_loss + 0.1,
             "test_accuracy": test_acc}  # fmt: skip
    best = test_acc if test_acc is not None else None
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "status": status,
        "error": None if complete else "training diverged: the loss is nan at step 12",
        "seed": seed,
        "steps": steps,
        "num_steps": 30,
        "epochs": steps / 10,
        "final": final,
        "best": {
            "test_accuracy": None if best is None else {"value": best, "step": steps},
            "test_loss": None,
            "train_loss": None,
        },
        "times": {"train_s": steps * 0.01, "eval_s": 0.1, "wall_s": 2.0, "steps_per_s": 100.0},
        "totals": {"forward_passes": 2 * steps, "backward_passes": steps, "jvps": steps},
        "dataset": {
            "name": "blobs",
            "task": "classification",
            "batch_size": 20,
            "num_train_examples": 200,
            "num_test_examples": 100,
        },  # fmt: skip
        "model": {"name": "mlp", "num_parameters": 100},
        "optimizer": {"class": optimizer, "family": "keras", "config": {}},
        "jit_compile": False,
        "versions": dict.fromkeys(schema.VERSION_KEYS, "x"),
    }


def eval_records(accuracies, losses, *, step_time=0.01, fwd=2, bwd=1, jvp=1) -> list[dict]:
    out = []
    for step, acc, loss in zip(EVAL_STEPS, accuracies, losses, strict=False):
        out.append(
            {
                "kind": "eval",
                "step": step,
                "epoch": step / 10,
                "wall_s": step * 0.05,
                "train_time_s": step * step_time,
                "forward_passes": fwd * step,
                "backward_passes": bwd * step,
                "jvps": jvp * step,
                "eval_time_s": 0.01,
                "train_loss": loss,
                "test_loss": loss,
                "test_accuracy": acc,
            }  # fmt: skip
        )
    return out


def add_trial(
    sweep: Path,
    config_id: str,
    seed: int,
    bindings: dict,
    status: str,
    *,
    result: dict | None = None,
    evals: list | None = None,
    error: str | None = None,
) -> str:
    folder = sweep / "trials" / f"{config_id}-s{seed}"
    folder.mkdir(parents=True)
    info = {"trial_id": folder.name, "config_id": config_id, "seed": seed, "bindings": bindings}
    (folder / "trial.json").write_text(json.dumps(info))
    (folder / "status.json").write_text(json.dumps({"status": status, "error": error}))
    if result is not None:
        schema.write_result(folder / "result.json", result)
    if evals is not None:
        (folder / "metrics.jsonl").write_text(schema.records_to_lines(evals))
    return folder.name


@pytest.fixture
def synthetic_sweep(tmp_path: Path) -> Path:
    """Four configurations, three seeds each:

    cA Adam lr 0.01: all ok; train loss 0.3/0.4/0.5, test accuracy 0.8/0.7/0.9.
    cB Adam lr 0.1: two ok (train loss 0.1, 0.2) and one diverged — lower mean, but a seed lost.
    cC SGD lr 0.1: ok (0.6, acc 0.6), failed before training (no result), ok with a null
        (NaN) test accuracy.
    cD SGD lr 1.0: every seed diverged.
    """
    sweep = tmp_path / "sweep"
    ids = []
    adam = lambda lr: {"train.optimizer": "@Adam()", "Adam.learning_rate": lr}  # noqa: E731
    sgd = lambda lr: {"train.optimizer": "@SGD()", "SGD.learning_rate": lr}  # noqa: E731
    for seed, loss, acc, curve in [
        (0, 0.3, 0.8, [0.5, 0.76, 0.8]),  # reaches 0.75 at step 20
        (1, 0.4, 0.7, [0.5, 0.6, 0.7]),  # never reaches 0.75
        (2, 0.5, 0.9, [0.8, 0.85, 0.9]),  # at step 10
    ]:
        ids.append(add_trial(sweep, "cA", seed, adam(0.01), "ok",
                             result=fake_result(seed, "complete", "Adam", loss, acc),
                             evals=eval_records(curve, [1.0, 0.6, loss])))  # fmt: skip
    for seed, loss in [(0, 0.1), (1, 0.2)]:
        ids.append(add_trial(sweep, "cB", seed, adam(0.1), "ok",
                             result=fake_result(seed, "complete", "Adam", loss, 0.5),
                             evals=eval_records([0.4, 0.45, 0.5], [0.5, 0.3, loss])))  # fmt: skip
    ids.append(add_trial(sweep, "cB", 2, adam(0.1), "diverged",
                         result=fake_result(2, "diverged", "Adam", None, None, steps=12),
                         evals=eval_records([0.9], [0.2]),  # reached 0.75, then diverged
                         error="training diverged"))  # fmt: skip
    ids.append(add_trial(sweep, "cC", 0, sgd(0.1), "ok",
                         result=fake_result(0, "complete", "SGD", 0.6, 0.6),
                         evals=eval_records([0.3, 0.5, 0.6], [1.0, 0.8, 0.6])))  # fmt: skip
    ids.append(add_trial(sweep, "cC", 1, sgd(0.1), "failed", error="ValueError: boom"))
    ids.append(add_trial(sweep, "cC", 2, sgd(0.1), "ok",
                         result=fake_result(2, "complete", "SGD", 0.8, None),
                         evals=eval_records([None, None, None], [1.0, 0.9, 0.8])))  # fmt: skip
    for seed in range(3):
        ids.append(add_trial(sweep, "cD", seed, sgd(1.0), "diverged",
                             result=fake_result(seed, "diverged", "SGD", None, None, steps=3),
                             error="training diverged"))  # fmt: skip
    (sweep / "sweep.json").write_text(json.dumps({"trials": ids}))
    return sweep


def configs_by_id(sweep: Path) -> dict[str, summary.ConfigSummary]:
    return {c.config_id: c for c in summary.group_configs(records.read_sweep(sweep))}


# -- aggregation -----------------------------------------------------------------------------
def test_aggregation_uses_ok_seeds_only_and_counts_the_rest(synthetic_sweep):
    c = configs_by_id(synthetic_sweep)
    a = c["cA"].stats["final_train_loss"]
    assert (a.n, a.mean, a.median) == (3, pytest.approx(0.4), pytest.approx(0.4))
    assert a.std == pytest.approx(0.1)  # sample std, ddof = 1
    assert c["cA"].status == "ok"

    b = c["cB"]
    assert (b.count("ok"), b.count("diverged"), b.status) == (2, 1, "partial")
    assert b.stats["final_train_loss"].mean == pytest.approx(0.15)  # the diverged seed is out
    assert b.stats["final_train_loss"].n == 2

    sgd = c["cC"]
    assert (sgd.count("ok"), sgd.count("failed"), sgd.optimizer) == (2, 1, "SGD")
    assert sgd.stats["final_train_loss"].mean == pytest.approx(0.7)
    acc = sgd.stats["final_test_accuracy"]  # one ok seed has a null (NaN) accuracy: dropped
    assert (acc.n, acc.mean, acc.std) == (1, pytest.approx(0.6), None)

    d = c["cD"]
    assert (d.status, d.count("diverged"), d.stats["final_train_loss"].n) == ("diverged", 3, 0)
    assert d.stats["final_train_loss"].mean is None


def test_best_configuration_prefers_complete_seeds_then_the_selection_metric(synthetic_sweep):
    best = summary.best_per_optimizer(summary.group_configs(records.read_sweep(synthetic_sweep)))
    assert best["Adam"].config_id == "cA"  # cB has a lower mean but lost a seed to divergence
    assert best["SGD"].config_id == "cC"  # cD never finished a seed
    by_accuracy = summary.best_per_optimizer(
        summary.group_configs(records.read_sweep(synthetic_sweep)), "final_test_accuracy"
    )
    assert by_accuracy["Adam"].config_id == "cA"
    with pytest.raises(ValueError, match="unknown selection metric"):
        summary.best_per_optimizer([], "nope")


def test_describe_drops_nan_and_none():
    stat = summary.describe([1.0, None, math.nan, 3.0, math.inf])
    assert (stat.n, stat.mean, stat.median) == (2, 2.0, 2.0)
    assert stat.std == pytest.approx(math.sqrt(2.0))
    assert summary.describe([]).mean is None
    assert str(summary.describe([0.5])) == "0.5"
    assert str(summary.describe([1.0, 3.0])) == "2 ± 1.414 (med 2)"


def test_summary_files(synthetic_sweep):
    csv_path, md_path = sweeps.write_tables(synthetic_sweep)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    trials = [r for r in rows if r["kind"] == "trial"]
    configs = {r["id"]: r for r in rows if r["kind"] == "config"}
    assert len(trials) == 12 and len(configs) == 4
    assert sorted({r["status"] for r in trials}) == ["diverged", "failed", "ok"]
    failed = next(r for r in trials if r["status"] == "failed")
    assert failed["error"] == "ValueError: boom" and failed["final_train_loss"] == ""
    assert failed["optimizer"] == "SGD"  # from its train.optimizer binding
    assert failed["SGD.learning_rate"] == "0.1" and failed["Adam.learning_rate"] == ""
    diverged = next(r for r in trials if r["status"] == "diverged")
    assert diverged["final_train_loss"] == "" and diverged["steps"] in ("12", "3")
    b = configs["cB"]
    assert (b["status"], b["n_ok"], b["n_diverged"], b["n_failed"]) == ("partial", "2", "1", "0")
    assert float(b["final_train_loss"]) == pytest.approx(0.15)
    assert float(configs["cA"]["final_train_loss_std"]) == pytest.approx(0.1)
    assert configs["cA"]["final_train_loss_median"] == "0.4"
    assert configs["cD"]["final_train_loss"] == ""
    # cost: forward + 2·backward + jvp = 2·30 + 2·30 + 30
    assert float(next(r for r in trials if r["id"] == "cA-s0")["cost_fpe"]) == 150.0

    md = md_path.read_text()
    assert "selected on lowest mean `final_train_loss`" in md
    assert "reported on the test set" in md
    assert "12 trials in 4 configurations: 7 ok, 4 diverged, 1 failed" in md
    assert "| Adam | Adam learning_rate=0.01 `cA` | 3/3 | 0.4 ± 0.1 (med 0.4) |" in md


# -- time to target and profiles ---------------------------------------------------------------
def test_time_to_target_in_steps_seconds_and_forward_pass_equivalents(synthetic_sweep):
    by_id = {r.run_id: r for r in records.read_sweep(synthetic_sweep)}
    target = sweeps.parse_target("test_accuracy>=0.75")
    hit = analysis.time_to_target(by_id["cA-s0"], target)
    assert (hit.reached, hit.steps, hit.seconds, hit.fpe) == (True, 20, pytest.approx(0.2), 100)
    assert analysis.time_to_target(by_id["cA-s1"], target) == analysis.MISS
    assert analysis.time_to_target(by_id["cB-s2"], target).steps == 10  # before diverging
    assert analysis.time_to_target(by_id["cC-s1"], target) == analysis.MISS  # no metrics
    weights = records.parse_cost_weights("backward=3,jvp=0")
    assert analysis.time_to_target(by_id["cA-s0"], target, weights).fpe == 40 + 60
    loss_target = sweeps.parse_target("train_loss<=0.6")
    assert analysis.time_to_target(by_id["cA-s0"], loss_target).steps == 20
    with pytest.raises(ValueError, match="is in no record"):
        analysis.time_to_target(by_id["cA-s0"], sweeps.parse_target("test_acc>=0.5"))

    times = {
        t.config.config_id: t
        for t in analysis.config_times(summary.group_configs(by_id.values()), target)
    }
    assert times["cA"].median("steps") == 20  # median of (20, inf, 10)
    assert times["cA"].reached == 2
    assert times["cB"].median("steps") == math.inf  # 1 of 3 seeds
    fastest = analysis.fastest_per_optimizer(list(times.values()), "steps")
    assert fastest["blobs/mlp"]["Adam"].config.config_id == "cA"


def test_cost_weights_parse():
    assert records.parse_cost_weights("") == records.DEFAULT_COST_WEIGHTS
    assert records.parse_cost_weights("jvp=2")["jvps"] == 2.0
    for bad in ("bwd=2", "jvp=-1", "jvp=x"):
        with pytest.raises(ValueError, match="cost weight"):
            records.parse_cost_weights(bad)
    counters = {"forward_passes": 3, "backward_passes": 2, "jvps": 1}
    assert records.cost_fpe(counters) == 3 + 4 + 1


def test_performance_profile_ratios_and_score():
    table = {"p1": {"A": 10.0, "B": 20.0, "C": math.inf}, "p2": {"A": 30.0, "B": 15.0}}
    profile = analysis.performance_profile(table, "steps", tau_max=4.0, num=3001)
    assert profile.ratios["A"] == {"p1": 1.0, "p2": 2.0}
    assert profile.ratios["C"] == {"p1": math.inf, "p2": math.inf}
    at = lambda name, tau: profile.rho[name][np.searchsorted(profile.taus, tau, side="right") - 1]  # noqa: E731
    assert (at("A", 1.0), at("A", 1.99), at("A", 2.0)) == (0.5, 0.5, 1.0)
    assert at("C", 4.0) == 0.0
    # ∫₁⁴ ρ_A = 0.5·1 + 1·2 = 2.5, normalised by 3
    assert profile.score["A"] == pytest.approx(2.5 / 3, abs=1e-3)
    assert profile.score["B"] == pytest.approx(2.5 / 3, abs=1e-3)
    assert profile.score["C"] == 0.0
    with pytest.raises(ValueError, match="tau_max"):
        analysis.performance_profile(table, "steps", tau_max=1.0)


# -- plots and report ----------------------------------------------------------------------------
def assert_png(path: Path) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(image[..., :3].std()) > 0.01, f"{path} is blank"


def test_report_writes_tables_and_png_plots(synthetic_sweep, tmp_path):
    found = sweeps.discover([synthetic_sweep])
    assert len(found) == 12
    out = tmp_path / "analysis"
    written = sweeps.write_report(found, out, sweeps.parse_target("test_accuracy>=0.75"))
    names = {p.name for p in written}
    assert {"leaderboard.md", "leaderboard.csv", "time_to_target.csv", "profiles.csv"} <= names
    pngs = [p for p in written if p.suffix == ".png"]
    assert {p.name for p in pngs} == {
        "curves_blobs_mlp_steps.png",
        "curves_blobs_mlp_seconds.png",
        "curves_blobs_mlp_fpe.png",
        "profile_steps.png",
        "profile_seconds.png",
        "profile_fpe.png",
        "sensitivity_blobs_mlp_Adam.png",  # final metrics vs the swept learning rate
        "sensitivity_blobs_mlp_SGD.png",
    }
    for p in pngs:
        assert_png(p)
    board = (out / "leaderboard.md").read_text()
    assert "| blobs/mlp | Adam | Adam learning_rate=0.01 (cA) | 3/3 |" in board
    assert "| 2/3 | 20 | 0.2 | 100 |" in board  # reached, steps, seconds, fpe to target
    with open(out / "profiles.csv", newline="") as f:
        rows = {(r["measure"], r["optimizer"]): r for r in csv.DictReader(f)}
    assert float(rows[("steps", "Adam")]["score"]) == pytest.approx(1.0)
    assert float(rows[("steps", "SGD")]["score"]) == 0.0  # SGD never reaches 0.75


def test_discover_finds_runs_in_nested_folders_and_rejects_empty_ones(synthetic_sweep, tmp_path):
    nested = tmp_path / "runs"
    run = nested / "a" / "run1"
    run.mkdir(parents=True)
    schema.write_result(run / "result.json", fake_result(0, "complete", "Adam", 0.3, 0.8))
    (run / "config.gin").write_text("train.seed = 0\nAdam.learning_rate = 0.1\n")
    found = sweeps.discover([nested, synthetic_sweep])
    assert len(found) == 13 and found[0].run_id == "a/run1" and found[0].status == "ok"
    with pytest.raises(ValueError, match="does not exist"):
        sweeps.discover([tmp_path / "nothing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no runs under"):
        sweeps.discover([tmp_path / "empty"])


def test_analyze_cli_on_a_sweep_and_a_one_line_error(synthetic_sweep, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "experiments.analyze", f"--workdir={synthetic_sweep}"]
    kw = {"cwd": ROOT, "env": env, "capture_output": True, "text": True, "timeout": 300}
    proc = subprocess.run([*cmd, "--target=train_loss<=0.6", "--noplots"], check=False, **kw)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "# Leaderboard" in proc.stdout and "| blobs/mlp | Adam |" in proc.stdout
    out = synthetic_sweep / "analysis"
    assert (out / "time_to_target.csv").exists() and (synthetic_sweep / "summary.csv").exists()
    bad = subprocess.run([*cmd, "--target=loss>0.5"], check=False, **kw)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("analyze: error: --target")


# -- the loss slice at a checkpoint -------------------------------------------------------------
TINY = [
    *problems.TINY_RUN,
    "train.optimizer = @Adam()",
    "Adam.learning_rate = 0.01",
    "train.num_steps = 20",
    "train.eval_every = 10",
    "train.checkpoint_every = 10",
    "train.log_every = 10",
    "train.seed = 3",
    "train.progress_every_s = 1000.0",
]


@pytest.fixture
def trained_run(tmp_path: Path) -> Path:
    gin.clear_config()
    try:
        gin.parse_config(TINY)
        training.run(str(tmp_path / "run"))
    finally:
        gin.clear_config()
    return tmp_path / "run"


def test_loss_slice_rebuilds_the_run_and_matches_its_recorded_losses(trained_run):
    result = training.read_result(trained_run / "result.json")
    evals = {r["step"]: r for r in training.read_metrics(trained_run / "metrics.jsonl")
             if r["kind"] == "eval"}  # fmt: skip

    data = landscape.loss_slice(trained_run, "gradient", t_range=(-0.2, 0.2), num_points=5)
    assert data["step"] == 20 and data["t"][2] == 0.0
    # t = 0 is the checkpoint: the training-set loss the trainer evaluated at step 20.
    assert data["train_loss"][2] == pytest.approx(result["final"]["train_loss"], rel=1e-5)
    assert data["slope"] < 0  # −∇L is a descent direction: φ'(0) = −‖∇L‖²
    assert data["batch_loss"][3] < data["loss0"]
    assert data["batch_loss"][2] == pytest.approx(data["loss0"], rel=1e-6)

    update = landscape.loss_slice(trained_run, "update", t_range=(-1.0, 1.0), num_points=3)
    # w + (−1)(w₂₀ − w₁₀) = w₁₀: the training loss the trainer evaluated at step 10.
    assert update["train_loss"][0] == pytest.approx(evals[10]["train_loss"], rel=1e-4)
    assert update["train_loss"][1] == pytest.approx(evals[20]["train_loss"], rel=1e-5)

    path = plots.plot_slice(data, trained_run / "slice.png")
    assert_png(path)
    with pytest.raises(ValueError, match="no checkpoint at step 5"):
        landscape.loss_slice(trained_run, checkpoint_step=5)
    with pytest.raises(ValueError, match="direction must be one of"):
        landscape.loss_slice(trained_run, "random")
