"""Union sweeps (each optimizer its own grid, shared seeds), the one-process pre-flight check,
``--dry_run``, and the plots that name hyperparameters — through the real commands from a
folder outside the repo, with the researcher's own optimizer module."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_analyze import synthetic_sweep  # noqa: F401 - the fixture
from user_project import TINY, error_line, run, write_project

from dirgrad_opt import sweeps
from dirgrad_opt.sweeps import records, sensitivity, spec

ADAM = {"train.optimizer": ["@Adam()"], "Adam.learning_rate": [0.001, 0.01]}
SCALED = {"train.optimizer": ["@ScaledStep()"], "ScaledStep.factor": [0.5, 0.25]}


def union(*grids: dict, seeds=(0, 1)) -> dict:
    return {"union": [{"grid": g} for g in grids], "seeds": list(seeds)}


# -- the spec ----------------------------------------------------------------------------------
def test_union_expands_each_sub_sweep_on_its_own_grid():
    trials = spec.expand(spec.parse_sweep(union(ADAM, SCALED)))
    assert len(trials) == 8
    lines = {t.trial_id: t.gin_lines() for t in trials}
    assert sum("Adam.learning_rate = 0.01" in ls for ls in lines.values()) == 2
    assert not any(
        "@Adam()" in " ".join(ls) and "ScaledStep" in " ".join(ls) for ls in lines.values()
    )


def test_trial_ids_stay_when_a_sub_sweep_grows():
    random_sub = {
        "grid": SCALED,
        "random": {"ScaledStep.learning_rate": {"min": 0.01, "max": 1.0, "scale": "log"}},
        "num_random": 2,
    }
    before = {t.trial_id for t in spec.expand(spec.parse_sweep(
        {"union": [{"grid": ADAM}, random_sub], "seeds": [0]}))}  # fmt: skip
    grown_adam = {**ADAM, "Adam.learning_rate": [0.001, 0.01, 0.1]}
    grown = {**random_sub, "num_random": 3}
    after = spec.expand(spec.parse_sweep({"union": [{"grid": grown_adam}, grown], "seeds": [0, 1]}))
    ids = {t.trial_id for t in after}
    assert before <= ids
    assert len(ids) == 3 * 2 + 2 * 3 * 2
    # The reverse order of sub-sweeps keeps every id too (ids hash bindings, not positions).
    swapped = spec.expand(
        spec.parse_sweep({"union": [grown, {"grid": grown_adam}], "seeds": [0, 1]})
    )
    assert {t.trial_id for t in swapped} == ids


def test_union_round_trips_through_json():
    parsed = spec.parse_sweep(union(ADAM, SCALED))
    assert spec.parse_sweep(json.loads(json.dumps(parsed.to_json()))) == parsed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"union": []}, "union: expected a non-empty list"),
        ({"union": [{"grid": ADAM, "seeds": [0]}]}, 'union[0]: "seeds" belongs at the top level'),
        ({"union": [{"grid": ADAM}], "grid": ADAM}, "no top-level ['grid']"),
        ({"union": [{"grid": ADAM}, {"grdi": SCALED}]}, "union[1]: unknown key(s) ['grdi']"),
        ({"union": [{"grid": ADAM}, {}]}, "union[1]: empty sub-sweep"),
        ({"union": [{"grid": {"Adam.learning_rate": []}}]}, "union[0].grid['Adam.learning_rate']"),
        ({"union": [{"grid": ADAM, "num_random": 2}]}, "union[0].num_random: given without"),
    ],
)
def test_union_errors_name_the_sub_sweep(data, message):
    with pytest.raises(spec.SweepError) as error:
        spec.parse_sweep(data, "s.json")
    assert message in str(error.value)


# -- pre-flight and dry run through the real command -------------------------------------------
def sweep_project(tmp_path: Path, sweep: dict) -> Path:
    write_project(tmp_path, gin_import=False)
    (tmp_path / "base.gin").write_text("\n".join([*TINY, "train.optimizer = @Adam()"]) + "\n")
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    return tmp_path


def test_dry_run_checks_every_configuration_in_one_process(tmp_path: Path):
    project = sweep_project(tmp_path, union(ADAM, SCALED))
    log = tmp_path / "imports.log"
    proc = run(
        "experiments.sweep", "--import=my_opt", "--gin_file=base.gin", "--sweep_file=sweep.json",
        "--workdir=w", "--dry_run", cwd=project, env={"MY_OPT_IMPORT_LOG": str(log)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(proc.stdout.splitlines()) == 8
    assert "pre-flight: 4 configuration(s) checked, all valid" in proc.stderr
    assert len(set(log.read_text().split())) == 1  # one process imported the user's module
    assert not (project / "w").exists()  # a dry run writes nothing


def test_preflight_stops_a_bad_sweep_before_any_trial(tmp_path: Path):
    bad_scaled = {"train.optimizer": ["@ScaledStep()"], "ScaledStep.factr": [0.5]}
    bad_adam = {"train.optimizer": ["@Adam()"], "Adam.learning_rate": [0.01, "fast"]}
    project = sweep_project(tmp_path, union(bad_adam, bad_scaled))
    proc = run(
        "experiments.sweep", "--import=my_opt", "--gin_file=base.gin", "--sweep_file=sweep.json",
        "--workdir=w", cwd=project,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = error_line(proc, "sweep")
    assert "pre-flight: 2 of 3 configuration(s) invalid, no trial started" in line
    assert "Adam.learning_rate = 'fast'" in line and "learning_rate=fast" in line
    assert "ScaledStep.factr = 0.5" in line and "factr" in line
    assert not (project / "w").exists()


def test_preflight_names_a_missing_import(tmp_path: Path):
    project = sweep_project(tmp_path, union(SCALED))
    proc = run(
        "experiments.sweep", "--import=my_optt", "--gin_file=base.gin", "--sweep_file=sweep.json",
        "--workdir=w", "--dry_run", cwd=project,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--import=my_optt: no module named 'my_optt'" in error_line(proc, "sweep")


# -- the comparison end to end -----------------------------------------------------------------
@pytest.mark.slow
def test_union_sweep_compares_the_users_optimizer_with_adam(tmp_path: Path):
    """From outside the repo: the user's optimizer vs Adam, 2 grid values each, 2 seeds,
    --parallel=2; one summary with both optimizers' best configurations."""
    project = sweep_project(tmp_path, union(ADAM, SCALED))
    proc = run(
        "experiments.sweep", "--import=my_opt", "--gin_file=base.gin", "--sweep_file=sweep.json",
        "--workdir=w", "--parallel=2", cwd=project, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(project / "w" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    trials = [r for r in rows if r["kind"] == "trial"]
    assert len(trials) == 8 and {r["status"] for r in trials} == {"ok"}
    assert {r["optimizer"] for r in trials} == {"Adam", "ScaledStep"}
    text = (project / "w" / "summary.md").read_text()
    best = text.split("## Best configuration per optimizer")[1].split("##")[0]
    assert "| Adam |" in best and "| ScaledStep |" in best
    info = json.loads(next((project / "w" / "trials").glob("*/trial.json")).read_text())
    assert info["imports"] == ["my_opt"] and info["import_paths"] == [str(project)]
    assert "--import=my_opt" in info["command"]
    plots = {p.name for p in (project / "w" / "analysis" / "plots").glob("*.png")}
    assert "sensitivity_my_points_mlp_ScaledStep.png" in plots
    assert "sensitivity_my_points_mlp_Adam.png" in plots


# -- plots: legends and sensitivity data ---------------------------------------------------------
def test_sensitivity_panels_are_mean_and_std_over_ok_seeds(synthetic_sweep):  # noqa: F811
    found = records.read_sweep(synthetic_sweep)
    panels = sensitivity.by_optimizer(found, ["final_train_loss"])
    (adam,) = panels[("blobs/mlp", "Adam")]
    assert (adam.binding, adam.label) == ("Adam.learning_rate", "learning_rate")
    (series,) = adam.series
    assert series.x == [0.01, 0.1]
    assert series.mean == pytest.approx([0.4, 0.15])  # cB: its two ok seeds only
    assert series.std == pytest.approx([0.1, 0.0707107], rel=1e-4)
    assert series.n == [3, 2]
    (sgd,) = panels[("blobs/mlp", "SGD")]
    assert sgd.series[0].x == [0.1]  # lr 1.0 diverged on every seed: no point


def test_curve_legends_name_the_hyperparameters(synthetic_sweep):  # noqa: F811
    curves = sweeps.analysis.best_curves(records.read_sweep(synthetic_sweep), "test_accuracy",
                                         "final_train_loss")  # fmt: skip
    assert [c.label for c in curves["blobs/mlp"]] == [
        "Adam learning_rate=0.01",
        "SGD learning_rate=0.1",
    ]
