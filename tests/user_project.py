"""A researcher's project outside the repository, written into a temporary folder by the tests
of user modules and union sweeps: their own optimizer module, a gin file that imports it, and
the command line that runs ``experiments.*`` with this worktree importable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: ``my_opt.py``: an optimizer subclass with a new hyperparameter and no ``get_config`` and a
#: dataset, both registered by the module itself (``dirgrad_opt.register_optimizer`` /
#: ``register_dataset``). Each import appends the process id to the file
#: named by ``$MY_OPT_IMPORT_LOG`` (if set), so tests can count the processes that import it.
MY_OPT = '''
import os

import numpy as np
import tensorflow as tf

import dirgrad_opt
from dirgrad_opt import optimizers

if os.environ.get("MY_OPT_IMPORT_LOG"):
    with open(os.environ["MY_OPT_IMPORT_LOG"], "a") as f:
        f.write(f"{os.getpid()}\\n")


@dirgrad_opt.register_optimizer
class ScaledStep(optimizers.DirectionalOptimizer):
    """Gradient descent with step learning_rate * factor (a new hyperparameter, no get_config)."""

    def __init__(self, learning_rate=0.1, factor=0.5, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.factor = factor

    def compute_step_size(self, ctx, loss, direction, slope):
        t, accepted = super().compute_step_size(ctx, loss, direction, slope)
        return t * tf.cast(self.factor, loss.dtype), accepted


def my_points():
    """Three Gaussian clusters in 8-d: 200 training and 100 test points, integer labels."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=300)
    x = (rng.normal(size=(300, 8)) + 2.0 * np.eye(3, 8)[y]).astype("float32")
    return (x[:200], y[:200]), (x[200:], y[200:])


dirgrad_opt.register_dataset("my_points", my_points)
'''

#: The smallest real problem and step budget (the user's 8-d points, 16-unit MLP, 20 steps).
TINY = [
    "load_dataset.name = 'my_points'",
    "load_dataset.batch_size = 20",
    "create_model.model_fn = @mlp",
    "mlp.widths = (16,)",
    "train.num_steps = 20",
    "train.eval_every = 10",
    "train.checkpoint_every = 10",
    "train.log_every = 10",
    "train.progress_every_s = 1000.0",
]


def write_project(folder: Path, gin_import: bool = True) -> Path:
    """Writes ``my_opt.py`` and ``exp.gin`` (training ``ScaledStep``; with ``import my_opt``
    at its top when ``gin_import``) into ``folder``; returns the gin file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "my_opt.py").write_text(MY_OPT)
    lines = ["import my_opt"] if gin_import else []
    lines += [*TINY, "train.optimizer = @ScaledStep()", "ScaledStep.factor = 0.25"]
    gin_file = folder / "exp.gin"
    gin_file.write_text("\n".join(lines) + "\n")
    return gin_file


def run(module: str, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout=600):
    """``python -m <module> args`` in ``cwd`` with this worktree importable; the result."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), full_env.get("PYTHONPATH", "")])
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_line(proc: subprocess.CompletedProcess, prefix: str) -> str:
    """The ``<prefix>: error: ...`` line of a failed command (asserting there is one)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"{prefix}: error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]
