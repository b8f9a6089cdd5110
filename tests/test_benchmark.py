"""experiments.benchmark end to end, and warm trial workers (identity, failure, hang)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dirgrad_opt.problems import benchmark
from dirgrad_opt.sweeps import plots

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = ["rosenbrock", "branin", "digits_mlp"]
#: ActivityForwardGradient perturbs Dense layers' outputs: it trains digits_mlp and refuses the
#: 2-D functions (no layers), a failed trial with a one-line reason in the report.
OPTIMIZERS = ["Adam", "SGD", "PolyakStep", "ActivityForwardGradient"]
GRIDS = {
    "Adam": {"Adam.learning_rate": [0.01]},
    "SGD": {"SGD.learning_rate": [0.001]},
    "PolyakStep": {"PolyakStep.c": [0.5]},
    "ActivityForwardGradient": {"afg/Adam.learning_rate": [0.003]},
}
NO_LAYERS = "ValueError: model '{}' has no Dense layer to tap"
PARAMS = ["Problem.eval_points = 2"]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(args, cwd, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """3 problems × 3 optimizers × 2 seeds at a tiny budget, two warm workers."""
    tmp = tmp_path_factory.mktemp("bench")
    grids = tmp / "grids"
    grids.mkdir()
    for name, grid in GRIDS.items():
        (grids / f"{name}.json").write_text(json.dumps({"grid": grid}))
    workdir = tmp / "run"
    out = _run(
        ["experiments.benchmark", f"--problems={','.join(PROBLEMS)}",
         f"--optimizers={','.join(OPTIMIZERS)}", "--seeds=0,1", "--budget=0.01",
         f"--grids_dir={grids}", f"--workdir={workdir}", "--parallel=2",
         *(f"--gin_param={p}" for p in PARAMS)],
        tmp,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    cells = benchmark.plan(workdir, PROBLEMS, OPTIMIZERS, [0, 1], 0.01, grids, PARAMS)
    return workdir, cells


@pytest.mark.slow
def test_benchmark_runs_every_cell_and_reports_profiles(bench, monkeypatch):
    workdir, cells = bench
    for cell in cells:
        trials = sorted((cell.sweep_dir / "trials").iterdir())
        assert len(trials) == 2, cell
        for trial in trials:
            status = json.loads((trial / "status.json").read_text())
            if cell.optimizer == "ActivityForwardGradient" and cell.problem != "digits_mlp":
                assert status["status"] == "failed", (cell, status)
                assert status["error"] == NO_LAYERS.format(cell.problem), status
            else:
                assert status["status"] in ("ok", "diverged"), (cell, status)
    md = (workdir / "report" / "benchmark.md").read_text()
    for name in ("rosenbrock", "branin"):
        assert f"| ActivityForwardGradient | 2 of 2 | {NO_LAYERS.format(name)} |" in md
    for name in PROBLEMS:
        assert f"## {name} (target `valid_" in md
    results = benchmark.collect(cells)
    assert {r.name for r in results} == set(PROBLEMS)
    for r in results:  # selection is on the validation split, never on test
        assert r.select.startswith("final_valid_") and r.target.metric.startswith("valid_")
        header = (workdir / "report" / f"leaderboard_{r.name}.csv").read_text().splitlines()[0]
        assert r.select in header.split(",")
    rows = (workdir / "report" / "profiles.csv").read_text().splitlines()[1:]
    assert sorted(row.split(",")[:2] for row in rows) == sorted(
        [m, o] for m in ("steps", "seconds", "fpe") for o in OPTIMIZERS
    )
    # The profile plot: one curve per optimizer, across the problems.
    lines = {}
    save = plots._save

    def counting_save(plt, fig, path):
        lines[Path(path).name] = [line.get_label() for line in fig.axes[0].get_lines()]
        return save(plt, fig, path)

    monkeypatch.setattr(plots, "_save", counting_save)
    benchmark.write_report(workdir, cells)
    for measure in ("steps", "seconds", "fpe"):
        labels = lines[f"profile_{measure}.png"]
        assert sorted(label.split(" ")[0] for label in labels) == sorted(OPTIMIZERS)


def test_benchmark_bad_input_is_a_one_line_error(tmp_path):
    out = _run(
        ["experiments.benchmark", "--problems=rosenbrock", "--optimizers=Adam,Adamm",
         f"--workdir={tmp_path / 'b'}", "--threads_per_trial=1"],  # the sweep's trial flags too
        tmp_path,
    )  # fmt: skip
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("benchmark: error: unknown optimizer(s) ['Adamm']"), last
    assert not (tmp_path / "b").exists()


def _worker_pid(trial: Path) -> int:
    return int(re.findall(r"warm worker pid (\d+)", (trial / "log.txt").read_text())[-1])


@pytest.mark.slow
def test_warm_workers_match_fresh_processes_and_replace_failed_or_hung_ones(tmp_path):
    """Four trials in one slot: ok (3 steps), a configuration error (0 steps: refused before
    training, one line), a hang (timed out), ok (2 steps). The first three share a worker (a
    refused trial keeps it: a benchmark has many, e.g. activity perturbation on models without
    Dense layers), the hang is killed with it, the last trial gets a new one. The ok trial's
    finals equal a fresh process's exactly."""
    files = ["--gin_file=configs/problems/digits_mlp.gin", "--gin_file=configs/optimizers/adam.gin"]
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"grid": {"train.num_steps": [3, 0, 10**8, 2]}, "seeds": [0]}))
    warm = tmp_path / "warm"
    out = _run(
        ["experiments.sweep", *files, f"--sweep_file={sweep}", f"--workdir={warm}",
         "--trial_timeout_s=20", "--noplots"],
        tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    trials = {json.loads((t / "trial.json").read_text())["bindings"]["train.num_steps"]: t
              for t in (warm / "trials").iterdir()}  # fmt: skip
    status = {n: json.loads((t / "status.json").read_text()) for n, t in trials.items()}
    assert status[3]["status"] == status[2]["status"] == "ok"
    assert status[0]["status"] == "failed" and "num_steps" in status[0]["error"]
    assert (
        status[10**8]["status"] == "failed"
        and "timed out" in (trials[10**8] / "log.txt").read_text()
    )
    pids = {n: _worker_pid(t) for n, t in trials.items()}
    assert pids[3] == pids[0] == pids[10**8] != pids[2]
    for pid in set(pids.values()):  # every worker is gone at the end
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    only_ok = tmp_path / "ok.json"
    only_ok.write_text(json.dumps({"grid": {"train.num_steps": [3]}, "seeds": [0]}))
    fresh = tmp_path / "fresh"
    out = _run(
        ["experiments.sweep", *files, f"--sweep_file={only_ok}", f"--workdir={fresh}",
         "--fresh_process_per_trial", "--noplots"],
        tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (fresh_trial,) = (fresh / "trials").iterdir()
    assert fresh_trial.name == trials[3].name
    assert "warm worker" not in (fresh_trial / "log.txt").read_text()
    warm_result = json.loads((trials[3] / "result.json").read_text())
    fresh_result = json.loads((fresh_trial / "result.json").read_text())
    assert warm_result["final"] == fresh_result["final"]
    assert warm_result["totals"] == fresh_result["totals"]


@pytest.mark.slow
@pytest.mark.xdist_group("cluster")
def test_ray_backend_reuses_one_warm_actor_per_slot(tmp_path):
    pytest.importorskip("ray")
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"grid": {"train.num_steps": [2, 3]}, "seeds": [0]}))
    out = _run(
        ["experiments.sweep", "--gin_file=configs/problems/branin.gin",
         "--gin_file=configs/optimizers/adam.gin", f"--sweep_file={sweep}",
         f"--workdir={tmp_path / 'w'}", "--backend=ray", "--parallel=1", "--noplots"],
        tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    trials = sorted((tmp_path / "w" / "trials").iterdir())
    assert [json.loads((t / "status.json").read_text())["status"] for t in trials] == ["ok"] * 2
    assert len({_worker_pid(t) for t in trials}) == 1  # both trials ran in the same worker
