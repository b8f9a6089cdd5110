"""Random-direction optimizers: forward gradient, zeroth order (SPSA / MeZO), random line search.

All three need only *directional* information along random directions — a forward-mode JVP or
two loss evaluations — and never a backward pass:

* :class:`ForwardGradient` — ``g̃ = (1/K) Σ_k (∇L·v_k) v_k / s``, then SGD (or any Keras
  optimizer fed ``g̃`` as its gradient). Baydin et al. 2022.
* :class:`ZerothOrder` — SPSA / MeZO: ``g̃ = (1/K) Σ_k (L(w+εz_k) − L(w−εz_k)) / (2ε) · z_k``
  from loss values only. Spall 1992; Malladi et al. 2023.
* :class:`RandomDirectionLineSearch` — a random direction flipped to descent by the sign of its
  directional derivative, then a backtracking Armijo search along it.

**Directions are never stored.** Step n draws its directions from the stateless seed
``directions.make_seed(seed, n)`` (``seed`` a hyperparameter, ``n = iterations``) and regenerates
them whenever it needs them again. The optimizer state is therefore a few scalars (plus an inner
optimizer's state, if any), restoring a checkpoint restores the random stream, and two
optimizers with the same ``seed`` draw the same directions.

**Estimator diagnostics.** With ``diagnostics=True`` every step also computes the true gradient
``∇L(w)`` at the start point (1 forward + 1 backward pass, counted in the step's cost) and
reports in ``minimize``'s dict

    cosine     = g̃·∇L / (‖g̃‖ ‖∇L‖)        (NaN when either norm is 0)
    norm_ratio = ‖g̃‖ / ‖∇L‖               (NaN when ∇L = 0)

where ``g̃`` is the optimizer's gradient estimate (for the line search: the forward-gradient
estimate ``(∇L·v) v / s`` from its direction v).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from dirgrad_opt import directional, directions, tree
from dirgrad_opt.optimizers.base import (
    DirectionalOptimizer,
    StepContext,
    check_positive,
    step_info,
)
from dirgrad_opt.optimizers.line_searches import ArmijoLineSearch

__all__ = [
    "EstimateStep",
    "ForwardGradient",
    "RandomDirectionLineSearch",
    "ZerothOrder",
    "estimator_diagnostics",
    "forward_gradient_estimate",
    "variance_step_scale",
]

#: Ways :class:`ForwardGradient` and :class:`RandomDirectionLineSearch` take ``∇L·v``.
DERIVATIVE_METHODS = ("forward", "central_difference", "forward_difference", "reverse")
#: Direction distributions of :class:`ForwardGradient` and :class:`RandomDirectionLineSearch`.
DISTRIBUTIONS = ("gaussian", "rademacher", "unit_sphere")
#: Perturbation distributions of :class:`ZerothOrder` (independent per leaf, ``E[z zᵀ] = I``).
PERTURBATIONS = ("gaussian", "rademacher")

_CLIPPING = ("clipnorm", "clipvalue", "global_clipnorm")


# ----------------------------------------------------------------------------- pure functions


def forward_gradient_estimate(
    derivatives: tf.Tensor, directions_: Sequence[tf.Tensor], second_moment: float
) -> list[tf.Tensor]:
    """The forward-gradient estimate ``g̃ = (1/(K s)) Σ_k (∇L·v_k) v_k``.

    Unbiased, ``E[g̃] = ∇L``, whenever ``E[v vᵀ] = s·I`` (``s`` from
    :func:`dirgrad_opt.directions.second_moment`).

    Args:
      derivatives: ``[K]`` tensor of directional derivatives ``∇L·v_k``.
      directions_: list of leaves, leaf i of shape ``[K, *shape_i]``.
      second_moment: ``s``.

    Returns:
      The estimate, one tensor per leaf (shapes without the K axis).

    Reference:
      A. G. Baydin, B. A. Pearlmutter, D. Syme, F. Wood, P. Torr, "Gradients without
      Backpropagation", arXiv:2202.08587, 2022.
    """
    k = int(derivatives.shape[0])
    scale = 1.0 / (k * float(second_moment))
    out = []
    for v in directions_:  # the K coefficients scaled first: one pass over each leaf
        c = tf.cast(derivatives, v.dtype) * tf.constant(scale, v.dtype)
        if k == 1:  # a scalar times the leaf (a [1]·[1, n] tensordot is a slow matmul)
            out.append(c[0] * tf.squeeze(v, axis=0))
        else:
            out.append(tf.tensordot(c, v, axes=1))
    return out


def variance_step_scale(
    derivatives: tf.Tensor,
    directions_: Sequence[tf.Tensor],
    second_moment: float,
    finite_population: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Step scale ``ρ = max(0, 1 − V̂/‖g̃‖²)`` from the spread of K per-direction estimates.

    The K single-direction estimates ``g̃_k = (∇L·v_k) v_k / s`` average to ``g̃``. Their sample
    variance estimates the variance of the mean,

        V̂ = f · (1/(K(K−1))) Σ_k ‖g̃_k − g̃‖²,      E[V̂] = E‖g̃ − ∇L‖²,

    with ``f = 1`` for i.i.d. directions and the finite-population correction ``f = 1 − K/n``
    for K orthonormal directions out of n (they are K of the n vectors of a random basis drawn
    without replacement, whose n estimates average to ∇L exactly). Then
    ``‖g̃‖² − V̂`` is unbiased for ``‖∇L‖²`` and

        ρ = max(0, ‖g̃‖² − V̂) / ‖g̃‖²  ≈  ‖∇L‖² / (‖∇L‖² + tr Var g̃) = 1 / (1 + var/mean²),

    the factor by which the optimal SGD step on a quadratic shrinks under gradient noise
    (McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training",
    the noise scale ``B_noise``; here estimated from the step's own K directions). None of the
    papers of issue 12 (Baydin et al. 2022; Ren et al. 2022; Fournier et al. 2023; ZO-Bench,
    LOZO, DeepZero 2024) defines a variance-based step rule for several directions: this rule is
    ours. ``ρ`` is a ratio of two noisy estimates, so ``ρ g̃`` is a *biased* (shrunk) estimate
    of ∇L by design; ``‖g̃‖² − V̂`` is the unbiased part (tested).

    Args:
      derivatives: ``[K]`` directional derivatives ``∇L·v_k`` (K ≥ 2).
      directions_: leaves ``[K, *shape]`` of the directions.
      second_moment: ``s``, ``E[v vᵀ] = s I``.
      finite_population: n for orthonormal directions (applies ``f = 1 − K/n``), else None.

    Returns:
      ``(ρ, ‖g̃‖², V̂)`` as scalars of the derivatives' dtype.
    """
    k = int(derivatives.shape[0])
    if k < 2:
        raise ValueError("variance-based step control needs num_directions >= 2")
    dtype = derivatives.dtype
    sq = [tf.reshape(tf.cast(tf.square(v), dtype), [k, -1]) for v in directions_]
    sq_norms = tf.add_n([tf.reduce_sum(x, axis=1) for x in sq])  # ‖v_k‖²
    per_direction = tf.square(derivatives) * sq_norms / (second_moment**2)  # ‖g̃_k‖²
    estimate = forward_gradient_estimate(derivatives, directions_, second_moment)
    mean_sq = tf.cast(tree.dot(estimate, estimate), dtype)  # ‖g̃‖²
    spread = tf.maximum(tf.reduce_sum(per_direction) - k * mean_sq, 0.0)  # Σ‖g̃_k − g̃‖²
    fpc = 1.0 if finite_population is None else 1.0 - k / float(finite_population)
    variance = tf.constant(fpc / (k * (k - 1)), dtype) * spread
    scale = tf.where(
        mean_sq > 0, tf.maximum(mean_sq - variance, 0.0) / tf.where(mean_sq > 0, mean_sq, 1.0), 0.0
    )
    return scale, mean_sq, variance


