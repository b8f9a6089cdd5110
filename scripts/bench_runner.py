"""Throughput of the experiment runner against Keras ``model.fit`` (same model, data, batch, Adam).

    python scripts/bench_runner.py                       # MNIST-1D MLP, 8000 steps, 3 repeats
    python scripts/bench_runner.py --models=mlp,cnn,logreg --steps=8000 --repeats=3

Each measurement runs in a fresh subprocess (op determinism, which the runner turns on, is a
process-wide switch), alternating fit and runner, and reports the median over repeats:

* ``fit``: ``model.compile(Adam(1e-2), sparse CE from logits, metrics=["accuracy"])`` then the
  wall time of ``model.fit(ds.train, steps_per_epoch=steps, epochs=1)`` (tracing included; the
  dataset and model are built before the clock starts).
* ``runner``: :func:`dirgrad_opt.training.train` with the same dataset, model, Adam and batch
  size, one final evaluation and checkpoint; reported as ``train_s`` (the loop: chunks incl.
  their tracing) and ``call_s`` (the whole ``train()`` call: data loading, model building,
  step tracing, evaluation, checkpoint and file outputs).

Ratio = fit seconds / runner seconds (> 1: the runner is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"logreg": "logistic_regression", "mlp": "mnist1d_mlp", "cnn": "mnist1d_cnn"}


def _measure_fit(model_name: str, steps: int) -> dict:
    import keras

    from dirgrad_opt.data import load_dataset
    from dirgrad_opt.models import create_model

    ds = load_dataset("mnist1d", batch_size=100, seed=0)
    keras.utils.set_random_seed(0)
    model = create_model(ds.input_shape, ds.num_outputs, model_fn=MODELS[model_name])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    t0 = time.perf_counter()
    model.fit(ds.train, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - t0
    _, accuracy = model.evaluate(ds.test, verbose=0)
    return {"fit_s": seconds, "test_accuracy": float(accuracy)}


def _measure_runner(model_name: str, steps: int, jit: bool) -> dict:
    import gin

    from dirgrad_opt import training

    bindings = [
        "load_dataset.name = 'mnist1d'",
        f"create_model.model_fn = @{MODELS[model_name]}",
        "train.optimizer = @Adam()",
        "Adam.learning_rate = 1e-2",
        "train.batch_size = 100",
        f"train.num_steps = {steps}",
        f"train.eval_every = {steps}",
        f"train.checkpoint_every = {steps}",
        "train.log_every = 100",
        f"train.jit_compile = {jit}",
    ]
    gin.parse_config(bindings)
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        result = training.train(workdir=workdir)
        call_s = time.perf_counter() - t0
    return {
        "train_s": result["times"]["train_s"],
        "call_s": call_s,
        "test_accuracy": result["final"]["test_accuracy"],
    }


def _child(kind: str, model_name: str, steps: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    if kind == "fit":
        out = _measure_fit(model_name, steps)
    else:
        out = _measure_runner(model_name, steps, jit=kind == "runner_xla")
    print("RESULT " + json.dumps(out), flush=True)


def _spawn(kind: str, model_name: str, steps: int) -> dict:
    cmd = [sys.executable, __file__, f"--_child={kind}", f"--models={model_name}"]
    cmd.append(f"--steps={steps}")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{kind} {model_name} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp", help="comma-separated: logreg, mlp, cnn")
    parser.add_argument("--steps", type=int, default=8000, help="training steps (batch 100)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per setting")
    parser.add_argument("--xla", action="store_true", help="also time the runner with XLA")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        _child(args._child, args.models, args.steps)
        return
    kinds = ["fit", "runner"] + (["runner_xla"] if args.xla else [])
    print(f"MNIST-1D, Adam 1e-2, batch 100, {args.steps} steps, median of {args.repeats}")
    header = f"{'model':<8}{'fit s':>8}{'runner train s':>16}{'runner call s':>15}"
    header += f"{'ratio train':>13}{'ratio call':>12}{'fit acc':>9}{'runner acc':>12}"
    if args.xla:
        header += f"{'xla train s':>13}"
    print(header)
    for model_name in args.models.split(","):
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        for _ in range(args.repeats):
            for kind in kinds:
                runs[kind].append(_spawn(kind, model_name, args.steps))
        fit = statistics.median(r["fit_s"] for r in runs["fit"])
        train = statistics.median(r["train_s"] for r in runs["runner"])
        call = statistics.median(r["call_s"] for r in runs["runner"])
        line = f"{model_name:<8}{fit:>8.2f}{train:>16.2f}{call:>15.2f}"
        line += f"{fit / train:>13.2f}{fit / call:>12.2f}"
        line += (
            f"{runs['fit'][0]['test_accuracy']:>9.3f}{runs['runner'][0]['test_accuracy']:>12.3f}"
        )
        if args.xla:
            line += f"{statistics.median(r['train_s'] for r in runs['runner_xla']):>13.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
