"""Zeroth-order estimators beyond plain SPSA/MeZO: stateful updates, low-rank and sparse probes.

All of them probe the loss at ``w ± ε z_k`` (two forward passes per direction, no JVP, no
backward pass), form ``g̃ = (1/K) Σ_k c_k z_k`` with ``c_k = (L(w+εz_k) − L(w−εz_k)) / 2ε``,
and differ in how ``z`` is drawn or how ``g̃`` is used:

* :class:`ZOMomentum` — ZO-SGD with heavy-ball momentum, ``m ← β m + g̃; w ← w − η m``
  (ZO-SGD-MMT of ZO-Bench).
* :class:`ZOAdam` — Adam fed ``g̃`` (ZO-Adam of ZO-Bench).
* :class:`LowRankZerothOrder` — LOZO: each weight matrix is perturbed by a rank-r matrix
  ``U Vᵀ / √r`` (``E[z zᵀ] = I``), ``V`` kept for ``lazy_steps`` steps.
* :class:`SparseZerothOrder` — only a random fraction ``density`` of the weights is perturbed
  per step, scaled ``1/√density`` (``E[z zᵀ] = I``).

Each keeps the drawn ``z`` for the step (the exact mode of
:class:`~dirgrad_opt.optimizers.random_direction.ZerothOrder`: ``z`` drawn once, the start
point restored bit-exactly before the update). Since ``E[z zᵀ] = I`` for every probe
distribution here, ``E[g̃] = ∇L + O(ε²)`` for each (the momentum/Adam updates then use this
estimate as they would a stochastic gradient; Adam's normalisation makes its *update* biased,
as with true stochastic gradients).

References:
  Y. Zhang, P. Li, J. Hong, J. Li, Y. Zhang, W. Zheng, P.-Y. Chen, J. D. Lee, W. Yin, M. Hong,
  Z. Wang, S. Liu, T. Chen, "Revisiting Zeroth-Order Optimization for Memory-Efficient LLM
  Fine-Tuning: A Benchmark" (ZO-Bench), ICML 2024.
  Y. Chen, Y. Zhang, L. Cao, K. Yuan, Z. Wen, "Enhancing Zeroth-order Fine-tuning for Language
  Models with Low-rank Structures" (LOZO), arXiv:2410.07698, 2024.
  A. Chen, Y. Zhang, J. Jia, J. Diffenderfer, J. Liu, K. Parasyris, Y. Zhang, Z. Zhang,
  B. Kailkhura, S. Liu, "DeepZero: Scaling up Zeroth-Order Optimization for Deep Model
  Training", ICLR 2024 (sparse perturbations).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from dirgrad_opt import directions, tree
from dirgrad_opt.optimizers.base import StepContext, check_open_unit, step_info
from dirgrad_opt.optimizers.random_direction import (
    ZerothOrder,
    _check_int,
    _report_diagnostics,
    _step_seed,
)

__all__ = ["LowRankZerothOrder", "SparseZerothOrder", "ZOAdam", "ZOMomentum"]


class _StoredZerothOrder(ZerothOrder):
    """ZerothOrder with ``z`` kept for the step and the estimate handed to an update rule.

    Subclasses choose the probe (:meth:`perturbations`) and/or the update (:meth:`apply`).
    """

    def __init__(self, learning_rate: Any = 1e-3, **kwargs: Any):
        if kwargs.get("in_place"):
            raise ValueError(
                f"{type(self).__name__} keeps z for the step (and may keep optimizer state "
                "of the weights' size): in_place=True is not supported; use ZerothOrder"
            )
        kwargs.pop("in_place", None)
        super().__init__(learning_rate=learning_rate, **kwargs)

    def apply_estimate(
        self, ctx: StepContext, estimate: list[tf.Tensor], rate: tf.Tensor, ok: tf.Tensor
    ) -> None:
        """Default update: ``w ← w0 − η g̃ − λ w0`` where ``ok`` (variables are at ``w0``)."""
        for v, w0, g in zip(ctx.variables, ctx.start, estimate, strict=True):
            new = w0 - tf.cast(rate, g.dtype) * g
            if self.weight_decay and self._use_weight_decay(v):
                new = new - tf.constant(self.weight_decay, g.dtype) * w0
            v.assign(tf.where(ok, new, w0))

    def step(self, ctx: StepContext) -> dict[str, tf.Tensor]:
        """Probe ``w ± ε z_k`` (z drawn once), restore ``w0``, apply the update rule."""
        seed = _step_seed(self, self.seed)
        seeds = [directions.make_seed(seed, k) for k in range(self.num_directions)]
        base = ctx.loss() if self.one_sided else None
        side = self._side_by_side(ctx)  # probes without moving the variables
        kept = []
        probes: tuple[list, list, list] = ([], [], [])  # c_k, centres, finite
        for s in seeds:
            z = self.perturbations(ctx.variables, s)
            kept.append(z)
            plus, minus = self._probes(ctx, z, side)
            self._record(plus, minus, base, probes)
        if not side:
            ctx.restore()
        loss, slope, lr, ok = self._summary(base, probes)
        safe = [tf.where(ok, c, tf.zeros_like(c)) for c in probes[0]]
        estimate = [
            self._estimate_leaf(ctx, i, seeds, safe, kept) for i in range(len(ctx.variables))
        ]
        if self.diagnostics:
            _report_diagnostics(ctx, estimate)
        rate = tf.where(ok, lr, tf.zeros_like(lr))
        self.apply_estimate(ctx, estimate, rate, ok)
        return step_info(loss, rate, ok, slope)


class _InnerZerothOrder(_StoredZerothOrder):
    """The estimate is fed to a Keras optimizer (its state: the weights' size or twice it)."""

    def _lr_arg(self) -> Any:
        """This optimizer's learning rate (float or schedule) for the inner optimizer."""
        lr = self._learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            return copy.deepcopy(lr)
        return float(lr.numpy()) if hasattr(lr, "numpy") else float(lr)

    def apply_estimate(
        self, ctx: StepContext, estimate: list[tf.Tensor], rate: tf.Tensor, ok: tf.Tensor
    ) -> None:
        """``inner.apply(g̃)`` when the probes were finite (else nothing moves)."""

        def update() -> tf.Tensor:
            self.direction_optimizer.apply(estimate, ctx.variables)
            return tf.constant(True)

        tf.cond(ok & tf.not_equal(rate, 0.0), update, lambda: tf.constant(False))
        if self.weight_decay:
            for v, w0 in zip(ctx.variables, ctx.start, strict=True):
                if self._use_weight_decay(v):
                    v.assign(tf.where(ok, tree._value(v) - self.weight_decay * w0, tree._value(v)))


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class ZOMomentum(_InnerZerothOrder):
    """ZO-SGD with momentum (ZO-SGD-MMT, ZO-Bench): ``m ← β m + g̃``, ``w ← w − η m``.

    ``g̃`` is the two-point SPSA estimate of :class:`ZerothOrder` (K directions, ``z`` drawn
    once per step). Momentum averages the estimates of successive steps, which cuts their
    variance roughly by ``(1+β)/(1−β)`` along directions the gradient keeps.

    Cost per step: 2K forward passes (K + 1 one-sided), no backward pass. Memory: one momentum
    buffer (the weights' size) plus the kept ``z`` and the start point.

    Args:
      learning_rate: η (default 1e-3; Keras ``SGD(learning_rate=η, momentum=β)`` does the
        update, so ``m`` accumulates ``−η g̃`` — the same iterates).
      momentum: β in [0, 1) (default 0.9).
      eps, num_directions, one_sided, distribution, seed, diagnostics, weight_decay, name: as in
        :class:`ZerothOrder` (``in_place`` is not supported).

    Reference: Zhang et al., "Revisiting Zeroth-Order Optimization for Memory-Efficient LLM
    Fine-Tuning: A Benchmark" (ZO-Bench), ICML 2024.
    """

    def __init__(self, learning_rate: Any = 1e-3, momentum: float = 0.9, **kwargs: Any):
        super().__init__(learning_rate=learning_rate, **kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.direction_optimizer = keras.optimizers.SGD(self._lr_arg(), momentum=self.momentum)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["momentum"] = self.momentum
        return config


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class ZOAdam(_InnerZerothOrder):
    """ZO-Adam (ZO-Bench): Adam's moment estimates fed the SPSA estimate ``g̃``.

    Per-coordinate normalisation by ``√v̂`` evens out the scale of ``g̃``'s coordinates; with
    K = 1 it is close to sign descent along ``z``. Cost per step: 2K forward passes, no
    backward pass. Memory: Adam's two moment buffers (twice the weights) plus the kept ``z``
    and the start point — it gives up MeZO's memory advantage for a better update.

    Args:
      learning_rate: Adam's step (default 1e-3).
      beta_1, beta_2, epsilon: Adam's (defaults 0.9, 0.999, 1e-7 — Keras's).
      eps, num_directions, one_sided, distribution, seed, diagnostics, weight_decay, name: as in
        :class:`ZerothOrder` (``in_place`` is not supported).

    Reference: Zhang et al., "Revisiting Zeroth-Order Optimization for Memory-Efficient LLM
    Fine-Tuning: A Benchmark" (ZO-Bench), ICML 2024.
    """

    def __init__(
        self,
        learning_rate: Any = 1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        **kwargs: Any,
    ):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta_1 = check_open_unit("beta_1", beta_1)
        self.beta_2 = check_open_unit("beta_2", beta_2)
        self.epsilon = float(epsilon)
        self.direction_optimizer = keras.optimizers.Adam(
            self._lr_arg(), beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class LowRankZerothOrder(_StoredZerothOrder):
    """LOZO: zeroth-order SGD with low-rank perturbations of the weight matrices.

    Every 2-D (or higher, flattened to ``[rows, −1]``) weight ``W`` of shape ``m × n`` is
    perturbed by ``Z = U Vᵀ / √r`` with ``U ~ N(0, I_{m×r})`` drawn every step and
    ``V ~ N(0, I_{n×r})`` drawn every ``lazy_steps`` steps (LOZO's lazy sampling, so successive
    steps move in a common column space); vectors (biases) get full Gaussian perturbations.
    ``E[Z ⊗ Z] = I`` (``E[(UVᵀ)_{ab}(UVᵀ)_{ij}] = r δ_ai δ_bj``), so the two-point estimate
    ``c Z`` is unbiased up to O(ε²) like SPSA's, and it has the structure of a rank-r update.

    Cost per step: 2K forward passes; generating the probe costs ``(m + n) r`` numbers per
    matrix instead of ``m n``.

    Args:
      rank: r ≥ 1 (default 2; LOZO uses 2–8).
      lazy_steps: ν ≥ 1, steps between redraws of ``V`` (default 50; LOZO's ν).
      learning_rate, eps, num_directions, one_sided, seed, diagnostics, weight_decay, name: as
        in :class:`ZerothOrder` (``distribution`` is Gaussian; ``in_place`` not supported).

    Reference: Chen, Zhang, Cao, Yuan, Wen, "Enhancing Zeroth-order Fine-tuning for Language
    Models with Low-rank Structures" (LOZO), arXiv:2410.07698, 2024.
    """

    def __init__(
        self, learning_rate: Any = 1e-3, rank: int = 2, lazy_steps: int = 50, **kwargs: Any
    ):
        if kwargs.get("distribution", "gaussian") != "gaussian":
            raise ValueError("LowRankZerothOrder draws Gaussian factors; leave distribution unset")
        kwargs.pop("distribution", None)
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.rank = _check_int("rank", rank)
        self.lazy_steps = _check_int("lazy_steps", lazy_steps)

    def perturbations(self, variables: Sequence[Any], seed: tf.Tensor) -> list[tf.Tensor]:
        """``U Vᵀ/√r`` per matrix (``V`` seeded by ``n // lazy_steps``), else N(0, I)."""
        n = tf.cast(tree._value(self.iterations), tf.int64)
        v_seed = directions.make_seed(self.seed, n // self.lazy_steps, -1)
        out = []
        for i, var in enumerate(variables):
            shape = list(var.shape)
            dtype = tf.as_dtype(var.dtype)
            if len(shape) < 2:
                out.append(
                    tf.random.stateless_normal(
                        shape, seed=directions.make_seed(seed, i), dtype=dtype
                    )
                )
                continue
            rows, cols = shape[0], math.prod(shape[1:])
            r = min(self.rank, rows, cols)
            u = tf.random.stateless_normal(
                [rows, r], seed=directions.make_seed(seed, i), dtype=dtype
            )
            v = tf.random.stateless_normal(
                [cols, r], seed=directions.make_seed(v_seed, i), dtype=dtype
            )
            z = tf.matmul(u, v, transpose_b=True) / tf.constant(math.sqrt(r), dtype)
            out.append(tf.reshape(z, shape))
        return out

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("distribution", None)
        config.update(rank=self.rank, lazy_steps=self.lazy_steps)
        return config


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class SparseZerothOrder(_StoredZerothOrder):
    """Zeroth-order SGD with sparse perturbations: a random fraction of the weights per step.

    ``z_j = m_j g_j / √p`` with ``m_j ~ Bernoulli(p)`` (``p = density``) and ``g_j`` Gaussian
    or ±1, drawn afresh each step, so ``E[z zᵀ] = I`` and the two-point estimate is unbiased up
    to O(ε²). Perturbing fewer coordinates lowers the estimate's variance per coordinate that
    moves, at the price of moving fewer coordinates per step (DeepZero's observation that
    sparse ZO training scales better; DeepZero itself fixes the mask by pruning at
    initialisation and estimates coordinate-wise — this is the random-mask version, as in
    Sparse-MeZO).

    Cost per step: 2K forward passes.

    Args:
      density: p in (0, 1] (default 0.1).
      learning_rate, eps, num_directions, one_sided, distribution, seed, diagnostics,
        weight_decay, name: as in :class:`ZerothOrder` (``in_place`` not supported).

    Reference: Chen et al., "DeepZero: Scaling up Zeroth-Order Optimization for Deep Model
    Training", ICLR 2024; Y. Liu et al., "Sparse MeZO", arXiv:2402.15751, 2024.
    """

    def __init__(self, learning_rate: Any = 1e-3, density: float = 0.1, **kwargs: Any):
        super().__init__(learning_rate=learning_rate, **kwargs)
        p = float(density)
        if not 0.0 < p <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        self.density = p

    def perturbations(self, variables: Sequence[Any], seed: tf.Tensor) -> list[tf.Tensor]:
        """Dense draws masked by Bernoulli(p), scaled by ``1/√p``."""
        dense = super().perturbations(variables, seed)
        out = []
        for i, z in enumerate(dense):
            u = tf.random.stateless_uniform(
                z.shape, seed=directions.make_seed(seed, i, -2), dtype=z.dtype
            )
            scale = tf.constant(1.0 / math.sqrt(self.density), z.dtype)
            out.append(tf.where(u < self.density, z * scale, tf.zeros_like(z)))
        return out

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["density"] = self.density
        return config
