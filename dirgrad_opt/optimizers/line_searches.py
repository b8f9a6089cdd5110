"""Line-search optimizers: stochastic Armijo (SLS), strong Wolfe, stochastic Polyak step.

Each is a :class:`~dirgrad_opt.optimizers.base.DirectionalOptimizer` that only overrides the
step-size rule; the direction is ``−∇L`` or, with ``direction=keras.optimizers.Adam(...)``,
the update of any Keras optimizer. All state (the previous step, the previous loss) lives in
optimizer variables, so checkpoints and ``.keras`` files restore it.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from dirgrad_opt import line_search
from dirgrad_opt.optimizers import scales
from dirgrad_opt.optimizers.base import (
    DirectionalOptimizer,
    StepContext,
    check_open_unit,
    check_positive,
)

__all__ = ["ArmijoLineSearch", "PolyakStep", "WolfeLineSearch"]

RESETS = ("keep", "grow", "reset")


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def carried_step(
    result: line_search.LineSearchResult, t0: tf.Tensor, shrink: float, previous: tf.Tensor
) -> tf.Tensor:
    """The step an SLS search hands to the next one (before the reset rule grows it).

    * converged: the accepted step ``t``;
    * failed after ``n ≥ 1`` trials ``t₀, t₀β, …, t₀βⁿ⁻¹`` (none met Armijo, even if one
      decreased the loss and was taken): ``t₀βⁿ``, the trial backtracking would have made next,
      so the next search continues below the smallest step already rejected instead of
      starting over near ``t₀`` (which cost another full budget of rejected trials);
    * no trial at all (not a descent direction): ``previous``, unchanged.

    With ``reset="grow"`` the next trial is then ``t₀βⁿ·γ^(1/steps_per_epoch)``, still below the
    smallest rejected step ``t₀βⁿ⁻¹`` whenever ``β·γ^(1/steps_per_epoch) < 1``.
    """
    n = tf.cast(result.evaluations, t0.dtype)
    below_smallest = t0 * tf.pow(tf.constant(shrink, t0.dtype), n)
    failed = tf.where(result.evaluations > 0, below_smallest, previous)
    return tf.where(result.converged, result.step, failed)


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class ArmijoLineSearch(DirectionalOptimizer):
    """Stochastic Armijo line search (SLS), Vaswani et al. 2019.

    Each step backtracks from a trial step ``t₀`` along ``d`` (default ``−∇L``) on the *same*
    mini-batch until

        L(w + t d) ≤ L(w) + c · t · ∇L(w)·d,        t ← shrink · t,

    then moves ``w ← w + t d``. The next trial step is set by ``reset``:

    * ``"grow"`` (SLS's option 1, default): ``t₀ ← min(t_prev · γ^(1/steps_per_epoch), max_step)``
    * ``"keep"``: ``t₀ ← t_prev``
    * ``"reset"``: ``t₀ ← initial_step`` (classic backtracking)

    Cost per step: 1 forward + 1 backward pass, plus one forward pass per trial step (reported
    in ``forward_passes``; SLS with ``"grow"`` needs about 1 trial after warm-up).

    Args:
      c: sufficient-decrease constant, ``0 < c < 1`` (paper: 0.1).
      shrink: backtracking factor β, ``0 < β < 1`` (paper: 0.9).
      initial_step: first trial step (paper: 1).
      max_step: cap on the trial step (paper's η_max). Default ``None``: 10 along ``−∇L`` (the
        paper), 1 along a ``direction`` optimizer's update — there ``t = 1`` already is that
        optimizer's step, and letting SLS grow it 10-fold made Armijo-along-Adam diverge on
        the MNIST-1D MLP benchmark (``docs/bench_line_searches.md``).
      reset: ``"grow"``, ``"keep"`` or ``"reset"``.
      growth: γ of the ``"grow"`` reset (paper: 2).
      steps_per_epoch: n_batches of the ``"grow"`` reset (mini-batches per epoch).
      max_evaluations: budget of trial steps per step; when exhausted, the best decreasing
        step seen is taken and ``accepted`` is False (the loss never goes up), and the next
        step's search starts below the smallest step this one rejected (:func:`carried_step`).
        ``minimize`` reports ``accepted`` (Armijo met) and ``evaluations`` (trials) per step.

    ``initial_step`` and ``max_step`` may be Keras ``LearningRateSchedule`` objects, evaluated at
    ``iterations`` (see :mod:`dirgrad_opt.optimizers.scales`).
      direction, weight_decay, clipnorm, clipvalue, global_clipnorm, name: see
        :class:`DirectionalOptimizer`.

    Reference:
      S. Vaswani, A. Mishkin, I. Laradji, M. Schmidt, G. Gidel, S. Lacoste-Julien,
      "Painless Stochastic Gradient: Interpolation, Line-Search, and Convergence Rates",
      NeurIPS 2019.

    Warning:
      The closure must be deterministic within a step (same batch, same dropout mask): a loss
      that changes between trial evaluations makes the search shrink the step to nothing.
      :mod:`dirgrad_opt.keras_fit` takes care of this for Keras models.
    """

    uses_learning_rate = False

    def __init__(
        self,
        c: float = 0.1,
        shrink: float = 0.9,
        initial_step: Any = 1.0,
        max_step: Any = None,
        reset: str = "grow",
        growth: float = 2.0,
        steps_per_epoch: int = 100,
        max_evaluations: int = 30,
        name: str | None = None,
        **kwargs: Any,
    ):
        kwargs.pop("learning_rate", None)
        super().__init__(learning_rate=1.0, name=name, **kwargs)
        self.c = check_open_unit("c", c)
        self.shrink = check_open_unit("shrink", shrink)
        self.initial_step = scales.check_scale("initial_step", initial_step)
        if max_step is None:
            max_step = 10.0 if self.direction_optimizer is None else 1.0
        self.max_step = scales.check_scale("max_step", max_step)
        both_fixed = not (scales.is_schedule(initial_step) or scales.is_schedule(self.max_step))
        if both_fixed and self.initial_step > self.max_step:
            raise ValueError(f"initial_step ({initial_step}) must be <= max_step ({max_step})")
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
        self.reset = reset
        self.growth = check_positive("growth", growth)
        if self.growth < 1:
            raise ValueError(f"growth must be >= 1, got {growth}")
        self.steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch)
        self.max_evaluations = _check_int("max_evaluations", max_evaluations)

    def build_state(self, var_list: list[Any]) -> None:
        first = scales.initial_value(self.initial_step)
        self.previous_step = self.add_variable(
            (), initializer=keras.initializers.Constant(first), name="previous_step"
        )

    def trial_step(self) -> tf.Tensor:
        """``t₀`` of this step from the previous accepted step and the reset rule."""
        prev = tf.convert_to_tensor(self.previous_step)
        if self.reset == "reset":
            return scales.scale_at(self.initial_step, self.iterations, prev.dtype)
        if self.reset == "keep":
            return prev
        factor = self.growth ** (1.0 / self.steps_per_epoch)
        return tf.minimum(
            prev * factor, scales.scale_at(self.max_step, self.iterations, prev.dtype)
        )

    def compute_step_size(
        self, ctx: StepContext, loss: tf.Tensor, direction: list[tf.Tensor], slope: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        t0 = tf.cast(self.trial_step(), loss.dtype)
        result = line_search.backtracking_armijo(
            lambda t: ctx.loss_at(t, direction),
            loss,
            slope,
            initial_step=t0,
            c1=self.c,
            shrink=self.shrink,
            max_evaluations=self.max_evaluations,
        )
        keep = carried_step(result, t0, self.shrink, tf.cast(self.previous_step, loss.dtype))
        self.previous_step.assign(tf.cast(tf.maximum(keep, 1e-12), self.previous_step.dtype))
        ctx.metrics["evaluations"] = result.evaluations
        return result.step, result.converged

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            c=self.c,
            shrink=self.shrink,
            initial_step=scales.serialize_scale(self.initial_step),
            max_step=scales.serialize_scale(self.max_step),
            reset=self.reset,
            growth=self.growth,
            steps_per_epoch=self.steps_per_epoch,
            max_evaluations=self.max_evaluations,
        )
        return config


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class WolfeLineSearch(DirectionalOptimizer):
    """Strong Wolfe line search along ``d`` (Nocedal & Wright 2006, Algorithms 3.5/3.6).

    Finds ``t`` with ``φ(t) ≤ φ(0) + c₁ t φ'(0)`` and ``|φ'(t)| ≤ c₂ |φ'(0)|`` where
    ``φ(t) = L(w + t d)``, by bracketing and zoom with safeguarded cubic interpolation
    (:func:`dirgrad_opt.line_search.strong_wolfe`). The first trial step follows scipy /
    N&W (3.60): ``t₀ = min(max_initial_step, 1.01 · 2 (L_k − L_{k−1}) / φ'(0))`` once a
    previous loss is known, else ``initial_step``.

    Cost per step: 1 forward + 1 backward pass, plus one forward and one backward pass per
    trial step.

    Args:
      c1: sufficient-decrease constant (default 1e-4).
      c2: curvature constant, ``c1 < c2 < 1`` (default 0.9).
      initial_step: first trial step of the first iteration.
      max_initial_step: cap on later first trials (default 1, as scipy).
      max_step: largest step bracketing may reach.
      max_evaluations: budget of trial points per step.

    ``initial_step``, ``max_initial_step`` and ``max_step`` may be Keras
    ``LearningRateSchedule`` objects, evaluated at ``iterations``.

    Reference:
      J. Nocedal and S. J. Wright, *Numerical Optimization*, 2nd ed., Springer 2006, ch. 3.
    """

    uses_learning_rate = False

    def __init__(
        self,
        c1: float = 1e-4,
        c2: float = 0.9,
        initial_step: Any = 1.0,
        max_initial_step: Any = 1.0,
        max_step: Any = 100.0,
        max_evaluations: int = 20,
        name: str | None = None,
        **kwargs: Any,
    ):
        kwargs.pop("learning_rate", None)
        super().__init__(learning_rate=1.0, name=name, **kwargs)
        self.c1 = check_open_unit("c1", c1)
        self.c2 = check_open_unit("c2", c2)
        if not self.c1 < self.c2:
            raise ValueError(f"need 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")
        self.initial_step = scales.check_scale("initial_step", initial_step)
        self.max_initial_step = scales.check_scale("max_initial_step", max_initial_step)
        self.max_step = scales.check_scale("max_step", max_step)
        self.max_evaluations = _check_int("max_evaluations", max_evaluations)

    def build_state(self, var_list: list[Any]) -> None:
        self.previous_loss = self.add_variable(
            (), initializer=keras.initializers.Constant(float("nan")), name="previous_loss"
        )

    def compute_step_size(
        self, ctx: StepContext, loss: tf.Tensor, direction: list[tf.Tensor], slope: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        prev = tf.cast(self.previous_loss, loss.dtype)
        guess = 1.01 * 2.0 * (loss - prev) / slope
        usable = tf.math.is_finite(guess) & (guess > 0)
        t0 = tf.where(
            usable,
            tf.minimum(guess, scales.scale_at(self.max_initial_step, self.iterations, loss.dtype)),
            scales.scale_at(self.initial_step, self.iterations, loss.dtype),
        )
        result = line_search.strong_wolfe(
            lambda t: ctx.loss_and_slope_at(t, direction),
            loss,
            slope,
            initial_step=t0,
            c1=self.c1,
            c2=self.c2,
            max_evaluations=self.max_evaluations,
            max_step=scales.scale_at(self.max_step, self.iterations, loss.dtype),
        )
        self.previous_loss.assign(tf.cast(loss, self.previous_loss.dtype))
        ctx.metrics["evaluations"] = result.evaluations
        return result.step, result.converged

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            c1=self.c1,
            c2=self.c2,
            initial_step=scales.serialize_scale(self.initial_step),
            max_initial_step=scales.serialize_scale(self.max_initial_step),
            max_step=scales.serialize_scale(self.max_step),
            max_evaluations=self.max_evaluations,
        )
        return config


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class PolyakStep(DirectionalOptimizer):
    """Stochastic Polyak step, SPS_max (Loizou et al. 2021), along any descent direction.

    With ``f*`` a lower bound on the loss (``min_loss``, 0 for interpolating models),

        t = min( (L(w) − f*) / (c · (−∇L·d)), γ_b ),     w ← w + t d

    which for ``d = −∇L`` is the paper's ``(f_i(x) − f_i*) / (c ‖∇f_i(x)‖²)``. With
    ``smooth=True`` the cap follows the paper's smoothing, ``γ_b ← τ^(1/steps_per_epoch) · t_prev``
    (τ = ``growth``), never above ``max_step``.

    Cost per step: 1 forward + 1 backward pass (no extra evaluations).

    Args:
      c: the constant c > 0 (paper: 0.5; c = 0.5 is the theory's choice).
      min_loss: f*, a lower bound on the loss (default 0).
      max_step: γ_b, the cap on the step (default 1; the paper tunes γ_b per problem, and
        10 made a ReLU MLP on sklearn digits diverge to dead units in our tests).
      smooth: use the smoothed cap.
      growth: τ of the smoothing (paper: 2).
      steps_per_epoch: mini-batches per epoch for the smoothing.

    ``max_step`` (γ_b) may be a Keras ``LearningRateSchedule``, evaluated at ``iterations``.

    Reference:
      N. Loizou, S. Vaswani, I. Laradji, S. Lacoste-Julien, "Stochastic Polyak Step-size for
      SGD: An Adaptive Learning Rate for Fast Convergence", AISTATS 2021.

    Warning:
      When ``min_loss`` overestimates the optimum value, the step vanishes as the loss nears
      ``min_loss``; when it underestimates it (f* = 0 for a regularised loss), the iterates
      reach a neighbourhood of the optimum of size proportional to the gap.
    """

    uses_learning_rate = False

    def __init__(
        self,
        c: float = 0.5,
        min_loss: float = 0.0,
        max_step: Any = 1.0,
        smooth: bool = False,
        growth: float = 2.0,
        steps_per_epoch: int = 100,
        name: str | None = None,
        **kwargs: Any,
    ):
        kwargs.pop("learning_rate", None)
        super().__init__(learning_rate=1.0, name=name, **kwargs)
        self.c = check_positive("c", c)
        self.min_loss = float(min_loss)
        if self.min_loss != self.min_loss or abs(self.min_loss) == float("inf"):
            raise ValueError(f"min_loss must be finite, got {min_loss}")
        self.max_step = scales.check_scale("max_step", max_step)
        self.smooth = bool(smooth)
        self.growth = check_positive("growth", growth)
        if self.growth < 1:
            raise ValueError(f"growth must be >= 1, got {growth}")
        self.steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch)

    def build_state(self, var_list: list[Any]) -> None:
        first = scales.initial_value(self.max_step)
        self.previous_step = self.add_variable(
            (), initializer=keras.initializers.Constant(first), name="previous_step"
        )

    def compute_step_size(
        self, ctx: StepContext, loss: tf.Tensor, direction: list[tf.Tensor], slope: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        gap = tf.maximum(loss - tf.constant(self.min_loss, loss.dtype), 0.0)
        denom = tf.constant(self.c, loss.dtype) * (-slope)
        polyak = tf.where(denom > 0, gap / tf.where(denom > 0, denom, 1.0), 0.0)
        cap = scales.scale_at(self.max_step, self.iterations, loss.dtype)
        if self.smooth:
            factor = self.growth ** (1.0 / self.steps_per_epoch)
            cap = tf.minimum(tf.cast(self.previous_step, loss.dtype) * factor, cap)
        t = tf.minimum(polyak, cap)
        previous = tf.cast(self.previous_step, t.dtype)
        self.previous_step.assign(tf.cast(tf.where(t > 0, t, previous), self.previous_step.dtype))
        ctx.metrics["polyak_step"] = polyak
        return t, denom > 0

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            c=self.c,
            min_loss=self.min_loss,
            max_step=scales.serialize_scale(self.max_step),
            smooth=self.smooth,
            growth=self.growth,
            steps_per_epoch=self.steps_per_epoch,
        )
        return config
