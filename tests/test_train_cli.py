"""``python -m experiments.train``: flags, one-line configuration errors, exit codes, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import problems
import pytest
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `experiments` is a top-level package beside dirgrad_opt
    sys.path.insert(0, str(ROOT))

from dirgrad_opt import training  # noqa: E402
from experiments import train as cli  # noqa: E402

TINY = (
    "\n".join(problems.TINY_RUN)
    + """
train.optimizer = @Adam()
train.num_steps = 10
train.eval_every = 5
train.checkpoint_every = 5
train.log_every = 5
"""
)
TIME_KEYS = problems.TIME_KEYS
run_cli = problems.run_cli


@pytest.fixture
def tiny_gin(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gin"
    path.write_text(TINY)
    return path


@pytest.mark.parametrize(
    ("binding", "culprit"),
    [
        ("train.optimizer = @Adamm()", "Adamm"),  # unknown name
        ("Adam.learnig_rate = 0.1", "learnig_rate"),  # misspelt parameter
        ("train.num_stpes = 3", "num_stpes"),
        ("Adam.learning_rate = 'fast'", "learning_rate"),  # bad value
        ("train.num_steps = -5", "train.num_steps must be an integer >= 1"),
        ("train.eval_every = = 3", "train.eval_every"),  # syntax error
        ("load_dataset.name = 'mnist1dd'", "unknown dataset 'mnist1dd'"),
    ],
)
def test_config_errors_are_one_line_with_exit_code_2_and_no_output(
    tmp_path, tiny_gin, capsys, binding, culprit
):
    workdir = tmp_path / "run"
    code = run_cli(f"--gin_file={tiny_gin}", f"--gin_param={binding}", f"--workdir={workdir}")
    assert code == cli.EXIT_CONFIG_ERROR
    assert culprit in problems.train_error_line(capsys)
    assert not (workdir / "result.json").exists()
    assert not workdir.exists()


def test_missing_gin_file(tmp_path, capsys):
    code = run_cli("--gin_file=configs/nope.gin", f"--workdir={tmp_path / 'run'}")
    assert code == cli.EXIT_CONFIG_ERROR
    assert "configs/nope.gin" in problems.train_error_line(capsys)


def test_unprepared_tfds_dataset_fails_fast_with_instructions(
    tmp_path, tiny_gin, capsys, monkeypatch
):
    import tensorflow_datasets as tfds

    def refuse(*args, **kwargs):  # "fails fast": no download is attempted
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)
    code = run_cli(
        f"--gin_file={tiny_gin}",
        "--gin_param=load_dataset.name = 'mnist'",
        f"--gin_param=load_dataset.data_dir = '{tmp_path / 'tfds'}'",
        f"--workdir={tmp_path / 'run'}",
    )
    assert code == cli.EXIT_CONFIG_ERROR
    line = problems.train_error_line(capsys)
    assert "DatasetNotPreparedError" in line and "tfds build mnist" in line
    assert not (tmp_path / "run").exists()


def test_run_then_rerun_says_complete_without_retraining(tmp_path, tiny_gin, caplog):
    workdir = tmp_path / "run"
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={workdir}") == 0
    result = training.read_result(workdir / "result.json")
    assert result["status"] == "complete" and result["steps"] == 10
    stamp = (workdir / "result.json").stat().st_mtime_ns
    caplog.clear()
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={workdir}") == 0
    assert "already complete" in caplog.text
    assert (workdir / "result.json").stat().st_mtime_ns == stamp


def test_divergence_exits_3(tmp_path, tiny_gin, capsys):
    workdir = tmp_path / "run"
    code = run_cli(
        f"--gin_file={tiny_gin}",
        "--gin_param=train.optimizer = @SGD()",
        "--gin_param=SGD.learning_rate = 1e30",
        f"--workdir={workdir}",
    )
    assert code == cli.EXIT_DIVERGED
    assert "diverged" in problems.train_error_line(capsys)
    assert training.read_result(workdir / "result.json")["status"] == "diverged"


def _command(gin_file: Path, workdir: Path, *params: str) -> list[str]:
    cmd = [sys.executable, "-m", "experiments.train", f"--gin_file={gin_file}"]
    return [*cmd, *(f"--gin_param={p}" for p in params), f"--workdir={workdir}"]


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


def test_real_process_config_error_has_no_traceback(tmp_path, tiny_gin):
    proc = subprocess.run(
        _command(tiny_gin, tmp_path / "run", "Adam.learnig_rate = 0.1"),
        cwd=tmp_path,  # not the project root: gin paths must still resolve
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == cli.EXIT_CONFIG_ERROR
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("train: error: ")
    assert "learnig_rate" in proc.stderr


def _checkpoint_values(workdir: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(workdir / "checkpoints"))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if "clocks" not in name and not name.startswith("_CHECKPOINTABLE")
    }


# `python -m experiments.train` whose second checkpoint save announces itself on stdout and then
# blocks (before saving) until the process is killed: the kill lands at a known point, after the
# first checkpoint and with records past it on disk, however fast the machine is.
_BLOCK_AT_SECOND_CHECKPOINT = """
import runpy, sys, threading
import tensorflow as tf
save, calls = tf.train.CheckpointManager.save, []
def save_or_block(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        print("blocked", flush=True)
        threading.Event().wait()
    return save(self, *args, **kwargs)
tf.train.CheckpointManager.save = save_or_block
sys.argv = ["experiments.train", *sys.argv[1:]]
runpy.run_module("experiments.train", run_name="__main__")
"""


@pytest.mark.slow
def test_kill_9_then_rerun_equals_uninterrupted_run(tmp_path):
    """The "Done when" check: SIGKILL after the first checkpoint, rerun, compare bit for bit."""
    gin_file = tmp_path / "long.gin"
    gin_file.write_text(
        TINY
        + "train.optimizer = @ArmijoLineSearch()\n"
        + "train.num_steps = 300\ntrain.checkpoint_every = 100\ntrain.eval_every = 100\n"
        + "train.log_every = 20\n"
    )
    full, killed = tmp_path / "full", tmp_path / "killed"
    kw = {"cwd": ROOT, "env": _env(), "capture_output": True, "text": True, "timeout": 600}
    subprocess.run(_command(gin_file, full), check=True, **kw)

    command = _command(gin_file, killed)
    proc = subprocess.Popen(
        [sys.executable, "-c", _BLOCK_AT_SECOND_CHECKPOINT, *command[3:]],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "blocked", "the run ended before step 200"
        assert tf.train.latest_checkpoint(str(killed / "checkpoints")).endswith("ckpt-100")
        logged = [r["step"] for r in training.read_metrics(killed / "metrics.jsonl")]
        assert max(logged) == 200  # records past the checkpoint: the rerun must drop them
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "result.json").exists()

    rerun = subprocess.run(_command(gin_file, killed), check=True, **kw)
    assert "Resuming" in rerun.stderr

    a = training.read_result(full / "result.json")
    b = training.read_result(killed / "result.json")
    a.pop("times"), b.pop("times")
    assert a == b
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rs]  # noqa: E731
    assert strip(training.read_metrics(killed / "metrics.jsonl")) == strip(
        training.read_metrics(full / "metrics.jsonl")
    )
    va, vb = _checkpoint_values(full), _checkpoint_values(killed)
    assert va.keys() == vb.keys()
    for name in va:
        np.testing.assert_array_equal(va[name], vb[name], err_msg=name)