def estimator_diagnostics(estimate: Any, gradient: Any) -> dict[str, tf.Tensor]:
    """Cosine similarity and norm ratio of a gradient estimate against the true gradient.

    ``cosine = g̃·g / (‖g̃‖‖g‖)``, ``norm_ratio = ‖g̃‖ / ‖g‖``; both NaN where undefined
    (a zero norm).

    Args:
      estimate: the estimate ``g̃`` (a tree like the variables).
      gradient: the true gradient ``g`` (same structure).

    Returns:
      ``{"cosine": scalar, "norm_ratio": scalar}`` (float32 or the leaves' dtype).
    """
    est_norm = tree.norm(estimate)
    grad_norm = tf.cast(tree.norm(gradient), est_norm.dtype)
    inner = tf.cast(tree.dot(estimate, gradient), est_norm.dtype)
    nan = tf.constant(float("nan"), est_norm.dtype)
    both = (est_norm > 0) & (grad_norm > 0)
    cosine = tf.where(both, inner / tf.where(both, est_norm * grad_norm, 1.0), nan)
    ratio = tf.where(grad_norm > 0, est_norm / tf.where(grad_norm > 0, grad_norm, 1.0), nan)
    return {"cosine": cosine, "norm_ratio": ratio}


def two_point_coefficient(plus: tf.Tensor, minus: tf.Tensor, eps: float) -> tf.Tensor:
    """SPSA's projected gradient ``(L(w+εz) − L(w−εz)) / 2ε ≈ ∇L·z`` (error O(ε²))."""
    return (plus - minus) / tf.constant(2.0 * eps, plus.dtype)


def one_sided_coefficient(plus: tf.Tensor, base: tf.Tensor, eps: float) -> tf.Tensor:
    """The one-sided projected gradient ``(L(w+εz) − L(w)) / ε ≈ ∇L·z`` (error O(ε))."""
    return (plus - base) / tf.constant(eps, plus.dtype)


# ----------------------------------------------------------------------------- shared helpers


def _step_seed(optimizer: keras.optimizers.Optimizer, seed: int) -> tf.Tensor:
    """This step's RNG seed: ``make_seed(seed, iterations)``."""
    return directions.make_seed(seed, tf.cast(tree._value(optimizer.iterations), tf.int64))


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return seed


def _check_choice(name: str, value: Any, choices: Sequence[str], hint: str = "") -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}{hint}")
    return value


def _check_fd_step(fd_step: Any) -> float | None:
    return None if fd_step is None else check_positive("fd_step", fd_step)


def _reject(owner: str, kwargs: dict[str, Any], names: Sequence[str], why: str) -> None:
    for name in names:
        if kwargs.get(name) is not None:
            raise ValueError(f"{owner} does not support `{name}`: {why}")
        kwargs.pop(name, None)


def _variable(v: Any) -> tf.Variable:
    """The ``tf.Variable`` behind a Keras variable (whose ``assign_add`` is ``assign(v + x)``)."""
    return directional._primal(v)


class _RecordingScope(keras.StatelessScope):
    """A ``keras.StatelessScope`` that also lists the variables assigned inside it.

    Losses added by layers (``add_loss``) are collected in the scope, so ``model.losses`` read
    inside it sees them.
    """

    def __init__(self, state_mapping: list[tuple[Any, tf.Tensor]]):
        super().__init__(state_mapping, collect_losses=True)
        self.assigned: list[Any] = []

    def add_update(self, update: tuple[Any, Any]) -> None:
        if all(update[0] is not v for v in self.assigned):
            self.assigned.append(update[0])
        super().add_update(update)


def _mean(values: list[tf.Tensor]) -> tf.Tensor:
    """The mean of scalars: the one itself, or a reduction (a fixed order, unlike ``add_n``)."""
    return values[0] if len(values) == 1 else tf.reduce_mean(tf.stack(values))


def _assign(v: Any, value: tf.Tensor, add: bool = False) -> list[Any]:
    """``v ← value`` (or ``v += value`` in place) on the ``tf.Variable``; returns what to wait on.

    Waiting on the assignment, not just on ``value``, keeps one leaf of temporaries alive at a
    time in graph mode (eager mode runs in order anyway and returns ``[]``).
    """
    var = _variable(v)
    op = (var.assign_add if add else var.assign)(value, read_value=False)
    return [] if tf.executing_eagerly() or op is None else [op]


def _report_diagnostics(ctx: StepContext, estimate: Sequence[tf.Tensor]) -> None:
    """Computes ``∇L`` at the current point (counted) and stores cosine / norm ratio."""
    _, grads = ctx.loss_and_gradient()
    ctx.metrics.update(estimator_diagnostics(list(estimate), grads))


# ----------------------------------------------------------------------------- ForwardGradient


