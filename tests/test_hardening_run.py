"""``experiments.train`` under a user's mistakes and a cluster's faults (issue 10, run side).

Two runs on one workdir, damaged checkpoints, foreign folders, non-finite evaluations,
learning rates that cannot train, SIGTERM/SIGINT, full disks and bad flags: each ends in one
clear line and a documented exit code, loses nothing, and a rerun resumes bit-exactly.
Processes are real where the guarantee is about processes (locks, signals, resource limits);
the rest runs the command's ``main`` in-process (the same code path, without the ~5 s import).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gin
import keras
import problems
import pytest
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dirgrad_opt import training, workdir_lock  # noqa: E402
from experiments import train as cli  # noqa: E402

TINY = "\n".join(
    [
        *problems.TINY_RUN,
        "train.optimizer = @Adam()",
        "train.num_steps = 10",
        "train.eval_every = 5",
        "train.checkpoint_every = 5",
        "train.log_every = 5",
    ]
)
TIME_KEYS = problems.TIME_KEYS
run_cli = problems.run_cli
# A run long enough to be signalled while it trains; its chunks are 5 steps (milliseconds), and
# it never checkpoints by itself: any checkpoint is the interrupted step's.
LONG = [
    "train.num_steps = 1000000",
    "train.checkpoint_every = 1000000",
    "train.eval_every = 10",
]


@gin.configurable(module="tests")
def nan_at_eval_mlp(input_shape, num_classes):
    """An MLP whose outputs are NaN in inference mode only: finite training, NaN evaluation."""
    inputs = keras.Input(shape=tuple(input_shape))
    h = keras.layers.Dense(16, activation="tanh")(inputs)
    logits = keras.layers.Dense(num_classes)(h)
    return keras.Model(inputs, _NanAtEval()(logits), name="nan_at_eval_mlp")


class _NanAtEval(keras.layers.Layer):
    def call(self, x, training=None):
        return x if training else x * float("nan")


@pytest.fixture
def tiny_gin(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gin"
    path.write_text(TINY + "\n")
    return path


def command(gin_file: Path, workdir: Path, *params: str) -> list[str]:
    cmd = [sys.executable, "-m", "experiments.train", f"--gin_file={gin_file}"]
    return [*cmd, *(f"--gin_param={p}" for p in params), f"--workdir={workdir}"]


def env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


def start(gin_file: Path, workdir: Path, log: Path, *params: str) -> subprocess.Popen:
    return subprocess.Popen(
        command(gin_file, workdir, *params),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


def wait_for_training(proc: subprocess.Popen, workdir: Path, log: Path) -> None:
    """Blocks until the run has written its first training record (it is then in its loop;
    the step-0 evaluation record comes before any step, so it is not enough)."""
    deadline = time.time() + 120
    metrics = workdir / "metrics.jsonl"
    while not (metrics.exists() and '"kind": "train"' in metrics.read_text()):
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, "no metrics record within 120 s"
        time.sleep(0.05)


def in_process(workdir: Path, gin_file: Path, *params: str, stop_after: int | None = None):
    gin.clear_config()
    gin.parse_config_files_and_bindings([str(gin_file)], list(params), skip_unknown=False)
    return training.run(str(workdir), stop_after=stop_after)


def strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records]


def comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "times"}


# -- 1 and 6: one process per workdir; SIGINT/SIGTERM checkpoint, exit 143, resume bit-exactly --
@pytest.mark.slow
def test_second_run_is_refused_and_sigint_checkpoints_without_traceback(tmp_path, tiny_gin, capsys):
    workdir, log = tmp_path / "run", tmp_path / "log.txt"
    proc = start(tiny_gin, workdir, log, *LONG)
    try:
        wait_for_training(proc, workdir, log)
        # A second run on the same workdir is refused at once, naming the holder.
        assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={workdir}") == 2
        line = problems.train_error_line(capsys)
        assert f"pid {proc.pid} on host {socket.gethostname()}" in line and "in use" in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == cli.EXIT_PREEMPTED
    finally:
        proc.kill()
    err = log.read_text()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    result = training.read_result(workdir / "result.json")
    assert result["status"] == "interrupted" and "SIGINT" in result["error"]
    step = result["steps"]
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith(f"ckpt-{step}")
    assert f"train: interrupted by SIGINT at step {step}" in err.strip().splitlines()[-1]


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_and_the_rerun_resumes_bit_exactly(tmp_path, tiny_gin):
    workdir, log = tmp_path / "run", tmp_path / "log.txt"
    proc = start(tiny_gin, workdir, log, *LONG)
    try:
        wait_for_training(proc, workdir, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == cli.EXIT_PREEMPTED, log.read_text()
    finally:
        proc.kill()
    result = training.read_result(workdir / "result.json")
    step = result["steps"]
    assert result["status"] == "interrupted" and "SIGTERM" in result["error"]
    assert step >= 5 and step % 5 == 0
    # The only checkpoint is of the interrupted step (the run would write none before 10⁶).
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith(f"ckpt-{step}")
    # The rerun resumes from that step; 15-20 steps later its records (train-loss window means,
    # evaluations) equal those of a run never interrupted, bit for bit.
    stop = step - step % 10 + 20  # an evaluation step
    assert in_process(workdir, tiny_gin, *LONG, stop_after=stop) is None
    fresh = tmp_path / "fresh"
    assert in_process(fresh, tiny_gin, *LONG, stop_after=stop) is None
    resumed = strip(training.read_metrics(workdir / "metrics.jsonl"))
    assert resumed == strip(training.read_metrics(fresh / "metrics.jsonl"))
    assert resumed[-1]["step"] == stop and resumed[-1]["kind"] == "eval"


@pytest.mark.slow
def test_a_sweep_workdir_held_by_another_driver_is_refused(tmp_path, tiny_gin):
    sweep_file = tmp_path / "sweep.json"
    sweep_file.write_text(json.dumps({"grid": {"Adam.learning_rate": [0.01]}, "seeds": [0]}))
    workdir = tmp_path / "sweep"
    workdir.mkdir()
    with workdir_lock.hold(workdir, "sweep workdir"):  # this process plays the other driver
        proc = subprocess.run(
            [sys.executable, "-m", "experiments.sweep", f"--gin_file={tiny_gin}"]
            + [f"--sweep_file={sweep_file}", f"--workdir={workdir}"],
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sweep: error: sweep workdir") and f"pid {os.getpid()} on host" in last
    assert sorted(os.listdir(workdir)) == [workdir_lock.LOCK_FILE]  # no trial was started


# -- 2: a non-finite evaluation follows the diverged path ----------------------------------------
def test_nan_evaluation_is_recorded_and_exits_3_also_on_rerun(tmp_path, tiny_gin, capsys):
    workdir = tmp_path / "run"
    args = (
        f"--gin_file={tiny_gin}",
        "--gin_param=create_model.model_fn = @nan_at_eval_mlp",
        f"--workdir={workdir}",
    )
    assert run_cli(*args) == cli.EXIT_DIVERGED
    line = problems.train_error_line(capsys)
    # The model is NaN in inference mode from the start: the step-0 evaluation catches it.
    assert "evaluation at step 0 is not finite" in line and "test_loss = nan" in line
    assert "no finite training loss yet" in line
    result = training.read_result(workdir / "result.json")
    assert result["status"] == "diverged" and result["steps"] == 0
    assert result["final"]["test_loss"] is None and result["final"]["step"] == 0
    evals = [r for r in training.read_metrics(workdir / "metrics.jsonl") if r["kind"] == "eval"]
    assert len(evals) == 1 and evals[0]["test_loss"] is None and evals[0]["train_loss"] is None
    assert run_cli(*args) == cli.EXIT_DIVERGED  # the rerun reports it again, one line
    assert "evaluation at step 0 is not finite" in problems.train_error_line(capsys)


# -- 3: damaged checkpoints ----------------------------------------------------------------------
def test_resume_walks_back_past_damaged_checkpoints_and_refuses_when_none_reads(
    tmp_path, tiny_gin, capsys, caplog
):
    workdir = tmp_path / "run"
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={workdir}") == 0
    ckpts = workdir / "checkpoints"
    expected = comparable(training.read_result(workdir / "result.json"))
    expected_records = strip(training.read_metrics(workdir / "metrics.jsonl"))

    # A truncated newest data file: resume from ckpt-5, saying ckpt-10 was skipped.
    (workdir / "result.json").unlink()
    data10 = ckpts / "ckpt-10.data-00000-of-00001"
    data10.write_bytes(data10.read_bytes()[:40])
    caplog.clear()
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={workdir}") == 0
    assert "skipping damaged checkpoint" in caplog.text and "ckpt-10" in caplog.text
    assert "at step 5/10" in caplog.text
    assert comparable(training.read_result(workdir / "result.json")) == expected

    # A garbage `checkpoint` state file: the files are listed, the run resumes at step 10.
    (workdir / "result.json").unlink()
    (ckpts / "checkpoint").write_text("garbage {{{\n")
    caplog.clear()
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={workdir}") == 0
    assert "at step 10/10" in caplog.text
    assert comparable(training.read_result(workdir / "result.json")) == expected
    assert strip(training.read_metrics(workdir / "metrics.jsonl")) == expected_records

    # No checkpoint reads (a corrupt index, a truncated data file): refused, nothing touched.
    (workdir / "result.json").unlink()
    (ckpts / "ckpt-10.index").write_bytes(b"\x00" * 64)
    data5 = ckpts / "ckpt-5.data-00000-of-00001"
    data5.write_bytes(data5.read_bytes()[:40])
    metrics = (workdir / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={workdir}") == 2
    line = problems.train_error_line(capsys)
    assert "none of the 2 checkpoints" in line and "refusing to restart from step 0" in line
    assert (workdir / "metrics.jsonl").read_bytes() == metrics
    assert not (workdir / "result.json").exists()

    # Checkpoints moved away, as the message says: a restart from zero keeps tensorboard/.
    events = set((workdir / "tensorboard").iterdir())
    ckpts.rename(tmp_path / "damaged")
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={workdir}") == 0
    assert events < set((workdir / "tensorboard").iterdir())


# -- 4: a run writes only its own files ----------------------------------------------------------
def test_empty_workdir_flag_and_foreign_folders_are_refused_untouched(tmp_path, tiny_gin, capsys):
    os.chdir(tmp_path)  # `--workdir=` must not train into the current folder
    assert run_cli(f"--gin_file={tiny_gin}", "--workdir=") == 2
    assert "--workdir is empty" in problems.train_error_line(capsys)
    assert sorted(os.listdir(tmp_path)) == ["tiny.gin"]

    foreign = tmp_path / "mine"
    (foreign / "tensorboard").mkdir(parents=True)
    (foreign / "tensorboard" / "events.out").write_text("someone's events")
    (foreign / "metrics.jsonl").write_text("not ours\n")
    (foreign / "notes.txt").write_text("keep")
    before = {p: p.read_bytes() for p in foreign.rglob("*") if p.is_file()}
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={foreign}") == 2
    line = problems.train_error_line(capsys)
    assert "is not a run of experiments.train" in line and "notes.txt" in line
    after = {p: p.read_bytes() for p in foreign.rglob("*") if p.is_file()}
    assert after == before


# -- 5: learning rates that cannot train; a stalled line search ----------------------------------
@pytest.mark.parametrize(
    ("bindings", "culprit"),
    [
        (("Adam.learning_rate = -1.0",), "Adam.learning_rate must be finite and >= 0, got -1.0"),
        (("Adam.learning_rate = 1e999",), "Adam.learning_rate must be finite and >= 0, got inf"),
        (
            (
                "train.optimizer = @DirectionalOptimizer()",
                "DirectionalOptimizer.learning_rate = 1e999",
            ),
            "learning_rate must be finite and > 0, got inf",
        ),
        (
            (
                "train.optimizer = @ArmijoLineSearch()",
                "ArmijoLineSearch.direction = @Adam()",
                "Adam.learning_rate = -0.5",
            ),
            "Adam.learning_rate must be finite and >= 0, got -0.5",
        ),
    ],
)
def test_bad_learning_rates_exit_2_naming_them(tmp_path, tiny_gin, capsys, bindings, culprit):
    workdir = tmp_path / "run"
    params = [f"--gin_param={b}" for b in bindings]
    assert run_cli(f"--gin_file={tiny_gin}", *params, f"--workdir={workdir}") == 2
    assert culprit in problems.train_error_line(capsys)
    assert not workdir.exists()


def test_a_line_search_rejecting_every_step_stops_as_stalled(tmp_path, tiny_gin, capsys):
    workdir = tmp_path / "run"
    bindings = [
        "train.optimizer = @ArmijoLineSearch()",
        "ArmijoLineSearch.initial_step = 1e6",  # every trial overshoots; one trial per step
        "ArmijoLineSearch.max_step = 1e6",
        "ArmijoLineSearch.max_evaluations = 1",
        "train.max_rejected_steps = 3",
    ]
    args = [f"--gin_param={b}" for b in bindings]
    assert run_cli(f"--gin_file={tiny_gin}", *args, f"--workdir={workdir}") == 3
    line = problems.train_error_line(capsys)
    assert "stalled: ArmijoLineSearch rejected every step for 3 consecutive steps" in line
    result = training.read_result(workdir / "result.json")
    assert result["status"] == "stalled" and result["steps"] == 3


# -- 7: one line naming the path and errno -------------------------------------------------------
def test_workdir_below_a_file_or_unwritable_is_one_line_with_errno(tmp_path, tiny_gin, capsys):
    (tmp_path / "afile").write_text("x")
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={tmp_path / 'afile' / 'run'}") == 2
    line = problems.train_error_line(capsys)
    assert "afile" in line and "[Errno 20 ENOTDIR]" in line
    unwritable = Path("/sys/dirgrad_opt_run") if os.geteuid() == 0 else tmp_path / "ro" / "run"
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={unwritable}") == 2
    line = problems.train_error_line(capsys)
    assert str(unwritable) in line and "[Errno" in line


@pytest.mark.slow
def test_disk_full_while_checkpointing_is_one_line_and_leaves_no_temp_folder(tmp_path, tiny_gin):
    """A file-size limit (EFBIG, as ENOSPC would) hits the first checkpoint's data file."""
    workdir = tmp_path / "run"
    limit = 32 * 1024  # the 8-512-2 MLP's checkpoint with Adam slots is ~70 KB

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        command(tiny_gin, workdir, "mlp.widths = (512,)"),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_files,
        check=False,
    )
    assert proc.returncode == cli.EXIT_IO_ERROR, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train: error: cannot write checkpoint ") and "ckpt-5" in last
    assert "Traceback" not in proc.stderr
    assert not [p for p in (workdir / "checkpoints").iterdir() if "_temp" in p.name]


