"""Benchmark of ``dirgrad_opt.directional``: every method against the seed recipe, interleaved.

For a loss ``L(w)`` and K directions ``v_k`` the quantity timed is ``[∇L(w)·v_k]_{k=1..K}``.
The **seed recipe** is the textbook way the module must not lose to:

    g = GradientTape().gradient(L, w)                 # once
    d_k = Σ_i tf.reduce_sum(g_i * v_k,i)              # per direction, per leaf

For K ≥ 2 its K multiply-and-sum passes are slower than one matrix-vector product per leaf, so
a second baseline, the **vectorised seed recipe**, takes the same gradient and then
``Σ_i matvec(reshape(V_i, [K, n_i]), reshape(g_i, [n_i]))`` (for K = 1 it is the seed recipe).
A method's ratio to it separates the method (reverse mode, forward mode, finite differences)
from the dot-product code.

Every method of :data:`dirgrad_opt.directional.METHODS` and the seed recipe is wrapped in its own
``tf.function`` (with and without ``jit_compile=True``), traced and warmed up, then timed
**round-robin**: each repetition calls every variant once, in a shuffled order, so machine noise
hits all variants alike. A variant's ratio to the seed recipe is the median over repetitions of
``t_variant / t_seed`` with both times from the same repetition (paired), which cancels most of the
drift of a shared machine. Slow variants (finite differences and forward mode at K = 16) may be
run only every s-th repetition so the whole run fits in ``--time_budget_s``; they stay interleaved.

Models: (a) MLP 784-512-512-10 (relu), batch 256; (b) CNN 28x28x1 → Conv2D 16 3x3 relu →
MaxPool → Conv2D 32 3x3 relu → MaxPool → Flatten → Dense 10, batch 64; float32, softmax
cross-entropy. Forward mode through MaxPool under XLA is refused by design (TF 2.21 computes
that JVP wrongly); the cell says so.

A last table times the dot-product step alone (the library's ``matvec`` kernel against the
seed recipe's multiply-and-sum) with the MLP's leaf shapes.

    python scripts/bench_directional.py [--repeats=50] [--out=FILE.md] [--json_out=FILE.json]

Prints Markdown tables (absolute median ms, interquartile range, ratio to the seed recipe, and
what ``"auto"`` chooses with its cost in passes and a 95 % bootstrap interval of its ratios) to
stdout and to ``--out`` if given; ``--json_out`` keeps every timed call. About 6 min on 2 cores.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
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

from dirgrad_opt import directional, directions  # noqa: E402

_REPEATS = flags.DEFINE_integer("repeats", 50, "timed repetitions (round-robin over variants)")
_OUT = flags.DEFINE_string("out", None, "also write the Markdown report to this file")
_JSON_OUT = flags.DEFINE_string(
    "json_out", None, "also write every timed call (ms, by repetition) to this JSON file"
)
_MODELS = flags.DEFINE_list("models", ["mlp", "cnn"], "models to benchmark: mlp, cnn")
_KS = flags.DEFINE_list("num_directions", ["1", "4", "16"], "numbers of directions K")
_COMPILE = flags.DEFINE_list("compile", ["graph", "xla"], "tf.function modes: graph, xla")
_BUDGET = flags.DEFINE_float(
    "time_budget_s", 420.0, "target seconds for the timed phase; slow variants are thinned to fit"
)
_MIN_REPEATS = flags.DEFINE_integer(
    "min_repeats", 8, "fewest timed calls a thinned (slow) variant gets"
)
_SEED = flags.DEFINE_integer("seed", 0, "seed for data, weights, directions and the call order")

SEED_RECIPE = "seed recipe"
VECTORISED_SEED = "seed recipe, vectorised dot"
VARIANT_METHODS = ("forward", "reverse", "central_difference", "forward_difference", "auto")
ROW_ORDER = (SEED_RECIPE, VECTORISED_SEED, *VARIANT_METHODS)
REFUSED = "refused (wrong on TF 2.21)"
DOT_PROBLEM = "dot"  # the dot-product step alone, with the MLP's leaf shapes
DOT_BASELINE = "multiply-reduce (seed recipe's dot)"
DOT_LIBRARY = "directional._dot_batched (multiply-sum K=1, matvec K≥2)"


# ----------------------------------------------------------------------------- problems


@dataclass
class Problem:
    """A model, its batch and its loss closure."""

    name: str
    description: str
    model: keras.Model
    loss_fn: Callable[[], tf.Tensor]
    has_maxpool: bool

    @property
    def variables(self) -> list[Any]:
        return list(self.model.trainable_variables)


def _cross_entropy_loss(model: keras.Model, x: tf.Tensor, y: tf.Tensor) -> Callable[[], tf.Tensor]:
    def loss_fn() -> tf.Tensor:
        logits = model(x)
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        )

    return loss_fn


def make_mlp(seed: int) -> Problem:
    """MLP 784-512-512-10 (relu) on a batch of 256 random inputs, float32."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    x = tf.random.stateless_normal((256, 784), seed=[seed, 1])
    y = tf.random.stateless_uniform((256,), seed=[seed, 2], minval=0, maxval=10, dtype=tf.int32)
    return Problem(
        "mlp", "MLP 784-512-512-10 relu, batch 256", model, _cross_entropy_loss(model, x, y), False
    )


