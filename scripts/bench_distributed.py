"""Data-parallel cost: per-step time of 2 mirrored CPU replicas vs one device, and the number of
replica reductions (all-reduces) each optimizer makes per step.

    PYTHONPATH=. python scripts/bench_distributed.py [--steps=20] [--pairs=7]

Problem: the MNIST-1D residual MLP (79k weights), global batch 100, on fixed batches. Time:
A (one device) and B (2 replicas on 2 logical CPUs) alternate in one process, ``--steps`` steps
per timing, ratio B/A per pair, median over ``--pairs`` (machine noise cancels in pairs).
Reductions: every evaluation a closure optimizer makes under a strategy is one mean over
replicas (the loss packed with the gradient, or with the slope); the script counts the ones that
actually execute per step (a counter bumped inside each reduction), over the same steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dirgrad_opt import distribute  # noqa: E402

distribute.set_cpu_replicas(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dirgrad_opt import optimizers as O  # noqa: E402
from dirgrad_opt.models import networks  # noqa: E402

OPTIMIZERS = {
    "SGD": lambda: keras.optimizers.SGD(0.1),
    "ArmijoLineSearch": lambda: O.ArmijoLineSearch(steps_per_epoch=40),
    "WolfeLineSearch": O.WolfeLineSearch,
    "PolyakStep": O.PolyakStep,
    "ParabolicLineSearch": O.ParabolicLineSearch,
    "DirectionalNewton": O.DirectionalNewton,
    "GradientOnlyLineSearch": O.GradientOnlyLineSearch,
    "ForwardGradient": lambda: O.ForwardGradient(learning_rate=1e-3),
    "ZerothOrder": lambda: O.ZerothOrder(learning_rate=2e-4),
    "RandomDirectionLineSearch": O.RandomDirectionLineSearch,
}
TIMED = ("SGD", "ArmijoLineSearch")

_REDUCTIONS: list[tf.Variable] = []
_original_mean = distribute.ReplicaClosures.mean


def _counted_mean(self, fn):
    """``ReplicaClosures.mean`` that also counts its executions (bench instrumentation)."""
    out = _original_mean(self, fn)
    with tf.control_dependencies(tf.nest.flatten(out)):
        bump = _REDUCTIONS[0].assign_add(1)
    with tf.control_dependencies([bump]):
        return tf.nest.map_structure(tf.identity, out)


def _model():
    keras.utils.set_random_seed(0)
    return networks.mnist1d_mlp((40,), 10)


def _batches(steps: int):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps, 100, 40)).astype("float32")
    y = rng.integers(0, 10, size=(steps, 100)).astype("int32")
    return x, y


def build(name: str, strategy, steps: int):
    """A ``run()`` doing ``steps`` steps on fixed batches; one device if ``strategy`` is None."""
    scope = strategy.scope() if strategy else tf.name_scope("single")
    with scope:
        model = _model()
        opt = OPTIMIZERS[name]()
        opt.build(model.trainable_variables)
    variables = model.trainable_variables
    xs, ys = _batches(steps)

    def loss_of(x, y):
        logits = model(x, training=True)
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, True))

    def replica_step(x, y):
        if isinstance(opt, O.DirectionalOptimizer):
            return opt.minimize(lambda: loss_of(x, y), variables)["loss"]
        with tf.GradientTape() as tape:
            loss = loss_of(x, y)
            scaled = loss / distribute.num_replicas()
        opt.apply_gradients(zip(tape.gradient(scaled, variables), variables, strict=True))
        return loss

    if strategy is None:
        data = [(tf.constant(x), tf.constant(y)) for x, y in zip(xs, ys, strict=True)]

        @tf.function
        def step(x, y):
            return replica_step(x, y)
    else:
        data = []
        for x, y in zip(xs, ys, strict=True):
            halves = [(x[r * 50 : (r + 1) * 50], y[r * 50 : (r + 1) * 50]) for r in range(2)]
            data.append(
                tuple(
                    strategy.experimental_distribute_values_from_function(
                        lambda ctx, k=k, halves=halves: tf.constant(
                            halves[ctx.replica_id_in_sync_group][k]
                        )
                    )
                    for k in range(2)
                )
            )

        @tf.function
        def step(x, y):
            return strategy.run(replica_step, args=(x, y))

    def run() -> None:
        for x, y in data:
            step(x, y)

    run()  # trace
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=7)
    args = parser.parse_args()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    _REDUCTIONS.append(tf.Variable(0, dtype=tf.int64, trainable=False))
    distribute.ReplicaClosures.mean = _counted_mean

    print(
        f"# per-step time, 2 mirrored CPU replicas / 1 device ({args.steps} steps x "
        f"{args.pairs} pairs, median of paired ratios)"
    )
    for name in TIMED:
        one, two = build(name, None, args.steps), build(name, strategy, args.steps)
        ratios, t_one = [], []
        for _ in range(args.pairs):
            t0 = time.perf_counter()
            one()
            a = time.perf_counter() - t0
            t0 = time.perf_counter()
            two()
            b = time.perf_counter() - t0
            ratios.append(b / a)
            t_one.append(a / args.steps)
        print(
            f"{name:28s} one device {1e3 * statistics.median(t_one):7.1f} ms/step   "
            f"2 replicas / 1 device = {statistics.median(ratios):.2f}x"
        )

    print(
        "\n# replica reductions per step (each = one all-reduce of the loss packed with the "
        "gradient or slope, or of a loss alone)"
    )
    for name in OPTIMIZERS:
        run = build(name, strategy, args.steps)
        _REDUCTIONS[0].assign(0)
        run()
        if name == "SGD":  # a stock Keras optimizer: Keras all-reduces the gradient itself
            print(f"{name:28s}   1.00  (Keras's gradient all-reduce in apply_gradients)")
            continue
        print(f"{name:28s} {int(_REDUCTIONS[0].numpy()) / args.steps:6.2f}")


if __name__ == "__main__":
    main()