class EstimateStep:
    """Mixin for rules that form a gradient estimate ``g̃``: SGD on it, or an inner optimizer's.

    With no inner optimizer the step is ``w ← w − η g̃`` (``η`` the scheduled learning rate,
    slope ``−g̃·g̃`` unless the rule knows better); with ``inner`` set (``direction_optimizer``),
    the inner Keras optimizer consumes ``g̃`` as its gradient and its update ``Δw`` is the whole
    step (step size 1, slope ``g̃·Δw``).
    """

    @property
    def inner(self) -> keras.optimizers.Optimizer | None:
        """The Keras optimizer fed the estimate (``None``: plain SGD with ``learning_rate``)."""
        return self.direction_optimizer

    def descend(
        self, ctx: StepContext, loss: tf.Tensor, estimate: list[tf.Tensor]
    ) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        """``(loss, d, slope)`` for the estimate: ``d = −g̃``, or the inner optimizer's update."""
        if self.inner is None:
            return loss, [-g for g in estimate], -tf.cast(tree.dot(estimate, estimate), loss.dtype)
        d = self._inner_direction(ctx, estimate)
        return loss, d, tf.cast(tree.dot(estimate, d), loss.dtype)

    def compute_step_size(
        self, ctx: StepContext, loss: tf.Tensor, direction: list[tf.Tensor], slope: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """``η`` (scheduled), or 1 with ``inner`` (the inner update is the whole step)."""
        if self.inner is not None:
            return tf.ones([], loss.dtype), tf.constant(True)
        return super().compute_step_size(ctx, loss, direction, slope)

    def get_config(self) -> dict[str, Any]:
        """The base config with ``inner`` serialized in place of ``direction`` (and no
        ``learning_rate`` when the inner optimizer carries it)."""
        config = super().get_config()
        config.pop("direction", None)
        if self.inner is not None:
            config.pop("learning_rate", None)
        config["inner"] = keras.optimizers.serialize(self.inner) if self.inner is not None else None
        return config


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class ForwardGradient(EstimateStep, DirectionalOptimizer):
    """Forward-gradient descent: an unbiased gradient estimate from K directional derivatives.

    Each step draws K directions ``v_k`` (seeded by the step number), measures ``∇L(w)·v_k``
    and moves along the estimate

        g̃ = (1/K) Σ_k (∇L(w)·v_k) v_k / s,      E[g̃] = ∇L(w),
        w ← w − η g̃                               (or: inner.apply(g̃))

    where ``s = E[v_j²]`` (1 for Gaussian/Rademacher, 1/n for unit-sphere and orthogonal
    directions, n = number of weights). With ``inner=keras.optimizers.Adam(...)`` the estimate is
    handed to that optimizer as its gradient (forward-gradient Adam) and the step is whatever it
    applies; ``learning_rate`` is then the inner optimizer's.

    The reported ``slope = ∇L·d`` of the direction ``d = −g̃`` is exact (up to the accuracy of the
    derivatives): ``−(1/(K s)) Σ_k (∇L·v_k)²``. With ``inner`` it is the estimate ``g̃·d``.

    Cost per step (forward passes, backward passes, JVPs), by ``method``:

    * ``"forward"`` (default): K, 0, K — one forward-mode pass per direction; no activations
      are kept for a backward pass. On TF 2.21 a JVP costs about one gradient in time: with ±1
      directions a K = 1 step is 1.16× a backprop SGD step on the MNIST-1D MLP (Gaussian:
      1.71×, TF's normal sampler is slow), the plain-SGD update being one in-place
      ``w += a·v`` per leaf.
    * ``"central_difference"``: 1 + 2K, 0, 0. ``"forward_difference"``: 1 + K, 0, 0.
    * ``"reverse"``: 1, 1, 0 (one gradient, then dot products — a reference, not the point).
    * ``diagnostics=True`` adds 1, 1, 0.

    Memory: the K directions are drawn together (K times the weights' size) and forward mode
    keeps no activations for a backward pass; the estimate ``g̃`` is one more weights-sized
    tensor. Nothing of model size persists between steps (without ``inner``).

    Args:
      learning_rate: step η, float > 0 or a Keras ``LearningRateSchedule`` (default 1e-3 when
        ``inner`` is None). The estimate's variance grows with n (``E‖g̃‖² ≈ (n+2)/K ‖∇L‖²`` for
        Gaussian directions), so η must be about K/n times an SGD learning rate.
      num_directions: K ≥ 1, directions averaged per step (default 1).
      distribution: ``"gaussian"`` (default), ``"rademacher"`` or ``"unit_sphere"``.
      orthogonal: draw the K directions as a random orthonormal frame (K ≤ n; Gaussian-based,
        so ``distribution`` must be ``"gaussian"`` or ``"unit_sphere"``). With K = n the
        estimate is the exact gradient.
      method: how ``∇L·v`` is computed: ``"forward"`` (default), ``"central_difference"``,
        ``"forward_difference"`` or ``"reverse"``.
      fd_step: finite-difference step h; default per direction from
        :func:`dirgrad_opt.directional.default_fd_step`.
      inner: a Keras optimizer instance (or its serialized dict) that consumes ``g̃``.
      seed: int seed of the direction stream (default 0).
      diagnostics: report ``cosine`` and ``norm_ratio`` against the true gradient (costs a
        gradient; default False).
      variance_control: scale the step by ``ρ = max(0, 1 − V̂/‖g̃‖²)``, V̂ the variance of
        ``g̃`` estimated from the spread of the K per-direction estimates (finite-population
        corrected with ``orthogonal``): :func:`variance_step_scale` (our rule — none of the
        issue's papers has one). Needs K ≥ 2 and no ``inner``; reports ``step_scale``. No
        extra pass. Default False.
      weight_decay, clipnorm, clipvalue, global_clipnorm, name: see
        :class:`~dirgrad_opt.optimizers.base.DirectionalOptimizer`: decoupled decay
        ``−λ·w`` per step whatever the step size (also with ``inner``); clipping applies to the
        step direction ``d``.

    Example:
      >>> w = tf.Variable([3.0, -2.0])
      >>> opt = ForwardGradient(learning_rate=0.05, seed=1)
      >>> for _ in range(300):
      ...     info = opt.minimize(lambda: tf.reduce_sum(w**2), [w])
      >>> float(tf.norm(w)) < 1e-3, int(info["backward_passes"])
      (True, 0)

    Warning:
      Forward mode through Conv2D → MaxPool under XLA (``jit_compile=True``) is wrong on TF 2.21:
      ``method="forward"`` raises :class:`dirgrad_opt.directional.UnsafeDerivativeError` there;
      use finite differences or run without XLA.

    Reference:
      A. G. Baydin, B. A. Pearlmutter, D. Syme, F. Wood, P. Torr, "Gradients without
      Backpropagation", arXiv:2202.08587, 2022.
    """

    def __init__(
        self,
        learning_rate: Any = None,
        num_directions: int = 1,
        distribution: str = "gaussian",
        orthogonal: bool = False,
        method: str = "forward",
        fd_step: float | None = None,
        inner: keras.optimizers.Optimizer | dict | None = None,
        seed: int = 0,
        diagnostics: bool = False,
        variance_control: bool = False,
        name: str | None = None,
        **kwargs: Any,
    ):
        if kwargs.pop("direction", None) is not None:
            raise ValueError(
                "ForwardGradient takes `inner=` (the Keras optimizer that consumes the "
                "forward-gradient estimate), not `direction=`"
            )
        if isinstance(inner, dict):  # a copy: Keras's deserialize edits the dict it is given
            inner = keras.optimizers.deserialize(copy.deepcopy(inner))
        if inner is not None and not isinstance(inner, keras.optimizers.Optimizer):
            raise ValueError(
                "inner must be a Keras optimizer instance such as keras.optimizers.Adam(1e-3) "
                f"(or its serialized dict), got {inner!r}"
            )
        if inner is not None:
            if learning_rate is not None:
                raise ValueError(
                    "ForwardGradient: with `inner` set, the step is the inner optimizer's; set "
                    "the learning rate on it (e.g. inner=keras.optimizers.Adam(1e-3)) and leave "
                    "learning_rate unset"
                )
        super().__init__(
            learning_rate=1e-3 if learning_rate is None else learning_rate,
            direction=inner,
            name=name,
            **kwargs,
        )
        self.num_directions = _check_int("num_directions", num_directions)
        self.distribution = _check_choice("distribution", distribution, DISTRIBUTIONS)
        self.orthogonal = bool(orthogonal)
        if self.orthogonal and distribution == "rademacher":
            raise ValueError(
                "orthogonal=True draws a Gaussian-based orthonormal frame; use "
                "distribution='gaussian' (or 'unit_sphere') with it, not 'rademacher'"
            )
        self.method = _check_choice(
            "method", method, DERIVATIVE_METHODS, " ('auto' would pick reverse mode)"
        )
        self.fd_step = _check_fd_step(fd_step)
        self.seed = _check_seed(seed)
        self.diagnostics = bool(diagnostics)
        if not isinstance(variance_control, bool):
            raise ValueError(f"variance_control must be True or False, got {variance_control!r}")
        if variance_control and self.num_directions < 2:
            raise ValueError(
                "variance_control=True estimates the variance from the K directions: it needs "
                f"num_directions >= 2, got {self.num_directions}"
            )
        if variance_control and inner is not None:
            raise ValueError(
                "variance_control=True scales the SGD step; it does not combine with `inner` "
                "(an adaptive inner optimizer would undo the scale)"
            )
        self.variance_control = variance_control

    def sample_directions(self, variables: Sequence[Any], seed: tf.Tensor) -> tuple[Any, float]:
        """This step's K directions (leaves ``[K, *shape]``) and their second moment ``s``."""
        name = "orthogonal" if self.orthogonal else self.distribution
        dirs = directions.sample(name, list(variables), seed, self.num_directions)
        return dirs, directions.second_moment(name, list(variables))

    def _plain_sgd(self) -> bool:
        """Whether the step is ``w ← w − η g̃`` by this class's own rules (the fast path).

        Not with ``inner``, diagnostics, variance control, clipping or weight decay, nor when a
        subclass overrides a rule the generic step would call.
        """
        cls = type(self)
        return (
            self.inner is None
            and not (self.diagnostics or self.variance_control or self.weight_decay)
            and not (self.clipnorm or self.clipvalue or self.global_clipnorm)
            and cls.compute_direction is ForwardGradient.compute_direction
            and cls.compute_step_size is ForwardGradient.compute_step_size
            and cls._move is DirectionalOptimizer._move
        )

    def step(self, ctx: StepContext) -> dict[str, tf.Tensor]:
        """The generic step, or for plain SGD on ``g̃`` the same update in two passes per leaf.

        ``w ← w + Σ_k a_k v_k`` with the scalars ``a_k = −η (∇L·v_k) / (K s)`` (0 when the
        loss, a derivative or η is not finite): the variables still hold ``w0`` (no method
        moves them), so one scaled direction is added in place instead of forming ``g̃``,
        ``−g̃``, ``w0 + t·d`` and a select, four passes over the weights.
        """
        if not self._plain_sgd():
            return super().step(ctx)
        dirs, s, loss, derivatives, slope = self._derivatives(ctx)
        lr = tf.cast(self._get_current_learning_rate(), loss.dtype)
        ok = tf.math.is_finite(loss) & tf.math.is_finite(slope) & tf.math.is_finite(lr)
        rate = tf.where(ok, lr, tf.zeros_like(lr))
        safe = tf.where(ok, tf.cast(derivatives, loss.dtype), tf.zeros_like(derivatives))
        for v, delta in zip(
            ctx.variables, forward_gradient_estimate(-rate * safe, dirs, s), strict=True
        ):
            v.assign_add(delta)
        return step_info(loss, rate, ok, slope)

    def _derivatives(self, ctx: StepContext) -> tuple[list, float, tf.Tensor, tf.Tensor, tf.Tensor]:
        """This step's directions, their second moment ``s``, the loss, ``∇L·v_k`` and the slope
        ``−(1/(K s)) Σ_k (∇L·v_k)²`` of ``d = −g̃``."""
        dirs, s = self.sample_directions(ctx.variables, _step_seed(self, self.seed))
        loss, derivatives = ctx.directional_derivatives(dirs, self.method, step=self.fd_step)
        k = float(self.num_directions)
        slope = -tf.reduce_sum(tf.square(derivatives)) / tf.constant(k * s, loss.dtype)
        return dirs, s, loss, derivatives, slope

    def compute_direction(self, ctx: StepContext) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        """``(loss, d, slope)`` with ``d = −g̃`` (or the inner optimizer's update for ``g̃``)."""
        dirs, s, loss, derivatives, slope = self._derivatives(ctx)
        if self.inner is None and not (self.diagnostics or self.variance_control):
            # d = −g̃ formed directly (−1 folded into the K coefficients: no extra pass)
            return loss, forward_gradient_estimate(-derivatives, dirs, s), slope
        estimate = forward_gradient_estimate(derivatives, dirs, s)
        if self.diagnostics:
            _report_diagnostics(ctx, estimate)
        if self.inner is None:
            if self.variance_control:
                n = sum(int(tf.size(v)) for v in ctx.variables) if self.orthogonal else None
                scale, _, _ = variance_step_scale(derivatives, dirs, s, n)
                ctx.metrics["step_scale"] = tf.cast(scale, loss.dtype)
                scale = tf.cast(scale, loss.dtype)
                return loss, [-tf.cast(scale, g.dtype) * g for g in estimate], scale * slope
            return loss, [-g for g in estimate], slope
        return self.descend(ctx, loss, estimate)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_directions=self.num_directions,
            distribution=self.distribution,
            orthogonal=self.orthogonal,
            method=self.method,
            fd_step=self.fd_step,
            seed=self.seed,
            diagnostics=self.diagnostics,
            variance_control=self.variance_control,
        )
        return config