def test_stale_lock_is_taken_over_and_corrupt_records_are_one_line(tmp_path, tiny_gin, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is gone: the lock it "left" is stale
    stale = {"pid": dead.pid, "host": socket.gethostname(), "argv": ["x", f"--workdir={workdir}"]}
    (workdir / workdir_lock.LOCK_FILE).write_text(json.dumps(stale))
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={workdir}") == 0
    assert training.read_result(workdir / "result.json")["status"] == "complete"
    assert (workdir / workdir_lock.LOCK_FILE).read_text() == ""  # released
    with workdir_lock.hold(workdir):  # two open files exclude each other even in one process
        with pytest.raises(workdir_lock.WorkdirLocked, match=f"pid {os.getpid()} on host"):
            workdir_lock.acquire(workdir)
    capsys.readouterr()

    (workdir / "result.json").write_text("{not json")
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={workdir}") == 2
    line = problems.train_error_line(capsys)
    assert "result.json: not valid JSON" in line and "move it away" in line

    (workdir / "result.json").unlink()
    (workdir / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    assert run_cli(f"--gin_file={tiny_gin}", f"--workdir={workdir}") == 2
    assert "metrics.jsonl:1: missing field(s)" in problems.train_error_line(capsys)

    include = tmp_path / "inc.gin"
    include.write_text("include 'no/such/file.gin'\n")
    assert run_cli(f"--gin_file={include}", f"--workdir={tmp_path / 'other'}") == 2
    line = problems.train_error_line(capsys)
    assert "no/such/file.gin" in line and "inc.gin" in line


def test_flag_errors_exit_2_in_one_line(tmp_path):
    for bad in (["--no_such_flag=1"], []):  # unknown flag; missing --workdir
        proc = subprocess.run(
            [sys.executable, "-m", "experiments.train", *bad],
            cwd=tmp_path,
            env=env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("train: error: "), lines


# -- 8: `best` survives a deleted metrics.jsonl --------------------------------------------------
def test_best_comes_from_the_checkpoint_not_from_metrics_jsonl(tmp_path, tiny_gin):
    # Descent for 15 steps, then ascent: the best losses are reached by step 15.
    bindings = (
        "train.num_steps = 30",
        "Adam.learning_rate = @PiecewiseConstantDecay()",
        "PiecewiseConstantDecay.boundaries = [15]",
        "PiecewiseConstantDecay.values = [0.05, -0.05]",
    )
    full = in_process(tmp_path / "full", tiny_gin, *bindings)
    assert full["best"]["test_loss"]["step"] <= 15  # so the check below can fail
    workdir = tmp_path / "run"
    assert in_process(workdir, tiny_gin, *bindings, stop_after=15) is None
    (workdir / "metrics.jsonl").unlink()
    resumed = in_process(workdir, tiny_gin, *bindings)
    assert resumed["best"] == full["best"]
