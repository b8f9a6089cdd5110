"""Throughput of the experiment runner against Keras ``model.fit`` (same model, data, batch, Adam).

    python scripts/bench_runner.py                       # MNIST-1D MLP, 8000 steps, 3 repeats
    python scripts/bench_runner.py --models=mlp,cnn,logreg --steps=8000 --repeats=3

Each measurement runs in a fresh subprocess (op determinism, which the runner turns on, is a
process-wide switch). One *repeat* runs every variant once, in alternating order (forward on
even repeats, backward on odd ones); the ratios are taken **within a repeat** (a pair run
back to back under the same machine load) and the report gives the median over repeats of
those per-pair ratios, beside the median seconds:

* ``fit``: ``model.compile(Adam(1e-2), sparse CE from logits, metrics=["accuracy"])`` then the
  wall time of ``model.fit(ds.train, steps_per_epoch=steps, epochs=1)`` (tracing included; the
  dataset and model are built before the clock starts); Keras's default
  ``steps_per_execution=1`` (back to Python after every step).
* ``fit_spe``: the same with ``compile(steps_per_execution=chunk)``, ``chunk`` = the runner's
  chunk (``--chunk``, default 100 = its ``log_every`` here): Keras then also runs ``chunk``
  steps per call into the graph, as a Keras user tuning throughput would set it.
* ``runner``: :func:`dirgrad_opt.training.train` with the same dataset, model, Adam and batch
  size, one final evaluation and checkpoint; reported as ``train_s`` (the loop: chunks incl.
  their tracing) and ``call_s`` (the whole ``train()`` call: data loading, model building,
  step tracing, evaluation, checkpoint and file outputs).

Ratio = fit seconds / runner ``train_s`` (> 1: the runner is faster), per repeat, then median.
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


def _measure_fit(model_name: str, steps: int, steps_per_execution: int = 1) -> dict:
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
        steps_per_execution=steps_per_execution,
    )
    t0 = time.perf_counter()
    model.fit(ds.train, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - t0
    _, accuracy = model.evaluate(ds.test, verbose=0)
    return {"fit_s": seconds, "test_accuracy": float(accuracy)}


def _measure_runner(model_name: str, steps: int, jit: bool, chunk: int) -> dict:
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
        f"train.log_every = {chunk}",
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


def _child(kind: str, model_name: str, steps: int, chunk: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    if kind == "fit":
        out = _measure_fit(model_name, steps)
    elif kind == "fit_spe":
        out = _measure_fit(model_name, steps, steps_per_execution=chunk)
    else:
        out = _measure_runner(model_name, steps, jit=kind == "runner_xla", chunk=chunk)
    print("RESULT " + json.dumps(out), flush=True)


def _spawn(kind: str, model_name: str, steps: int, chunk: int) -> dict:
    cmd = [sys.executable, __file__, f"--_child={kind}", f"--models={model_name}"]
    cmd += [f"--steps={steps}", f"--chunk={chunk}"]
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
    parser.add_argument(
        "--chunk", type=int, default=100, help="runner log_every = fit steps_per_execution"
    )
    parser.add_argument("--xla", action="store_true", help="also time the runner with XLA")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        _child(args._child, args.models, args.steps, args.chunk)
        return
    kinds = ["fit", "fit_spe", "runner"] + (["runner_xla"] if args.xla else [])
    print(
        f"MNIST-1D, Adam 1e-2, batch 100, {args.steps} steps, chunk {args.chunk}; "
        f"{args.repeats} repeats, median of per-repeat ratios (seconds: medians)"
    )
    header = f"{'model':<8}{'fit s':>8}{'fit spe s':>11}{'runner s':>10}{'call s':>8}"
    header += f"{'fit/runner':>12}{'fit_spe/runner':>16}{'fit acc':>9}{'runner acc':>12}"
    if args.xla:
        header += f"{'xla s':>8}{'xla/runner':>12}"
    print(header)
    for model_name in args.models.split(","):
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        for repeat in range(args.repeats):
            for kind in kinds if repeat % 2 == 0 else kinds[::-1]:
                runs[kind].append(_spawn(kind, model_name, args.steps, args.chunk))

        def med(kind: str, key: str, runs: dict = runs) -> float:
            return statistics.median(r[key] for r in runs[kind])

        def ratio(a: str, a_key: str, b: str, runs: dict = runs) -> float:
            pairs = zip(runs[a], runs[b], strict=True)
            return statistics.median(x[a_key] / y["train_s"] for x, y in pairs)

        line = f"{model_name:<8}{med('fit', 'fit_s'):>8.2f}{med('fit_spe', 'fit_s'):>11.2f}"
        line += f"{med('runner', 'train_s'):>10.2f}{med('runner', 'call_s'):>8.2f}"
        line += f"{ratio('fit', 'fit_s', 'runner'):>12.2f}"
        line += f"{ratio('fit_spe', 'fit_s', 'runner'):>16.2f}"
        line += (
            f"{runs['fit'][0]['test_accuracy']:>9.3f}{runs['runner'][0]['test_accuracy']:>12.3f}"
        )
        if args.xla:
            line += f"{med('runner_xla', 'train_s'):>8.2f}"
            line += f"{ratio('runner_xla', 'train_s', 'runner'):>12.2f}"
        print(line, flush=True)
        per_repeat = [
            f"{f['fit_s'] / r['train_s']:.2f}/{s['fit_s'] / r['train_s']:.2f}"
            for f, s, r in zip(runs["fit"], runs["fit_spe"], runs["runner"], strict=True)
        ]
        print(f"  per-repeat fit/runner, fit_spe/runner: {' '.join(per_repeat)}", flush=True)


if __name__ == "__main__":
    main()
