"""Benchmark of the random-direction optimizers against backprop: cost, time, memory, accuracy.

Four parts (``--parts``), all in one process unless noted:

``step``
    One training step of each optimizer on the same MLP (default 784-512-512-10, relu, batch
    256, float32, softmax cross-entropy, synthetic data): ``ForwardGradient`` (K = 1, 4, 16,
    forward mode), ``ZerothOrder`` (exact restore and MeZO in-place), ``RandomDirectionLineSearch``,
    and — if ``dirgrad_opt.optimizers.guided`` imports — ``ParabolicLineSearch`` and
    ``DirectionalNewton``, against **backprop SGD** (``keras.optimizers.SGD`` applied to a
    ``tf.GradientTape`` gradient in a ``tf.function``) and a plain **forward pass** (the loss
    alone: the unit of cost). Every variant owns a copy of the model (same initial weights) and
    a ``tf.function`` step, traced and warmed up, then timed **round-robin**: each repetition
    calls every variant once in a shuffled order, so machine noise hits all alike. Reported:
    median ms and interquartile range, the paired median ratio to the forward pass and to SGD,
    the step's cost counters, and memory.

    *Memory* is TensorFlow's own allocator accounting, ``tf.config.experimental.
    get_memory_info("CPU:0")`` (it works on CPU in TF 2.21): before a step the peak is reset
    (``reset_memory_stats``) and the bytes in use are read (weights of every variant, optimizer
    state, the batch); after the step the peak is read. ``step peak`` = peak − in-use before: the
    transient memory of one step (activations kept for backprop, gradients, perturbations,
    snapshots, temporaries). It counts the tensors TF's CPU allocator hands out (also XLA's
    buffers) — not Python objects, not the allocator's slack, and not allocations below about
    128 KiB, which this counter does not see (measured: a 128 KiB activation leaves it at 0, a
    256 KiB one shows). ``state`` = bytes of the optimizer's own variables (persistent). TF's
    executor schedules independent ops differently from call to call, so the peak varies: the
    range (min–max) over ``--memory_repeats`` steps is reported.

``mnist1d``
    Test accuracy on MNIST-1D after a fixed budget of **forward-pass equivalents** (FPE), batch
    100, the residual MLP ``dirgrad_opt.models.mnist1d_mlp``. Convention: a forward pass = 1 FPE,
    a backward pass = 2 FPE, a JVP = 1 FPE on top of its forward pass. So a backprop step costs
    3 FPE, a forward-gradient step 2 per direction, a two-point zeroth-order step 2. Each method
    runs every learning rate of its grid for ``budget // FPE-per-step`` steps; the learning rate
    is chosen by the final *training* loss (never by test accuracy), and its test accuracy is
    reported.

``finetune``
    The MeZO regime: pretrain the MNIST-1D MLP with Adam, then fine-tune it on a shifted
    MNIST-1D (``--ft_shifts``: other noise / scale / shear / padding settings of the mnist1d
    generator, ``FT_SHIFTS``) with backprop and backprop-free methods at an equal FPE budget,
    per seed of ``--ft_seeds``. Each method's learning rate is chosen on examples held out from
    the shifted training set; reported: shifted test accuracy along the budget, mean ± std over
    seeds, source accuracy after, step peak memory (batch 100 and ``--ft_memory_batch``) and
    optimizer state.

``drift``
    The weights' drift of ``ZerothOrder`` with learning rate 0 after ``--drift_steps`` steps, in
    the exact mode (must be 0) and MeZO's in-place mode, on an MLP 40-64-10.

    python scripts/bench_optimizers.py [--parts=step,mnist1d,drift] [--repeats=30]
        [--compile=graph] [--out=FILE]
    python scripts/bench_optimizers.py --parts=finetune --ft_seeds=0,1,2 --ft_shifts=noise,geometry

Prints Markdown (the machine, the command, the tables) to stdout and to ``--out`` if given.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import tempfile
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

from dirgrad_opt import directions  # noqa: E402
from dirgrad_opt.optimizers import (  # noqa: E402
    ActivityForwardGradient,
    ActivityZerothOrder,
    LowRankZerothOrder,
    ModelClosure,
    SparseZerothOrder,
    ZOAdam,
)
from dirgrad_opt.optimizers.random_direction import (  # noqa: E402
    ForwardGradient,
    RandomDirectionLineSearch,
    ZerothOrder,
)

_PARTS = flags.DEFINE_list(
    "parts", ["step", "mnist1d", "drift"], "parts: step, mnist1d, drift, finetune"
)
_OUT = flags.DEFINE_string("out", None, "also write the Markdown report to this file")
_SEED = flags.DEFINE_integer("seed", 0, "seed of data, weights, directions and call order")
_COMPILE = flags.DEFINE_enum("compile", "graph", ["graph", "xla"], "tf.function mode (step part)")
_REPEATS = flags.DEFINE_integer("repeats", 30, "timed round-robin repetitions (step part)")
_MEMORY_REPEATS = flags.DEFINE_integer("memory_repeats", 3, "steps measured for memory")
_BATCH = flags.DEFINE_integer("batch_size", 256, "batch size of the step part (# examples)")
_WIDTHS = flags.DEFINE_list("widths", ["512", "512"], "hidden widths of the step-part MLP")
_MODEL = flags.DEFINE_enum(
    "model",
    "mlp",
    ["mlp", "mnist1d"],
    "step-part model: 'mlp' (784-widths-10, relu) or 'mnist1d' (the residual MNIST-1D MLP "
    "40-256-256-10 of dirgrad_opt.models.mnist1d_mlp, 78 858 weights; use --batch_size=100)",
)
_VARIANTS = flags.DEFINE_string(
    "variants",
    None,
    "step part: only these variant names, separated by ';' (names contain commas), plus the "
    "forward pass and SGD",
)
_BUDGET = flags.DEFINE_integer("budget_fpe", 30_000, "MNIST-1D budget in forward-pass equivalents")
_WIDTH_1D = flags.DEFINE_integer("mnist1d_width", 256, "width of the MNIST-1D residual MLP")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir for mnist1d (default: a tmp dir)")
_DRIFT_STEPS = flags.DEFINE_integer("drift_steps", 10_000, "steps of the drift part")
_MEMORY_BATCHES = flags.DEFINE_list(
    "memory_batches", ["64", "256", "1024", "4096"], "batch sizes of the memory-scaling table"
)

FORWARD_PASS = "forward pass (loss only)"
GENERATE_Z = "generate z (all weights, Gaussian)"
SGD = "backprop SGD"
ZO_EXACT = "ZerothOrder (exact)"
ZO_IN_PLACE = "ZerothOrder (in place)"
MEMORY_VARIANTS = (
    FORWARD_PASS,
    SGD,
    "ForwardGradient K=1",
    ZO_EXACT,
    ZO_IN_PLACE,
    "ZerothOrder (exact, Rademacher)",
    "ZerothOrder (in place, Rademacher)",
)
MB = 2.0**20


def fpe(forward: int, backward: int, jvps: int) -> int:
    """Forward-pass equivalents: forward 1, backward 2, JVP 1 extra (see module docstring)."""
    return forward + 2 * backward + jvps


# ----------------------------------------------------------------------------- part 1: step


@dataclass
class Variant:
    """One timed step function, its optimizer and its measurements."""

    name: str
    step: Callable[[], Any]
    optimizer: Any = None
    costs: tuple[int, int, int] | None = None
    times: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    note: str = ""


def _input_dim() -> int:
    return 40 if _MODEL.value == "mnist1d" else 784


def _mlp(seed: int, widths: list[int]) -> keras.Model:
    keras.utils.set_random_seed(seed)
    if _MODEL.value == "mnist1d":
        from dirgrad_opt.models import mnist1d_mlp

        return mnist1d_mlp((40,), 10, width=int(widths[0]) if widths else 256)
    layers = [keras.Input((784,))]
    layers += [keras.layers.Dense(w, activation="relu") for w in widths]
    layers += [keras.layers.Dense(10)]
    return keras.Sequential(layers)


def _cross_entropy(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))


def _loss_closure(model: keras.Model, x: tf.Tensor, y: tf.Tensor) -> Callable[[], tf.Tensor]:
    """The loss closure; a ``ModelClosure`` (same value) so activity methods see the layers."""
    return ModelClosure(model, _cross_entropy, x, y)


def _optimizer_variants() -> list[tuple[str, Callable[[], Any] | None, str]]:
    out: list[tuple[str, Callable[[], Any] | None, str]] = [
        ("ForwardGradient K=1", lambda: ForwardGradient(1e-4, num_directions=1), ""),
        ("ForwardGradient K=4", lambda: ForwardGradient(1e-4, num_directions=4), ""),
        ("ForwardGradient K=16", lambda: ForwardGradient(1e-4, num_directions=16), ""),
        (ZO_EXACT, lambda: ZerothOrder(1e-4), "Gaussian z (default)"),
        (ZO_IN_PLACE, lambda: ZerothOrder(1e-4, in_place=True), "Gaussian z"),
        (
            "ZerothOrder (exact, Rademacher)",
            lambda: ZerothOrder(1e-4, distribution="rademacher"),
            "±1 z: cheaper to generate",
        ),
        (
            "ZerothOrder (in place, Rademacher)",
            lambda: ZerothOrder(1e-4, in_place=True, distribution="rademacher"),
            "MeZO memory, ±1 z",
        ),
        (
            "ForwardGradient K=1 (Rademacher)",
            lambda: ForwardGradient(1e-4, distribution="rademacher"),
            "±1 v",
        ),
        ("ZOAdam (Rademacher)", lambda: ZOAdam(1e-4, distribution="rademacher"), ""),
        ("LowRankZerothOrder r=2", lambda: LowRankZerothOrder(1e-4), ""),
        ("SparseZerothOrder p=0.1", lambda: SparseZerothOrder(1e-4), ""),
        ("ActivityForwardGradient K=1", lambda: ActivityForwardGradient(1e-3), ""),
        ("ActivityZerothOrder K=1", lambda: ActivityZerothOrder(1e-3), ""),
        ("RandomDirectionLineSearch", lambda: RandomDirectionLineSearch(), ""),
    ]
    try:
        from dirgrad_opt.optimizers import guided
    except ImportError as err:  # pragma: no cover - depends on the tree
        out.append(("ParabolicLineSearch / DirectionalNewton", None, f"not importable: {err}"))
        return out
    for name in ("ParabolicLineSearch", "DirectionalNewton"):
        cls = getattr(guided, name, None)
        if cls is None:
            out.append((name, None, "not in dirgrad_opt.optimizers.guided"))
        else:
            out.append((f"{name} (defaults)", cls, ""))
    return out


def _selected_variants() -> list[str]:
    """The ``--variants`` names; an unknown name is an error listing the known ones."""
    names = [n.strip() for n in _VARIANTS.value.split(";") if n.strip()]
    known = {name for name, _, _ in _optimizer_variants()} | {FORWARD_PASS, SGD, GENERATE_Z}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise app.UsageError(f"--variants: unknown {unknown}; choose from {sorted(known)}")
    return names


def build_step_variants(
    seed: int, jit: bool, batch: int, only: tuple[str, ...] | None = None
) -> tuple[list[Variant], int]:
    """The step variants on the benchmark MLP at ``batch`` (all, or those named in ``only``)."""
    widths = [int(w) for w in _WIDTHS.value]
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((batch, _input_dim())), tf.float32)
    y = tf.constant(rng.integers(0, 10, batch), tf.int32)
    variants = []
    selected = None if _VARIANTS.value is None else _selected_variants()  # checked once

    def wanted(name: str) -> bool:
        if name in (FORWARD_PASS, SGD):
            return only is None or name in only
        if selected is not None and name not in selected:
            return False
        return only is None or name in only

    model = _mlp(seed, widths)
    num_weights = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    if wanted(FORWARD_PASS):
        forward = tf.function(_loss_closure(model, x, y), jit_compile=jit)
        variants.append(Variant(FORWARD_PASS, lambda f=forward: {"loss": f()}, costs=(1, 0, 0)))
    if wanted(GENERATE_Z):
        variables = model.trainable_variables
        counter = tf.Variable(0, dtype=tf.int64)  # a constant seed would be constant-folded

        @tf.function(jit_compile=jit)
        def generate(variables=variables, counter=counter) -> dict[str, tf.Tensor]:
            z = directions.gaussian(variables, directions.make_seed(seed, counter))
            counter.assign_add(1)
            return {"sum": tf.add_n([tf.reduce_sum(leaf) for leaf in z])}

        variants.append(Variant(GENERATE_Z, generate, costs=(0, 0, 0)))

    if wanted(SGD):
        model = _mlp(seed, widths)
        sgd = keras.optimizers.SGD(1e-4)
        sgd.build(model.trainable_variables)
        loss_fn = _loss_closure(model, x, y)

        @tf.function(jit_compile=jit)
        def sgd_step(model=model, loss_fn=loss_fn, sgd=sgd) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                loss = loss_fn()
            grads = tape.gradient(loss, model.trainable_variables)
            sgd.apply(grads, model.trainable_variables)
            return {"loss": loss}

        variants.append(Variant(SGD, sgd_step, optimizer=sgd, costs=(1, 1, 0)))

    for name, make, note in _optimizer_variants():
        if not wanted(name):
            continue
        if make is None:
            variants.append(Variant(name, None, note=note))
            continue
        model = _mlp(seed, widths)
        opt = make()
        opt.build(model.trainable_variables)
        loss_fn = _loss_closure(model, x, y)
        step = tf.function(
            lambda opt=opt, loss_fn=loss_fn, model=model: opt.minimize(
                loss_fn, model.trainable_variables
            ),
            jit_compile=jit,
        )
        variants.append(Variant(name, step, optimizer=opt, note=note))
    return variants, num_weights


def _sync(out: Any) -> Any:
    return tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)


def _measure_memory(variant: Variant, repeats: int) -> None:
    for _ in range(repeats):
        gc.collect()
        tf.config.experimental.reset_memory_stats("CPU:0")
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        _sync(variant.step())
        peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
        variant.peaks.append(peak - before)


def run_step_part(seed: int, jit: bool, repeats: int) -> tuple[list[Variant], int]:
    variants, num_weights = build_step_variants(seed, jit, _BATCH.value)
    live = [v for v in variants if v.step is not None]
    for v in live:  # trace, compile and warm up
        for _ in range(3):
            info = _sync(v.step())
        if v.costs is None:
            v.costs = (
                int(info["forward_passes"]),
                int(info["backward_passes"]),
                int(info["jvps"]),
            )
            if "evaluations" in info:
                v.note = f"{int(info['evaluations'])} trial step(s) in the measured step"
    for v in live:
        _measure_memory(v, _MEMORY_REPEATS.value)
    order = random.Random(seed)
    for r in range(repeats):
        batch = live[:]
        order.shuffle(batch)
        for v in batch:
            start = time.perf_counter()
            _sync(v.step())
            v.times.append(time.perf_counter() - start)
        if (r + 1) % 10 == 0:
            print(f"  step part: {r + 1}/{repeats} repetitions", file=sys.stderr)
    return variants, num_weights


def memory_scaling_table(seed: int, jit: bool, batches: list[int]) -> str:
    """Step peak (MB) of a few variants at several batch sizes (memory only, no timing)."""
    header = "| step | " + " | ".join(f"batch {b}" for b in batches) + " |"
    rows = {name: [] for name in MEMORY_VARIANTS}
    for batch in batches:
        variants, _ = build_step_variants(seed, jit, batch, only=MEMORY_VARIANTS)
        for v in variants:
            for _ in range(2):
                _sync(v.step())
            _measure_memory(v, _MEMORY_REPEATS.value)
            rows[v.name].append(_peak_range(v.peaks))
        del variants
        gc.collect()
    lines = [header, "|---|" + "---|" * len(batches)]
    for name in MEMORY_VARIANTS:
        if rows[name]:  # (a variant --variants left out has no row)
            lines.append(f"| {name} | " + " | ".join(rows[name]) + " |")
    return "\n".join(lines)


def _peak_range(peaks: list[int]) -> str:
    """``min–max`` of the step peaks in MB (the schedule of TF's executor varies per call)."""
    low, high = min(peaks) / MB, max(peaks) / MB
    return f"{high:.2f}" if abs(high - low) < 0.005 else f"{low:.2f}–{high:.2f}"


def _state_bytes(opt: Any) -> int:
    if opt is None:
        return 0
    return int(sum(np.prod(v.shape) * tf.as_dtype(v.dtype).size for v in opt.variables))


def step_table(variants: list[Variant], num_weights: int) -> str:
    by_name = {v.name: v for v in variants}
    fwd, sgd = by_name[FORWARD_PASS], by_name[SGD]
    lines = [
        "| step | fwd | bwd | JVP | FPE | median ms | IQR ms | × forward pass | × SGD "
        "| step peak MB | state MB | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        if v.step is None:
            lines.append(f"| {v.name} | | | | | | | | | | | {v.note} |")
            continue
        t = np.array(v.times) * 1e3
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        ratio_f = np.median(np.array(v.times) / np.array(fwd.times))
        ratio_s = np.median(np.array(v.times) / np.array(sgd.times))
        f, b, j = v.costs
        lines.append(
            f"| {v.name} | {f} | {b} | {j} | {fpe(f, b, j)} | {med:.2f} | {q1:.2f}–{q3:.2f} "
            f"| {ratio_f:.2f} | {ratio_s:.2f} | {_peak_range(v.peaks)} "
            f"| {_state_bytes(v.optimizer) / MB:.3f} | {v.note} |"
        )
    weights_mb = num_weights * 4 / MB
    width = 256 if _MODEL.value == "mnist1d" else int(_WIDTHS.value[0])
    lines.append("")
    lines.append(
        f"Model: {num_weights:,} weights = {weights_mb:.2f} MB (float32); one activation of "
        f"width {width} at batch {_BATCH.value} = {_BATCH.value * width * 4 / MB:.2f} MB."
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- part 2: mnist1d


def _mnist1d_methods() -> list[tuple[str, int, list[float], Callable[[float], Any]]]:
    """(name, FPE per step, learning-rate grid, factory)."""
    return [
        ("SGD (backprop)", 3, [0.1, 0.3, 0.6], lambda lr: keras.optimizers.SGD(lr)),
        ("Adam (backprop)", 3, [1e-3, 3e-3, 1e-2], lambda lr: keras.optimizers.Adam(lr)),
        ("ForwardGradient K=1", 2, [1e-4, 2e-4, 5e-4], lambda lr: ForwardGradient(lr)),
        (
            "ForwardGradient K=1 + Adam",
            2,
            [1e-4, 3e-4, 1e-3],
            lambda lr: ForwardGradient(inner=keras.optimizers.Adam(lr)),
        ),
        ("ZerothOrder K=1", 2, [1e-4, 2e-4, 5e-4], lambda lr: ZerothOrder(lr)),
    ]


def _train_mnist1d(ds: Any, make_opt: Callable[[], Any], steps: int, seed: int) -> dict[str, Any]:
    from dirgrad_opt.models import mnist1d_mlp

    keras.utils.set_random_seed(seed)
    model = mnist1d_mlp(ds.input_shape, ds.num_classes, width=_WIDTH_1D.value)
    variables = model.trainable_variables
    opt = make_opt()
    opt.build(variables)
    closure_based = hasattr(opt, "minimize")

    def loss_of(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        logits = model(x, training=False)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    @tf.function
    def train() -> tf.Tensor:
        last = tf.constant(0.0)
        for x, y in ds.train.take(steps):
            if closure_based:
                last = opt.minimize(lambda x=x, y=y: loss_of(x, y), variables)["loss"]
            else:
                with tf.GradientTape() as tape:
                    last = loss_of(x, y)
                opt.apply(tape.gradient(last, variables), variables)
        return last

    start = time.perf_counter()
    train()
    seconds = time.perf_counter() - start

    def evaluate(data: tf.data.Dataset) -> tuple[float, float]:
        total_loss, correct, count = 0.0, 0, 0
        for x, y in data:
            logits = model(x, training=False)
            total_loss += float(
                tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            )
            predictions = tf.argmax(logits, 1, output_type=tf.int32)
            correct += int(tf.reduce_sum(tf.cast(predictions == y, tf.int32)))
            count += int(tf.shape(y)[0])
        return total_loss / count, correct / count

    train_loss, train_acc = evaluate(ds.train_eval)
    test_loss, test_acc = evaluate(ds.test)
    return {
        "seconds": seconds,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_acc": test_acc,
    }


def run_mnist1d_part(seed: int, budget: int) -> str:
    from dirgrad_opt.data import load_dataset

    data_dir = _DATA_DIR.value or tempfile.mkdtemp(prefix="mnist1d_")
    ds = load_dataset(name="mnist1d", batch_size=100, seed=seed, data_dir=data_dir)
    lines = [
        f"Budget: {budget:,} FPE; batch 100; model `mnist1d_mlp(width={_WIDTH_1D.value})`; "
        "learning rate chosen by final training loss.",
        "",
        "| method | FPE/step | steps | lr (chosen) | train loss | train acc | test acc | "
        "wall s | all lrs: test acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, cost, grid, make in _mnist1d_methods():
        steps = budget // cost
        results = {}
        for lr in grid:
            results[lr] = _train_mnist1d(ds, lambda make=make, lr=lr: make(lr), steps, seed)
            r = results[lr]
            print(
                f"  mnist1d: {name} lr={lr:g}: train loss {r['train_loss']:.3f}, test acc "
                f"{r['test_acc']:.3f} ({r['seconds']:.0f} s)",
                file=sys.stderr,
            )
        finite = {lr: r for lr, r in results.items() if np.isfinite(r["train_loss"])}
        best = min(finite, key=lambda lr: finite[lr]["train_loss"]) if finite else grid[0]
        r = results[best]
        others = ", ".join(f"{lr:g}: {results[lr]['test_acc']:.3f}" for lr in grid)
        lines.append(
            f"| {name} | {cost} | {steps:,} | {best:g} | {r['train_loss']:.3f} | "
            f"{r['train_acc']:.3f} | {r['test_acc']:.3f} | {r['seconds']:.0f} | {others} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- part 4: finetune

_FT_PRETRAIN = flags.DEFINE_integer("ft_pretrain_steps", 4000, "finetune: Adam pretraining steps")
_FT_BUDGET = flags.DEFINE_integer("ft_budget_fpe", 6000, "finetune: budget in FPE per method")
_FT_EVAL = flags.DEFINE_integer("ft_eval_every_fpe", 1500, "finetune: FPE between evaluations")
_FT_SEEDS = flags.DEFINE_list("ft_seeds", [], "finetune: seeds (default: --seed)")
_FT_METHODS = flags.DEFINE_list(
    "ft_methods", [], "finetune: only the methods whose name starts with one of these"
)
_FT_VALID = flags.DEFINE_integer(
    "ft_validation_size", 500, "finetune: shifted training examples held out for selection"
)
_FT_MEMORY_BATCH = flags.DEFINE_integer(
    "ft_memory_batch", 1000, "finetune: batch of the second step-peak measurement (0: skip)"
)

#: Shifted MNIST-1D domains: (description, changes to ``mnist1d.data.get_dataset_args()``).
FT_SHIFTS: dict[str, tuple[str, Callable[[Any], None]]] = {
    "noise": (
        "5× i.i.d. noise, 2× correlated noise, scale_coeff 0.6",
        lambda a: (
            setattr(a, "iid_noise_scale", 5 * a.iid_noise_scale),
            setattr(a, "corr_noise_scale", 2 * a.corr_noise_scale),
            setattr(a, "scale_coeff", 0.6),
        ),
    ),
    "geometry": (
        "scale_coeff 0.8 (source 0.4), shear_scale 1.5 (0.75), padding 20–76 (36–60), "
        "noise unchanged",
        lambda a: (
            setattr(a, "scale_coeff", 0.8),
            setattr(a, "shear_scale", 1.5),
            setattr(a, "padding", [20, 76]),
        ),
    ),
}
_FT_SHIFTS = flags.DEFINE_list(
    "ft_shifts", ["noise"], "finetune: shifted domains, of " + ", ".join(FT_SHIFTS)
)


def _shifted_mnist1d(seed: int, shift: str = "noise") -> dict[str, np.ndarray]:
    """MNIST-1D regenerated with the generator changes of ``FT_SHIFTS[shift]`` and generator
    seed ``1000 + seed``: a shifted domain for fine-tuning (4000 train / 1000 test)."""
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    FT_SHIFTS[shift][1](args)
    args.seed = 1000 + seed
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        return mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


#: Learning rates of the weight-perturbation ZO methods (their winners sat at 1e-4, the top of
#: a first grid 1e-5..1e-4, on every seed and shift).
ZO_FT_GRID = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]


def _finetune_methods() -> list[tuple[str, int, list[float], Callable[[float], Any]]]:
    """(name, FPE per step, learning-rate grid, factory) of the fine-tuning study, filtered by
    ``--ft_methods``."""
    return [
        m
        for m in _all_finetune_methods()
        if not _FT_METHODS.value or any(m[0].startswith(p) for p in _FT_METHODS.value)
    ]


def _all_finetune_methods() -> list[tuple[str, int, list[float], Callable[[float], Any]]]:
    return [
        ("Adam (backprop)", 3, [1e-4, 3e-4, 1e-3], lambda lr: keras.optimizers.Adam(lr)),
        ("SGD (backprop)", 3, [0.01, 0.03, 0.1], lambda lr: keras.optimizers.SGD(lr)),
        (
            "ZerothOrder (MeZO, in place, ±1)",
            2,
            ZO_FT_GRID,
            lambda lr: ZerothOrder(lr, in_place=True, distribution="rademacher"),
        ),
        (
            "ZOAdam (±1)",
            2,
            ZO_FT_GRID,
            lambda lr: ZOAdam(lr, distribution="rademacher"),
        ),
        (
            "LowRankZerothOrder r=2",
            2,
            ZO_FT_GRID,
            lambda lr: LowRankZerothOrder(lr),
        ),
        (
            "ActivityZerothOrder + Adam",
            2,
            [1e-4, 3e-4, 1e-3],
            lambda lr: ActivityZerothOrder(inner=keras.optimizers.Adam(lr)),
        ),
        (
            "ActivityForwardGradient + Adam",
            2,
            [1e-4, 3e-4, 1e-3],
            lambda lr: ActivityForwardGradient(inner=keras.optimizers.Adam(lr)),
        ),
    ]


def _finetune_step(model: keras.Model, opt: Any, batch: int) -> tuple[Callable, Any, Any]:
    """A traced fine-tuning step of ``opt`` on batches fed through two variables."""
    closure_based = hasattr(opt, "minimize")
    xb = tf.Variable(tf.zeros([batch, 40]))
    yb = tf.Variable(tf.zeros([batch], tf.int32))

    @tf.function
    def step() -> tf.Tensor:
        if closure_based:
            closure = ModelClosure(model, _cross_entropy, xb.read_value(), yb.read_value())
            return opt.minimize(closure, model.trainable_variables)["loss"]
        with tf.GradientTape() as tape:
            loss = _cross_entropy(model(xb.read_value()), yb.read_value())
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    return step, xb, yb


def _step_peak(step: Callable[[], Any]) -> int:
    """Transient bytes of one step (TF allocator peak − bytes in use before it)."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step().numpy()
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def run_finetune_part(seed: int, shift: str = "noise", memory: bool = True) -> dict[str, Any]:
    """Pretrain with Adam on MNIST-1D, fine-tune on a shifted MNIST-1D at equal FPE budgets.

    Each method runs every learning rate of its grid from the same pretrained weights on the
    shifted training set minus ``--ft_validation_size`` held-out examples; the learning rate
    with the best final accuracy on those held-out examples (then the lowest loss) is kept, and
    its shifted *test* accuracies along the budget are reported. With ``memory``, the chosen
    setting's step peak is also measured at batch ``--ft_memory_batch``.
    """
    from dirgrad_opt.data import load_dataset
    from dirgrad_opt.models import mnist1d_mlp

    data_dir = _DATA_DIR.value or tempfile.mkdtemp(prefix="mnist1d_")
    source = load_dataset(name="mnist1d", batch_size=100, seed=seed, data_dir=data_dir)
    keras.utils.set_random_seed(seed)
    model = mnist1d_mlp((40,), 10, width=_WIDTH_1D.value)
    adam = keras.optimizers.Adam(1e-2)
    adam.build(model.trainable_variables)

    @tf.function
    def pretrain() -> None:
        for x, y in source.train.take(_FT_PRETRAIN.value):
            with tf.GradientTape() as tape:
                loss = _cross_entropy(model(x), y)
            adam.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    pretrain()
    pretrained = [v.numpy() for v in model.trainable_variables]
    shifted = _shifted_mnist1d(seed, shift)
    num_valid = _FT_VALID.value
    x_all, y_all = shifted["x"].astype(np.float32), shifted["y"].astype(np.int32)
    if not 0 < num_valid <= len(x_all) - 100:
        raise ValueError(f"--ft_validation_size={num_valid}: give 1..{len(x_all) - 100}")
    xs, ys = x_all[:-num_valid], y_all[:-num_valid]
    xv, yv = x_all[-num_valid:], y_all[-num_valid:]
    xt, yt = shifted["x_test"].astype(np.float32), shifted["y_test"].astype(np.int32)

    def evaluate(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        logits = model(tf.constant(x))
        loss = float(_cross_entropy(logits, tf.constant(y)))
        return loss, float(np.mean(np.argmax(logits.numpy(), 1) == y))

    def source_accuracy() -> float:
        correct = count = 0
        for x, y in source.test:
            correct += int(np.sum(np.argmax(model(x).numpy(), 1) == y.numpy()))
            count += int(y.shape[0])
        return correct / count

    def restore() -> None:
        for v, w in zip(model.trainable_variables, pretrained, strict=True):
            v.assign(w)

    part: dict[str, Any] = {
        "seed": seed,
        "shift": shift,
        "base_source": source_accuracy(),
        "base_shift": evaluate(xt, yt)[1],
        "num_train": len(xs),
        "rows": [],
    }
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(xs))
    batches = [order[i : i + 100] for i in range(0, len(xs) - 99, 100)]
    for name, cost, grid, make in _finetune_methods():
        steps = _FT_BUDGET.value // cost
        evals = [f // cost for f in range(_FT_EVAL.value, _FT_BUDGET.value + 1, _FT_EVAL.value)]
        best = None
        for lr in grid:
            restore()
            opt = make(lr)
            opt.build(model.trainable_variables)
            step, xb, yb = _finetune_step(model, opt, 100)
            curve, peak = [], 0
            for i in range(steps):
                idx = batches[i % len(batches)]
                xb.assign(xs[idx])
                yb.assign(ys[idx])
                if i == 5:
                    peak = _step_peak(step)
                else:
                    step()
                if i + 1 in evals:
                    curve.append(evaluate(xt, yt)[1])
            valid_loss, valid_acc = evaluate(xv, yv)
            train_loss, _ = evaluate(xs, ys)
            result = {
                "name": name,
                "cost": cost,
                "steps": steps,
                "lr": lr,
                "curve": curve,
                "valid_acc": valid_acc,
                "valid_loss": valid_loss if np.isfinite(valid_loss) else float("inf"),
                "train_loss": train_loss if np.isfinite(train_loss) else float("inf"),
                "source": source_accuracy(),
                "peak": peak,
                "peak_large": None,
                "state": _state_bytes(opt),
            }
            print(
                f"  finetune[{shift}, seed {seed}]: {name} lr={lr:g}: valid {valid_acc:.3f}, "
                f"shifted test {curve[-1]:.3f}, train loss {train_loss:.3f}",
                file=sys.stderr,
            )
            if best is None or (-result["valid_acc"], result["valid_loss"]) < (
                -best["valid_acc"],
                best["valid_loss"],
            ):
                best = result
        if memory and _FT_MEMORY_BATCH.value > 0:  # the chosen setting at a large batch
            restore()
            opt = make(best["lr"])
            opt.build(model.trainable_variables)
            big = _FT_MEMORY_BATCH.value
            step, xb, yb = _finetune_step(model, opt, big)
            idx = np.arange(big) % len(xs)
            xb.assign(xs[idx])
            yb.assign(ys[idx])
            step()  # traces
            best["peak_large"] = max(_step_peak(step) for _ in range(3))
        part["rows"].append(best)
    return part


def _mean_std(values: list[float], digits: int = 3) -> str:
    """``mean ± std`` (sample std; the value alone for one seed)."""
    a = np.asarray(values, float)
    if len(a) == 1:
        return f"{a[0]:.{digits}f}"
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1):.{digits}f}"


def finetune_report(parts: list[dict[str, Any]]) -> str:
    """Markdown per shift: each method's chosen setting, mean ± std over the seeds."""
    lines: list[str] = []
    shifts = list(dict.fromkeys(p["shift"] for p in parts))
    marks = list(range(_FT_EVAL.value, _FT_BUDGET.value + 1, _FT_EVAL.value))
    for shift in shifts:
        runs = [p for p in parts if p["shift"] == shift]
        seeds = [p["seed"] for p in runs]
        big = _FT_MEMORY_BATCH.value
        lines += [
            f"### Shift `{shift}`: {FT_SHIFTS[shift][0]}",
            "",
            f"Seeds {', '.join(map(str, seeds))} (each: its own pretraining, shifted data "
            f"generated with seed 1000 + seed, {runs[0]['num_train']} shifted training examples, "
            f"{_FT_VALID.value} held out for selection, 1000 shifted test). Pretrained model "
            f"(Adam 1e-2, {_FT_PRETRAIN.value} steps): MNIST-1D test accuracy "
            f"{_mean_std([p['base_source'] for p in runs])}, **shifted test accuracy "
            f"{_mean_std([p['base_shift'] for p in runs])}** before fine-tuning. Budget "
            f"{_FT_BUDGET.value:,} FPE per method (batch 100); mean ± std over seeds.",
            "",
            "| method | FPE/step | steps | lr chosen (per seed) | shifted test acc at FPE "
            + " / ".join(f"{m:,}" for m in marks)
            + " | held-out acc (selection) | shifted train loss | source test acc after "
            f"| step peak MB, batch 100 / {big} | state MB |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for i, first in enumerate(runs[0]["rows"]):
            rows = [p["rows"][i] for p in runs]
            curve = " / ".join(
                _mean_std([r["curve"][k] for r in rows]) for k in range(len(first["curve"]))
            )
            peaks = [r["peak"] for r in rows]
            large = [r["peak_large"] for r in rows if r["peak_large"] is not None]
            peak = f"{min(peaks) / MB:.2f}" + (
                f"–{max(peaks) / MB:.2f}" if max(peaks) != min(peaks) else ""
            )
            peak += " / " + (f"{max(large) / MB:.2f}" if large else "–")
            lines.append(
                f"| {first['name']} | {first['cost']} | {first['steps']:,} | "
                + ", ".join(f"{r['lr']:g}" for r in rows)
                + f" | {curve} | {_mean_std([r['valid_acc'] for r in rows])} | "
                f"{_mean_std([r['train_loss'] for r in rows])} | "
                f"{_mean_std([r['source'] for r in rows])} | {peak} | {first['state'] / MB:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- part 3: drift


class _ZeroRate(keras.optimizers.schedules.LearningRateSchedule):
    def __call__(self, step: Any) -> tf.Tensor:
        return tf.zeros([], tf.float32)


def run_drift_part(seed: int, steps: int) -> str:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((40,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)]
    )
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((100, 40)), tf.float32)
    y = tf.constant(rng.integers(0, 10, 100), tf.int32)
    loss_fn = _loss_closure(model, x, y)
    variables = model.trainable_variables
    init = [tf.constant(0.2 * rng.standard_normal(v.shape), tf.float32) for v in variables]
    lines = [
        f"MLP 40-64-10 ({sum(int(np.prod(v.shape)) for v in variables):,} float32 weights, "
        f"rms 0.2), learning rate 0, {steps:,} steps:",
        "",
        "| mode | ε | weights changed | mean abs drift | max abs drift | max relative drift |",
        "|---|---|---|---|---|---|",
    ]
    for in_place in (False, True):
        for eps in (1e-3, 1e-2):
            for v, w in zip(variables, init, strict=True):
                v.assign(w)
            w0 = np.concatenate([w.numpy().ravel() for w in init])
            opt = ZerothOrder(_ZeroRate(), eps=eps, in_place=in_place)
            opt.build(variables)

            @tf.function
            def loop(opt=opt) -> None:
                for _ in tf.range(steps):
                    opt.minimize(loss_fn, variables)

            loop()
            w = np.concatenate([v.numpy().ravel() for v in variables])
            d = np.abs(w - w0)
            mode = "in place (MeZO)" if in_place else "exact (default)"
            lines.append(
                f"| {mode} | {eps:g} | {np.mean(d > 0):.1%} | {d.mean():.2e} | {d.max():.2e} | "
                f"{np.max(d / np.maximum(np.abs(w0), 1e-30)):.2e} |"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    del argv
    seed = _SEED.value
    if "finetune" in _PARTS.value and not _finetune_methods():
        raise app.UsageError(f"--ft_methods={','.join(_FT_METHODS.value)}: matches no method")
    unknown = [s for s in _FT_SHIFTS.value if s not in FT_SHIFTS]
    if unknown:
        raise app.UsageError(f"--ft_shifts: unknown {unknown}; known: {', '.join(FT_SHIFTS)}")
    report = [
        "# Random-direction optimizers vs backprop",
        "",
        f"Machine: {machine()}.",
        "",
        "Command: `python scripts/bench_optimizers.py " + " ".join(sys.argv[1:]) + "`",
    ]
    if "step" in _PARTS.value:
        jit = _COMPILE.value == "xla"
        variants, n = run_step_part(seed, jit, _REPEATS.value)
        widths = (
            "residual MNIST-1D MLP 40-256-256-10"
            if _MODEL.value == "mnist1d"
            else "MLP " + "-".join(["784", *_WIDTHS.value, "10"])
        )
        report += [
            "",
            f"## One step: {widths}, batch {_BATCH.value}, "
            f"{'XLA' if jit else 'graph mode (no XLA)'}, {_REPEATS.value} round-robin repetitions",
            "",
            step_table(variants, n),
            "",
            "Step peak (MB) against the batch size (same MLP and mode):",
            "",
            memory_scaling_table(seed, jit, [int(b) for b in _MEMORY_BATCHES.value]),
        ]
    if "mnist1d" in _PARTS.value:
        report += ["", "## MNIST-1D at a fixed budget", "", run_mnist1d_part(seed, _BUDGET.value)]
    if "finetune" in _PARTS.value:
        report += [
            "",
            "## Fine-tuning on a shifted MNIST-1D (the MeZO regime)",
            "",
            finetune_report(
                [
                    run_finetune_part(s, shift, memory=(k == 0))
                    for shift in _FT_SHIFTS.value
                    for k, s in enumerate([int(v) for v in _FT_SEEDS.value] or [seed])
                ]
            ),
        ]
    if "drift" in _PARTS.value:
        report += [
            "",
            "## ZerothOrder: weight drift with learning rate 0",
            "",
            run_drift_part(seed, _DRIFT_STEPS.value),
        ]
    text = "\n".join(report) + "\n"
    print(text)
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            f.write(text)


if __name__ == "__main__":
    app.run(main)
