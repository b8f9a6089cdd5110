"""Models of the benchmark problems (:mod:`dirgrad_opt.problems`) that the model zoo lacks.

Analytic problems (the contract of :mod:`dirgrad_opt.models.analytic`: the model holds w and
outputs one objective value per input row):

* ``shifted_quadratic`` — DeepOBS's ``quadratic_deep``: per example ½ (θ − xᵢ)ᵀ Q (θ − xᵢ),
  Q = Rᵀ diag(λ) R with 90 eigenvalues from U(0, 1) and 10 from U(30, 60) and R a Haar
  rotation, all drawn from ``RandomState(42)`` in DeepOBS's order (so Q is DeepOBS's); θ₀ = 1.
* ``noisy_quadratic`` — the noisy quadratic model of Zhang et al. (2019): f(w) = ½ Σⱼ hⱼ wⱼ²,
  hⱼ = 1/j, with inputs ξ (``nqm_noise``) adding gradient noise of covariance H/B; w₀ = 1.
* ``beale``, ``branin`` — 2-D test functions with DeepOBS's starting points, noise ξᵀ(w − w*).

Networks: ``mnist1d_gru`` (the MNIST-1D paper's recurrent baseline), ``char_rnn`` (a GRU
character language model), ``cnn_3c3d`` (DeepOBS's CIFAR-10 3c3d). DeepOBS's Fashion-MNIST 2c2d
is ``cnn2d(filters=(32, 64), kernel_size=5, dense_width=1024)`` and ResNet-20 is
``resnet(blocks_per_stage=3)``; see ``configs/problems/``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gin
import keras
import numpy as np
import tensorflow as tf

from dirgrad_opt.data.offline import nqm_curvature
from dirgrad_opt.models.analytic import _analytic_model, _AnalyticObjective


# -- DeepOBS quadratic_deep --------------------------------------------------------------------
def haar_rotation(dim: int, rng: np.random.RandomState) -> np.ndarray:
    """A Haar-random rotation in SO(dim) by the subgroup algorithm (Diaconis & Shahshahani 1987).

    Start from a 2-D rotation by angle 2πU; to go from SO(d) to SO(d + 1), draw v uniform on the
    sphere S^d, embed the current R as diag(1, R) = D and reflect it by the Householder
    reflection of x = (e₁ − v)/‖e₁ − v‖: R ← D − 2 x (xᵀ D). The result is negated, as DeepOBS
    does, so that the draws (and Q) match DeepOBS's ``quadratic_deep`` for the same generator.
    """
    if dim < 2:
        raise ValueError(f"haar_rotation needs dim >= 2, got {dim}")
    angle = 2 * np.pi * rng.uniform()
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    for d in range(2, dim):
        v = rng.normal(size=(d + 1, 1))
        v /= np.sqrt(v.T @ v)
        e = np.zeros((d + 1, 1))
        e[0, 0] = 1.0
        x = (e - v) / np.sqrt((e - v).T @ (e - v))
        embedded = np.eye(d + 1)
        embedded[1:, 1:] = rotation
        rotation = embedded - 2 * np.outer(x, x.T @ embedded)
    return -rotation


def deepobs_hessian(seed: int = 42) -> np.ndarray:
    """Q of DeepOBS's ``quadratic_deep``: Rᵀ diag(λ) R, λ = (U(0,1)⁹⁰, U(30,60)¹⁰), R Haar,
    drawn in that order from ``RandomState(seed)`` (DeepOBS: 42). 100 × 100, float64."""
    rng = np.random.RandomState(seed)
    eigenvalues = np.concatenate([rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)])
    rotation = haar_rotation(100, rng)
    return rotation.T @ np.diag(eigenvalues) @ rotation


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class ShiftedQuadratic(keras.layers.Layer):
    """outᵢ = ½ (θ − xᵢ)ᵀ Q (θ − xᵢ) per input row xᵢ; Q = :func:`deepobs_hessian`, θ₀ = 1."""

    def __init__(self, hessian_seed: int = 42, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hessian_seed = int(hessian_seed)

    def build(self, input_shape: Sequence[int | None]) -> None:
        dim = int(input_shape[-1])
        if dim != 100:
            raise ValueError(f"shifted_quadratic: DeepOBS's Q is 100 x 100, got input dim {dim}")
        self._hessian = deepobs_hessian(self.hessian_seed).astype(np.float32)
        self.w = self.add_weight(shape=(dim,), initializer="ones", name="w")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        d = tf.convert_to_tensor(self.w)[None, :] - tf.cast(x, self.w.dtype)
        qd = tf.linalg.matmul(d, tf.constant(self._hessian, d.dtype))  # Q symmetric
        return 0.5 * tf.reduce_sum(d * qd, axis=-1)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None]:
        return (input_shape[0],)

    def get_config(self) -> dict:
        return {**super().get_config(), "hessian_seed": self.hessian_seed}


@gin.configurable
def shifted_quadratic(
    input_shape: Sequence[int], num_classes: int | None = None, hessian_seed: int = 42
) -> keras.Model:
    """DeepOBS ``quadratic_deep``: loss ½ (θ − x)ᵀ Q (θ − x) averaged over the batch's x.

    Minimiser over the data: θ* = mean(x) (≈ 0); Q's spectrum: 90 eigenvalues in (0, 1),
    10 in (30, 60). Reference: Schneider, Balles & Hennig, "DeepOBS", ICLR 2019.

    Args:
      input_shape: ``(100,)`` (the ``deepobs_quadratic`` data).
      num_classes: ignored.
      hessian_seed: seed of λ and R (DeepOBS: 42).

    Returns:
      A built ``keras.Model`` with outputs ``[batch]``, ``optimum_value`` 0 (over x = 0).
    """
    del num_classes
    if tuple(input_shape) != (100,):
        raise ValueError(f"shifted_quadratic: input_shape must be (100,), got {input_shape}")
    inputs = keras.Input(shape=(100,))
    model = keras.Model(inputs, ShiftedQuadratic(hessian_seed)(inputs), name="quadratic_deep")
    model.optimum_value = 0.0
    model.optimum_point = np.zeros(100, np.float32)
    return model


# -- noisy quadratic model -----------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="dirgrad_opt")
class DiagonalQuadratic(_AnalyticObjective):
    """f(w) = ½ Σⱼ hⱼ wⱼ², hⱼ = 1/j (the NQM); w* = 0; w₀ = 1."""

    def _setup(self, dim: int) -> None:
        self.curvature = nqm_curvature(dim).astype(np.float32)
        self.optimum_point = np.zeros(dim)
        self.initial_point = np.ones(dim)

    def objective(self, w: tf.Tensor) -> tf.Tensor:
        return 0.5 * tf.reduce_sum(tf.constant(self.curvature, w.dtype) * tf.square(w))


@gin.configurable
def noisy_quadratic(input_shape: Sequence[int], num_classes: int | None = None) -> keras.Model:
    """The noisy quadratic model (NQM): f(w) = ½ Σⱼ wⱼ²/j, gradient noise covariance H/B.

    Reference: Zhang et al., "Which algorithmic choices matter at which batch sizes? Insights
    from a noisy quadratic model", NeurIPS 2019.
    """
    del num_classes
    return _analytic_model(input_shape, DiagonalQuadratic(), "noisy_quadratic")


# -- 2-D test functions --------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="dirgrad_opt")
class BealeObjective(_AnalyticObjective):
    """f(u, v) = (1.5 − u + uv)² + (2.25 − u + uv²)² + (2.625 − u + uv³)²; f* = 0 at (3, ½);
    starts at DeepOBS's (−4.5, 4.5)."""

    def _setup(self, dim: int) -> None:
        if dim != 2:
            raise ValueError(f"beale is 2-D, got input dimension {dim}")
        self.optimum_point = np.array([3.0, 0.5])
        self.initial_point = np.array([-4.5, 4.5])

    def objective(self, w: tf.Tensor) -> tf.Tensor:
        u, v = w[0], w[1]
        return (
            tf.square(1.5 - u + u * v)
            + tf.square(2.25 - u + u * v**2)
            + tf.square(2.625 - u + u * v**3)
        )


