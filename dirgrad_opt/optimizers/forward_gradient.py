"""Guided forward gradient: directions sampled around a cheap guess of the gradient.

Isotropic directions ``v ~ N(0, I)`` make the forward gradient ``(∇L·v) v`` unbiased but with
a variance ∝ n (the number of weights). Fournier, Rivaud, Belilovsky, Eickenberg & Oyallon
(2023) show that forward gradients along a *guess* of the gradient (a local-loss gradient, the
previous update...) align far better with the true gradient. :class:`GuidedForwardGradient`
uses as guess the running average of its own past estimates, ``m`` (no extra pass), and draws

    v = √(1−α) ξ + √(α n) u,      ξ ~ N(0, I_n),  u = m / ‖m‖,
    Σ = E[v vᵀ] = (1−α) I + α n u uᵀ

so a fraction α of ``E‖v‖² = n`` lies along the guess. Two estimates from ``∇L·v`` (one JVP):

* ``unbiased=True`` (default): ``g̃ = Σ⁻¹ v (∇L·v)`` with
  ``Σ⁻¹ = (I − c u uᵀ)/(1−α)``, ``c = α n / (1 − α + α n)``; ``E[g̃] = ∇L`` exactly, for any
  guess (u is fixed during the step).
* ``unbiased=False``: ``g̃ = (∇L·v) v / (1 − α + α n)`` — Fournier et al.'s uncorrected guided
  estimate, rescaled so the component along the guess is unbiased; the rest is shrunk:
  ``E[g̃] = ((1−α) ∇L + α n (u·∇L) u) / (1 − α + α n)`` (documented bias, tested).

Then ``m ← β m + (1−β) g̃`` (``β = guide_decay``), and ``w ← w − η g̃`` (or ``inner``).
On the first step (``m = 0``) there is no guess and the direction is isotropic.

Reference:
  L. Fournier, S. Rivaud, E. Belilovsky, M. Eickenberg, E. Oyallon, "Can Forward Gradient
  Match Backpropagation?", ICML 2023.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from dirgrad_opt import directions, tree
from dirgrad_opt.optimizers.base import StepContext, check_open_unit
from dirgrad_opt.optimizers.random_direction import (
    ForwardGradient,
    _report_diagnostics,
    _step_seed,
)

__all__ = ["GuidedForwardGradient"]


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class GuidedForwardGradient(ForwardGradient):
    """Forward gradient along directions biased towards a running guess of the gradient.

    See the module docstring for the sampling law and the two estimates. Cost per step: as
    :class:`ForwardGradient` (K forward passes carrying K JVPs, no backward pass). State: the
    guess ``m`` (the weights' size).

    Args:
      learning_rate: step η (default 1e-3; with ``inner`` leave unset).
      guide_weight: α in (0, 1), the share of ``E‖v‖²`` along the guess (default 0.5).
      guide_decay: β in (0, 1), the guess's averaging factor (default 0.9).
      unbiased: correct by ``Σ⁻¹`` (default True) or use the guided estimate as is.
      num_directions, method, fd_step, inner, seed, diagnostics, weight_decay, clipnorm,
        clipvalue, global_clipnorm, name: as in :class:`ForwardGradient` (directions are
        Gaussian; ``distribution`` / ``orthogonal`` are not accepted).

    Reference:
      Fournier et al., "Can Forward Gradient Match Backpropagation?", ICML 2023.
    """

    def __init__(
        self,
        learning_rate: Any = None,
        guide_weight: float = 0.5,
        guide_decay: float = 0.9,
        unbiased: bool = True,
        **kwargs: Any,
    ):
        for name in ("distribution", "orthogonal", "variance_control"):
            if kwargs.get(name) not in (None, False, "gaussian"):
                raise ValueError(f"GuidedForwardGradient draws Gaussian ξ; `{name}` is not used")
            kwargs.pop(name, None)
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.guide_weight = check_open_unit("guide_weight", guide_weight)
        self.guide_decay = check_open_unit("guide_decay", guide_decay)
        self.unbiased = bool(unbiased)

    def build_state(self, var_list: list[Any]) -> None:
        self._guess = [
            self.add_variable_from_reference(v, name="guess", initializer="zeros") for v in var_list
        ]

    def compute_direction(self, ctx: StepContext) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        """``(loss, d, slope)`` with ``d = −g̃`` (or the inner optimizer's update for ``g̃``)."""
        k = self.num_directions
        n = float(sum(tf.TensorShape(v.shape).num_elements() for v in ctx.variables))
        alpha = self.guide_weight
        m = [tree._value(g) for g in self._guess]
        m_norm = tree.norm(m)
        has_guess = m_norm > 0
        u = [
            tf.where(has_guess, gi / tf.cast(tf.maximum(m_norm, 1e-30), gi.dtype), 0.0) for gi in m
        ]
        a = tf.where(has_guess, tf.constant(alpha, tf.float64), 0.0)  # no guess yet: isotropic
        xi = directions.gaussian(list(ctx.variables), _step_seed(self, self.seed), k)
        v = [
            tf.cast(tf.sqrt(1.0 - a), x.dtype) * x
            + tf.cast(tf.sqrt(a * n), x.dtype) * ui[tf.newaxis]
            for x, ui in zip(xi, u, strict=True)
        ]
        loss, dv = ctx.directional_derivatives(v, self.method, step=self.fd_step)
        dv = tf.cast(dv, loss.dtype)
        raw = [tf.tensordot(tf.cast(dv, vi.dtype), vi, axes=1) / float(k) for vi in v]
        if self.unbiased:  # Σ⁻¹ raw = (raw − c (u·raw) u) / (1 − α)
            c = a * n / (1.0 - a + a * n)
            proj = tf.cast(tree.dot(u, raw), tf.float64)
            estimate = [
                (r - tf.cast(c * proj, r.dtype) * ui) / tf.cast(1.0 - a, r.dtype)
                for r, ui in zip(raw, u, strict=True)
            ]
        else:
            scale = 1.0 / (1.0 - a + a * n)
            estimate = [r * tf.cast(scale, r.dtype) for r in raw]
        beta = self.guide_decay
        for g, e in zip(self._guess, estimate, strict=True):
            g.assign(beta * tree._value(g) + (1.0 - beta) * tf.where(tf.math.is_finite(e), e, 0.0))
        if self.diagnostics:
            _report_diagnostics(ctx, estimate)
        if self.inner is None:
            return loss, [-e for e in estimate], -tf.cast(tree.dot(estimate, estimate), loss.dtype)
        d = self._inner_direction(ctx, estimate)
        return loss, d, tf.cast(tree.dot(estimate, d), loss.dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for key in ("distribution", "orthogonal", "variance_control"):
            config.pop(key, None)
        config.update(
            guide_weight=self.guide_weight, guide_decay=self.guide_decay, unbiased=self.unbiased
        )
        return config
