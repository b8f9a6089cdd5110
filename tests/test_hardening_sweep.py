"""Issue 10 on the sweep and analysis side: signals to a sweep driver reach its trials (marked
``interrupted``, resumed by a rerun); Ray Ctrl-C and unreachable clusters end promptly; I/O
failures and corrupt files are one line with exit 2; the analysis skips unreadable runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import problems
import pytest

ROOT = Path(__file__).resolve().parents[1]

# The smallest real problem with enough steps (~2 ms each) to be caught mid-run, and a
# checkpoint every 50 steps so a rerun resumes.
LONG = "\n".join(
    [
        *problems.TINY_RUN,
        "train.optimizer = @Adam()",
        "train.num_steps = 3000",
        "train.eval_every = 1000",
        "train.checkpoint_every = 50",
        "train.log_every = 50",
        "train.progress_every_s = 1000.0",
    ]
)


def _cli(module: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=kwargs.pop("cwd", ROOT),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Polls ``predicate`` until it returns a truthy value (event-driven, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended before {what}: {proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _status(folder: Path) -> dict:
    try:
        return json.loads((folder / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _sweep_setup(tmp_path: Path, gin_text: str, sweep: dict) -> tuple[str, ...]:
    gin_file = tmp_path / "run.gin"
    gin_file.write_text(gin_text)
    sweep_file = tmp_path / "sweep_file.json"
    sweep_file.write_text(json.dumps(sweep))
    workdir = tmp_path / "sweep"
    return (f"--gin_file={gin_file}", f"--sweep_file={sweep_file}", f"--workdir={workdir}")


# -- point 6: SIGTERM to a sweep driver -------------------------------------------------------
@pytest.mark.slow
def test_sigterm_to_a_sweep_reaches_its_trial_which_is_interrupted_then_resumed(tmp_path):
    args = _sweep_setup(tmp_path, LONG, {"grid": {"Adam.learning_rate": [0.01]}, "seeds": [0]})
    trials = tmp_path / "sweep" / "trials"
    driver = _cli("experiments.sweep", *args, "--plots=false")
    try:
        # Wait until the trial runs and has written a checkpoint, then SIGTERM the driver only.
        folder = _wait_for(lambda: next(trials.glob("*"), None), 60, "the trial folder", driver)
        pid = _wait_for(lambda: _status(folder).get("pid"), 60, "the trial's pid", driver)
        _wait_for(
            lambda: (folder / "checkpoints" / "checkpoint").exists(), 90, "a checkpoint", driver
        )
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "interrupted (SIGTERM)" in err
    status = _status(folder)
    assert status["status"] == "interrupted", status
    assert not _alive(pid)  # forwarded, not orphaned
    assert not (folder / "result.json").exists()

    rerun = _cli("experiments.sweep", *args, "--plots=false")
    _, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err[-3000:]
    status = _status(folder)
    assert status["status"] == "ok" and status["attempt"] == 2
    assert "Resuming" in (folder / "log.txt").read_text()


@pytest.mark.slow
@pytest.mark.xdist_group("cluster")
def test_ray_sweep_unreachable_address_and_ctrl_c(tmp_path):
    """An unreachable --ray_address is one line and exit 2 after the connect timeout (Ray alone
    retried for minutes); Ctrl-C on a Ray sweep stops its trial at once (it took ~35 s: the
    driver sat in a 30 s ray.wait and the cancelled task in a blocking waitpid) and leaves it
    ``interrupted``, not ``running``."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'dirgrad_opt[ray]')")
    args = _sweep_setup(tmp_path, LONG, {"grid": {"Adam.learning_rate": [0.01]}, "seeds": [0]})
    unreachable = _cli(
        "experiments.sweep",
        *args,
        "--backend=ray",
        "--ray_address=127.0.0.1:1",
        "--ray_connect_timeout_s=2",
    )
    _, err = unreachable.communicate(timeout=120)
    assert unreachable.returncode == 2, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("sweep: error:")]
    assert "cannot connect to the Ray cluster at '127.0.0.1:1'" in line and "Traceback" not in err
    trials = tmp_path / "sweep" / "trials"
    assert not list(trials.glob("*/status.json"))  # nothing ran

    driver = _cli("experiments.sweep", *args, "--backend=ray", "--plots=false")
    try:
        folder = _wait_for(lambda: next(trials.glob("*"), None), 120, "the trial folder", driver)
        pid = _wait_for(lambda: _status(folder).get("pid"), 120, "the trial's pid", driver)
        driver.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = driver.communicate(timeout=25)  # was ~35 s before the fix
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 128 + signal.SIGINT, err[-3000:]
    assert _status(folder)["status"] == "interrupted"
    assert not _alive(pid)


# -- points 7 and 8: unreadable runs are skipped; I/O errors are one line ------------------------
def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    proc = _cli(module, *args)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _error_lines(stderr: str, prefix: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def _break_two_runs(sweep: Path, ids: list[str]) -> tuple[Path, Path]:
    """Truncates the second trial's result.json and corrupts a line of the third's metrics."""
    result = sweep / "trials" / ids[1] / "result.json"
    result.write_text(result.read_text()[:100])
    metrics = sweep / "trials" / ids[2] / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0] + '{"kind": "eval", "step": \n' + "".join(lines[1:]))
    return result, metrics