BRANIN_MINIMUM = 10.0 / (8.0 * math.pi)  # 0.397887...


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class BraninObjective(_AnalyticObjective):
    """f(u, v) = (v − 5.1u²/(4π²) + 5u/π − 6)² + 10 (1 − 1/(8π)) cos u + 10; f* = 10/(8π) ≈
    0.397887 at (−π, 12.275), (π, 2.275), (9.42478, 2.475); starts at DeepOBS's (2.5, 12.5)."""

    def _setup(self, dim: int) -> None:
        if dim != 2:
            raise ValueError(f"branin is 2-D, got input dimension {dim}")
        self.optimum_point = np.array([math.pi, 2.275])
        self.initial_point = np.array([2.5, 12.5])

    def objective(self, w: tf.Tensor) -> tf.Tensor:
        u, v = w[0], w[1]
        b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
        return tf.square(v - b * u**2 + c * u - 6.0) + 10.0 * (1 - t) * tf.cos(u) + 10.0


@gin.configurable
def beale(input_shape: Sequence[int], num_classes: int | None = None) -> keras.Model:
    """Beale's function (2-D); see :class:`BealeObjective`."""
    del num_classes
    return _analytic_model(input_shape, BealeObjective(), "beale")


@gin.configurable
def branin(input_shape: Sequence[int], num_classes: int | None = None) -> keras.Model:
    """The Branin(-Hoo) function (2-D); see :class:`BraninObjective`. ``optimum_value`` is
    10/(8π), not 0."""
    del num_classes
    model = _analytic_model(input_shape, BraninObjective(), "branin")
    model.optimum_value = BRANIN_MINIMUM
    return model


