"""`experiments.analyze --best_sweep_file`: the sweep that reruns each optimizer's selected
configuration on more seeds (tune on few seeds, confirm the winners on many)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_analyze import ROOT, synthetic_sweep  # noqa: F401  (the fixture)

from dirgrad_opt import sweeps
from dirgrad_opt.sweeps import records, summary


def test_best_sweep_keeps_each_optimizers_selected_bindings(synthetic_sweep):  # noqa: F811
    configs = summary.group_configs(records.read_sweep(synthetic_sweep))
    best = summary.best_per_optimizer(configs, "final_train_loss")
    target = {"metric": "test_accuracy", "goal": ">=", "value": 0.7}
    spec = summary.best_sweep(best, [0, 1, 2, 3, 4], target)
    assert spec == {
        "union": [
            {"grid": {"train.optimizer": ["@Adam()"], "Adam.learning_rate": [0.01]}},
            {"grid": {"train.optimizer": ["@SGD()"], "SGD.learning_rate": [0.1]}},
        ],
        "seeds": [0, 1, 2, 3, 4],
        "target": target,
    }
    trials = sweeps.expand(sweeps.parse_sweep(spec))
    assert len(trials) == 10 and {t.seed for t in trials} == {0, 1, 2, 3, 4}
    for bad in ([], [1, 1]):
        with pytest.raises(ValueError, match="distinct seeds"):
            summary.best_sweep(best, bad)
    with pytest.raises(ValueError, match="no optimizer"):
        summary.best_sweep({}, [0])


def test_analyze_writes_a_runnable_best_sweep_file(synthetic_sweep, tmp_path):  # noqa: F811
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "best.json"
    cmd = [sys.executable, "-m", "experiments.analyze", f"--workdir={synthetic_sweep}",
           "--noplots", f"--best_sweep_file={out}"]  # fmt: skip
    kw = {"cwd": tmp_path, "env": env, "capture_output": True, "text": True, "timeout": 300}
    bad = subprocess.run([*cmd, "--best_seeds=0,x"], check=False, **kw)
    assert bad.returncode == 2 and not out.exists()
    assert (
        bad.stderr.strip().splitlines()[-1] == "analyze: error: --best_seeds='0,x': give integers"
    )
    proc = subprocess.run(
        [*cmd, "--select_metric=final_test_accuracy", "--best_seeds=3,4"], check=False, **kw
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = json.loads(out.read_text())
    assert spec["seeds"] == [3, 4] and "target" not in spec
    # by test accuracy SGD's cC (0.6, one finite seed) still beats cD (every seed diverged)
    grids = {g["grid"]["train.optimizer"][0]: g["grid"] for g in spec["union"]}
    assert grids["@Adam()"]["Adam.learning_rate"] == [0.01]
    assert grids["@SGD()"]["SGD.learning_rate"] == [0.1]
    assert len(sweeps.expand(sweeps.load_sweep(out))) == 4
