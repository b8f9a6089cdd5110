"""Step time of mixed precision vs float32: one ArmijoLineSearch step on the MNIST-1D MLP.

Paired ratios in one process (the machine is shared and noisy): the three policies' steps are
traced first, then called in turn, ``--repeats`` rounds of ``--steps`` steps each; each round
gives a ratio mixed/float32 and the median is reported. As in the runner, the float16 step is
run with Grappler's remapper off (TF 2.21's fused float16 MatMul+BiasAdd on CPU is ~100×
slower); the float32 and bfloat16 steps keep it.

    PYTHONPATH=$PWD python scripts/bench_mixed_precision.py [--repeats=15 --steps=20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import tensorflow as tf

from dirgrad_opt import optimizers
from dirgrad_opt.models import networks

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def make_step(policy: str, x: tf.Tensor, y: tf.Tensor):
    """A traced ``minimize`` step of ArmijoLineSearch on a fresh MLP built under ``policy``."""
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    model = networks.mnist1d_mlp((40,), 10)
    opt = optimizers.ArmijoLineSearch(steps_per_epoch=40)
    xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step():
        def loss_fn():
            return xent(y, tf.cast(model(x, training=True), tf.float32))

        return opt.minimize(loss_fn, model.trainable_variables)["loss"]

    keras.config.set_dtype_policy("float32")
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    x = tf.random.stateless_normal((100, 40), seed=(0, 1))
    y = tf.random.stateless_uniform((100,), seed=(2, 3), maxval=10, dtype=tf.int32)
    steps = {}
    for policy in POLICIES:
        tf.config.optimizer.set_experimental_options({"remapping": policy != "mixed_float16"})
        steps[policy] = make_step(policy, x, y)
        steps[policy]()  # trace now
    times: dict[str, list[float]] = {p: [] for p in POLICIES}
    for _ in range(args.repeats):
        for policy in POLICIES:  # the remapper setting is read when a step runs
            tf.config.optimizer.set_experimental_options({"remapping": policy != "mixed_float16"})
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[policy]()
            times[policy].append((time.perf_counter() - start) / args.steps)
    base = times["float32"]
    print(f"float32: median {statistics.median(base) * 1e3:.2f} ms/step")
    for policy in POLICIES[1:]:
        ratios = [t / b for t, b in zip(times[policy], base, strict=True)]
        print(
            f"{policy}: median {statistics.median(times[policy]) * 1e3:.2f} ms/step, "
            f"paired ratio vs float32 {statistics.median(ratios):.2f} "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
