"""What a training process does besides training: the step-0 evaluation, tracing kept out of
the training clock (``trace_s``), and the imports it skips (Keras's sklearn/matplotlib extras)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gin
import problems

from dirgrad_opt import training

ROOT = Path(__file__).resolve().parents[1]


def test_step_zero_evaluation_and_trace_s(tmp_path: Path):
    gin.parse_config(
        [*problems.TINY_RUN, "train.optimizer = @Adam()", "train.num_steps = 10",
         "train.eval_every = 5", "train.log_every = 5", "train.progress_every_s = 1000.0"]
    )  # fmt: skip
    result = training.run(str(tmp_path))
    records = training.read_metrics(tmp_path / "metrics.jsonl")
    first = records[0]
    assert (first["kind"], first["step"], first["train_time_s"]) == ("eval", 0, 0.0)
    assert first["forward_passes"] == 0 and first["test_loss"] > 0
    assert [r["step"] for r in records if r["kind"] == "eval"] == [0, 5, 10]
    assert result["times"]["trace_s"] > 0
    assert all(r["trace_s"] == result["times"]["trace_s"] for r in records)
    assert result["best"]["test_loss"]["step"] > 0  # training improved on the initial weights


def _python(code: str) -> str:
    env = {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600, check=True)  # fmt: skip
    return proc.stdout.strip()


def test_training_imports_skip_keras_extras():
    code = (
        "import sys\n"
        "from experiments import startup\n"
        "startup.import_keras()\n"
        "import dirgrad_opt.training\n"
        "print('sklearn' in sys.modules, 'matplotlib' in sys.modules)\n"
        "import sklearn\n"
        "print(sklearn.__name__, dirgrad_opt.optimizers.ArmijoLineSearch.__name__)\n"
    )
    assert _python(code).splitlines() == ["False False", "sklearn ArmijoLineSearch"]
