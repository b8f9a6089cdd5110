"""Benchmark of the line-search optimizers against Keras SGD and Adam on the MNIST-1D MLP.

Problem (the same for every variant): MNIST-1D (4000 train / 1000 test, 40 features, generated
by the ``mnist1d`` package, no network), the residual MLP of the MNIST-1D code
(:func:`dirgrad_opt.models.mnist1d_mlp`, width 256, 79k weights), softmax cross-entropy, batch
100 (40 steps per epoch), the same initial weights and the same order of mini-batches.

Variants: Keras ``SGD(0.1)`` and ``Adam(1e-2)`` (a ``GradientTape`` + ``apply_gradients``
step), and ``ArmijoLineSearch(steps_per_epoch=40)`` (the SLS reset heuristic with the true
number of batches per epoch), ``ArmijoLineSearch()`` (defaults), ``WolfeLineSearch()``,
``PolyakStep()`` and ``ArmijoLineSearch(direction=Adam(1e-2))`` (``opt.minimize``).

Two ways to train, both measured in the same process:

1. **minimize loop**: one ``tf.function`` per variant (optimizer built before tracing, so it
   traces once) that gathers a batch and takes one step. Variants run **round-robin** in blocks
   of ``--block`` steps, in a shuffled order each round, so machine noise hits all alike. The
   first block (which traces) is dropped. Time per step is given as the 10th percentile over
   blocks (closest to an unloaded machine) and the median; the ratio to SGD (Adam) is the
   median over rounds of the *paired* ratio of block times (same round), in wall time and in
   process CPU time (less sensitive to other jobs on a shared machine).
2. **model.fit**: one ``fit`` call per epoch (same batch order as the loop, no shuffling in
   ``fit``), round-robin in blocks of ``--fit_block_epochs`` epochs after one warm-up epoch per
   variant. Time per step comes from a callback that times each epoch (``fit``'s set-up cost per
   call is reported separately).

Two diagnostic rows price the framework: ``DirectionalOptimizer(0.1)`` is exactly SGD(0.1)
through ``minimize`` (same trajectory; its ratio to Keras SGD is the base class's overhead), and
"1 forward pass only" is the price of one trial point. From them, "÷ its passes' cost" divides a
variant's time by ``F·t_forward + B·(t_SGD − t_forward)`` for its ``F`` forward and ``B``
backward passes per step (paired per round): above 1 is the optimizer's own bookkeeping.

Cost: ``forward passes/step`` counts every forward pass of the network (1 for the gradient plus
one per trial point); ``trial evals/step`` counts only the line search's trial points (the
``evaluations`` the optimizer reports). Both are averaged over the steps after
``--warmup_steps``. Benefit: full training-set loss and test accuracy of the final weights
(evaluation is not timed).

    python scripts/bench_line_searches.py [--steps=4000] [--fit_epochs=100] [--out=FILE]

Prints Markdown tables to stdout (and ``--out``).
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from benchlib import machine  # noqa: E402

from dirgrad_opt import keras_fit, models, optimizers  # noqa: E402

_STEPS = flags.DEFINE_integer("steps", 4000, "training steps per variant in the minimize loop")
_BLOCK = flags.DEFINE_integer("block", 20, "steps per timed block (minimize loop)")
_WARMUP = flags.DEFINE_integer(
    "warmup_steps", 200, "steps excluded from the evaluations-per-step averages"
)
_FIT_EPOCHS = flags.DEFINE_integer(
    "fit_epochs", 100, "epochs per variant through model.fit (the first is an untimed warm-up)"
)
_FIT_BLOCK = flags.DEFINE_integer("fit_block_epochs", 3, "epochs per timed block (model.fit)")
_JIT = flags.DEFINE_boolean("jit_compile", False, "compile the steps with XLA")
_VARIANTS = flags.DEFINE_list("variants", None, "subset of variants to run (default: all)")
_SKIP_FIT = flags.DEFINE_boolean("skip_fit", False, "skip the model.fit part")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the initial weights and the batch order")
_OUT = flags.DEFINE_string("out", None, "also write the Markdown report to this file")

BATCH_SIZE = 100
BASELINES = ("sgd", "adam")


@dataclass(frozen=True)
class Variant:
    """One row of the benchmark: a name, a label, and how to build its optimizer.

    ``kind`` is ``"keras"`` (a stock Keras optimizer, ``apply_gradients``), ``"closure"`` (a
    :class:`~dirgrad_opt.optimizers.DirectionalOptimizer`, ``minimize``) or ``"forward"`` (a
    diagnostic that only evaluates the loss once per step and never trains).
    """

    name: str
    label: str
    make: Callable[[], keras.optimizers.Optimizer | None]
    kind: str = "closure"

    @property
    def closure(self) -> bool:
        return self.kind == "closure"

    @property
    def trains(self) -> bool:
        return self.kind != "forward"


VARIANTS: tuple[Variant, ...] = (
    Variant("sgd", "Keras SGD(0.1)", lambda: keras.optimizers.SGD(0.1), "keras"),
    Variant("adam", "Keras Adam(1e-2)", lambda: keras.optimizers.Adam(1e-2), "keras"),
    Variant(
        "armijo_sls",
        "ArmijoLineSearch(steps_per_epoch=40)",
        lambda: optimizers.ArmijoLineSearch(steps_per_epoch=40),
    ),
    Variant("armijo", "ArmijoLineSearch()", lambda: optimizers.ArmijoLineSearch()),
    Variant("wolfe", "WolfeLineSearch()", lambda: optimizers.WolfeLineSearch()),
    Variant("polyak", "PolyakStep()", lambda: optimizers.PolyakStep()),
    Variant(
        "armijo_adam",
        "ArmijoLineSearch(direction=Adam(1e-2))",
        lambda: optimizers.ArmijoLineSearch(direction=keras.optimizers.Adam(1e-2)),
    ),
    # Diagnostics: the same update as SGD(0.1) through `minimize` (the base class's overhead),
    # and one forward pass alone (the price of a trial point).
    Variant(
        "base_sgd",
        "diag: DirectionalOptimizer(0.1) = SGD via minimize",
        lambda: optimizers.DirectionalOptimizer(learning_rate=0.1),
    ),
    Variant("forward", "diag: 1 forward pass only (no update)", lambda: None, "forward"),
)


# ------------------------------------------------------------------------------------------
# Problem
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """MNIST-1D arrays, the initial weights and the batch order shared by every variant."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    initial_weights: list[np.ndarray]
    batches: np.ndarray  # [num_steps, BATCH_SIZE] int32 indices into the training set

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x_train) // BATCH_SIZE