def _synthetic_trials(sweep: Path, ids: list[str]) -> None:
    from test_analyze import add_trial, eval_records, fake_result

    for trial_id, loss in zip(ids, (0.3, 0.4, 0.5), strict=False):
        config_id, seed = trial_id.rsplit("-s", 1)
        add_trial(sweep, config_id, int(seed), {"Adam.learning_rate": loss}, "ok",
                  result=fake_result(int(seed), "complete", "Adam", loss, 0.8),
                  evals=eval_records([0.5, 0.7, 0.8], [1.0, 0.6, loss]))  # fmt: skip


def test_analyze_skips_unreadable_runs_and_io_errors_are_one_line(tmp_path):
    from dirgrad_opt import sweeps

    sweep = tmp_path / "sweep"
    ids = ["cA-s0", "cA-s1", "cB-s0"]
    _synthetic_trials(sweep, ids)
    (sweep / "sweep.json").write_text(json.dumps({"trials": ids}))
    result, metrics = _break_two_runs(sweep, ids)

    proc = _run(
        "experiments.analyze", f"--workdir={sweep}", "--target=train_loss<=0.6", "--noplots"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "skipping an unreadable run" in line]
    assert len(warnings) == 2 and "Traceback" not in proc.stderr
    assert str(result) in warnings[0] and f"{metrics}:2: not valid JSON" in warnings[1]
    board = (sweep / "analysis" / "leaderboard.md").read_text()
    assert "## Skipped: 2 unreadable run(s)" in board and str(result) in board
    assert "| blobs/mlp | Adam |" in board  # the readable run is reported
    rows = (sweep / "summary.csv").read_text()
    assert "cA-s0" in rows and "cA-s1" not in rows and "cB-s0" not in rows

    skipped: list[str] = []  # nothing readable: a ValueError (one line, exit 2 in the CLI)
    (sweep / "sweep.json").write_text(json.dumps({"trials": ids[1:]}))
    with pytest.raises(ValueError, match="no readable runs under .* 2 unreadable"):
        sweeps.discover([sweep], skipped)
    assert len(skipped) == 2

    below_a_file = tmp_path / "a_file"
    below_a_file.write_text("not a folder")
    (sweep / "sweep.json").write_text(json.dumps({"trials": ids}))
    proc = _run("experiments.analyze", f"--workdir={sweep}", f"--output_dir={below_a_file}/out")
    assert proc.returncode == 2
    (line,) = _error_lines(proc.stderr, "analyze: error:")
    assert str(below_a_file) in line and "[ENOTDIR]" in line and "Traceback" not in proc.stderr


def test_sweep_report_skips_an_unreadable_trial_and_io_errors_are_one_line(tmp_path):
    from dirgrad_opt import sweeps

    sweep_spec = {"grid": {"Adam.learning_rate": [0.3, 0.4, 0.5]}, "seeds": [0]}
    args = _sweep_setup(tmp_path, "\n".join(problems.TINY_RUN), sweep_spec)
    sweep = tmp_path / "sweep"
    ids = [t.trial_id for t in sweeps.expand(sweeps.parse_sweep(sweep_spec))]
    _synthetic_trials(sweep, ids)  # finished trials: the rerun only writes the report
    result, metrics = _break_two_runs(sweep, ids)

    proc = _run("experiments.sweep", *args, "--plots=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 of 3 trials already finished" in proc.stderr and "Traceback" not in proc.stderr
    assert str(result) in proc.stderr and str(metrics) in proc.stderr
    rows = (sweep / "summary.csv").read_text()
    assert ids[0] in rows and ids[1] not in rows and ids[2] not in rows
    assert "2 unreadable run(s)" in (sweep / "analysis" / "leaderboard.md").read_text()

    below_a_file = tmp_path / "a_file"
    below_a_file.write_text("not a folder")
    args = (*args[:2], f"--workdir={below_a_file}/sweep")
    proc = _run("experiments.sweep", *args)
    assert proc.returncode == 2
    (line,) = _error_lines(proc.stderr, "sweep: error:")
    assert str(below_a_file) in line and "[ENOTDIR]" in line and "Traceback" not in proc.stderr


def test_a_trial_stopped_by_a_signal_is_interrupted_not_failed(tmp_path):
    """The trainer exits 143/130 after its preemption checkpoint (or dies of the signal): a
    rerun resumes it, so it is ``interrupted`` whoever sent the signal; SIGKILL stays failed."""
    from dirgrad_opt.sweeps import runner

    for code, name in ((143, "SIGTERM"), (130, "SIGINT"), (-15, "SIGTERM"), (-2, "SIGINT")):
        status, error = runner.classify(tmp_path, code, "")
        assert status == runner.INTERRUPTED and name in error, code
    assert runner.classify(tmp_path, -9, "")[0] == runner.FAILED
    job = runner.TrialJob("t", str(tmp_path), ("python",), 1)
    raw = {"exit_code": 0, "duration_s": 1.0, "host": "h", "stopped": True}
    assert runner.finish(job, raw).status == runner.INTERRUPTED  # stopped before its result
    assert _status(tmp_path)["status"] == runner.INTERRUPTED
    assert runner.needs_run(tmp_path)