# -- networks ------------------------------------------------------------------------------------
@gin.configurable
def mnist1d_gru(
    input_shape: Sequence[int], num_classes: int, units: int = 6, bidirectional: bool = True
) -> keras.Model:
    """The MNIST-1D paper's recurrent baseline: a (bidirectional) GRU over the 40 samples, one
    feature per step, then a linear layer on all its outputs (flattened).

    Reference: Greydanus & Kobak, "Scaling down deep learning with MNIST-1D", ICML 2024.

    Args:
      input_shape: ``(length,)``; each sample is one time step.
      num_classes: outputs.
      units: GRU units per direction.
      bidirectional: run a second GRU backwards and concatenate.
    """
    if len(input_shape) != 1:
        raise ValueError(f"mnist1d_gru: input_shape must be (length,), got {tuple(input_shape)}")
    inputs = keras.Input(shape=tuple(input_shape))
    h = keras.layers.Reshape((input_shape[0], 1))(inputs)
    gru = keras.layers.GRU(units, return_sequences=True)
    h = keras.layers.Bidirectional(gru)(h) if bidirectional else gru(h)
    logits = keras.layers.Dense(num_classes)(keras.layers.Flatten()(h))
    return keras.Model(inputs, logits, name="mnist1d_gru")


@gin.configurable
def char_rnn(
    input_shape: Sequence[int], num_classes: int, embedding: int = 32, units: int = 128
) -> keras.Model:
    """A character language model: embedding → GRU → per-position logits over the vocabulary.

    Args:
      input_shape: ``(T,)`` character ids (as float; cast to int by the embedding).
      num_classes: vocabulary size.
      embedding: embedding width.
      units: GRU units.

    Returns:
      A built model with outputs ``[batch, T, num_classes]``.
    """
    if len(input_shape) != 1:
        raise ValueError(f"char_rnn: input_shape must be (T,), got {tuple(input_shape)}")
    inputs = keras.Input(shape=tuple(input_shape))
    h = keras.layers.Embedding(num_classes, embedding)(inputs)
    h = keras.layers.GRU(units, return_sequences=True)(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(h), name="char_rnn")


@gin.configurable
def cnn_3c3d(input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """DeepOBS's 3c3d: conv 64@5×5 valid → pool 3/2 → conv 96@3×3 valid → pool 3/2 →
    conv 128@3×3 same → pool 3/2 → dense 512 → dense 256 → linear (ReLU throughout; pools
    ``same``). No dropout or weight decay here (DeepOBS adds L2 0.002).
    """
    inputs = keras.Input(shape=tuple(input_shape))
    h = inputs if len(input_shape) == 3 else keras.layers.Reshape((*input_shape, 1))(inputs)
    for filters, kernel, padding in ((64, 5, "valid"), (96, 3, "valid"), (128, 3, "same")):
        h = keras.layers.Conv2D(filters, kernel, padding=padding, activation="relu")(h)
        h = keras.layers.MaxPooling2D(3, strides=2, padding="same")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(512, activation="relu")(h)
    h = keras.layers.Dense(256, activation="relu")(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(h), name="cnn_3c3d")
