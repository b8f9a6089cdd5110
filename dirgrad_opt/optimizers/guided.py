"""Directional-derivative-guided optimizers: PAL, directional Newton, gradient-only line search.

Each one picks the step along a direction ``d`` (default ``−∇L``) from what the loss does
*along that line*, ``φ(t) = L(w + t d)``:

* :class:`ParabolicLineSearch` (PAL) fits a parabola to ``φ(0)``, ``φ'(0)`` and one more loss
  value and jumps to its minimum (2 forward + 1 backward pass per step);
* :class:`DirectionalNewton` takes the Newton step ``−φ'(0)/φ''(0)`` of the line, with the
  curvature ``φ''(0) = dᵀHd`` from forward-over-reverse (or reverse-over-reverse) autodiff;
* :class:`GradientOnlyLineSearch` (GOLS) never looks at loss values: it grows or shrinks the
  step until ``φ'`` changes sign from negative to positive.

The step rules are small pure functions (:func:`pal_step`, :func:`newton_step`,
:func:`gradient_only_search`); the classes hold state, config and the wiring into
:class:`~dirgrad_opt.optimizers.base.DirectionalOptimizer`. All state lives in optimizer
variables, so checkpoints and ``.keras`` files restore it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import tensorflow as tf

from dirgrad_opt import directional, line_search, tree
from dirgrad_opt.optimizers.base import (
    DirectionalOptimizer,
    StepContext,
    check_open_unit,
    check_positive,
)

__all__ = [
    "PAL_CONCAVE",
    "PAL_NO_DESCENT",
    "PAL_PROPER",
    "DirectionalNewton",
    "GradientOnlyLineSearch",
    "GradientOnlyResult",
    "ParabolicLineSearch",
    "gradient_only_search",
    "newton_step",
    "pal_step",
]

CURVATURE_METHODS = ("auto", "forward", "reverse")
DERIVATIVE_METHODS = directional.METHODS

PAL_PROPER = 0
"""PAL case: the parabola has a minimum (curvature > 0, slope < 0); step to it."""
PAL_CONCAVE = 1
"""PAL case: concave or straight line with negative slope; the measuring step is taken."""
PAL_NO_DESCENT = 2
"""PAL case: slope ≥ 0, a zero direction or a non-finite measurement; no step."""


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _as(x: Any, dtype: tf.DType) -> tf.Tensor:
    """``x`` as a ``dtype`` tensor, with no float32 round trip for a Python number.

    ``tf.cast(3.16, tf.float64)`` first makes a float32 constant: 3.1600000858.
    """
    if isinstance(x, int | float) and not isinstance(x, bool):
        return tf.constant(x, dtype)
    return tf.cast(x, dtype)


def _safe_divide(num: tf.Tensor, den: tf.Tensor) -> tf.Tensor:
    """``num / den`` where ``den > 0``, else 0 (no NaN/inf leaks through ``tf.where``)."""
    ok = den > 0
    return tf.where(ok, num / tf.where(ok, den, tf.ones_like(den)), tf.zeros_like(num))


# ============================================================================ PAL


def pal_step(
    value0: tf.Tensor,
    slope: tf.Tensor,
    value_at_mu: tf.Tensor,
    measuring_step: Any,
    step_adaptation: Any,
    max_step: Any,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """PAL's update step along the *unit* direction, from one parabola fit.

    With ``ψ(s) = L(w + s d/‖d‖)``, ``l₀ = ψ(0)``, ``b = ψ'(0)`` and ``l_μ = ψ(μ)``:

        a = (l_μ − l₀ − b μ) / μ²
        s = min(α · (−b / 2a), s_max)     if a > 0 and b < 0      (case PAL_PROPER)
        s = min(μ, s_max)                  if a ≤ 0 and b < 0      (case PAL_CONCAVE)
        s = 0                              otherwise               (case PAL_NO_DESCENT)

    In the concave case ``l_μ ≤ l₀ + bμ < l₀``: the measured point is known to be lower, so
    the step never raises the loss there. A non-finite ``l_μ`` gives ``s = 0``.

    Args:
      value0: ``l₀``, a floating scalar tensor (sets the dtype).
      slope: ``b``, the derivative along the unit direction.
      value_at_mu: ``l_μ``.
      measuring_step: μ > 0.
      step_adaptation: α > 0 (α > 1 over-relaxes the parabola's minimum).
      max_step: s_max > 0.

    Returns:
      ``(s, case, curvature)``: the step length, the int32 case and the parabola's ``2a``.
    """
    dtype = value0.dtype
    mu = _as(measuring_step, dtype)
    slope = _as(slope, dtype)
    value_at_mu = _as(value_at_mu, dtype)
    t_star, proper = line_search.parabolic_minimum(value0, slope, mu, value_at_mu)
    a = (value_at_mu - value0 - slope * mu) / (mu * mu)
    descent = tf.math.is_finite(slope) & (slope < 0)
    proper = proper & descent
    concave = descent & tf.math.is_finite(a) & (a <= 0)
    s_max = _as(max_step, dtype)
    s = tf.where(
        proper,
        tf.minimum(_as(step_adaptation, dtype) * t_star, s_max),
        tf.where(concave, tf.minimum(mu, s_max), tf.zeros_like(mu)),
    )
    case = tf.where(proper, PAL_PROPER, tf.where(concave, PAL_CONCAVE, PAL_NO_DESCENT))
    return s, tf.cast(case, tf.int32), 2.0 * a


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class ParabolicLineSearch(DirectionalOptimizer):
    """PAL: parabolic approximation line search (Mutschler & Zell 2020).

    Per step, along the direction

        d_k = −∇L(w_k) + β d_{k−1}          (d_k = −∇L(w_k) when β = 0)

    PAL measures ``l₀ = L(w)``, the slope ``b = ∇L(w)·d/‖d‖`` along the unit direction and
    ``l_μ = L(w + μ d/‖d‖)``, fits ``ψ(s) ≈ l₀ + b s + a s²`` and moves

        w ← w + s · d/‖d‖,     s = min(α · (−b/2a), s_max)

    (:func:`pal_step`; ``step_size`` in ``minimize``'s dict is ``s/‖d‖``, the multiplier of
    ``d``, and ``step_length`` is ``s``).

    Fallbacks (reported as ``pal_case``): a concave or straight line (``a ≤ 0``, ``b < 0``)
    takes the measuring step ``s = μ``, where the loss is known to be lower than ``l₀``; a
    momentum direction that is not a descent direction (``∇L·d ≥ 0``) is *restarted* as
    ``d = −∇L`` (``restart`` = True, the momentum buffer is reset) — the authors' code instead
    skips the step; a zero direction or a non-finite ``l_μ`` gives no step (``accepted`` False).

    Defaults are the authors' reference implementation's (PyTorch/TF code released with the
    paper): μ = 1, α = 1/0.6 ≈ 1.667, s_max = 3.16 (≈ √10), β = 0.4. The paper reports good
    results for μ ∈ [0.1, 1], α ∈ [1.2, 1.7], β ∈ {0, 0.4} and low sensitivity to s_max.

    Cost per step: 2 forward + 1 backward passes (1 + 1 with a zero direction or ``b ≥ 0``).

    Args:
      measuring_step: μ > 0, distance along the unit direction of the second loss value.
      step_adaptation: α > 0, factor on the parabola's minimum ("update step adaptation").
      max_step: s_max > 0, largest distance moved per step.
      momentum: β ≥ 0, the "direction adaptation factor" (0 for plain ``−∇L``). The
        momentum buffer is one optimizer variable per weight.
      direction, weight_decay, clipnorm, clipvalue, global_clipnorm, name: see
        :class:`~dirgrad_opt.optimizers.base.DirectionalOptimizer` (with ``direction=``,
        momentum accumulates that optimizer's update instead of ``−∇L``).

    Example:
      >>> w = tf.Variable([1.0, -2.0])
      >>> opt = ParabolicLineSearch(momentum=0.0, step_adaptation=1.0)
      >>> info = opt.minimize(lambda: tf.reduce_sum(w**2), [w])  # exact on a quadratic
      >>> float(tf.norm(w)) < 1e-5
      True

    Reference:
      M. Mutschler, A. Zell, "Parabolic Approximation Line Search for DNNs", NeurIPS 2020.

    Warning:
      PAL does not evaluate the loss at the point it moves to (that would be a third forward
      pass): with α > 1 or a non-parabolic line the loss can rise on the current batch. The
      closure must be deterministic within a step (same batch, same dropout mask).
    """

    uses_learning_rate = False

    def __init__(
        self,
        measuring_step: float = 1.0,
        step_adaptation: float = 1.0 / 0.6,
        max_step: float = 3.16,
        momentum: float = 0.4,
        name: str | None = None,
        **kwargs: Any,
    ):
        kwargs.pop("learning_rate", None)
        super().__init__(learning_rate=1.0, name=name, **kwargs)
        self.measuring_step = check_positive("measuring_step", measuring_step)
        self.step_adaptation = check_positive("step_adaptation", step_adaptation)
        self.max_step = check_positive("max_step", max_step)
        self.momentum = check_positive("momentum", momentum, allow_zero=True)
        if not self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")

    def build_state(self, var_list: list[Any]) -> None:
        self._buffers = (
            [self.add_variable_from_reference(v, name="pal_direction") for v in var_list]
            if self.momentum > 0
            else []
        )

    def compute_direction(self, ctx: StepContext) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        """``d = d_base + β d_prev``, restarted to ``d_base`` when it is not a descent direction."""
        loss, base, base_slope = super().compute_direction(ctx)
        if not self._buffers:
            return loss, base, base_slope
        beta = self.momentum
        d = [
            _as(beta, b.dtype) * tf.convert_to_tensor(m) + b
            for m, b in zip(self._buffers, base, strict=True)
        ]
        slope = tf.cast(tree.dot(ctx.gradient, d), loss.dtype)
        restart = ~(slope < 0) & (base_slope < 0)
        d = [tf.where(restart, b, x) for b, x in zip(base, d, strict=True)]
        slope = tf.where(restart, base_slope, slope)
        finite = tf.math.is_finite(slope)  # a NaN gradient must not poison the buffer
        for m, x in zip(self._buffers, d, strict=True):
            m.assign(tf.where(finite, x, m))
        ctx.metrics["restart"] = restart
        return loss, d, slope

    def compute_step_size(
        self, ctx: StepContext, loss: tf.Tensor, direction: list[tf.Tensor], slope: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        norm = tf.cast(tree.norm(direction), loss.dtype)
        unit_slope = _safe_divide(slope, norm)
        measure = (slope < 0) & (norm > 0) & tf.math.is_finite(norm) & tf.math.is_finite(loss)
        mu = tf.constant(self.measuring_step, loss.dtype)

        def measured() -> tf.Tensor:
            return tf.cast(ctx.loss_at(mu / norm, direction), loss.dtype)

        value_at_mu = tf.cond(measure, measured, lambda: tf.constant(float("nan"), loss.dtype))
        s, case, curvature = pal_step(
            loss, unit_slope, value_at_mu, mu, self.step_adaptation, self.max_step
        )
        ctx.metrics.update(pal_case=case, step_length=s, curvature=curvature)
        return _safe_divide(s, norm), case != PAL_NO_DESCENT

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            measuring_step=self.measuring_step,
            step_adaptation=self.step_adaptation,
            max_step=self.max_step,
            momentum=self.momentum,
        )
        return config


# ============================================================================ directional Newton


def newton_step(
    slope: tf.Tensor,
    curvature: tf.Tensor,
    direction_norm: tf.Tensor,
    damping: Any,
    max_step: Any,
    fallback_step: Any,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Damped Newton step along a line, with a trust-region cap and a fallback.

    With ``σ = ∇L·d < 0``, ``κ = dᵀHd`` and damping λ ≥ 0:

        t = −σ / (κ + λ‖d‖²)         if κ + λ‖d‖² > 0            (Newton)
        t = η                        otherwise                   (fallback: the learning rate)
        t ← min(t, Δ / ‖d‖)          (trust region: the weights move at most Δ)

    ``t = 0`` when ``σ ≥ 0`` (nothing to descend) or ``d = 0``. The damped denominator is the
    Levenberg–Marquardt model ``H + λI`` restricted to the line, so ``t`` scales as ``1/c``
    when ``d`` is scaled by ``c``.

    Args:
      slope: σ, a floating scalar tensor (sets the dtype).
      curvature: κ.
      direction_norm: ‖d‖.
      damping: λ ≥ 0.
      max_step: Δ > 0, the largest distance ``‖t d‖``.
      fallback_step: η > 0, the step for a non-positive (or non-finite) curvature.

    Returns:
      ``(t, newton)``: the step and whether it is a Newton step (curvature usable).
    """
    dtype = slope.dtype
    curvature = _as(curvature, dtype)
    norm = _as(direction_norm, dtype)
    denom = curvature + _as(damping, dtype) * norm * norm
    descent = tf.math.is_finite(slope) & (slope < 0) & (norm > 0)
    newton = descent & tf.math.is_finite(denom) & (denom > 0)
    t = tf.where(newton, _safe_divide(-slope, denom), _as(fallback_step, dtype))
    cap = _safe_divide(_as(max_step, dtype), norm)
    t = tf.where(descent, tf.minimum(t, cap), tf.zeros_like(t))
    return t, newton


def _curvature_along_steepest_descent(
    ctx: StepContext,
) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
    """``L(w)``, ``∇L(w)`` and ``gᵀHg`` in one reverse-over-reverse pass (1 fwd + 2 bwd).

    ``d = −stop_gradient(g)`` is formed inside the outer tape, so the outer gradient of
    ``g·d`` is ``H d``: no second forward pass and no JVP. Guarded like
    :func:`dirgrad_opt.directional.directional_curvature` (max-pool under XLA raises).
    """
    ctx.count(forward_passes=1, backward_passes=2)
    if ctx.loss_scale is None:
        return directional.gradient_curvature(ctx.loss_fn, ctx.variables)
    out = directional._gradient_curvature(ctx.loss_fn, ctx.variables, ctx.loss_scale)
    ctx.note_overflow(out)  # loss scaling: both backward passes carry S, never S²
    return out


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class DirectionalNewton(DirectionalOptimizer):
    """Newton's method along a line: ``t = −∇L·d / dᵀHd``, damped and trust-region capped.

    Per step, with ``d`` from the direction rule (default ``−∇L``; or the update of any Keras
    optimizer via ``direction=``):

        κ = dᵀ∇²L(w)d,     t = min( −∇L·d / (κ + λ‖d‖²), Δ/‖d‖ ),     w ← w + t d

    which minimises the quadratic model of ``φ(t) = L(w + t d)`` (for ``d = −∇L`` it is
    steepest descent with a quadratic-model exact line search). When ``κ + λ‖d‖² ≤ 0`` (concave
    or straight line) or is not finite, the step is the *learning rate* η (a float or a Keras
    schedule), still capped at ``Δ/‖d‖``, and ``accepted`` is False. See :func:`newton_step`.

    Curvature (``curvature_method``):

    * ``"reverse"``: reverse-over-reverse. With ``d = −∇L`` and no clipping, the gradient and
      ``Hd`` come from one fused double-backward pass (``d = −stop_gradient(∇L)`` inside the
      outer tape): 1 forward + 2 backward passes per step. With an inner ``direction=``
      optimizer or clipping, ``directional_curvature(method="reverse")`` along the final
      direction after the direction rule: 2 forward + 3 backward passes.
    * ``"forward"``: forward-over-reverse,
      :func:`dirgrad_opt.directional.directional_curvature`, along the final direction after
      the direction rule: 2 forward + 2 backward passes + 1 JVP per step (the gradient that
      defines ``d``, then loss, gradient and the JVP ``Hd``).
    * ``"auto"`` (default): the fused ``"reverse"`` pass when it applies, else ``"forward"``.
      Measured on a 784-256-256-10 tanh MLP, batch 256, 2 CPU cores, ``tf.function``:
      fused reverse 13 ms/step, forward-over-reverse 21 ms/step, plain SGD 6 ms/step.

    A single forward-over-reverse pass (1 forward + 1 backward + 1 JVP) cannot serve
    ``d = −∇L``: the tangent ``d`` must be known before the pass that computes ``∇L``.

    Args:
      learning_rate: η > 0, the fallback step for non-positive curvature (default 0.01).
      damping: λ ≥ 0, Levenberg–Marquardt damping of the curvature (default 0).
      max_step: Δ > 0, trust radius: the largest distance ``‖t d‖`` moved per step
        (default 10).
      curvature_method: ``"auto"``, ``"forward"`` or ``"reverse"`` (see above).
      direction, weight_decay, clipnorm, clipvalue, global_clipnorm, name: see
        :class:`~dirgrad_opt.optimizers.base.DirectionalOptimizer`.

    Example:
      >>> w = tf.Variable([3.0, -2.0])
      >>> info = DirectionalNewton().minimize(lambda: tf.reduce_sum(w**2), [w])
      >>> float(tf.norm(w)) < 1e-6   # exact on an isotropic quadratic
      True

    References:
      J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., 2006, §3.1 and §4 (Newton
      step, Levenberg–Marquardt damping, trust regions); B. A. Pearlmutter, "Fast exact
      multiplication by the Hessian", Neural Computation 6(1), 1994 (Hessian-vector products).

    Warning:
      Curvature through max-pooling under XLA raises
      :class:`~dirgrad_opt.directional.UnsafeDerivativeError` (TF 2.21 computes it wrongly):
      run such models without ``jit_compile``.
    """

    def __init__(
        self,
        learning_rate: Any = 0.01,
        damping: float = 0.0,
        max_step: float = 10.0,
        curvature_method: str = "auto",
        name: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.damping = check_positive("damping", damping, allow_zero=True)
        self.max_step = check_positive("max_step", max_step)
        self.curvature_method = _check_choice(
            "curvature_method", curvature_method, CURVATURE_METHODS
        )

    @property
    def _fused(self) -> bool:
        clipping = self.clipnorm or self.clipvalue or self.global_clipnorm
        return (
            self.curvature_method in ("auto", "reverse")
            and self.direction_optimizer is None
            and not clipping
        )

    def compute_direction(self, ctx: StepContext) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        if not self._fused or ctx.replicas is not None:  # gᵀHg is not linear in the replicas'
            return super().compute_direction(ctx)  # losses; dᵀHd along the mean -g is
        loss, grads, curvature = _curvature_along_steepest_descent(ctx)
        ctx.gradient = grads
        ctx.metrics["curvature"] = curvature
        return loss, [-g for g in grads], -tf.cast(tree.dot(grads, grads), loss.dtype)

    def compute_step_size(
        self, ctx: StepContext, loss: tf.Tensor, direction: list[tf.Tensor], slope: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        if self._fused and ctx.replicas is None:
            curvature = ctx.metrics["curvature"]
        else:
            method = "reverse" if self.curvature_method == "reverse" else "forward"
            _, _, curvature = ctx.evaluate(
                lambda loss_fn: directional.directional_curvature(
                    loss_fn, ctx.variables, direction, method
                ),
                backward=True,  # (L, ∇L·d, dᵀHd) are linear in L: loss scaling applies
            )
            if method == "forward":
                ctx.count(forward_passes=1, backward_passes=1, jvps=1)
            else:
                ctx.count(forward_passes=1, backward_passes=2)
        curvature = tf.cast(curvature, loss.dtype)
        norm = tf.cast(tree.norm(direction), loss.dtype)
        lr = self._get_current_learning_rate()
        t, newton = newton_step(slope, curvature, norm, self.damping, self.max_step, lr)
        ctx.metrics["curvature"] = curvature
        return t, newton

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            damping=self.damping,
            max_step=self.max_step,
            curvature_method=self.curvature_method,
        )
        return config


# ============================================================================ GOLS


class GradientOnlyResult(NamedTuple):
    """Outcome of :func:`gradient_only_search`; every field is a scalar tensor.

    Attributes:
      step: the chosen step (0 when no trial had ``φ' < 0`` and no sign change was found).
      next_step: the initial guess for the next search (the step, or where the search would
        have gone on when it chose 0).
      evaluations: int32, calls of ``dphi``.
      converged: bool, a sign change from ``φ' < 0`` to ``φ' ≥ 0`` was located within a
        factor ``growth`` (or the curvature condition accepted a trial).
      descent: bool, False when ``φ'(0) ≥ 0`` or is not finite (no search ran).
    """

    step: tf.Tensor
    next_step: tf.Tensor
    evaluations: tf.Tensor
    converged: tf.Tensor
    descent: tf.Tensor


class _GolsState(NamedTuple):
    t: tf.Tensor  # next trial
    lo: tf.Tensor  # largest trial with φ' < 0 (0 at start)
    g_lo: tf.Tensor
    hi: tf.Tensor  # smallest trial with φ' ≥ 0 or non-finite (inf at start)
    g_hi: tf.Tensor
    evaluations: tf.Tensor
    done: tf.Tensor
    converged: tf.Tensor
    curvature_ok: tf.Tensor


def gradient_only_search(
    dphi: Callable[[tf.Tensor], tf.Tensor],
    derivative0: Any,
    initial_step: Any,
    *,
    growth: float = 2.0,
    c2: float = 0.9,
    min_step: Any = 1e-8,
    max_step: Any = 1e7,
    max_evaluations: int = 20,
    interpolate: bool = True,
) -> GradientOnlyResult:
    """Locates a sign change of ``φ'`` from negative to positive using derivatives only.

    Starting at ``t = initial_step`` (clipped to ``[min_step, max_step]``), each iteration
    evaluates ``φ'(t)`` once and

    * ``φ'(t) < 0``: the minimum is further: ``t ← min(growth·t, max_step)``;
    * ``φ'(t) ≥ 0`` (or not finite): it is behind: ``t ← max(t/growth, min_step)``;

    until a trial with ``φ' < 0`` and one with ``φ' ≥ 0`` a factor ``growth`` apart bracket the
    sign change, or a trial satisfies ``0 ≤ φ'(t) ≤ c2·|φ'(0)|`` (GOLS-I's immediate accept), or
    ``t`` reaches ``max_step`` with ``φ' < 0`` (not converged; that trial is the step), or
    ``min_step`` with ``φ' ≥ 0`` (the bracket is ``[0, min_step]``), or the budget runs out.

    The step: with ``interpolate``, the zero of the secant of ``φ'`` through the bracket
    ``(lo, φ'(lo) < 0)``, ``(hi, φ'(hi) ≥ 0)`` — exact when ``φ`` is quadratic on the line;
    otherwise ``lo``, the largest trial known to lie before the sign change (or the trial the
    curvature condition accepted). Without a located sign change the step is ``lo`` (0 if no
    trial had ``φ' < 0``): a trial whose derivative is positive is never taken unbracketed.

    Args:
      dphi: ``t ↦ φ'(t)``, called once per evaluation with a scalar tensor.
      derivative0: ``φ'(0)``; the search runs only when it is finite and < 0.
      initial_step: first trial > 0.
      growth: factor > 1 between trials.
      c2: the immediate-accept constant in (0, 1).
      min_step, max_step: bounds of the trials, ``0 < min_step ≤ max_step``.
      max_evaluations: budget of ``dphi`` calls, ≥ 1.
      interpolate: secant interpolation of the final bracket.

    Returns:
      A :class:`GradientOnlyResult`.

    Reference:
      D. Kafka, D. N. Wilke, "Resolving learning rates adaptively by locating stochastic
      non-negative associated gradient projection points using line searches", Journal of
      Global Optimization 79, 2021 (GOLS-I); arXiv:1903.09383 (2019).
    """
    derivative0 = tf.convert_to_tensor(derivative0)
    dtype = derivative0.dtype
    min_step = _as(min_step, dtype)
    max_step = tf.maximum(_as(max_step, dtype), min_step)
    t0 = tf.clip_by_value(_as(initial_step, dtype), min_step, max_step)
    growth_ = tf.constant(growth, dtype)
    bound = _as(c2, dtype) * tf.abs(derivative0)
    descent = tf.math.is_finite(derivative0) & (derivative0 < 0)
    budget = tf.constant(int(max_evaluations), tf.int32)
    inf = tf.constant(float("inf"), dtype)

    def cond(s: _GolsState) -> tf.Tensor:
        return ~s.done & (s.evaluations < budget)

    def body(s: _GolsState) -> tuple[_GolsState]:
        g = tf.reshape(tf.cast(dphi(s.t), dtype), [])
        negative = tf.math.is_finite(g) & (g < 0)
        lo = tf.where(negative, s.t, s.lo)
        hi = tf.where(negative, s.hi, s.t)
        curvature_ok = ~negative & tf.math.is_finite(g) & (g <= bound)
        tight = (lo > 0) & tf.math.is_finite(hi)  # consecutive trials: a factor `growth` apart
        floor = ~negative & (s.t <= min_step)
        cap = negative & (s.t >= max_step)
        located = curvature_ok | tight | floor
        return (
            _GolsState(
                t=tf.where(
                    negative,
                    tf.minimum(s.t * growth_, max_step),
                    tf.maximum(s.t / growth_, min_step),
                ),
                lo=lo,
                g_lo=tf.where(negative, g, s.g_lo),
                hi=hi,
                g_hi=tf.where(negative, s.g_hi, g),
                evaluations=s.evaluations + 1,
                done=located | cap,
                converged=located,
                curvature_ok=curvature_ok,
            ),
        )

    init = _GolsState(
        t=t0,
        lo=tf.zeros([], dtype),
        g_lo=derivative0,
        hi=inf,
        g_hi=tf.constant(float("nan"), dtype),
        evaluations=tf.constant(0, tf.int32),
        done=~descent,
        converged=tf.constant(False),
        curvature_ok=tf.constant(False),
    )
    (s,) = tf.while_loop(cond, body, (init,))
    usable = s.converged & tf.math.is_finite(s.g_hi) & (s.g_hi >= 0) & (s.g_lo < 0)
    if interpolate:
        secant = s.lo - s.g_lo * _safe_divide(s.hi - s.lo, s.g_hi - s.g_lo)
        step = tf.where(usable, tf.clip_by_value(secant, s.lo, s.hi), s.lo)
    else:
        step = tf.where(usable & s.curvature_ok, s.hi, s.lo)
    step = tf.where(descent, step, tf.zeros_like(step))
    next_step = tf.where(step > 0, step, s.t)
    return GradientOnlyResult(
        step=step,
        next_step=next_step,
        evaluations=s.evaluations,
        converged=s.converged & descent,
        descent=descent,
    )


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class GradientOnlyLineSearch(DirectionalOptimizer):
    """GOLS: gradient-only line search (Kafka & Wilke), GOLS-I style.

    Along ``d`` (default ``−∇L``), only directional derivatives ``φ'(t) = ∇L(w + t d)·d`` are
    used — no loss values — to locate where ``φ'`` changes sign from negative to positive (a
    minimum of ``φ``, the paper's SNN-GPP). The trial step grows by ``growth`` while
    ``φ' < 0`` and shrinks while ``φ' ≥ 0``; see :func:`gradient_only_search` for the stopping
    rules and the step taken (by default the secant zero of ``φ'`` in the final bracket). Then

        w ← w + t d,     t₀(next step) = t           (GOLS-I: the step is the next guess)

    with every trial bounded by ``min_step ≤ t ≤ min(max_step, max_step_length/‖d‖)``.

    Defaults follow the paper's GOLS-I: growth η = 2, immediate-accept constant c₂ = 0.9,
    α_min = 1e-8, α_max = min(1e7, 1/‖d‖) (``max_step_length`` = 1). Not from the paper: the
    first trial ``initial_step`` = 1 (the paper's 1e-8 costs ~27 evaluations in the first
    step; the search is symmetric in log-scale), the budget of 20 evaluations, and the secant
    interpolation (``interpolate=False`` takes ``lo``, the largest trial with ``φ' < 0``).

    Cost per step: 1 forward + 1 backward pass for ``d``, then per trial 1 forward + 1
    backward pass (``derivative_method="reverse"`` or ``"auto"``) or 1 forward pass + 1 JVP
    (``"forward"``; ``"central_difference"``: 3 forward passes). ``evaluations`` in
    ``minimize``'s dict counts the trials (≈ 1–2 per step once the step has settled).

    Args:
      initial_step: first trial of the first step.
      growth: factor > 1 by which the trial grows or shrinks.
      c2: immediate-accept constant in (0, 1): accept ``0 ≤ φ'(t) ≤ c2·|φ'(0)|``.
      min_step: smallest trial step > 0.
      max_step: largest trial step (multiplier of ``d``).
      max_step_length: largest distance ``‖t d‖`` of a trial.
      max_evaluations: budget of trials per step.
      interpolate: take the secant zero of ``φ'`` in the final bracket.
      derivative_method: how ``φ'`` is computed, one of
        :data:`dirgrad_opt.directional.METHODS`.
      direction, weight_decay, clipnorm, clipvalue, global_clipnorm, name: see
        :class:`~dirgrad_opt.optimizers.base.DirectionalOptimizer`.

    Reference:
      D. Kafka, D. N. Wilke, "Gradient-only line searches: An Alternative to Probabilistic
      Line Searches", arXiv:1903.09383, 2019; "Resolving learning rates adaptively by locating
      stochastic non-negative associated gradient projection points using line searches",
      Journal of Global Optimization 79, 2021.

    Warning:
      Loss values are never checked, so on a non-convex line the located sign change may be a
      minimum that is higher than the start. The closure must be deterministic within a step
      for a full-batch search; with fresh mini-batches per trial (the paper's dynamic
      sampling) the search locates stochastic sign changes instead.
    """

    uses_learning_rate = False

    def __init__(
        self,
        initial_step: float = 1.0,
        growth: float = 2.0,
        c2: float = 0.9,
        min_step: float = 1e-8,
        max_step: float = 1e7,
        max_step_length: float = 1.0,
        max_evaluations: int = 20,
        interpolate: bool = True,
        derivative_method: str = "auto",
        name: str | None = None,
        **kwargs: Any,
    ):
        kwargs.pop("learning_rate", None)
        super().__init__(learning_rate=1.0, name=name, **kwargs)
        self.initial_step = check_positive("initial_step", initial_step)
        self.growth = check_positive("growth", growth)
        if not self.growth > 1:
            raise ValueError(f"growth must be > 1, got {growth}")
        self.c2 = check_open_unit("c2", c2)
        self.min_step = check_positive("min_step", min_step)
        self.max_step = check_positive("max_step", max_step)
        if self.min_step > self.max_step:
            raise ValueError(f"min_step ({min_step}) must be <= max_step ({max_step})")
        self.max_step_length = check_positive("max_step_length", max_step_length)
        self.max_evaluations = _check_int("max_evaluations", max_evaluations)
        if not isinstance(interpolate, bool):
            raise ValueError(f"interpolate must be True or False, got {interpolate!r}")
        self.interpolate = interpolate
        self.derivative_method = _check_choice(
            "derivative_method", derivative_method, DERIVATIVE_METHODS
        )

    def build_state(self, var_list: list[Any]) -> None:
        self.previous_step = self.add_variable(
            (), initializer=keras.initializers.Constant(self.initial_step), name="previous_step"
        )

    def directional_derivative_at(
        self, ctx: StepContext, t: tf.Tensor, direction: list[tf.Tensor]
    ) -> tf.Tensor:
        """``φ'(t) = ∇L(w0 + t d)·d`` by ``derivative_method``, counted."""
        ctx.set_point(t, direction)
        batched = [x[tf.newaxis] for x in direction]
        _, derivatives = ctx.directional_derivatives(batched, method=self.derivative_method)
        return derivatives[0]

    def compute_step_size(
        self, ctx: StepContext, loss: tf.Tensor, direction: list[tf.Tensor], slope: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        norm = tf.cast(tree.norm(direction), loss.dtype)
        length_cap = _safe_divide(tf.constant(self.max_step_length, loss.dtype), norm)
        max_step = tf.minimum(tf.constant(self.max_step, loss.dtype), length_cap)
        result = gradient_only_search(
            lambda t: tf.cast(self.directional_derivative_at(ctx, t, direction), loss.dtype),
            slope,
            tf.cast(self.previous_step, loss.dtype),
            growth=self.growth,
            c2=self.c2,
            min_step=self.min_step,
            max_step=max_step,
            max_evaluations=self.max_evaluations,
            interpolate=self.interpolate,
        )
        keep = tf.where(
            result.descent,
            tf.clip_by_value(result.next_step, self.min_step, self.max_step),
            tf.cast(self.previous_step, loss.dtype),
        )
        self.previous_step.assign(tf.cast(keep, self.previous_step.dtype))
        ctx.metrics["evaluations"] = result.evaluations
        return result.step, result.converged

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            initial_step=self.initial_step,
            growth=self.growth,
            c2=self.c2,
            min_step=self.min_step,
            max_step=self.max_step,
            max_step_length=self.max_step_length,
            max_evaluations=self.max_evaluations,
            interpolate=self.interpolate,
            derivative_method=self.derivative_method,
        )
        return config
