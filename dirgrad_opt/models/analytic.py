"""Analytic test problems packaged as Keras models, so the training loop treats them like any other.

Contract: the model holds the parameter vector w (one trainable variable of shape ``[dim]``,
``dim = input_shape[-1]``) and maps a batch of inputs ξ ``[batch, dim]`` to the per-example
objective ``[batch]``:

    outᵢ = f(w) + ξᵢᵀ(w − w*),

where f is the analytic function and w* its minimiser. The loss is the mean of the outputs
(:func:`dirgrad_opt.models.objective_loss`; the labels are ignored). Paired with the
``"analytic"`` dataset of :mod:`dirgrad_opt.data` (ξ = 0 for the deterministic problem, centred
Gaussian vectors for the noisy one) the batch loss is f(w) + ξ̄ᵀ(w − w*), whose gradient is
∇f(w) plus Gaussian noise, while the loss on the whole training set and on the test split is
exactly f(w). The model exposes ``optimum_value`` (f* = 0) and ``optimum_point`` (w*).
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import keras
import numpy as np
import tensorflow as tf


def quadratic_problem(
    dim: int, condition_number: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The matrix and minimiser of the quadratic f(w) = ½ (w − w*)ᵀ A (w − w*).

    A = Q diag(λ) Qᵀ with λᵢ = κ^{i/(dim−1)} (log-spaced in [1, κ]) and Q a Haar-random
    rotation (QR of a Gaussian matrix, signs fixed); w* ~ N(0, I). Both depend only on ``seed``.

    Args:
      dim: dimension.
      condition_number: κ = λ_max / λ_min ≥ 1.
      seed: NumPy seed of Q and w*.

    Returns:
      ``(A, w_star)`` as float64 arrays of shapes ``[dim, dim]`` and ``[dim]``.
    """
    if dim < 1 or condition_number < 1:
        raise ValueError(
            f"quadratic_problem: need dim >= 1 and condition_number >= 1, got dim={dim}, "
            f"condition_number={condition_number}."
        )
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q *= np.sign(np.diag(r))
    eigenvalues = np.logspace(0.0, np.log10(condition_number), dim) if dim > 1 else np.ones(1)
    return (q * eigenvalues) @ q.T, rng.standard_normal(dim)


class _AnalyticObjective(keras.layers.Layer):
    """Holds w and returns f(w) + xᵢᵀ(w − w*) per example; subclasses define f, w*, w₀."""

    def build(self, input_shape: Sequence[int | None]) -> None:
        dim = int(input_shape[-1])
        self._setup(dim)
        self.w = self.add_weight(
            shape=(dim,),
            initializer=keras.initializers.Constant(self.initial_point),
            name="w",
        )

    def _setup(self, dim: int) -> None:
        raise NotImplementedError

    def objective(self, w: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def call(self, x: tf.Tensor) -> tf.Tensor:
        w = tf.convert_to_tensor(self.w)
        offset = w - tf.constant(self.optimum_point, w.dtype)
        return self.objective(w) + tf.linalg.matvec(tf.cast(x, w.dtype), offset)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None]:
        return (input_shape[0],)


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class QuadraticObjective(_AnalyticObjective):
    """f(w) = ½ (w − w*)ᵀ A (w − w*) with A, w* from :func:`quadratic_problem`; starts at 0."""

    def __init__(self, condition_number: float = 100.0, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.condition_number = float(condition_number)
        self.seed = int(seed)

    def _setup(self, dim: int) -> None:
        matrix, self.optimum_point = quadratic_problem(dim, self.condition_number, self.seed)
        self._matrix = matrix.astype(np.float32)
        self.initial_point = np.zeros(dim)

    def objective(self, w: tf.Tensor) -> tf.Tensor:
        d = w - tf.constant(self.optimum_point, w.dtype)
        return 0.5 * tf.tensordot(d, tf.linalg.matvec(tf.constant(self._matrix, w.dtype), d), 1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "condition_number": self.condition_number,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class RosenbrockObjective(_AnalyticObjective):
    """f(w) = Σᵢ 100 (wᵢ₊₁ − wᵢ²)² + (1 − wᵢ)²; w* = (1, …, 1); starts at (−1.2, 1, −1.2, …)."""

    def _setup(self, dim: int) -> None:
        if dim < 2:
            raise ValueError(f"Rosenbrock needs dim >= 2, got input dimension {dim}.")
        self.optimum_point = np.ones(dim)
        self.initial_point = np.where(np.arange(dim) % 2 == 0, -1.2, 1.0)

    def objective(self, w: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(100.0 * tf.square(w[1:] - tf.square(w[:-1])) + tf.square(1 - w[:-1]))


def _analytic_model(
    input_shape: Sequence[int], layer: _AnalyticObjective, name: str
) -> keras.Model:
    if len(input_shape) != 1 or input_shape[0] < 1:
        raise ValueError(
            f"{name}: input_shape must be (dim,) (the 'analytic' dataset's noise vectors), got "
            f"{tuple(input_shape)}."
        )
    inputs = keras.Input(shape=tuple(input_shape))
    model = keras.Model(inputs, layer(inputs), name=name)
    model.optimum_value = 0.0
    model.optimum_point = layer.optimum_point.astype(np.float32)
    return model


@gin.configurable
def quadratic(
    input_shape: Sequence[int],
    num_classes: int | None = None,
    condition_number: float = 100.0,
    seed: int = 0,
) -> keras.Model:
    """Quadratic f(w) = ½ (w − w*)ᵀ A (w − w*), spectrum log-spaced in [1, κ], random rotation.

    f* = 0 at w*; w starts at 0. With noise inputs ξ the batch loss is f(w) + ξ̄ᵀ(w − w*)
    (the noisy quadratic). See the module docstring for the contract.

    Args:
      input_shape: ``(dim,)``; dim is the number of parameters.
      num_classes: ignored (accepted for the common model signature).
      condition_number: κ, the ratio of the largest to the smallest eigenvalue of A.
      seed: seed of the rotation Q and of w* (the problem, not the run).

    Returns:
      A built ``keras.Model`` with outputs ``[batch]`` and attributes ``optimum_value`` (0.0)
      and ``optimum_point`` (w*, float32 ``[dim]``).
    """
    del num_classes
    return _analytic_model(input_shape, QuadraticObjective(condition_number, seed), "quadratic")


@gin.configurable
def rosenbrock(input_shape: Sequence[int], num_classes: int | None = None) -> keras.Model:
    """n-dimensional Rosenbrock f(w) = Σᵢ 100 (wᵢ₊₁ − wᵢ²)² + (1 − wᵢ)², n = dim ≥ 2.

    f* = 0 at w* = (1, …, 1); w starts at the classic (−1.2, 1, −1.2, 1, …).

    Reference: H. H. Rosenbrock, "An automatic method for finding the greatest or least value of
    a function", The Computer Journal, 1960.

    Args:
      input_shape: ``(dim,)``; dim is the number of parameters.
      num_classes: ignored (accepted for the common model signature).

    Returns:
      A built ``keras.Model`` with outputs ``[batch]`` and attributes ``optimum_value`` (0.0)
      and ``optimum_point`` (ones).
    """
    del num_classes
    return _analytic_model(input_shape, RosenbrockObjective(), "rosenbrock")