# ----------------------------------------------------------------------------- ZerothOrder


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class ZerothOrder(DirectionalOptimizer):
    """Zeroth-order SGD (SPSA / MeZO): a gradient estimate from two loss values per direction.

    Each step draws K perturbations ``z_k`` (seeded by the step number; regenerated, never
    stored) and evaluates

        c_k = (L(w + ε z_k) − L(w − ε z_k)) / (2ε)        ≈ ∇L(w)·z_k
        c_k = (L(w + ε z_k) − L(w)) / ε                    (one_sided=True)
        w  ← w − η · (1/K) Σ_k c_k z_k − λ w           (λ = weight_decay, default none)

    The reported ``loss`` is the mean of ``(L(w+εz_k) + L(w−εz_k))/2`` (= L(w) + O(ε²);
    exactly L(w) when one-sided); ``slope = −(1/K) Σ_k c_k²`` estimates ``∇L·d`` for the step
    direction ``d = −g̃``.

    Cost per step: 2K forward passes (K + 1 one-sided), 0 backward passes, 0 JVPs
    (``diagnostics=True`` adds 1 forward + 1 backward pass). Besides the passes, ``z`` is
    generated K times per step in the exact mode (drawn once and kept for the step) and 3K
    times in place (2K + 1 one-sided; the last restore is fused with the update). TF's Gaussian
    sampler is slow on CPU; ``distribution="rademacher"`` draws the whole tree from one Philox
    stream, 32 signs per random word (:func:`dirgrad_opt.directions.rademacher`), and on CPU
    never spreads them into a tensor: a fused kernel (:mod:`dirgrad_opt.kernels`, compiled on
    first use; :func:`dirgrad_opt.directions.add_signs`) writes ``w + εz`` and ``w − εz`` in
    one pass per leaf from the words, and ``w − a·z`` in another — bit-identical to the stock
    ops, which run where the kernel cannot (XLA, a strategy, a subclass's own perturbations, no
    C++ compiler). Measured on the MNIST-1D MLP at batch 100 on a quiet 2-core CPU
    (``docs/random_direction.md``): 1.66× a backprop SGD step with Gaussian z, 0.93–1.00× with
    ±1 z (exact mode; 1.10× with the stock ops), MeZO in place ±1 1.28–1.34×.

    **Restoring the weights.** By default (``in_place=False``) the step keeps the start point
    ``w`` and this step's ``z``, evaluates ``L(w + εz)`` and ``L(w − εz)``, and writes
    ``w − η g̃`` (``w`` itself when η = 0 or a probe is not finite): the weights come back
    **bit-exactly** (tested: 10 000 steps with a zero estimate change no bit). On Keras
    variables (a Keras model; no ``tf.distribute`` strategy) the two probes run *side by side*:
    the closure is evaluated in a ``keras.StatelessScope`` that maps each variable to
    ``w ± εz``, so the variables are never assigned, the two forward passes are independent
    dataflow that TF runs in parallel, and no restore is needed; Keras variables the closure
    assigns (BatchNorm statistics) are assigned after each probe, as in place (tested against
    moving the variables: same weights, statistics and counts). On plain ``tf.Variable`` weights the
    variables are moved to ``w ± εz`` and back. Memory: the start point and ``z`` (K+1 with K
    directions; ±1 z through the fused kernel only its random words, 1/32 of a float copy;
    side by side also the two probe points ``w ± εz`` while they run); no
    activations are kept for a backward pass. So it undercuts backprop only where backprop's
    stored activations outweigh them (on the MNIST-1D MLP at batch 1000: 4.66 vs 4.16–4.41 MB
    step peak).

    ``in_place=True`` is MeZO's variant: ``w += εz``, ``w −= 2εz``, then ``w += εz − η g̃`` in
    one write, regenerating ``z`` leaf by leaf each time. Inside ``tf.function`` it holds no
    copy of the weights: the step's memory is that of inference plus one leaf of ``z`` and the
    sampler's temporaries — below backprop SGD (MNIST-1D MLP at batch 1000: 1.95 MB, the
    forward pass alone, vs 4.16–4.88 MB). The price: ``w + εz − 2εz + εz`` is not ``w`` in
    floating point, so the weights drift by
    rounding. Measured (float32 MLP 40-64-10, 3 274 weights of rms 0.2, η = 0, 10 000 steps,
    ``scripts/bench_optimizers.py --parts=drift``): 99.5 % of the weights moved, by 7.5e-7 on
    average and 1.1e-5 at most (≤ 1e-4 relative) for ε = 1e-3 or 1e-2 — a random walk of
    rounding errors (growing like √steps), far below the noise of the estimate itself. In eager
    mode the base class's snapshot still pins one copy of the weights.

    Under XLA (``jit_compile=True``) the step compiles, but TF 2.21's stateless sampler is
    slow there on CPU (and draws other numbers than without XLA): prefer graph mode.

    Args:
      learning_rate: step η, float > 0 or a Keras ``LearningRateSchedule`` (default 1e-3).
        As for the forward gradient, η must be about K/n times an SGD learning rate.
      eps: perturbation scale ε > 0 (default 1e-3, MeZO's).
      num_directions: K ≥ 1, perturbations averaged per step (default 1).
      one_sided: use ``L(w)`` and ``L(w + εz)`` (K + 1 evaluations) instead of ``w ± εz``.
      distribution: ``"gaussian"`` (default, SPSA/MeZO's z ~ N(0, I)) or ``"rademacher"``
        (Spall's ±1 perturbations).
      in_place: MeZO's in-place perturbations (see above; default False: exact restore).
      seed: int seed of the perturbation stream (default 0).
      diagnostics: report ``cosine`` and ``norm_ratio`` against the true gradient.
      weight_decay: decoupled decay λ ≥ 0, ``−λ·w`` per step whatever η (the base class's
        convention).
      name: optimizer name. Clipping and ``direction`` are not supported (the estimate is never
        materialised).

    References:
      J. C. Spall, "Multivariate stochastic approximation using a simultaneous perturbation
      gradient approximation", IEEE Transactions on Automatic Control 37(3), 1992.
      S. Malladi, T. Gao, E. Nichani, A. Damian, J. D. Lee, D. Chen, S. Arora, "Fine-Tuning
      Language Models with Just Forward Passes" (MeZO), NeurIPS 2023.
    """

    def __init__(
        self,
        learning_rate: Any = 1e-3,
        eps: float = 1e-3,
        num_directions: int = 1,
        one_sided: bool = False,
        distribution: str = "gaussian",
        in_place: bool = False,
        seed: int = 0,
        diagnostics: bool = False,
        name: str | None = None,
        **kwargs: Any,
    ):
        _reject(
            "ZerothOrder",
            kwargs,
            ("direction", *_CLIPPING),
            "the gradient estimate is never materialised (z is regenerated leaf by leaf); "
            "lower learning_rate or eps instead",
        )
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.eps = check_positive("eps", eps)
        self.num_directions = _check_int("num_directions", num_directions)
        self.one_sided = bool(one_sided)
        self.distribution = _check_choice("distribution", distribution, PERTURBATIONS)
        self.in_place = bool(in_place)
        self.seed = _check_seed(seed)
        self.diagnostics = bool(diagnostics)

    # -- perturbations, from (seed_k, leaf index) ---------------------------------------------
    def perturbation(self, variables: Sequence[Any], seed: tf.Tensor, index: int) -> tf.Tensor:
        """Leaf ``index`` of the perturbation ``z`` for the per-sample ``seed``.

        Regenerable alone: with ±1 z, leaf ``index``'s segment of the tree's one stream
        (:func:`dirgrad_opt.directions.rademacher_leaf`); Gaussian, drawn from
        ``make_seed(seed, index)``.
        """
        if self.distribution == "rademacher":  # its segment of the tree's one stream
            return directions.rademacher_leaf(list(variables), seed, index)
        var = variables[index]
        seed_i = directions.make_seed(seed, index)
        return directions.draw_leaf(self.distribution, var.shape, seed_i, tf.as_dtype(var.dtype))

    def perturbations(self, variables: Sequence[Any], seed: tf.Tensor) -> list[tf.Tensor]:
        """Every leaf of ``z`` for ``seed`` (the same numbers as :meth:`perturbation`)."""
        if self.distribution == "rademacher":  # one draw for the tree
            return list(directions.rademacher(list(variables), seed))
        return [self.perturbation(variables, seed, i) for i in range(len(variables))]

    def _fused(self, ctx: StepContext) -> bool:
        """Whether this step's ±1 ``z`` goes through the fused kernel (never materialised).

        For ``distribution="rademacher"`` with this class's own perturbations (a subclass that
        overrides them gets them), outside a strategy, where
        :func:`dirgrad_opt.directions.fused_signs` says the kernel runs. Its results are
        bit-identical to the stock ops' (tested), so this changes cost, never numbers.
        """
        own = (
            type(self).perturbation is ZerothOrder.perturbation
            and type(self).perturbations is ZerothOrder.perturbations
        )
        return (
            own
            and self.distribution == "rademacher"
            and ctx.replicas is None
            and directions.fused_signs([v.dtype for v in ctx.variables])
        )

    def _add_z(self, ctx: StepContext, index: int, seed: tf.Tensor, scales: list) -> list:
        """``[w + s·z]`` for leaf ``index``'s current value ``w`` and ``z`` regenerated, fused."""
        drawn = directions.rademacher_leaf_words(ctx.variables, seed, index)
        value = tree._value(ctx.variables[index])
        return directions.add_signs(value, drawn, 0, scales, fused=True)

    def _perturb(
        self, ctx: StepContext, seed: tf.Tensor, scale: float, after: list[Any], fused: bool
    ) -> list:
        """In-place mode: ``w ← w + scale·z``, leaf by leaf, ``z`` regenerated (MeZO)."""
        for i, v in enumerate(ctx.variables):
            with tf.control_dependencies(after):  # one leaf of z alive at a time
                if fused:  # w + scale·z in one pass, from the leaf's words
                    after = _assign(v, self._add_z(ctx, i, seed, [scale])[0])
                    continue
                z = self.perturbation(ctx.variables, seed, i)
                after = _assign(v, tf.constant(scale, z.dtype) * z, add=True)
        return after

    @staticmethod
    def _leaf(direction: Any, index: int) -> tf.Tensor:
        """Leaf ``index`` of a kept ``z``: a list of leaves, or ±1 words spread now."""
        if isinstance(direction, directions.SignWords):
            return direction.leaf(index)
        return direction[index]

    @staticmethod
    def _side_by_side(ctx: StepContext) -> bool:
        """Whether probes can run without moving the variables (:meth:`_loss_at`)."""
        return ctx.replicas is None and all(isinstance(v, keras.Variable) for v in ctx.variables)

    def _loss_at(self, ctx: StepContext, values: list[tf.Tensor], side_by_side: bool) -> tf.Tensor:
        """``L`` at the probe point ``values`` (``w0 ± εz``; 1 forward pass).

        ``side_by_side`` (Keras variables, no strategy): the closure runs in a
        ``keras.StatelessScope`` that maps each variable to ``w0 ± εz``; the variables are never
        assigned, so the probes ``w0 + εz`` and ``w0 − εz`` are independent dataflow that TF
        runs in parallel (on two cores, two sequential forward passes cost 0.87× a backprop
        step, two independent ones 0.71×), and the update needs no restore. Keras variables
        the closure itself assigns (BatchNorm statistics, a dropout seed) are assigned after
        the probe, as if it had run in place, and a later probe runs after them. Otherwise the
        variables are moved to ``w0 ± εz`` and the closure called.
        """
        if not side_by_side:
            for v, value in zip(ctx.variables, values, strict=True):
                _assign(v, value)
            return ctx.loss()
        ctx.count(forward_passes=1)
        with _RecordingScope(list(zip(ctx.variables, values, strict=True))) as scope:
            loss = ctx.evaluate(directional._call_loss)
        for var in scope.assigned:
            var.assign(scope.get_current_value(var))
        return loss

    def _probes(
        self, ctx: StepContext, z: Any, side_by_side: bool
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """``L(w0 + εz)`` and (two-point) ``L(w0 − εz)``, or ``None`` one-sided (exact mode).

        ``z``: a list of leaves, or ±1 words (:class:`dirgrad_opt.directions.SignWords`), from
        which the fused kernel writes both probe points in one pass per leaf.
        """
        if isinstance(z, directions.SignWords):
            scales = [self.eps] if self.one_sided else [self.eps, -self.eps]
            points = [
                directions.add_signs(w0, z, i, scales, fused=True) for i, w0 in enumerate(ctx.start)
            ]
            plus_at, minus_at = [p[0] for p in points], [p[-1] for p in points]
        else:
            ez = [tf.constant(self.eps, zi.dtype) * zi for zi in z]  # one pass, not one per probe
            plus_at = [w0 + e for w0, e in zip(ctx.start, ez, strict=True)]
            minus_at = [w0 - e for w0, e in zip(ctx.start, ez, strict=True)]
        plus = self._loss_at(ctx, plus_at, side_by_side)
        if self.one_sided:
            return plus, None
        return plus, self._loss_at(ctx, minus_at, side_by_side)

    def _record(
        self,
        plus: tf.Tensor,
        minus: tf.Tensor | None,
        base: tf.Tensor | None,
        probes: tuple[list, list, list],
    ) -> None:
        """Appends direction k's ``c_k`` (two-point or one-sided), its centre ``(L₊ + L₋)/2``
        (two-point) and whether its probes were finite to ``probes = (coefs, centres, finite)``."""
        coefs, centres, finite = probes
        if self.one_sided:
            coefs.append(one_sided_coefficient(plus, base, self.eps))
            finite.append(tf.math.is_finite(plus))
            return
        coefs.append(two_point_coefficient(plus, minus, self.eps))
        centres.append(0.5 * (plus + minus))
        finite.append(tf.math.is_finite(plus) & tf.math.is_finite(minus))

    def _summary(
        self, base: tf.Tensor | None, probes: tuple[list, list, list]
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """``(loss, slope, η, ok)`` of a step from its probes (:meth:`_record`).

        ``loss`` is ``L(w)`` one-sided, else the mean centre; ``slope = −(1/K) Σ_k c_k²``;
        ``ok``: every probe and η finite. Means are reductions, not ``add_n`` (Grappler may
        reorder an ``add_n`` and move the loss by an ulp), and K = 1 takes none at all.
        """
        coefs, centres, finite = probes
        loss = base if self.one_sided else _mean(centres)
        slope = -_mean([tf.square(c) for c in coefs])
        lr = tf.cast(self._get_current_learning_rate(), loss.dtype)
        ok = (finite[0] if len(finite) == 1 else tf.reduce_all(finite)) & tf.math.is_finite(lr)
        return loss, slope, lr, ok

    def _estimate_leaf(
        self,
        ctx: StepContext,
        index: int,
        seeds: list[tf.Tensor],
        coefs: list[tf.Tensor],
        kept: list[list[tf.Tensor]] | None = None,
    ) -> tf.Tensor:
        """Leaf ``index`` of ``g̃ = (1/K) Σ_k c_k z_k`` (z_k kept, or regenerated)."""
        dtype = tf.as_dtype(ctx.variables[index].dtype)
        terms = [
            tf.cast(c, dtype)
            * (self._leaf(kept[k], index) if kept else self.perturbation(ctx.variables, s, index))
            for k, (s, c) in enumerate(zip(seeds, coefs, strict=True))
        ]
        return tf.add_n(terms) / tf.constant(len(terms), dtype)

    # -- the step ----------------------------------------------------------------------------
    def step(self, ctx: StepContext) -> dict[str, tf.Tensor]:
        """Perturb, evaluate, update; see the class docstring."""
        seed = _step_seed(self, self.seed)
        seeds = [directions.make_seed(seed, k) for k in range(self.num_directions)]
        k_last = self.num_directions - 1
        # exact mode draws each z once and keeps it; in place regenerates it (no copy of w)
        kept: list[list[tf.Tensor]] | None = None if self.in_place else []
        base = ctx.loss() if self.one_sided else None
        after: list[Any] = [] if base is None else [base]
        probes: tuple[list, list, list] = ([], [], [])  # c_k, centres, finite
        side = kept is not None and self._side_by_side(ctx)  # variables never move
        fused = self._fused(ctx)  # ±1 z as words, through the fused kernel
        for k, s in enumerate(seeds):
            if kept is not None:
                if fused:  # the words only: the kernel reads z from them
                    kept.append(directions.rademacher_words(ctx.variables, s))
                else:
                    kept.append(self.perturbations(ctx.variables, s))
                plus, minus = self._probes(ctx, kept[-1], side)
            else:
                self._perturb(ctx, s, self.eps, after, fused)
                plus, minus = ctx.loss(), None
            after = [plus]
            if not self.one_sided:
                if kept is None:
                    self._perturb(ctx, s, -2.0 * self.eps, after, fused)
                    minus = ctx.loss()
                after = [minus]
            self._record(plus, minus, base, probes)
            if kept is None and k < k_last:  # the last restore is fused with the update
                after = self._perturb(
                    ctx, s, -self.eps if self.one_sided else self.eps, after, fused
                )
        # in place, the variables now hold w + r·z_last (r = ε one-sided, −ε two-point)
        residual = self.eps if self.one_sided else -self.eps
        loss, slope, lr, ok = self._summary(base, probes)
        coefs = probes[0]

        estimate = None
        if self.diagnostics:  # materialises g̃ (a copy of w): diagnostics are not memory-lean
            with tf.control_dependencies(after):
                if self.in_place:
                    after = self._perturb(ctx, seeds[-1], -residual, after, fused)
                    residual = 0.0
                elif not side:
                    ctx.restore()
            estimate = [
                self._estimate_leaf(ctx, i, seeds, coefs, kept) for i in range(len(ctx.variables))
            ]
            _report_diagnostics(ctx, estimate)

        move = ok & tf.not_equal(lr, 0.0)
        rate = tf.where(move, lr, tf.zeros_like(lr))  # scalars: no full-size masks below
        safe = [tf.where(ok, c, tf.zeros_like(c)) for c in coefs]  # a NaN never reaches w
        # exact mode: w0 − Σ_k (η c_k / K) z_k, one scalar per kept z_k
        if kept is None:
            scales = []
        elif len(safe) == 1:  # (÷ 1 is exact: one op fewer)
            scales = [rate * safe[0]]
        else:
            scales = [rate * c / float(len(safe)) for c in safe]
        in_step = []  # side by side, w still holds w0: w −= Σ_k a_k z_k in place, one cond
        for i, v in enumerate(ctx.variables):
            decays = bool(self.weight_decay) and self._use_weight_decay(v)
            if side and estimate is None and not decays:
                in_step.append(i)
                continue
            changes = ok if decays else move

            def update(i: int = i, v: Any = v, decays: bool = decays) -> tf.Tensor:
                if not self.in_place and estimate is None:  # w0 − Σ_k (η c_k / K) z_k
                    w = ctx.start[i]
                    new = w - tf.add_n(
                        [
                            tf.cast(a, w.dtype) * self._leaf(z, i)
                            for a, z in zip(scales, kept, strict=True)
                        ]
                    )
                    if decays:
                        new = new - tf.constant(self.weight_decay, w.dtype) * w
                    return new
                if not self.in_place:
                    w, g = ctx.start[i], estimate[i]
                elif estimate is not None:
                    w, g = tree._value(v), estimate[i]
                elif fused and not k_last:  # the same two passes from the leaf's words
                    dtype = tf.as_dtype(v.dtype)
                    drawn = directions.rademacher_leaf_words(ctx.variables, seeds[-1], i)
                    w = directions.add_signs(tree._value(v), drawn, 0, [-residual], fused=True)[0]
                    step = tf.cast(rate, dtype) * tf.cast(safe[-1], dtype)  # η c z = ±(η c)
                    new = directions.add_signs(w, drawn, 0, [-step], fused=True)[0]
                    if decays:
                        new = new - tf.constant(self.weight_decay, dtype) * w
                    with tf.control_dependencies(_assign(v, new)):
                        return tf.zeros([], tf.bool)
                else:  # undo the last perturbation and step in one write, z_last drawn once
                    z_last = self.perturbation(ctx.variables, seeds[-1], i)
                    w = tree._value(v) - tf.constant(residual, z_last.dtype) * z_last
                    g = self._estimate_leaf(ctx, i, seeds[:-1], safe[:-1]) if k_last else None
                    last = tf.cast(safe[-1], z_last.dtype) * z_last / float(len(seeds))
                    g = last if g is None else g * (k_last / len(seeds)) + last
                new = w - tf.cast(rate, g.dtype) * g
                if decays:
                    new = new - tf.constant(self.weight_decay, g.dtype) * w
                if self.in_place:
                    with tf.control_dependencies(_assign(v, new)):
                        return tf.zeros([], tf.bool)
                return new

            def restore_only(i: int = i, v: Any = v) -> tf.Tensor:
                if residual and fused:  # η = 0 and no decay: only the last perturbation is undone
                    with tf.control_dependencies(
                        _assign(v, self._add_z(ctx, i, seeds[-1], [-residual])[0])
                    ):
                        return tf.zeros([], tf.bool)
                if residual:
                    z = self.perturbation(ctx.variables, seeds[-1], i)
                    with tf.control_dependencies(
                        _assign(v, tf.constant(-residual, z.dtype) * z, add=True)
                    ):
                        return tf.zeros([], tf.bool)
                return tf.zeros([], tf.bool)

            with tf.control_dependencies(after):
                if self.in_place:
                    after = [tf.cond(changes, update, restore_only)]
                else:  # w0 itself when nothing changes: bit-identical, even a −0.0 (a select,
                    # not a cond: an If op per leaf costs more than the elementwise select)
                    after = _assign(v, tf.where(changes, update(), ctx.start[i]))
        if in_step:  # nothing is written when nothing changes: w0 stays bit-identical

            def subtract() -> tf.Tensor:
                minus_a = {}  # −a per dtype, formed once
                for i in in_step:
                    v = ctx.variables[i]
                    if fused and len(kept) == 1:  # w − a·z in one pass from the words
                        dtype = tf.as_dtype(v.dtype)
                        if dtype not in minus_a:
                            minus_a[dtype] = -tf.cast(scales[0], dtype)
                        new = directions.add_signs(
                            tree._value(v), kept[0], i, [minus_a[dtype]], fused=True
                        )
                        v.assign(new[0])
                        continue
                    zs = [self._leaf(z, i) for z in kept]
                    terms = [tf.cast(a, z.dtype) * z for a, z in zip(scales, zs, strict=True)]
                    v.assign_sub(tf.add_n(terms))
                return tf.constant(True)

            tf.cond(move, subtract, lambda: tf.constant(False))
        return step_info(loss, rate, ok, slope)  # rate: η, or 0 where nothing moved

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for key in ("direction", *_CLIPPING):
            config.pop(key, None)
        config.update(
            eps=self.eps,
            num_directions=self.num_directions,
            one_sided=self.one_sided,
            distribution=self.distribution,
            in_place=self.in_place,
            seed=self.seed,
            diagnostics=self.diagnostics,
        )
        return config


# ----------------------------------------------------------------------------- line search


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class RandomDirectionLineSearch(ArmijoLineSearch):
    """Backtracking Armijo line search along a random direction flipped to descent.

    Each step draws one direction ``v`` (seeded by the step number), measures ``∇L(w)·v`` (forward
    mode or finite differences — no backward pass) and searches along the projection of the
    negative gradient on the line spanned by ``v``:

        d = −(∇L·v) v / ‖v‖²        (flipped to descent by the sign of ∇L·v;
                                     slope ∇L·d = −(∇L·v)²/‖v‖² ≤ 0)
        t = t₀ · shrinkᵏ, first k with L(w + t d) ≤ L(w) + c · t · ∇L·d
        w ← w + t d,                 t₀ = min(growth · t_prev, max_step)

    Scaling ``d`` by ``|∇L·v|/‖v‖`` makes ``t = 1/(uᵀHu)`` (u = v/‖v‖) the exact minimiser on a
    quadratic, so the accepted steps stay within the range of the curvatures along random
    directions — after warm-up the search needs 1–2 trials per step (each step first tries
    twice the previous step). This is the zeroth/first-order hybrid: randomised
    coordinate-descent-like steps sized by a line search.

    Cost per step: the derivative (``"forward"``: 1 forward pass + 1 JVP; ``"central_difference"``:
    3 forward; ``"forward_difference"``: 2 forward; ``"reverse"``: 1 forward + 1 backward),
    plus 1 forward pass per trial step (reported as ``evaluations``); ``diagnostics=True`` adds
    1 forward + 1 backward pass.

    Args:
      distribution: ``"gaussian"`` (default), ``"rademacher"`` or ``"unit_sphere"``.
      method: how ``∇L·v`` is computed (default ``"forward"``; see :class:`ForwardGradient`).
      fd_step: finite-difference step h (default: per direction, as in
        :func:`dirgrad_opt.directional.default_fd_step`).
      seed: int seed of the direction stream (default 0).
      diagnostics: report ``cosine`` / ``norm_ratio`` of the forward-gradient estimate
        ``(∇L·v) v / s`` against the true gradient (``cosine = |cos∠(v, ∇L)|``).
      c: Armijo constant, 0 < c < 1 (default 0.5: on a quadratic it accepts only steps up to
        the line's exact minimiser, never overshooting; with c = 0.1, which accepts up to 1.8×
        it, ``model.fit`` on mini-batches of sklearn digits diverged in our runs).
      shrink: backtracking factor, 0 < shrink < 1 (default 0.5).
      initial_step: the first step's trial (default 1).
      max_step: cap on the trial step (default 1e4: along a random direction the curvature is
        about the Hessian's mean eigenvalue, often tiny, so good steps can be large).
      growth: the trial step is ``growth × previous accepted step`` (default 2); passed to
        :class:`~dirgrad_opt.optimizers.line_searches.ArmijoLineSearch` with
        ``steps_per_epoch=1`` and ``reset="grow"`` by default.
      reset, steps_per_epoch, max_evaluations (default 20), weight_decay, name: see
        :class:`~dirgrad_opt.optimizers.line_searches.ArmijoLineSearch`. Clipping and
        ``direction`` are not supported (the line search chooses the step).

    References:
      Y. Nesterov, V. Spokoiny, "Random gradient-free minimization of convex functions",
      Foundations of Computational Mathematics 17, 2017 (random directions, line searches).
      L. Armijo (1966); Nocedal & Wright (2006), Algorithm 3.1 (backtracking).
    """

    def __init__(
        self,
        distribution: str = "gaussian",
        method: str = "forward",
        fd_step: float | None = None,
        seed: int = 0,
        diagnostics: bool = False,
        c: float = 0.5,
        shrink: float = 0.5,
        initial_step: float = 1.0,
        max_step: float = 1e4,
        reset: str = "grow",
        growth: float = 2.0,
        steps_per_epoch: int = 1,
        max_evaluations: int = 20,
        name: str | None = None,
        **kwargs: Any,
    ):
        _reject(
            "RandomDirectionLineSearch",
            kwargs,
            ("direction", *_CLIPPING),
            "the direction is random and the line search chooses the step",
        )
        super().__init__(
            c=c,
            shrink=shrink,
            initial_step=initial_step,
            max_step=max_step,
            reset=reset,
            growth=growth,
            steps_per_epoch=steps_per_epoch,
            max_evaluations=max_evaluations,
            name=name,
            **kwargs,
        )
        self.distribution = _check_choice("distribution", distribution, DISTRIBUTIONS)
        self.method = _check_choice("method", method, DERIVATIVE_METHODS)
        self.fd_step = _check_fd_step(fd_step)
        self.seed = _check_seed(seed)
        self.diagnostics = bool(diagnostics)

    def compute_direction(self, ctx: StepContext) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        """``(loss, d, slope)`` with ``d = −(∇L·v) v / ‖v‖²`` for this step's random ``v``."""
        seed = _step_seed(self, self.seed)
        batched = directions.sample(self.distribution, list(ctx.variables), seed, 1)
        loss, derivatives = ctx.directional_derivatives(batched, self.method, step=self.fd_step)
        v = [leaf[0] for leaf in batched]
        dv = tf.cast(derivatives[0], loss.dtype)
        sq_norm = tf.cast(tree.dot(v, v), loss.dtype)
        if self.diagnostics:
            s = directions.second_moment(self.distribution, list(ctx.variables))
            _report_diagnostics(ctx, forward_gradient_estimate(derivatives, batched, s))
        coef = -dv / sq_norm
        d = [tf.cast(coef, leaf.dtype) * leaf for leaf in v]
        return loss, d, -dv * dv / sq_norm

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for key in ("direction", *_CLIPPING):
            config.pop(key, None)
        config.update(
            distribution=self.distribution,
            method=self.method,
            fd_step=self.fd_step,
            seed=self.seed,
            diagnostics=self.diagnostics,
        )
        return config
