"""Synthetic datasets that need no files: classification, regression, analytic-objective noise.

Each generator is ``@gin.configurable`` and returns an :class:`ArrayData` (NumPy arrays held in
memory). The data are a fixed function of ``data_seed`` (the *problem*); the order in which a
run visits them comes from the run's seed in :func:`dirgrad_opt.data.load_dataset`.
"""

from __future__ import annotations

import dataclasses

import gin
import numpy as np

CLASSIFICATION = "classification"
REGRESSION = "regression"
OBJECTIVE = "objective"
TASKS = (CLASSIFICATION, REGRESSION, OBJECTIVE)


@dataclasses.dataclass(frozen=True)
class ArrayData:
    """A small supervised dataset held in memory as NumPy arrays.

    Attributes:
      x_train, y_train, x_test, y_test: features (leading axis = examples) and targets.
      task: ``"classification"`` (integer labels), ``"regression"`` (float targets ``[N, k]``)
        or ``"objective"`` (analytic problems: the targets are unused zeros).
      num_classes: number of classes for classification, else ``None``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"ArrayData.task is {self.task!r}; expected one of {TASKS}.")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(
                    f"ArrayData {split} split has {len(x)} feature rows and {len(y)} targets; "
                    "they must be equal and non-zero."
                )


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value!r}.")


@gin.configurable
def gaussian_blobs(
    num_train: int = 1000,
    num_test: int = 1000,
    dim: int = 10,
    num_classes: int = 4,
    separation: float = 3.0,
    data_seed: int = 0,
) -> ArrayData:
    """Classification of isotropic Gaussian blobs.

    Class centres c_k ~ N(0, (separation² / dim) I), so centre distances are about
    √2 · separation noise standard deviations; x = c_y + ε, ε ~ N(0, I); labels are balanced.

    Args:
      num_train, num_test: number of examples per split.
      dim: feature dimension.
      num_classes: number of blobs (classes).
      separation: centre scale in units of the noise standard deviation (larger = easier).
      data_seed: seed of the data.

    Returns:
      An :class:`ArrayData` with float32 features ``[N, dim]`` and int32 labels ``[N]``.
    """
    _check_positive(num_train=num_train, num_test=num_test, dim=dim, separation=separation)
    if num_classes < 2:
        raise ValueError(f"gaussian_blobs needs num_classes >= 2, got {num_classes}.")
    rng = np.random.default_rng(data_seed)
    n = num_train + num_test
    centres = rng.standard_normal((num_classes, dim)) * separation / np.sqrt(dim)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
    x = (centres[labels] + rng.standard_normal((n, dim))).astype(np.float32)
    return ArrayData(
        x[:num_train],
        labels[:num_train],
        x[num_train:],
        labels[num_train:],
        task=CLASSIFICATION,
        num_classes=num_classes,
    )


@gin.configurable
def linear_regression(
    num_train: int = 1000,
    num_test: int = 1000,
    dim: int = 10,
    noise_scale: float = 0.1,
    data_seed: int = 0,
) -> ArrayData:
    """Noisy linear regression: y = xᵀw + σ ε, with x ~ N(0, I), w ~ N(0, I/dim), ε ~ N(0, 1).

    The best possible test mean squared error is σ² (``noise_scale**2``).

    Args:
      num_train, num_test: number of examples per split.
      dim: feature dimension.
      noise_scale: σ, the standard deviation of the target noise (0 = noiseless).
      data_seed: seed of the data.

    Returns:
      An :class:`ArrayData` with float32 features ``[N, dim]`` and float32 targets ``[N, 1]``.
    """
    _check_positive(num_train=num_train, num_test=num_test, dim=dim)
    if noise_scale < 0:
        raise ValueError(f"linear_regression noise_scale must be >= 0, got {noise_scale}.")
    rng = np.random.default_rng(data_seed)
    n = num_train + num_test
    w = rng.standard_normal((dim, 1)) / np.sqrt(dim)
    x = rng.standard_normal((n, dim))
    y = x @ w + noise_scale * rng.standard_normal((n, 1))
    x, y = x.astype(np.float32), y.astype(np.float32)
    return ArrayData(x[:num_train], y[:num_train], x[num_train:], y[num_train:], task=REGRESSION)


@gin.configurable
def analytic_noise(
    dim: int = 10,
    noise_scale: float = 0.0,
    num_train: int = 1000,
    data_seed: int = 0,
) -> ArrayData:
    """Inputs for the analytic problems in :mod:`dirgrad_opt.models`: linear-term noise vectors.

    An analytic model outputs, per example, f(w) + ξᵢᵀ(w − w*), so a batch's mean gradient is
    ∇f(w) + mean(ξ): Gaussian gradient noise of standard deviation σ/√batch per coordinate.
    The training vectors are ξᵢ = σ (zᵢ − z̄), zᵢ ~ N(0, I), centred so that the mean over the
    whole training set is exactly f(w) (the noiseless objective, with the same optimum). The test
    split is one zero vector, so the test loss is f(w) exactly. ``noise_scale=0`` gives the
    deterministic problem.

    Args:
      dim: number of parameters of the analytic problem (the model reads it from input_shape).
      noise_scale: σ, the per-example noise standard deviation (0 = no noise).
      num_train: number of noise vectors; batches cycle through them in epochs.
      data_seed: seed of the noise.

    Returns:
      An :class:`ArrayData` with task ``"objective"``, float32 inputs ``[N, dim]`` and zero
      float32 targets ``[N]`` (unused).
    """
    _check_positive(dim=dim, num_train=num_train)
    if noise_scale < 0:
        raise ValueError(f"analytic_noise noise_scale must be >= 0, got {noise_scale}.")
    z = np.random.default_rng(data_seed).standard_normal((num_train, dim))
    x_train = (noise_scale * (z - z.mean(axis=0))).astype(np.float32)
    return ArrayData(
        x_train,
        np.zeros(num_train, np.float32),
        np.zeros((1, dim), np.float32),
        np.zeros(1, np.float32),
        task=OBJECTIVE,
    )


#: Synthetic dataset names accepted by ``load_dataset`` and their generators.
SYNTHETIC_DATASETS = {
    "blobs": gaussian_blobs,
    "linear_regression": linear_regression,
    "analytic": analytic_noise,
}
