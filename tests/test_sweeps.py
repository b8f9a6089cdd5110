"""Sweeps: sweep files, gin literals, trial ids, trial outcomes, and real sweeps end to end
(local processes and Ray): failure isolation, rerun skipping finished trials, resume."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import gin
import problems
import pytest

from dirgrad_opt import sweeps, training
from dirgrad_opt.sweeps import backends, launch, runner, spec

ROOT = Path(__file__).resolve().parents[1]

# 8-d Gaussian blobs, a 16-unit MLP, 20 steps: a trial process is ~5 s, almost all TF import.
TINY = (
    "\n".join(problems.TINY_RUN)
    + """
train.optimizer = @Adam()
train.num_steps = 20
train.eval_every = 5
train.checkpoint_every = 10
train.log_every = 5
train.progress_every_s = 1000.0
"""
)


@pytest.fixture
def tiny_gin(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gin"
    path.write_text(TINY)
    return path


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- gin literals ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "literal"),
    [
        (1.0, "1.0"),  # never "1": gin would read an int and Keras rejects it
        (1e-5, "1e-05"),
        (0.001, "0.001"),
        (1e30, "1e+30"),
        (3, "3"),
        (True, "True"),
        (None, "None"),
        ("grow", "'grow'"),
        ("it's", '"it\'s"'),
        ("@Adam()", "@Adam()"),
        ("@mnist1d_mlp", "@mnist1d_mlp"),
        ("%WIDTH", "%WIDTH"),
        ([16, 16], "[16, 16]"),
        ([0.5, "a"], "[0.5, 'a']"),
    ],
)
def test_render_value(value, literal):
    assert spec.render_value(value) == literal


@pytest.mark.parametrize("value", [math.nan, math.inf, "@not a ref", "@Adam(lr=1)", object()])
def test_render_value_rejects(value):
    with pytest.raises(spec.SweepError):
        spec.render_value(value, "grid['x'][0]")


def test_rendered_bindings_parse_in_gin_with_the_right_types():
    from dirgrad_opt.training import registry

    registry.register_optimizers()
    trial = sweeps.Trial(
        "c0-s3",
        "c0",
        3,
        {
            "Adam.learning_rate": 1.0,
            "Adam.amsgrad": True,
            "train.optimizer": "@Adam()",
            "ArmijoLineSearch.reset": "grow",
            "mlp.widths": [16, 8],
        },  # fmt: skip
    )
    gin.clear_config()
    try:
        gin.parse_config(trial.gin_lines())
        lr = gin.query_parameter("Adam.learning_rate")
        assert isinstance(lr, float) and lr == 1.0
        assert gin.query_parameter("Adam.amsgrad") is True
        assert gin.query_parameter("ArmijoLineSearch.reset") == "grow"
        assert gin.query_parameter("mlp.widths") == [16, 8]
        assert gin.query_parameter("train.seed") == 3
        assert trial.gin_lines()[-1] == "train.seed = 3"
    finally:
        gin.clear_config()


# -- sweep files ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "empty sweep"),
        ({"grid": {"Adam.learning_rate": [0.1]}, "gird": {}}, "unknown key(s) ['gird']"),
        ({"grid": {"Adam.learning_rate": []}}, "non-empty list"),
        ({"grid": {"Adam.learning_rate": 0.1}}, "non-empty list"),
        ({"grid": {"Adam.learning_rate": [0.1, 0.1]}}, "duplicate value"),
        ({"grid": {"learning_rate": [0.1]}}, "not a gin binding name"),
        ({"grid": {"train.seed": [1, 2]}}, 'list the seeds in "seeds"'),
        ({"random": {"Adam.learning_rate": {"min": 1e-4, "max": 1e-1}}}, 'needs "num_random"'),
        ({"grid": {"a.b": [1]}, "num_random": 3}, 'without "random"'),
        ({"random": {"a.b": {"min": 1.0, "max": 0.1}}, "num_random": 2}, "min (1) must be < max"),
        (
            {"random": {"a.b": {"min": 0.0, "max": 1.0, "scale": "log"}}, "num_random": 2},
            "log scale needs min > 0",
        ),  # fmt: skip
        (
            {"random": {"a.b": {"min": 0.1, "max": 1.0, "scale": "cubic"}}, "num_random": 2},
            "scale: expected one of",
        ),  # fmt: skip
        (
            {"random": {"a.b": {"min": 0.1, "max": 1.0, "step": 2}}, "num_random": 2},
            "unknown key(s) ['step']",
        ),  # fmt: skip
        ({"random": {"a.b": {"max": 1.0}}, "num_random": 2}, "missing 'min'"),
        (
            {"grid": {"a.b": [1]}, "random": {"a.b": {"min": 0.1, "max": 1.0}}, "num_random": 1},
            'also in "grid"',
        ),  # fmt: skip
        ({"seeds": []}, "non-empty list of integers"),
        ({"seeds": [0, 0]}, "duplicate seeds"),
        ({"seeds": [-1]}, "integer >= 0"),
        ({"seeds": [0], "target": "test_accuracy > 0.5"}, "not a target"),
        ({"seeds": [0], "target": {"metric": "x", "goal": "==", "value": 1}}, "goal"),
    ],
)
def test_invalid_sweep_files_say_what_and_where(tmp_path, data, message):
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(sweeps.SweepError) as error:
        sweeps.load_sweep(path)
    assert message in str(error.value)
    assert str(error.value).startswith(str(path))


def test_missing_and_malformed_sweep_files(tmp_path):
    with pytest.raises(sweeps.SweepError, match="not found"):
        sweeps.load_sweep(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{grid: }")
    with pytest.raises(sweeps.SweepError, match="not valid JSON"):
        sweeps.load_sweep(tmp_path / "x.json")


def test_expansion_counts_ids_and_reproducible_random_draws():
    data = {
        "grid": {"Adam.learning_rate": [1e-3, 1e-2], "train.batch_size": [10, 20, 40]},
        "random": {
            "Adam.epsilon": {"min": 1e-8, "max": 1e-4, "scale": "log"},
            "Adam.beta_1": {"min": 0.8, "max": 0.99},
            "mlp.depth": {"min": 1, "max": 4, "integer": True},
        },
        "num_random": 2,
        "seeds": [0, 1],
    }
    trials = sweeps.expand(sweeps.parse_sweep(data))
    assert len(trials) == 2 * 3 * 2 * 2
    assert len({t.trial_id for t in trials}) == len(trials)
    for t in trials:
        assert t.trial_id == f"{t.config_id}-s{t.seed}"
        assert 1e-8 <= t.bindings["Adam.epsilon"] <= 1e-4
        assert 0.8 <= t.bindings["Adam.beta_1"] <= 0.99
        assert isinstance(t.bindings["mlp.depth"], int) and 1 <= t.bindings["mlp.depth"] <= 4
    # The same random points for every grid point (paired comparison).
    points = {(t.bindings["Adam.epsilon"], t.bindings["Adam.beta_1"]) for t in trials}
    assert len(points) == 2
    # Same file -> same trials; key order in the file does not matter.
    reordered = dict(reversed(list(data.items())))
    reordered["grid"] = dict(reversed(list(data["grid"].items())))
    again = sweeps.expand(sweeps.parse_sweep(reordered))
    assert {t.trial_id for t in again} == {t.trial_id for t in trials}
    other = sweeps.expand(sweeps.parse_sweep({**data, "random_seed": 1}))
    assert {t.trial_id for t in other}.isdisjoint({t.trial_id for t in trials})


def test_adding_values_and_seeds_keeps_existing_trial_ids():
    small = sweeps.expand(sweeps.parse_sweep({"grid": {"a.b": [1.0, 2.0]}, "seeds": [0]}))
    large = sweeps.expand(sweeps.parse_sweep({"grid": {"a.b": [1.0, 2.0, 3.0]}, "seeds": [0, 1]}))
    assert {t.trial_id for t in small} <= {t.trial_id for t in large}
    assert len(large) == 6


def test_every_shipped_sweep_file_is_valid():
    files = sorted((ROOT / "configs" / "sweeps").rglob("*.json"))
    assert len(files) >= 9
    for path in files:
        trials = sweeps.expand(sweeps.load_sweep(path))
        assert trials, path


def test_shipped_sweeps_build_every_optimizer_they_name():
    """Each trial of the comparison and LR sweeps parses strictly on its base gin file and builds
    its optimizer with the swept value (no training)."""
    import copy

    import keras

    from dirgrad_opt.training import registry

    registry.register_optimizers()
    gin.add_config_file_search_path(str(ROOT))
    cases = [("mnist1d_comparison.gin", "mnist1d_comparison.json")]
    cases += [("mnist1d_mlp.gin", f"mnist1d_lr/{p.name}") for p in
              sorted((ROOT / "configs" / "sweeps" / "mnist1d_lr").glob("*.json"))]  # fmt: skip
    built = set()
    try:
        for base, sweep_file in cases:
            for trial in sweeps.expand(sweeps.load_sweep(ROOT / "configs" / "sweeps" / sweep_file)):
                if trial.seed != 0:
                    continue
                gin.clear_config()
                gin.parse_config_files_and_bindings(
                    [str(ROOT / "configs" / "sweeps" / base)], trial.gin_lines(), skip_unknown=False
                )
                optimizer = copy.deepcopy(gin.query_parameter("train.optimizer"))
                assert isinstance(optimizer, keras.optimizers.Optimizer), trial
                for name, value in trial.bindings.items():
                    if name == "train.optimizer":
                        continue
                    configurable, attribute = name.rsplit(".", 1)
                    if configurable == type(optimizer).__name__:
                        got = getattr(optimizer, attribute)
                    else:  # a scoped inner piece (e.g. afg/CosineDecay of the activity FG)
                        got = gin.query_parameter(name)
                    assert float(got) == pytest.approx(value), (trial, name)
                built.add(type(optimizer).__name__)
    finally:
        gin.clear_config()
    assert len(built) == 18, built


# -- trial outcomes ------------------------------------------------------------------------------
def test_error_summary_prefers_the_trainer_error_line():
    log = "I1126 step 5\ntrain: error: unknown dataset 'mnist1dd'\n"
    assert runner.error_summary(log, 2) == "unknown dataset 'mnist1dd'"
    trace = "Traceback (most recent call last):\n  File x\nRuntimeError: boom\n"
    assert runner.error_summary(trace, 1).endswith("RuntimeError: boom")
    assert runner.error_summary("", -9).startswith("killed by signal SIGKILL")
    assert "exit code 1" in runner.error_summary("", 1)


def test_classify_by_exit_code_and_result(tmp_path):
    assert runner.classify(tmp_path, 0, "") == (
        runner.FAILED,
        "exit code 0 but no complete result.json",
    )
    assert runner.classify(tmp_path, 2, "train: error: bad")[0] == runner.FAILED
    assert runner.classify(tmp_path, 3, "train: error: training diverged")[0] == runner.DIVERGED
    assert runner.classify(tmp_path, 1, "RuntimeError: x") == (runner.FAILED, "RuntimeError: x")
    (tmp_path / "result.json").write_text("{}")
    status, error = runner.classify(tmp_path, 0, "")
    assert status == runner.FAILED and "invalid result.json" in error


def test_needs_run(tmp_path):
    assert runner.needs_run(tmp_path)
    for status, expected, retry in [
        ("running", True, False),  # the sweep was killed: resume
        ("interrupted", True, False),
        ("failed", False, False),
        ("failed", True, True),
        ("ok", True, False),  # ok but result.json is gone
    ]:
        launch.write_json_atomic(str(tmp_path / "status.json"), {"status": status})
        assert runner.needs_run(tmp_path, retry_failed=retry) == expected, status
    (tmp_path / "result.json").write_text("{}")
    for status in ("ok", "diverged"):
        launch.write_json_atomic(str(tmp_path / "status.json"), {"status": status})
        assert not runner.needs_run(tmp_path, retry_failed=True)


# A process that announces it runs, then waits until its stdin is closed (or it is killed).
_READY_THEN_WAIT = "import sys; print('ready', flush=True); sys.stdin.read()"


def test_a_trial_still_running_from_a_killed_sweep_is_not_started_twice(tmp_path):
    import socket

    workdir = str(tmp_path)
    proc = subprocess.Popen(  # stands in for an orphaned trainer of this workdir
        [sys.executable, "-c", _READY_THEN_WAIT, "experiments.train", workdir],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Popen returns before the child has exec'd (until then /proc/<pid>/cmdline is still
        # pytest's): the child says when it runs, so the check below sees its own command line.
        assert proc.stdout.readline().strip() == "ready"
        status = {"status": "running", "host": socket.gethostname(), "pid": proc.pid}
        launch.write_json_atomic(str(tmp_path / "status.json"), status)
        assert launch.alive_elsewhere(workdir) == proc.pid
        other = tmp_path / "other"  # the same pid recorded for another trial: a reused pid
        other.mkdir()
        launch.write_json_atomic(str(other / "status.json"), status)
        assert launch.alive_elsewhere(str(other)) is None
        launch.write_json_atomic(str(tmp_path / "status.json"), {**status, "host": "elsewhere"})
        assert launch.alive_elsewhere(workdir) is None
        launch.write_json_atomic(str(tmp_path / "status.json"), status)
    finally:
        proc.kill()
        proc.wait()
    assert launch.alive_elsewhere(workdir) is None


def test_the_trial_flags_build_the_backend_they_name():
    """experiments.sweep and experiments.benchmark share one set of trial flags
    (experiments/trial_flags.py): each reaches the backend they build."""
    from absl import flags

    from experiments import trial_flags

    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["sweep", "--parallel=3", "--threads_per_trial=2", "--trial_timeout_s=7",
                     "--fresh_process_per_trial"])  # fmt: skip
        local = trial_flags.backend()
        assert isinstance(local, backends.LocalBackend)
        assert (local.parallel, local.threads_per_trial, local.warm, local.trial_timeout_s) == (
            3, 2, False, 7.0,
        )  # fmt: skip
        pytest.importorskip("ray", reason="Ray is not installed (pip install 'dirgrad_opt[ray]')")
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["benchmark", "--backend=ray", "--ray_address=127.0.0.1:1", "--parallel=2",
                     "--cpus_per_trial=3", "--ray_connect_timeout_s=2.5"])  # fmt: skip
        ray_ = trial_flags.backend()
        assert isinstance(ray_, backends.RayBackend)
        got = (ray_.address, ray_.parallel, ray_.threads_per_trial, ray_.connect_timeout_s)
        assert got == ("127.0.0.1:1", 2, 3, 2.5)
        assert ray_.warm and ray_.trial_timeout_s is None
    finally:
        flags.FLAGS.unparse_flags()


def test_thread_env_limits_threads_and_makes_the_project_importable():
    env = launch.thread_env(1, "/proj", base={"PYTHONPATH": "/other"})
    assert env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == "1"
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep) == ["/proj", "/other"]
    assert backends.LocalBackend(parallel=2).threads_per_trial == max(
        1, backends.available_cores() // 2
    )
    with pytest.raises(ValueError, match="parallel"):
        backends.LocalBackend(parallel=0)


def test_progress_line_counts_and_eta():
    lines = []
    progress = backends.Progress(4, {"ok": 1}, lines.append)
    progress.event("start", "a", None)
    assert "1/4 done (ok 1, diverged 0, failed 0) | 1 running | 2 pending" in progress.line()
    assert "ETA ?" in progress.line()
    progress.event("finish", "a", runner.TrialOutcome("a", "failed", 2, "bad value", 1.0, "h"))
    assert "2/4 done (ok 1, diverged 0, failed 1)" in lines[-1]
    assert "a failed in 1.0 s: bad value" in lines[-1]
    assert "ETA ?" not in progress.line()


def test_sweep_refuses_a_workdir_of_other_gin_files(tmp_path, tiny_gin):
    other = tmp_path / "other.gin"
    other.write_text(TINY)
    one = sweeps.parse_sweep({"seeds": [0]})
    sweeps_dir = tmp_path / "sweep"
    from dirgrad_opt.sweeps import driver

    driver.plan(sweeps_dir, one, [str(tiny_gin)])
    with pytest.raises(sweeps.SweepError, match="use a new --workdir"):
        driver.plan(sweeps_dir, one, [str(other)])
    with pytest.raises(sweeps.SweepError, match="not found"):
        driver.plan(tmp_path / "s2", one, [str(tmp_path / "missing.gin")])


# -- end to end -----------------------------------------------------------------------------------
def _sweep_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "experiments.sweep", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_four_trials_one_invalid_setting_then_rerun_runs_nothing(tmp_path, tiny_gin):
    """The "Done when" check: the valid trials finish, summary.csv says ok/failed, a rerun does
    not rerun finished trials, the plots are PNG files."""
    sweep_file = write_json(
        tmp_path / "sweep.json",
        {
            "grid": {"Adam.learning_rate": [0.001, 0.01, 0.1, "fast"]},
            "seeds": [0],
            "target": {"metric": "test_accuracy", "goal": ">=", "value": 0.5},
        },  # fmt: skip
    )
    workdir = tmp_path / "sweep"
    args = (f"--gin_file={tiny_gin}", f"--sweep_file={sweep_file}", f"--workdir={workdir}")
    # The pre-flight check would stop this sweep before any trial (test_union_sweeps.py);
    # without it, the invalid trial fails alone.
    proc = _sweep_cli(*args, "--parallel=2", "--nopreflight")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4/4 done (ok 3, diverged 0, failed 1)" in proc.stderr

    rows = [r for r in read_csv(workdir / "summary.csv") if r["kind"] == "trial"]
    assert sorted(r["status"] for r in rows) == ["failed", "ok", "ok", "ok"]
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["Adam.learning_rate"] == "'fast'"
    assert "learning_rate" in failed["error"] and failed["final_test_accuracy"] == ""
    for r in rows:
        if r["status"] == "ok":
            assert float(r["final_test_accuracy"]) > 0 and r["steps"] == "20"
            assert r["optimizer"] == "Adam" and float(r["cost_fpe"]) == 60.0  # 20 × (1 + 2)
    config_rows = [r for r in read_csv(workdir / "summary.csv") if r["kind"] == "config"]
    assert len(config_rows) == 4 and {r["n_seeds"] for r in config_rows} == {"1"}
    md = (workdir / "summary.md").read_text()
    assert "selected on lowest mean `final_train_loss`" in md and "failed" in md

    # Every trial: its bindings in files, the trainer's outputs beside them.
    for r in rows:
        trial = Path(r["path"])
        info = json.loads((trial / "trial.json").read_text())
        assert info["bindings"]["Adam.learning_rate"] in (0.001, 0.01, 0.1, "fast")
        assert "train.seed = 0" in (trial / "bindings.gin").read_text()
        assert info["command"][:3] == ["python", "-m", "experiments.train"]
        if r["status"] == "ok":
            assert training.read_result(trial / "result.json")["status"] == "complete"

    plots = sorted((workdir / "analysis" / "plots").glob("*.png"))
    assert {p.name for p in plots} >= {"curves_blobs_mlp_steps.png", "profile_fpe.png"}
    for p in plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000

    # Rerun (the library call behind the same command): nothing runs, nothing is rewritten.
    stamps = {r["id"]: (Path(r["path"]) / "status.json").stat().st_mtime_ns for r in rows}
    lines = []
    report = sweeps.run_sweep(
        workdir,
        sweeps.load_sweep(sweep_file),
        [str(tiny_gin)],
        backend=sweeps.LocalBackend(parallel=2),
        emit=lines.append,
    )
    assert report.ran == [] and len(report.skipped) == 4
    assert report.counts == {"ok": 3, "failed": 1}
    assert "4 of 4 trials already finished" in lines[0]
    for r in rows:
        status = json.loads((Path(r["path"]) / "status.json").read_text())
        assert status["attempt"] == 1
        assert (Path(r["path"]) / "status.json").stat().st_mtime_ns == stamps[r["id"]]


def test_interrupted_trial_resumes_from_its_checkpoint(tmp_path, tiny_gin):
    spec_ = sweeps.parse_sweep({"grid": {"Adam.learning_rate": [0.01]}, "seeds": [0]})
    (trial,) = sweeps.expand(spec_)
    workdir = tmp_path / "sweep"
    folder = runner.trial_dir(workdir, trial.trial_id)
    # A trial killed after its first checkpoint: the trainer stopped at step 10 of 20.
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings([str(tiny_gin)], trial.gin_lines())
        assert training.run(str(folder), stop_after=10) is None
    finally:
        gin.clear_config()
    launch.write_json_atomic(str(folder / "status.json"), {"status": "running", "attempt": 1})

    report = sweeps.run_sweep(workdir, spec_, [str(tiny_gin)], emit=lambda line: None)
    assert [o.status for o in report.ran] == ["ok"]
    assert "Resuming" in (folder / "log.txt").read_text()
    result = training.read_result(folder / "result.json")
    assert result["status"] == "complete" and result["steps"] == 20
    assert json.loads((folder / "status.json").read_text())["attempt"] == 2


@pytest.mark.xdist_group("cluster")
def test_ray_backend_same_outputs_with_a_diverged_trial(tmp_path, tiny_gin):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'dirgrad_opt[ray]')")
    spec_ = sweeps.parse_sweep(
        {"grid": {"train.optimizer": ["@SGD()"], "SGD.learning_rate": [0.01, 1e30]}, "seeds": [0]}
    )
    workdir = tmp_path / "sweep"
    report = sweeps.run_sweep(
        workdir,
        spec_,
        [str(tiny_gin)],
        backend=sweeps.RayBackend(parallel=2, cpus_per_trial=1),
        emit=lambda line: None,
    )
    statuses = {o.trial_id: o.status for o in report.ran}
    assert sorted(statuses.values()) == ["diverged", "ok"]
    for trial_id, status in statuses.items():
        folder = runner.trial_dir(workdir, trial_id)
        for name in ("trial.json", "bindings.gin", "status.json", "log.txt", "result.json"):
            assert (folder / name).exists(), name
        assert json.loads((folder / "status.json").read_text())["status"] == status
        result = training.read_result(folder / "result.json")
        assert result["status"] == ("complete" if status == "ok" else "diverged")
    diverged = next(t for t, s in statuses.items() if s == "diverged")
    assert (
        "diverged"
        in json.loads((runner.trial_dir(workdir, diverged) / "status.json").read_text())["error"]
    )
    csv_path, _ = sweeps.write_tables(workdir)
    assert sorted(r["status"] for r in read_csv(csv_path) if r["kind"] == "trial") == [
        "diverged",
        "ok",
    ]
