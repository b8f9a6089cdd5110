"""Demo of the directional-derivative module on a real model and embedded data (no network).

Builds the MNIST-1D paper's residual MLP on one batch of procedurally generated MNIST-1D data and
prints ∇L(w)·v along a random direction by every method, K directions at once, and the curvature
vᵀHv, with each call's cost in passes and its wall time.

    python -m experiments.directional_demo [--batch_size=100] [--num_directions=16] [--seed=0]
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from mnist1d.data import get_dataset_args, make_dataset

from dirgrad_opt import directional, directions

_BATCH = flags.DEFINE_integer("batch_size", 100, "examples in the batch")
_K = flags.DEFINE_integer("num_directions", 16, "directions for the batched call")
_SEED = flags.DEFINE_integer("seed", 0, "seed for data, weights and directions")


def _residual_mlp(width: int = 256) -> keras.Model:
    inputs = keras.Input((40,))
    h = keras.layers.Dense(width, activation="relu", name="w1")(inputs)
    h = h + keras.layers.Dense(width, activation="relu", name="w2")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="w3")(h))


def main(argv: list[str]) -> None:
    del argv
    tf.get_logger().setLevel("ERROR")  # one tf.function per method: retracing is intended
    keras.utils.set_random_seed(_SEED.value)
    args = get_dataset_args()
    args.seed = _SEED.value
    data = make_dataset(args)  # procedural: no download
    x = tf.constant(data["x"][: _BATCH.value], tf.float32)
    y = tf.constant(data["y"][: _BATCH.value], tf.int32)
    model = _residual_mlp()
    variables = model.trainable_variables

    def loss_fn() -> tf.Tensor:
        logits = model(x)
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        )

    v = directions.gaussian(variables, seed=_SEED.value)
    n = sum(int(np.prod(w.shape)) for w in variables)
    print(f"MNIST-1D residual MLP: {n} weights, batch {_BATCH.value}, loss {float(loss_fn()):.4f}")
    print(f"{'method':<20}{'∇L·v':>14}{'fwd':>6}{'bwd':>6}{'jvp':>6}{'ms (median)':>13}")
    for method in directional.METHODS:
        fn = tf.function(
            lambda m=method: directional.directional_derivative(loss_fn, variables, v, m)
        )
        fn()  # trace
        times = []
        for _ in range(20):
            start = time.perf_counter()
            _, d = fn()
            times.append(time.perf_counter() - start)
        ms = 1e3 * float(np.median(times))
        chosen = directional.choose_method(1) if method == "auto" else method
        c = directional.cost(chosen)
        label = f"auto→{chosen}" if method == "auto" else method
        print(
            f"{label:<20}{float(d):>14.6f}{c.forward_passes:>6}{c.backward_passes:>6}"
            f"{c.jvps:>6}{ms:>13.2f}"
        )
    k = _K.value
    vs = directions.gaussian(variables, seed=_SEED.value + 1, num_directions=k)
    _, d_k = directional.directional_derivatives(loss_fn, variables, vs)
    print(
        f"{k} directions at once (auto→{directional.choose_method(k)}): "
        f"mean {float(tf.reduce_mean(d_k)):.4f}, std {float(tf.math.reduce_std(d_k)):.4f}"
    )
    _, d, curv = directional.directional_curvature(loss_fn, variables, v)
    print(f"curvature along v: vᵀHv = {float(curv):.6f} (∇L·v = {float(d):.6f})")


if __name__ == "__main__":
    app.run(main)