def mnist1d_arrays() -> dict[str, np.ndarray]:
    """MNIST-1D with the package defaults; Python's and NumPy's global RNG state are restored."""
    from mnist1d.data import get_dataset_args, make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        return make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


def make_model() -> keras.Model:
    """The residual MNIST-1D MLP (40 → 256 → +256 → 10)."""
    return models.mnist1d_mlp((40,), 10)


def make_problem(num_steps: int, seed: int) -> Problem:
    """Data, initial weights and ``num_steps`` mini-batches (one permutation per epoch)."""
    data = mnist1d_arrays()
    x_train = data["x"].astype(np.float32)
    y_train = data["y"].astype(np.int32)
    keras.utils.set_random_seed(seed)
    weights = make_model().get_weights()
    rng = np.random.default_rng(seed)
    per_epoch = len(x_train) // BATCH_SIZE
    epochs = -(-num_steps // per_epoch)
    order = np.concatenate(
        [rng.permutation(len(x_train))[: per_epoch * BATCH_SIZE] for _ in range(epochs)]
    )
    return Problem(
        x_train=x_train,
        y_train=y_train,
        x_test=data["x_test"].astype(np.float32),
        y_test=data["y_test"].astype(np.int32),
        initial_weights=weights,
        batches=order.reshape(-1, BATCH_SIZE)[:num_steps].astype(np.int32),
    )


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def evaluate(model: keras.Model, problem: Problem) -> dict[str, float]:
    """Full training-set loss and accuracy, test loss and accuracy (inference mode)."""
    out = {}
    for split, x, y in (
        ("train", problem.x_train, problem.y_train),
        ("test", problem.x_test, problem.y_test),
    ):
        logits = model(x, training=False)
        out[f"{split}_loss"] = float(LOSS(y, logits))
        out[f"{split}_acc"] = float(np.mean(np.argmax(logits, axis=-1) == y))
    return out


# ------------------------------------------------------------------------------------------
# Part 1: opt.minimize / apply_gradients in a tf.function loop
# ------------------------------------------------------------------------------------------


@dataclass
class LoopRun:
    """One variant's state and measurements in the minimize loop."""

    variant: Variant
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    step: Any  # the tf.function
    done: int = 0
    block_times: list[float] = field(default_factory=list)  # wall seconds per block
    block_cpu: list[float] = field(default_factory=list)  # process CPU seconds per block
    records: list[dict[str, Any]] = field(default_factory=list)  # per step, tensors
    curve: list[tuple[int, dict[str, float]]] = field(default_factory=list)


def make_loop_run(variant: Variant, problem: Problem, jit_compile: bool) -> LoopRun:
    """Builds the model (shared initial weights), the optimizer and the traced step."""
    model = make_model()
    model.set_weights(problem.initial_weights)
    opt = variant.make()
    variables = model.trainable_variables
    if opt is not None:
        opt.build(variables)
    x_all = tf.constant(problem.x_train)
    y_all = tf.constant(problem.y_train)

    if variant.closure:

        def step(idx: tf.Tensor) -> dict[str, tf.Tensor]:
            x, y = tf.gather(x_all, idx), tf.gather(y_all, idx)
            info = opt.minimize(lambda: LOSS(y, model(x, training=True)), variables)
            return {
                "loss": info["loss"],
                "step_size": info["step_size"],
                "forward_passes": info["forward_passes"],
                "backward_passes": info["backward_passes"],
                "evaluations": info.get("evaluations", tf.constant(0, tf.int32)),
            }

    elif variant.kind == "forward":

        def step(idx: tf.Tensor) -> dict[str, tf.Tensor]:
            x, y = tf.gather(x_all, idx), tf.gather(y_all, idx)
            loss = LOSS(y, model(x, training=True))
            return {
                "loss": loss,
                "step_size": tf.zeros_like(loss),
                "forward_passes": tf.constant(1, tf.int32),
                "backward_passes": tf.constant(0, tf.int32),
                "evaluations": tf.constant(0, tf.int32),
            }

    else:

        def step(idx: tf.Tensor) -> dict[str, tf.Tensor]:
            x, y = tf.gather(x_all, idx), tf.gather(y_all, idx)
            with tf.GradientTape() as tape:
                loss = LOSS(y, model(x, training=True))
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            one = tf.constant(1, tf.int32)
            return {
                "loss": loss,
                "step_size": tf.cast(opt.learning_rate, loss.dtype),
                "forward_passes": one,
                "backward_passes": one,
                "evaluations": tf.constant(0, tf.int32),
            }

    fn = tf.function(step, jit_compile=jit_compile)
    return LoopRun(variant, model, opt, fn)


def run_loop_block(run: LoopRun, batches: list[tf.Tensor], n: int) -> tuple[float, float]:
    """Runs ``n`` steps of ``run``; returns (wall, process CPU) seconds; outputs fetched after."""
    start = run.done
    outs = []
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(start, start + n):
        outs.append(run.step(batches[i]))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    run.records.extend({k: v.numpy() for k, v in o.items()} for o in outs)
    run.done += n
    return wall, cpu


def bench_loop(
    variants: list[Variant], problem: Problem, block: int, jit_compile: bool, log: Callable
) -> dict[str, LoopRun]:
    """Round-robin over variants in blocks; returns each variant's run."""
    runs = {v.name: make_loop_run(v, problem, jit_compile) for v in variants}
    batches = [tf.constant(b) for b in problem.batches]
    num_steps = len(batches)
    rounds = num_steps // block
    eval_every = max(1, rounds // 4)
    order_rng = random.Random(0)
    round_times: list[dict[str, tuple[float, float]]] = []
    t_start = time.perf_counter()
    for r in range(rounds):
        order = list(runs)
        order_rng.shuffle(order)
        times = {}
        for name in order:
            times[name] = run_loop_block(runs[name], batches, block)
        round_times.append(times)
        if (r + 1) % eval_every == 0 or r + 1 == rounds:
            for run in runs.values():
                if run.variant.trains:
                    run.curve.append((run.done, evaluate(run.model, problem)))
        elapsed = time.perf_counter() - t_start
        if (r + 1) % max(1, rounds // 10) == 0:
            log(
                f"  loop round {r + 1}/{rounds} ({(r + 1) * block} steps/variant) "
                f"{elapsed:.0f}s elapsed, ETA {elapsed / (r + 1) * (rounds - r - 1):.0f}s"
            )
    for name, run in runs.items():
        run.block_times = [rt[name][0] for rt in round_times]
        run.block_cpu = [rt[name][1] for rt in round_times]
        traces = run.step.experimental_get_tracing_count()
        if traces != 1:
            log(f"  WARNING: {name}'s step traced {traces} times (expected 1)")
    return runs


# ------------------------------------------------------------------------------------------
# Part 2: model.fit
# ------------------------------------------------------------------------------------------


class EpochTimer(keras.callbacks.Callback):
    """Wall and process CPU time of each epoch (``on_epoch_begin`` to ``on_epoch_end``)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.cpu: list[float] = []
        self._t0 = self._c0 = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._c0, self._t0 = time.process_time(), time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.times.append(time.perf_counter() - self._t0)
        self.cpu.append(time.process_time() - self._c0)


@dataclass
class FitRun:
    """One variant's model, timer and measurements through ``model.fit``."""

    variant: Variant
    model: keras.Model
    timer: EpochTimer
    epochs_done: int = 0
    call_seconds: float = 0.0  # total wall time of the timed fit calls (set-up included)
    forward_after_warmup: list[int] = field(default_factory=list)  # totals after each epoch
    traces: list[int] = field(default_factory=lambda: [0])  # Python calls of train_step


def make_fit_run(variant: Variant, problem: Problem, jit_compile: bool) -> FitRun:
    """A compiled model with shared initial weights; closure training for our optimizers."""
    model = make_model()
    model.set_weights(problem.initial_weights)
    if variant.closure:
        keras_fit.enable_closure_training(model)
    run = FitRun(variant, model, EpochTimer())
    inner = model.train_step

    def counted_train_step(data: Any) -> dict:
        run.traces[0] += 1  # runs once per trace (train_step is traced, not run eagerly)
        return inner(data)

    model.train_step = counted_train_step
    model.compile(
        optimizer=variant.make(), loss=LOSS, metrics=["accuracy"], jit_compile=jit_compile
    )
    return run


def fit_epoch(run: FitRun, problem: Problem, timed: bool) -> None:
    """One ``fit`` call over epoch ``run.epochs_done`` (batches in the loop's order)."""
    per_epoch = problem.steps_per_epoch
    e = run.epochs_done
    idx = problem.batches[e * per_epoch : (e + 1) * per_epoch].reshape(-1)
    ds = tf.data.Dataset.from_tensor_slices((problem.x_train[idx], problem.y_train[idx]))
    ds = ds.batch(BATCH_SIZE)
    t0 = time.perf_counter()
    hist = run.model.fit(
        ds, epochs=e + 1, initial_epoch=e, verbose=0, callbacks=[run.timer], shuffle=False
    )
    if timed:
        run.call_seconds += time.perf_counter() - t0
    del hist
    opt = run.model.optimizer
    if isinstance(opt, optimizers.DirectionalOptimizer):
        run.forward_after_warmup.append(int(opt.totals["forward_passes"].numpy()))
    run.epochs_done += 1


def bench_fit(
    variants: list[Variant],
    problem: Problem,
    epochs: int,
    block_epochs: int,
    jit_compile: bool,
    log: Callable,
) -> tuple[dict[str, FitRun], list[dict[str, tuple[float, float]]]]:
    """One untimed warm-up epoch per variant, then round-robin blocks of epochs."""
    runs = {v.name: make_fit_run(v, problem, jit_compile) for v in variants if v.trains}
    for run in runs.values():
        fit_epoch(run, problem, timed=False)
    order_rng = random.Random(1)
    round_times: list[dict[str, tuple[float, float]]] = []
    t_start = time.perf_counter()
    remaining = epochs - 1
    r = 0
    while remaining > 0:
        n = min(block_epochs, remaining)
        order = list(runs)
        order_rng.shuffle(order)
        times = {}
        for name in order:
            run = runs[name]
            before = len(run.timer.times)
            for _ in range(n):
                fit_epoch(run, problem, timed=True)
            times[name] = (sum(run.timer.times[before:]), sum(run.timer.cpu[before:]))
        round_times.append(times)
        remaining -= n
        r += 1
        elapsed = time.perf_counter() - t_start
        if r % 5 == 0 or remaining == 0:
            log(f"  fit block {r} ({epochs - remaining} epochs/variant) {elapsed:.0f}s elapsed")
    return runs, round_times


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over blocks of ``a_i / b_i`` (both from the same round)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def percentiles(xs: list[float]) -> tuple[float, float, float]:
    """10th, 50th and 75th percentiles."""
    q = np.percentile(np.asarray(xs), [10, 50, 75])
    return float(q[0]), float(q[1]), float(q[2])


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def pass_model_ratios(runs: dict[str, LoopRun], block: int) -> dict[str, float]:
    """Measured time ÷ the time its passes alone would take, per variant (median over blocks).

    Per round, a forward pass is priced at the ``forward`` diagnostic's time ``f`` and a
    backward pass (with its update) at ``s − f`` where ``s`` is Keras SGD's step time, so the
    estimate of a block with ``F`` forward and ``B`` backward passes per step is
    ``F·f + B·(s − f)``. A ratio of 1 means the step costs what its passes cost; the excess is
    the optimizer's own work (variable copies, assignments, the line-search loop).
    """
    if "sgd" not in runs or "forward" not in runs:
        return {}
    out = {}
    for name, run in runs.items():
        ratios = []
        for i in range(1, len(run.block_times)):  # skip the tracing block
            recs = run.records[i * block : (i + 1) * block]
            fwd = np.mean([r["forward_passes"] for r in recs])
            bwd = np.mean([r["backward_passes"] for r in recs])
            f, sgd = runs["forward"].block_times[i], runs["sgd"].block_times[i]
            ratios.append(run.block_times[i] / (fwd * f + bwd * (sgd - f)))
        out[name] = statistics.median(ratios)
    return out


def loop_table(runs: dict[str, LoopRun], block: int, warmup: int) -> list[str]:
    """Time per step, ratios, and passes per step for the minimize loop."""
    wall = {n: r.block_times[1:] for n, r in runs.items()}  # drop the tracing block
    cpu = {n: r.block_cpu[1:] for n, r in runs.items()}
    model_ratio = pass_model_ratios(runs, block)
    lines = [
        "| optimizer | ms/step p10 | ms/step median | ÷ SGD | ÷ Adam | ÷ SGD (CPU time) | "
        "forward passes/step | trial evals/step | backward passes/step | "
        "steps with > 1 trial | max trial evals in a step | ÷ its passes' cost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in runs.items():
        p10, med, _ = percentiles([t / block * 1e3 for t in wall[name]])
        ratios = [paired_ratio(wall[name], wall[b]) if b in wall else None for b in BASELINES]
        cpu_ratio = paired_ratio(cpu[name], cpu["sgd"]) if "sgd" in cpu else None
        after = run.records[warmup:]
        fwd = np.mean([rec["forward_passes"] for rec in after])
        bwd = np.mean([rec["backward_passes"] for rec in after])
        evals = np.array([rec["evaluations"] for rec in after])
        lines.append(
            f"| {run.variant.label} | {p10:.3f} | {med:.3f} | {fmt_ratio(ratios[0])} | "
            f"{fmt_ratio(ratios[1])} | {fmt_ratio(cpu_ratio)} | {fwd:.3f} | "
            f"{evals.mean():.3f} | {bwd:.3f} | {np.mean(evals > 1):.1%} | {evals.max()} | "
            f"{fmt_ratio(model_ratio.get(name))} |"
        )
    return lines


def quality_table(runs: dict[str, LoopRun]) -> list[str]:
    """Training loss / test accuracy along the run and the step sizes taken."""
    checkpoints = [step for step, _ in next(r for r in runs.values() if r.curve).curve]
    head = " | ".join(f"train loss @{s}" for s in checkpoints)
    lines = [
        f"| optimizer | {head} | test acc @{checkpoints[-1]} | best test acc (checkpoints) | "
        "median step size (last 1000 steps) |",
        "|---|" + "---:|" * (len(checkpoints) + 3),
    ]
    for run in runs.values():
        if not run.variant.trains:
            continue
        losses = " | ".join(f"{m['train_loss']:.4f}" for _, m in run.curve)
        final = run.curve[-1][1]
        best = max(m["test_acc"] for _, m in run.curve)
        steps = np.median([rec["step_size"] for rec in run.records[-1000:]])
        lines.append(
            f"| {run.variant.label} | {losses} | {final['test_acc']:.1%} | {best:.1%} | "
            f"{steps:.3g} |"
        )
    return lines


def fit_table(
    runs: dict[str, FitRun],
    round_times: list[dict[str, tuple[float, float]]],
    problem: Problem,
    warmup: int,
    loop_runs: dict[str, LoopRun] | None,
) -> list[str]:
    """Time per step through model.fit, ratios, passes, and the final weights' quality."""
    per_epoch = problem.steps_per_epoch
    lines = [
        "| optimizer | ms/step p10 | ms/step median | ÷ SGD fit | ÷ Adam fit | "
        "÷ SGD fit (CPU) | ÷ own loop (p10) | fit-call overhead ms/call | "
        "forward passes/step | trial evals/step | train loss | test acc | traces |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    wall = {n: [rt[n][0] for rt in round_times] for n in runs}
    cpu = {n: [rt[n][1] for rt in round_times] for n in runs}
    for name, run in runs.items():
        epoch_ms = [t / per_epoch * 1e3 for t in run.timer.times[1:]]  # drop warm-up epoch
        p10, med, _ = percentiles(epoch_ms)
        ratios = [paired_ratio(wall[name], wall[b]) if b in wall else None for b in BASELINES]
        cpu_ratio = paired_ratio(cpu[name], cpu["sgd"]) if "sgd" in cpu else None
        own = None
        if loop_runs and name in loop_runs:
            loop = loop_runs[name]
            block = len(loop.records) // len(loop.block_times)
            loop_p10 = percentiles([t / block * 1e3 for t in loop.block_times[1:]])[0]
            own = p10 / loop_p10
        timed_epochs = run.epochs_done - 1
        overhead = (run.call_seconds - sum(run.timer.times[1:])) / timed_epochs * 1e3
        if run.forward_after_warmup:
            # totals after each epoch; average over the epochs that end after `warmup` steps
            first = max(1, -(-warmup // per_epoch))
            totals = run.forward_after_warmup
            steps = (len(totals) - first) * per_epoch
            fwd = (totals[-1] - totals[first - 1]) / steps
            fwd_s, evals_s = f"{fwd:.3f}", f"{fwd - 1:.3f}"
        else:
            fwd_s, evals_s = "1", "0"
        quality = evaluate(run.model, problem)
        lines.append(
            f"| {run.variant.label} | {p10:.3f} | {med:.3f} | {fmt_ratio(ratios[0])} | "
            f"{fmt_ratio(ratios[1])} | {fmt_ratio(cpu_ratio)} | {fmt_ratio(own)} | "
            f"{overhead:.0f} | {fwd_s} | {evals_s} | {quality['train_loss']:.4f} | "
            f"{quality['test_acc']:.1%} | {run.traces[0]} |"
        )
    return lines


def main(argv: list[str]) -> None:
    del argv
    names = _VARIANTS.value or [v.name for v in VARIANTS]
    unknown = set(names) - {v.name for v in VARIANTS}
    if unknown:
        raise ValueError(
            f"--variants: unknown {sorted(unknown)}; choose from {[v.name for v in VARIANTS]}"
        )
    variants = [v for v in VARIANTS if v.name in names]
    if _STEPS.value % _BLOCK.value or _STEPS.value // _BLOCK.value < 3:
        raise ValueError(
            f"--steps ({_STEPS.value}) must be a multiple of --block ({_BLOCK.value}) "
            "with at least 3 blocks"
        )

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    steps = max(_STEPS.value, _FIT_EPOCHS.value * 40)
    problem = make_problem(steps, _SEED.value)
    loop_problem = Problem(**{**problem.__dict__, "batches": problem.batches[: _STEPS.value]})
    mode = "XLA (jit_compile=True)" if _JIT.value else "graph (tf.function, no XLA)"
    log(f"minimize loop: {len(variants)} variants × {_STEPS.value} steps, {mode}")
    loop_runs = bench_loop(variants, loop_problem, _BLOCK.value, _JIT.value, log)
    t_loop = time.perf_counter() - t0

    report = [
        "## Results",
        "",
        f"Machine: {machine()}. Mode: {mode}. Seed {_SEED.value}.",
        "",
        f"### 1. `opt.minimize` / `apply_gradients` in a `tf.function` loop "
        f"({_STEPS.value} steps per variant, blocks of {_BLOCK.value}, "
        f"{_STEPS.value // _BLOCK.value - 1} timed blocks; passes averaged over steps "
        f"{_WARMUP.value + 1}–{_STEPS.value})",
        "",
        *loop_table(loop_runs, _BLOCK.value, _WARMUP.value),
        "",
        f"### 3. Benefit: full training-set loss and test accuracy along the loop run "
        f"(same {_STEPS.value} steps, same batches)",
        "",
        *quality_table(loop_runs),
        "",
    ]
    if not _SKIP_FIT.value:
        log(f"model.fit: {len(variants)} variants × {_FIT_EPOCHS.value} epochs")
        fit_runs, round_times = bench_fit(
            variants, problem, _FIT_EPOCHS.value, _FIT_BLOCK.value, _JIT.value, log
        )
        report += [
            f"### 2. `model.fit` ({_FIT_EPOCHS.value} epochs = "
            f"{_FIT_EPOCHS.value * problem.steps_per_epoch} steps per variant, one `fit` call "
            f"per epoch; 1 warm-up epoch, then blocks of {_FIT_BLOCK.value} epochs; passes "
            f"averaged over the epochs after step {_WARMUP.value}; loss/accuracy of the "
            "final weights)",
            "",
            *fit_table(fit_runs, round_times, problem, _WARMUP.value, loop_runs),
            "",
        ]
    total = time.perf_counter() - t0
    load_after = os.getloadavg()
    report.append(
        f"Wall time: {total:.0f} s in total ({t_loop:.0f} s for the loop part), one process. "
        f"Load average (1/5/15 min) at start {'/'.join(f'{x:.1f}' for x in load_before)}, "
        f"at end {'/'.join(f'{x:.1f}' for x in load_after)} (other jobs shared the machine "
        "when it was above ~2)."
    )
    text = "\n".join(report)
    print(text)
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    app.run(main)