def make_cnn(seed: int) -> Problem:
    """Small CNN (two conv + max-pool blocks, dense head) on a batch of 64 28x28x1 inputs."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPool2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPool2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    x = tf.random.stateless_normal((64, 28, 28, 1), seed=[seed, 3])
    y = tf.random.stateless_uniform((64,), seed=[seed, 4], minval=0, maxval=10, dtype=tf.int32)
    description = "CNN 28x28x1-C16-P-C32-P-D10 relu, batch 64"
    return Problem("cnn", description, model, _cross_entropy_loss(model, x, y), True)


PROBLEMS: dict[str, Callable[[int], Problem]] = {"mlp": make_mlp, "cnn": make_cnn}


# ----------------------------------------------------------------------------- the seed recipe


def seed_recipe(
    loss_fn: Callable[[], tf.Tensor], variables: list[Any], dirs: list[tf.Tensor], k: int | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """The baseline: one gradient, then ``Σ_i reduce_sum(g_i * v_i)`` per direction.

    Args:
      loss_fn: zero-argument scalar loss.
      variables: the model's trainable variables.
      dirs: one direction (``k=None``, leaves shaped like ``variables``) or K directions (leaves
        with a leading K axis).
      k: None for one direction, else K.

    Returns:
      ``(loss, derivative)`` with a scalar derivative for ``k=None``, else a ``[K]`` tensor.
    """
    with tf.GradientTape() as tape:
        loss = loss_fn()
    grads = tape.gradient(loss, variables)

    def dot(direction: list[tf.Tensor]) -> tf.Tensor:
        return tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, direction, strict=True)])

    if k is None:
        return loss, dot(dirs)
    return loss, tf.stack([dot([d[i] for d in dirs]) for i in range(k)])


def vectorised_seed_recipe(
    loss_fn: Callable[[], tf.Tensor], variables: list[Any], dirs: list[tf.Tensor], k: int | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """The seed recipe's gradient, then one ``matvec`` per leaf for all K directions at once.

    Same arguments and results as :func:`seed_recipe`; for one direction it *is* the seed
    recipe (a ``[1, n]`` matvec takes a slow CPU path).
    """
    if k is None:
        return seed_recipe(loss_fn, variables, dirs, None)
    with tf.GradientTape() as tape:
        loss = loss_fn()
    grads = tape.gradient(loss, variables)
    terms = [
        tf.linalg.matvec(tf.reshape(v, [k, -1]), tf.reshape(g, [-1]))
        for g, v in zip(grads, dirs, strict=True)
    ]
    return loss, tf.add_n(terms)


# ----------------------------------------------------------------------------- variants


@dataclass
class Variant:
    """One timed cell: a compiled function and its recorded times."""

    problem: str
    mode: str  # "graph" or "xla"
    k: int
    method: str  # a METHODS name or SEED_RECIPE
    fn: Callable[[], Any] | None
    status: str = "ok"  # "ok" or REFUSED
    times_ms: dict[int, float] = field(default_factory=dict)  # repetition -> ms
    stride: int = 1
    value: np.ndarray | None = None

    @property
    def group(self) -> tuple[str, str, int]:
        return (self.problem, self.mode, self.k)

    @property
    def is_baseline(self) -> bool:
        return self.method in (SEED_RECIPE, DOT_BASELINE)


def build_variant(problem: Problem, mode: str, k: int, method: str, seed: int) -> Variant:
    """Wraps one method (or the seed recipe) for one case in a ``tf.function``."""
    variables = problem.variables
    if k == 1:
        dirs = directions.gaussian(variables, seed=[seed, 11])
    else:
        dirs = directions.gaussian(variables, seed=[seed, 11], num_directions=k)
    jit = mode == "xla"
    loss_fn = problem.loss_fn
    single = k == 1

    if method in (SEED_RECIPE, VECTORISED_SEED):
        recipe = seed_recipe if method == SEED_RECIPE else vectorised_seed_recipe

        def body(d: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
            return recipe(loss_fn, variables, d, None if single else k)

    elif single:

        def body(d: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
            return directional.directional_derivative(loss_fn, variables, d, method)

    else:

        def body(d: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
            return directional.directional_derivatives(loss_fn, variables, d, method)

    compiled = tf.function(body, jit_compile=jit)
    return Variant(problem.name, mode, k, method, lambda: compiled(dirs)[1])


def build_dot_variants(
    problem: Problem, modes: list[str], ks: list[int], seed: int
) -> list[Variant]:
    """The dot-product step alone: ``[Σ_i <g_i, V_i[k]>]_k`` for a fixed gradient ``g``.

    Times the library's kernel (:func:`directional._dot_batched`: multiply-and-sum for K = 1,
    one ``matvec`` per leaf for K ≥ 2)
    against the seed recipe's (``reduce_sum(g_i * v_k,i)`` per leaf and direction), with the
    model's leaf shapes, so a difference in the full rows can be traced to this step.
    """
    grads = directions.gaussian(problem.variables, seed=[seed, 21])
    out = []
    for mode in modes:
        for k in ks:
            dirs = directions.gaussian(problem.variables, seed=[seed, 22], num_directions=k)

            def library(g: list[tf.Tensor], d: list[tf.Tensor], k: int = k) -> tf.Tensor:
                return directional._dot_batched(g, d, k)  # noqa: SLF001 - the step under test

            def baseline(g: list[tf.Tensor], d: list[tf.Tensor], k: int = k) -> tf.Tensor:
                if k == 1:  # as the seed recipe for one direction: no leading axis, no slice
                    return tf.add_n([tf.reduce_sum(a * b) for a, b in zip(g, d, strict=True)])
                return tf.stack(
                    [
                        tf.add_n([tf.reduce_sum(a * b[i]) for a, b in zip(g, d, strict=True)])
                        for i in range(k)
                    ]
                )

            single = [d[0] for d in dirs]
            for name, body, args in (
                (DOT_BASELINE, baseline, single if k == 1 else dirs),
                (DOT_LIBRARY, library, dirs),
            ):
                compiled = tf.function(body, jit_compile=mode == "xla")
                out.append(
                    Variant(DOT_PROBLEM, mode, k, name, lambda c=compiled, d=args: c(grads, d))
                )
    return out


def _run(fn: Callable[[], Any]) -> np.ndarray:
    """Calls ``fn`` and pulls the result to the host (so the time covers the whole computation)."""
    return np.atleast_1d(fn().numpy())


def warm_up(variant: Variant) -> None:
    """Traces (and XLA-compiles) the variant and runs it twice; marks refused cells."""
    try:
        variant.value = _run(variant.fn)
    except directional.UnsafeDerivativeError:
        variant.status, variant.fn = REFUSED, None
        return
    _run(variant.fn)


def time_once(variant: Variant) -> float:
    start = time.perf_counter()
    _run(variant.fn)
    return (time.perf_counter() - start) * 1e3


def assign_strides(variants: list[Variant], estimates_ms: dict[int, float], repeats: int) -> None:
    """Thins the slowest variants (a call every s-th repetition) until the run fits the budget.

    The seed recipes always run every repetition (they are the ratios' denominators); no variant
    goes below ``--min_repeats`` timed calls.
    """
    budget_ms = _BUDGET.value * 1e3
    max_stride = max(1, repeats // max(1, _MIN_REPEATS.value))

    def total() -> float:
        return sum(repeats / v.stride * estimates_ms[id(v)] for v in variants)

    while total() > budget_ms:
        candidates = [
            v
            for v in variants
            if not v.is_baseline and v.method != VECTORISED_SEED and v.stride < max_stride
        ]
        if not candidates:
            break
        worst = max(candidates, key=lambda v: estimates_ms[id(v)] / v.stride)
        worst.stride += 1


def time_interleaved(variants: list[Variant], repeats: int, seed: int) -> None:
    """Round-robin timing: each repetition calls every due variant once, in a shuffled order."""
    rng = random.Random(seed)
    start = time.perf_counter()
    for rep in range(repeats):
        due = [v for v in variants if rep % v.stride == 0]
        rng.shuffle(due)
        gc.collect()
        gc.disable()
        try:
            for v in due:
                v.times_ms[rep] = time_once(v)
        finally:
            gc.enable()
        elapsed = time.perf_counter() - start
        eta = elapsed / (rep + 1) * (repeats - rep - 1)
        print(
            f"  repetition {rep + 1}/{repeats}: {len(due)} calls, {elapsed:.0f} s elapsed, "
            f"ETA {eta:.0f} s",
            file=sys.stderr,
            flush=True,
        )


# ----------------------------------------------------------------------------- statistics


@dataclass
class Stats:
    median_ms: float
    q25_ms: float
    q75_ms: float
    ratio: float  # median over repetitions of t / t_seed (paired)
    ratio_q25: float
    ratio_q75: float
    n: int


def paired_ratios(a: Variant, b: Variant) -> np.ndarray:
    """``t_a / t_b`` for every repetition in which both variants were timed."""
    return np.array([t / b.times_ms[rep] for rep, t in a.times_ms.items() if rep in b.times_ms])


def median_ci(values: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """95 % bootstrap confidence interval of the median of ``values``."""
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(resamples, len(values))), axis=1)
    lo, hi = np.percentile(medians, [2.5, 97.5])
    return float(lo), float(hi)


def stats(variant: Variant, seed_variant: Variant) -> Stats:
    times = np.array(list(variant.times_ms.values()))
    ratios = paired_ratios(variant, seed_variant)
    q25, med, q75 = np.percentile(times, [25, 50, 75])
    r25, rmed, r75 = np.percentile(ratios, [25, 50, 75])
    return Stats(med, q25, q75, rmed, r25, r75, len(times))


def check_agreement(group: list[Variant]) -> list[str]:
    """Sanity check on the warm-up outputs: exact methods must match the seed recipe."""
    seed = next(v for v in group if v.is_baseline)
    notes = []
    for v in group:
        if v.value is None or v is seed:
            continue
        scale = float(np.max(np.abs(seed.value))) + 1e-12
        err = float(np.max(np.abs(v.value - seed.value))) / scale
        tol = 0.1 if v.method.endswith("_difference") else 1e-3
        if not err <= tol:
            notes.append(
                f"{v.problem}/{v.mode}/K={v.k}/{v.method}: relative error {err:.2e} vs seed "
                f"recipe (tolerance {tol})"
            )
    return notes


# ----------------------------------------------------------------------------- report


def _fmt_ms(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _cell(variant: Variant, seed_variant: Variant) -> str:
    if variant.status != "ok":
        return REFUSED
    s = stats(variant, seed_variant)
    if variant.is_baseline:
        return f"{_fmt_ms(s.median_ms)} ms ({_fmt_ms(s.q25_ms)}–{_fmt_ms(s.q75_ms)})"
    return (
        f"{_fmt_ms(s.median_ms)} ms, **×{s.ratio:.2f}** ({s.ratio_q25:.2f}–{s.ratio_q75:.2f})"
        + (f" n={s.n}" if s.n < len(seed_variant.times_ms) else "")
    )


def _paired_cell(a: Variant, b: Variant) -> str:
    ratios = paired_ratios(a, b)
    lo, hi = median_ci(ratios)
    best = min(a.times_ms.values()) / min(b.times_ms.values())
    return f"×{np.median(ratios):.2f} [{lo:.2f}, {hi:.2f}]; ×{best:.2f}"


def report(
    problems: dict[str, Problem], variants: list[Variant], ks: list[int], modes: list[str]
) -> str:
    index = {(v.problem, v.mode, v.k, v.method): v for v in variants}
    lines = []
    for pname, problem in problems.items():
        n_weights = sum(int(np.prod(w.shape)) for w in problem.variables)
        for mode in modes:
            title = "tf.function(jit_compile=True)" if mode == "xla" else "tf.function"
            lines.append(f"### {problem.description} ({n_weights:,} weights) — {title}")
            lines.append("")
            lines.append("| method | " + " | ".join(f"K = {k}" for k in ks) + " |")
            lines.append("|---|" + "---|" * len(ks))
            for method in ROW_ORDER:
                cells = []
                for k in ks:
                    seed_variant = index[(pname, mode, k, SEED_RECIPE)]
                    cells.append(_cell(index[(pname, mode, k, method)], seed_variant))
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
    dot_rows = [v for v in variants if v.problem == DOT_PROBLEM]
    if dot_rows:
        lines.append("### The dot-product step alone (MLP leaf shapes, gradient given)")
        lines.append("")
        lines.append("| kernel | mode | " + " | ".join(f"K = {k}" for k in ks) + " |")
        lines.append("|---|---|" + "---|" * len(ks))
        for mode in modes:
            for name in (DOT_BASELINE, DOT_LIBRARY):
                cells = [
                    _cell(
                        index[(DOT_PROBLEM, mode, k, name)],
                        index[(DOT_PROBLEM, mode, k, DOT_BASELINE)],
                    )
                    for k in ks
                ]
                lines.append(f"| {name} | {mode} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append('### What `"auto"` chooses, and its cost in passes')
    lines.append("")
    lines.append(
        "Ratios here are paired medians over repetitions with a 95 % bootstrap confidence "
        "interval, then the ratio of the fastest calls (min/min, the least disturbed by other "
        "load). Acceptance: auto / seed ≤ 1.10."
    )
    lines.append("")
    lines.append(
        "| model | mode | K | `choose_method` | fwd / bwd / JVP passes "
        "| auto / seed [95 % CI]; min/min | auto / vectorised seed [95 % CI]; min/min "
        "| auto / forward [95 % CI]; min/min |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for pname, problem in problems.items():
        for mode in modes:
            for k in ks:
                forward_safe = not (problem.has_maxpool and mode == "xla")
                choice = directional.choose_method(k, forward_safe=forward_safe)
                c = directional.cost(choice, k)
                auto = index[(pname, mode, k, "auto")]
                vs_seed = _paired_cell(auto, index[(pname, mode, k, SEED_RECIPE)])
                vs_vector = _paired_cell(auto, index[(pname, mode, k, VECTORISED_SEED)])
                fwd = index[(pname, mode, k, "forward")]
                vs_forward = _paired_cell(auto, fwd) if fwd.status == "ok" else "forward refused"
                lines.append(
                    f"| {pname} | {mode} | {k} | {choice} | {c.forward_passes} / "
                    f"{c.backward_passes} / {c.jvps} | {vs_seed} | {vs_vector} | {vs_forward} |"
                )
    lines.append("")
    return "\n".join(lines)


def header(repeats: int, variants: list[Variant], wall_s: float) -> str:
    thinned = sorted(
        {
            f"{v.problem}/{v.mode}/K={v.k}/{v.method}: every {v.stride}"
            for v in variants
            if v.stride > 1
        }
    )
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    text = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}; "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}. Load average at the end: {', '.join(f'{x:.2f}' for x in load)}.",
        "",
        f"{repeats} interleaved repetitions, {wall_s:.0f} s total wall time. Cells: median ms per "
        "call (interquartile range); for methods, **×ratio** = median over repetitions of "
        "t_method / t_seed-recipe in the same repetition (IQR of that ratio); n = timed calls "
        "when a slow variant was thinned.",
    ]
    if thinned:
        text += ["", "Thinned (timed every s-th repetition): " + "; ".join(thinned) + "."]
    return "\n".join(text) + "\n"


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    del argv
    tf.get_logger().setLevel("ERROR")  # one tf.function per variant: retracing is intended
    t0 = time.perf_counter()
    ks = [int(k) for k in _KS.value]
    modes = list(_COMPILE.value)
    for m in modes:
        if m not in ("graph", "xla"):
            raise ValueError(f"--compile: unknown mode {m!r}; expected 'graph' and/or 'xla'")
    for name in _MODELS.value:
        if name not in PROBLEMS:
            raise ValueError(
                f"--models: unknown model {name!r}; expected one of {sorted(PROBLEMS)}"
            )
    if _REPEATS.value < 1:
        raise ValueError(f"--repeats must be >= 1, got {_REPEATS.value}")

    problems = {name: PROBLEMS[name](_SEED.value) for name in _MODELS.value}
    variants = [
        build_variant(problems[p], mode, k, method, _SEED.value)
        for p in problems
        for mode in modes
        for k in ks
        for method in ROW_ORDER
    ]
    if "mlp" in problems:
        variants += build_dot_variants(problems["mlp"], modes, ks, _SEED.value)

    print(f"warming up {len(variants)} variants (tracing, XLA compiles)...", file=sys.stderr)
    for i, v in enumerate(variants):
        t = time.perf_counter()
        warm_up(v)
        print(
            f"  [{i + 1}/{len(variants)}] {v.problem}/{v.mode}/K={v.k}/{v.method}: "
            f"{v.status}, {time.perf_counter() - t:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    notes = []
    for p in [*problems, DOT_PROBLEM]:
        for mode in modes:
            for k in ks:
                if not any(v.group == (p, mode, k) for v in variants):
                    continue
                notes += check_agreement([v for v in variants if v.group == (p, mode, k)])
    for note in notes:
        print("WARNING: " + note, file=sys.stderr)

    timed = [v for v in variants if v.status == "ok"]
    estimates = {}
    for v in timed:  # calibration: a median of three calls each
        estimates[id(v)] = float(np.median([time_once(v) for _ in range(3)]))
    assign_strides(timed, estimates, _REPEATS.value)
    est = sum(_REPEATS.value / v.stride * estimates[id(v)] for v in timed) / 1e3
    print(f"timing {len(timed)} variants, estimated {est:.0f} s...", file=sys.stderr)
    time_interleaved(timed, _REPEATS.value, _SEED.value)

    text = header(_REPEATS.value, variants, time.perf_counter() - t0)
    text += "\n" + report(problems, variants, ks, modes)
    if notes:
        text += "\nAgreement warnings:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(text)
    if _JSON_OUT.value:
        raw = {
            "schema_version": 1,
            "tensorflow": tf.__version__,
            "repeats": _REPEATS.value,
            "variants": [
                {
                    "problem": v.problem,
                    "mode": v.mode,
                    "num_directions": v.k,
                    "method": v.method,
                    "status": v.status,
                    "times_ms": {str(r): t for r, t in v.times_ms.items()},
                }
                for v in variants
            ],
        }
        with open(_JSON_OUT.value, "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=1)
    if _OUT.value:
        with open(_OUT.value, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    app.run(main)
