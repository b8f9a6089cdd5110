"""``DirectionalOptimizer``: the closure-based Keras 3 optimizer every dirgrad_opt method stands on.

Keras 3 optimizers only see gradients (``apply(grads, vars)``); a line search must evaluate the
loss at trial points, so our optimizers take a *closure* instead::

    opt = ArmijoLineSearch()
    info = opt.minimize(loss_fn, model.trainable_variables)   # one step
    info["loss"], info["step_size"], info["forward_passes"]   # scalar tensors

One step is two small rules, each a method a subclass may override (optax-style composition):

1. **direction rule** :meth:`DirectionalOptimizer.compute_direction` →
   ``(loss, d, slope)`` with ``slope = ∇L(w)·d``. Default: ``d = −∇L(w)`` (one forward and one
   backward pass), or — with ``direction=<a Keras optimizer>`` — the update that optimizer would
   apply (Adam's, momentum's...), so "Armijo along Adam's direction" is one constructor call.
   A direction that is not a descent direction (``slope ≥ 0``) is replaced by ``−∇L(w)`` and the
   step reports ``descent = False``.
2. **step-size rule** :meth:`DirectionalOptimizer.compute_step_size` → ``(t, accepted)``.
   Default: the learning rate (a float or a Keras schedule). Line searches evaluate
   ``φ(t) = L(w + t d)`` through :meth:`StepContext.loss_at`.

Then ``w ← w + t·d − λ·w`` where λ is ``weight_decay`` (decoupled: a fraction of the weights
removed per step, independent of the step size t the rules choose).
The base class counts every pass the rules make (``forward_passes``, ``backward_passes``,
``jvps``) exactly, per step and in running totals kept as optimizer variables (so they
checkpoint), and advances ``iterations`` (schedules read it).

Gradient clipping (``clipnorm``, ``clipvalue``, ``global_clipnorm``) is applied to the search
direction ``d`` before the step-size rule, and the slope is recomputed from the clipped
direction. ``use_ema`` and ``gradient_accumulation_steps`` are rejected
with a clear error. ``apply``/``apply_gradients`` raise: these optimizers need the closure — use
:meth:`minimize` or :mod:`dirgrad_opt.keras_fit`.

Mixed precision (Keras ``mixed_float16`` / ``mixed_bfloat16`` policies: float32 variables,
half-precision layers): every loss a rule sees is cast to float32 (line-search trial losses,
Polyak's gap, slopes are compared in float32), and gradients w.r.t. the float32 variables come
back float32. Backward passes can be **loss scaled** — differentiate ``S·L``, divide by S — so
small float16 gradients do not flush to zero:

* ``loss_scale_factor=S``: a static scale (Keras's argument).
* dynamic scaling (Keras ``LossScaleOptimizer`` semantics), on by default when the global
  policy is ``mixed_float16`` at build time (``dynamic_loss_scale=None``), or forced with
  ``dynamic_loss_scale=True/False``: S starts at ``initial_loss_scale`` = 2¹⁵; a step whose
  scaled backward pass gives a non-finite value is skipped (weights and every optimizer state
  left as they were, ``accepted = False``, ``loss_scale_overflow = True``) and S halves (not
  below 1); after ``dynamic_growth_steps`` = 2000 finite steps in a row S doubles. S and the
  counter are optimizer variables (checkpointed). ``iterations`` advances on a skipped step.

Zeroth-order and forward-mode rules make no backward pass, so loss scaling does nothing for
them. Their perturbations ``w + ε z`` are formed in float32 but the layers see them cast to the
compute dtype: a change below its resolution (≈ 2⁻¹¹·|w| for float16, 2⁻⁸·|w| for bfloat16)
is rounded away, so ε must be well above it (the default finite-difference step accounts for
the compute dtype; see :func:`dirgrad_opt.directional.default_fd_step`).

A non-finite loss or gradient at the start point leaves the weights untouched and reports
``accepted = False`` (the training loop turns that into a clear error).
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from dirgrad_opt import directional, distribute, tree

__all__ = ["DirectionalOptimizer", "StepContext", "step_info"]

LossFn = Callable[[], Any]

_COUNTERS = ("forward_passes", "backward_passes", "jvps")


class StepContext:
    """Everything one step's rules share: the closure, the variables, the start point, the costs.

    Rules call its methods instead of ``loss_fn`` directly so that every pass is counted and the
    variables can always be put back at the start point ``w0``.

    Attributes:
      loss_fn: the zero-argument loss closure.
      variables: the list of variables being optimised.
      start: the values ``w0`` at the beginning of the step (tensors).
      gradient: ``∇L(w0)`` once a rule has computed it, else ``None``.
      metrics: extra scalars a rule wants reported in ``minimize``'s dict.
      replicas: under a ``tf.distribute`` strategy, the replicas' closures
        (:class:`dirgrad_opt.distribute.ReplicaClosures`); every evaluation method then returns
        the mean over replicas (the global batch), and ``loss_fn`` is that mean as a closure.
        Cost counters count the passes of one replica. ``None`` outside a strategy.
      loss_scale: the loss scale S of this step (float32 scalar) or ``None``. Backward passes
        (:meth:`loss_and_gradient`, :meth:`loss_and_slope_at`, reverse-mode
        :meth:`directional_derivatives`, ``evaluate(..., backward=True)``) then differentiate
        ``S·L`` and divide by S, so float16 gradients do not underflow; values returned are
        always unscaled.
    """

    def __init__(
        self,
        loss_fn: LossFn,
        variables: list[Any],
        counters: dict[str, Any],
        replicas: distribute.ReplicaClosures | None = None,
        loss_scale: Any = None,
        overflow: Any = None,
    ):
        self.replicas = replicas
        self.loss_scale = loss_scale
        self._overflow = overflow  # int64 optimizer variable: a scaled backward pass overflowed
        if replicas is not None:
            loss_fn = replicas.mean_loss
        self.loss_fn = loss_fn
        self.variables = variables
        self.start = [tf.identity(tree._value(v)) for v in variables]
        self.gradient: list[tf.Tensor] | None = None
        self.metrics: dict[str, tf.Tensor] = {}
        self._counters = counters
        # Passes counted where the step itself runs (eagerly, or in the graph that traces it)
        # are summed here at trace time: they run once per step, so the sum is this step's
        # count, and costs no op. Counts inside a tf.while_loop body or a tf.cond branch (a
        # line search's φ) run a data-dependent number of times: those go to the counter
        # variables, which are reset once, in this graph, the first time one is used.
        self._graph = None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()
        self._static: dict[str, Any] = dict.fromkeys(_COUNTERS, 0)
        self._dynamic = False

    # -- cost accounting -------------------------------------------------------------------
    def count(self, forward_passes: Any = 0, backward_passes: Any = 0, jvps: Any = 0) -> None:
        """Adds passes to this step's counters (ints or int tensors).

        The counters are optimizer variables, so counting works anywhere — also inside a
        ``tf.while_loop`` body such as a line search's ``φ``.
        """
        here = tf.executing_eagerly() or tf.compat.v1.get_default_graph() is self._graph
        for name, value in zip(_COUNTERS, (forward_passes, backward_passes, jvps), strict=True):
            if isinstance(value, int) and value == 0:
                continue
            if here:  # runs once per step: summed now (ints stay ints: no op at all)
                if isinstance(value, int) and isinstance(self._static[name], int):
                    self._static[name] += value
                else:
                    self._static[name] = tf.cast(self._static[name], tf.int64) + tf.cast(
                        value, tf.int64
                    )
                continue
            if not self._dynamic:  # the step's first count in a loop or branch
                self._dynamic = True
                with self._graph.as_default():  # created before the loop/branch op: runs first
                    for counter in self._counters.values():
                        counter.assign(0)
            self._counters[name].assign_add(tf.cast(value, tf.int64))

    @property
    def counts(self) -> dict[str, tf.Tensor]:
        """This step's passes so far, as int32 scalars."""
        out = {}
        for name in _COUNTERS:
            total = tf.cast(self._static[name], tf.int64)
            if self._dynamic:
                total = total + tf.convert_to_tensor(self._counters[name])
            out[name] = tf.cast(total, tf.int32)
        return out

    def counted(self, name: str) -> bool:
        """Whether any ``name`` pass may have been counted so far in this step."""
        static = self._static[name]
        return self._dynamic or not isinstance(static, int) or static != 0

    # -- evaluations -----------------------------------------------------------------------
    def evaluate(self, fn: Callable[[LossFn], Any], backward: bool = False) -> Any:
        """``fn(loss_fn)`` — a nest of float tensors — or, under a strategy, its replica mean.

        The hook for a rule that computes something from the closure itself (uncounted: call
        :meth:`count`). Each replica's closure runs on its own device.

        ``backward=True`` declares that ``fn`` backpropagates and that every output is linear
        in the loss (the loss, gradients, slopes ``∇L·d``, curvatures ``vᵀHv`` along a fixed
        ``v``). Under loss scaling ``fn`` then gets the closure ``S·L`` and each output is
        divided by S (S is a power of two: exact); a non-finite output marks the step as a
        loss-scale overflow (dynamic scaling skips it and halves S).
        """
        if backward and self.loss_scale is not None:
            scale = self.loss_scale

            def scaled(loss_fn: LossFn) -> Any:
                return fn(lambda: directional._call_loss(loss_fn) * scale)

            out = self._evaluate(scaled)
            out = tf.nest.map_structure(  # (an embedding's IndexedSlices gradient made dense)
                lambda x: tf.convert_to_tensor(x) / tf.cast(scale, x.dtype), out
            )
            self.note_overflow(out)
            return out
        return self._evaluate(fn)

    def _evaluate(self, fn: Callable[[LossFn], Any]) -> Any:
        if self.replicas is None:
            return fn(self.loss_fn)
        return self.replicas.mean(fn)

    def note_overflow(self, values: Any) -> None:
        """Marks the step as a loss-scale overflow if any of ``values`` is not finite.

        Called by :meth:`evaluate` for scaled backward passes; a rule that scales a pass its
        own way (``self.loss_scale``) calls it with that pass's outputs. No-op without dynamic
        loss scaling.
        """
        if self._overflow is None:
            return
        finite = tf.reduce_all(
            tf.stack([tf.reduce_all(tf.math.is_finite(x)) for x in tf.nest.flatten(values)])
        )
        self._overflow.assign(tf.maximum(self._overflow, tf.cast(~finite, tf.int64)))

    def loss(self) -> tf.Tensor:
        """``L`` at the variables' current value (1 forward pass)."""
        self.count(forward_passes=1)
        return self.evaluate(directional._call_loss)

    def loss_and_gradient(self) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """``L(w)`` and ``∇L(w)`` at the current value (1 forward + 1 backward pass).

        The gradient is dense: an embedding's sparse ``tf.IndexedSlices`` gradient is converted,
        since directions are indexed, stacked and dotted like dense tensors.
        """
        self.count(forward_passes=1, backward_passes=1)
        loss, grads = self.evaluate(
            lambda loss_fn: directional._reverse(loss_fn, self.variables), backward=True
        )
        return loss, [tf.convert_to_tensor(g) for g in grads]

    def directional_derivatives(
        self, directions: Any, method: str = "auto", step: Any = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """:func:`dirgrad_opt.directional.directional_derivatives` at the current value, counted.

        The passes counted are those of the method that actually ran (``"auto"`` may fall back
        to finite differences when a gradient is missing).
        """
        directional._check_method(method)
        directional._check_step(step)
        dirs = tree.flatten(directional._as_direction(directions, self.variables, leading_dims=1))
        methods = []

        def derivatives_of(loss_fn: LossFn) -> tuple[tf.Tensor, tf.Tensor]:
            loss, derivatives, used = directional._derivatives(
                loss_fn, self.variables, dirs, method, step
            )
            methods.append(used)
            return loss, derivatives

        # Loss scaling where a backward pass may run; forward mode and finite differences are
        # left alone (they backpropagate nothing, and their probes must not be rescaled).
        loss, derivatives = self.evaluate(derivatives_of, backward=method in ("auto", "reverse"))
        self.count(*directional.cost(methods[0], int(dirs[0].shape[0])))
        return loss, derivatives

    def set_point(self, t: Any, direction: Sequence[tf.Tensor]) -> None:
        """Moves the variables to ``w0 + t·d`` (no pass counted)."""
        for v, w0, d in zip(self.variables, self.start, direction, strict=True):
            v.assign(w0 + tf.cast(t, w0.dtype) * tf.cast(d, w0.dtype))

    def restore(self) -> None:
        """Puts the variables back at ``w0`` exactly."""
        for v, w0 in zip(self.variables, self.start, strict=True):
            v.assign(w0)

    def loss_at(self, t: Any, direction: Sequence[tf.Tensor]) -> tf.Tensor:
        """``φ(t) = L(w0 + t·d)`` (1 forward pass). Leaves the variables at ``w0 + t·d``."""
        self.set_point(t, direction)
        return self.loss()

    def loss_and_slope_at(
        self, t: Any, direction: Sequence[tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """``(φ(t), φ'(t)) = (L(w0 + t d), ∇L(w0 + t d)·d)`` (1 forward + 1 backward pass)."""
        self.set_point(t, direction)
        self.count(forward_passes=1, backward_passes=1)

        def value_and_slope(loss_fn: LossFn) -> tuple[tf.Tensor, tf.Tensor]:
            value, grads = directional._reverse(loss_fn, self.variables)
            return value, tf.cast(tree.dot(grads, direction), value.dtype)

        # under a strategy: two scalars are reduced
        return self.evaluate(value_and_slope, backward=True)


def step_info(
    loss: tf.Tensor, step_size: tf.Tensor, accepted: tf.Tensor, slope: tf.Tensor
) -> dict[str, tf.Tensor]:
    """The metrics every step rule returns: ``loss``, ``step_size``, ``accepted``, ``slope``
    (``∇L·d``) and ``descent`` (``slope < 0``)."""
    return {
        "loss": loss,
        "step_size": step_size,
        "accepted": accepted,
        "descent": slope < 0,
        "slope": slope,
    }


def _is_float_or_schedule(value: Any) -> bool:
    return isinstance(value, float | keras.optimizers.schedules.LearningRateSchedule) or callable(
        value
    )


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class DirectionalOptimizer(keras.optimizers.Optimizer):
    """Base class: an optimizer driven by a loss closure, a direction rule and a step-size rule.

    Update: ``w ← w + t·d − λ·w`` with ``(loss, d, slope) = compute_direction(ctx)`` and
    ``(t, accepted) = compute_step_size(ctx, loss, d, slope)``; λ = ``weight_decay``.

    As a concrete optimizer it is steepest descent with a fixed (or scheduled) step,
    ``w ← w − η ∇L(w)`` — the reference every subclass changes one rule of.

    Args:
      learning_rate: float or ``keras.optimizers.schedules.LearningRateSchedule``; the step
        size of the default step-size rule. Line searches do not use it.
      direction: ``None`` for ``−∇L``, or a Keras optimizer instance whose update defines the
        search direction (its own learning rate sets the scale of ``t = 1``).
      weight_decay: decoupled weight decay λ ≥ 0: ``−λ·w`` per step, whatever the step size.
      clipnorm, clipvalue, global_clipnorm: clip the search direction (Keras semantics).
      name: optimizer name.
      dynamic_loss_scale: ``None`` (dynamic loss scaling iff the global dtype policy is
        ``mixed_float16`` when the optimizer is built), ``True`` or ``False``.
      initial_loss_scale: the dynamic scale's start value (default 2¹⁵).
      dynamic_growth_steps: finite steps after which the dynamic scale doubles (default 2000).
      **kwargs: other Keras optimizer options; ``loss_scale_factor`` is a static loss scale
        (exclusive with ``dynamic_loss_scale=True``); ``use_ema`` and
        ``gradient_accumulation_steps`` are not supported and raise ``ValueError``.

    Example:
      >>> w = tf.Variable([3.0, -2.0])
      >>> opt = DirectionalOptimizer(learning_rate=0.25)
      >>> for _ in range(50):
      ...     info = opt.minimize(lambda: tf.reduce_sum(w**2), [w])
      >>> float(tf.norm(w)) < 1e-6
      True
    """

    #: Whether the default step-size rule (the learning rate) is used; subclasses that pick the
    #: step themselves set this False and drop ``learning_rate`` from their config.
    uses_learning_rate = True

    # -- constructor arguments captured for get_config (subclasses need no get_config) ------
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _capture_constructor_arguments(cls)

    def __init__(
        self,
        learning_rate: Any = 0.01,
        direction: keras.optimizers.Optimizer | dict | None = None,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        name: str | None = None,
        dynamic_loss_scale: bool | None = None,
        initial_loss_scale: float = 2.0**15,
        dynamic_growth_steps: int = 2000,
        **kwargs: Any,
    ):
        self._check_loss_scaling(
            dynamic_loss_scale,
            initial_loss_scale,
            dynamic_growth_steps,
            kwargs.get("loss_scale_factor"),
        )
        for unsupported in ("use_ema", "gradient_accumulation_steps"):
            if kwargs.get(unsupported):
                raise ValueError(
                    f"{type(self).__name__} does not support `{unsupported}`: a closure-based "
                    "step evaluates the loss at trial points itself. Remove the argument."
                )
            kwargs.pop(unsupported, None)
        kwargs.pop("ema_momentum", None)
        kwargs.pop("ema_overwrite_frequency", None)
        if isinstance(learning_rate, int) and not isinstance(learning_rate, bool):
            learning_rate = float(learning_rate)  # gin writes `1` for 1.0; Keras rejects ints
        if not _is_float_or_schedule(learning_rate):
            raise ValueError(
                f"learning_rate must be a float or a LearningRateSchedule, got {learning_rate!r}"
            )
        if isinstance(learning_rate, float) and not 0 < learning_rate < float("inf"):
            raise ValueError(f"learning_rate must be finite and > 0, got {learning_rate}")
        if weight_decay is not None and not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        for arg, value in (
            ("clipnorm", clipnorm),
            ("clipvalue", clipvalue),
            ("global_clipnorm", global_clipnorm),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{arg} must be > 0, got {value}")
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            name=name,
            **kwargs,
        )
        self.dynamic_loss_scale = dynamic_loss_scale
        self.initial_loss_scale = float(initial_loss_scale)
        self.dynamic_growth_steps = int(dynamic_growth_steps)
        if isinstance(direction, dict):  # Keras mutates the dict it deserializes: copy it
            direction = keras.saving.deserialize_keras_object(copy.deepcopy(direction))
        if direction is not None and not isinstance(direction, keras.optimizers.Optimizer):
            raise ValueError(
                "direction must be None (steepest descent) or a Keras optimizer instance such "
                f"as keras.optimizers.Adam(), got {type(direction).__name__}"
            )
        if isinstance(direction, DirectionalOptimizer):
            raise ValueError(
                "direction must be a gradient-based Keras optimizer, not a closure one"
            )
        self.direction_optimizer = direction

    def _check_loss_scaling(self, dynamic: Any, initial: Any, growth: Any, factor: Any) -> None:
        name = type(self).__name__
        if dynamic not in (None, True, False):
            raise ValueError(
                f"{name}: dynamic_loss_scale must be None, True or False, got {dynamic!r}"
            )
        if (
            isinstance(initial, bool)
            or not isinstance(initial, int | float)
            or not 1 <= initial < float("inf")
        ):
            raise ValueError(f"{name}: initial_loss_scale must be a number >= 1, got {initial!r}")
        if isinstance(growth, bool) or not isinstance(growth, int) or growth < 1:
            raise ValueError(f"{name}: dynamic_growth_steps must be an int >= 1, got {growth!r}")
        if factor is not None:
            if (
                isinstance(factor, bool)
                or not isinstance(factor, int | float)
                or not 0 < factor < float("inf")
            ):
                raise ValueError(
                    f"{name}: loss_scale_factor must be a finite number > 0, got {factor!r}"
                )
            if dynamic:
                raise ValueError(
                    f"{name}: loss_scale_factor (a static scale) and dynamic_loss_scale=True "
                    "exclude each other; pass one"
                )

    # -- state -----------------------------------------------------------------------------
    def build(self, var_list: Sequence[Any]) -> None:
        """Creates the step counters and the subclass state (:meth:`build_state`)."""
        if self.built:
            return
        var_list = list(var_list)
        with tf.init_scope():
            super().build(var_list)
            self._totals = {
                name: self.add_variable((), initializer="zeros", dtype="int64", name=name)
                for name in _COUNTERS
            }
            self._step_counts = {
                name: self.add_variable((), initializer="zeros", dtype="int64", name=f"step_{name}")
                for name in _COUNTERS
            }
            self._dynamic_scaling = bool(
                self.dynamic_loss_scale
                if self.dynamic_loss_scale is not None
                else keras.config.dtype_policy().name == "mixed_float16"
                and not self.loss_scale_factor
            )
            if self._dynamic_scaling:
                self._loss_scale = self.add_variable(
                    (),
                    initializer=keras.initializers.Constant(self.initial_loss_scale),
                    dtype="float32",
                    name="loss_scale",
                )
                self._growth_count = self.add_variable(
                    (), initializer="zeros", dtype="int64", name="loss_scale_growth_count"
                )
                self._overflow = self.add_variable(
                    (), initializer="zeros", dtype="int64", name="loss_scale_overflow"
                )
            if self.direction_optimizer is not None and not self.direction_optimizer.built:
                self.direction_optimizer.build(var_list)
            self.build_state(var_list)
        self.built = True

    @property
    def loss_scale(self) -> tf.Tensor | None:
        """The loss scale S of the next step (dynamic or static), or ``None`` without scaling."""
        if getattr(self, "_dynamic_scaling", False):
            return tf.convert_to_tensor(self._loss_scale)
        if self.loss_scale_factor:
            return tf.constant(float(self.loss_scale_factor), tf.float32)
        return None

    def build_state(self, var_list: list[Any]) -> None:
        """Hook: create extra state with ``self.add_variable`` (never a raw ``tf.Variable``)."""

    @property
    def variables(self) -> list[Any]:
        inner = self.direction_optimizer.variables if self.direction_optimizer else []
        return self._variables[:] + list(inner)

    @property
    def totals(self) -> dict[str, Any]:
        """Running totals of passes since creation (optimizer variables; they checkpoint)."""
        if not self.built:
            raise ValueError("the optimizer is not built yet: call minimize() or build() first")
        return dict(self._totals)

    # -- the closure API -------------------------------------------------------------------
    @tf.autograph.experimental.do_not_convert
    def minimize(self, loss_fn: LossFn, var_list: Any) -> dict[str, tf.Tensor]:
        """One optimisation step on ``loss_fn`` over ``var_list``.

        Args:
          loss_fn: zero-argument callable returning the scalar loss at the variables' current
            value. It is called several times per step for line searches: it must be
            deterministic (fixed batch, fixed dropout seed) — see :mod:`dirgrad_opt.keras_fit`.
          var_list: list (or nest) of variables.

        Returns:
          A dict of scalar tensors: ``loss`` (at the start point), ``step_size``, ``accepted``,
          ``descent``, this step's ``forward_passes``, ``backward_passes``, ``jvps``, plus
          rule-specific metrics.
        """
        replica = distribute.replica_context()
        if replica is not None:  # one step for all replicas, in the cross-replica context
            return replica.merge_call(
                lambda strategy, fns, var_list: self._minimize(
                    None, var_list, distribute.ReplicaClosures(strategy, fns)
                ),
                args=(loss_fn, var_list),
            )
        return self._minimize(loss_fn, var_list)

    def _minimize(
        self, loss_fn: LossFn | None, var_list: Any, replicas: Any = None
    ) -> dict[str, tf.Tensor]:
        variables = directional._check_variables(var_list)
        if not self.built:
            self.build(variables)
        else:
            self._check_variables_are_known(variables)
        # (Keras names a class `_Mine` '__mine', which TF refuses as a root scope name)
        with tf.name_scope(self.name.lstrip("_") or "optimizer"):
            dynamic = self._dynamic_scaling
            if dynamic:  # a skipped step puts every weight and state variable back
                self._overflow.assign(0)
                kept = self._state_for_skipped_steps()
                saved = [tf.identity(tree._value(v)) for v in kept]
            ctx = StepContext(
                loss_fn,
                variables,
                self._step_counts,
                replicas,
                loss_scale=self.loss_scale,
                overflow=self._overflow if dynamic else None,
            )
            info = self.step(ctx)
            if dynamic:
                info = self._update_loss_scale(ctx, info, kept, saved)
            counts = ctx.counts
            for name in _COUNTERS:
                if ctx.counted(name):  # a total that cannot have moved is not written
                    self._totals[name].assign_add(tf.cast(counts[name], tf.int64))
            self._iterations.assign_add(1)
        out = {name: counts[name] for name in _COUNTERS}
        out.update(ctx.metrics)
        out.update(info)
        return out

    def _state_for_skipped_steps(self) -> list[Any]:
        """Variables a loss-scale overflow restores: the subclass and inner-optimizer state."""
        skip = {id(v) for v in (*self._totals.values(), *self._step_counts.values())}
        skip |= {id(self._iterations), id(self._loss_scale), id(self._growth_count)}
        skip.add(id(self._overflow))
        return [v for v in self.variables if id(v) not in skip]

    def _update_loss_scale(
        self, ctx: StepContext, info: dict[str, tf.Tensor], kept: list[Any], saved: list[Any]
    ) -> dict[str, tf.Tensor]:
        """Dynamic loss scaling after a step: skip it on overflow (S ← max(S/2, 1)), else
        count it and double S after ``dynamic_growth_steps`` finite steps in a row."""
        overflow = self._overflow > 0
        for v, w0 in zip(ctx.variables, ctx.start, strict=True):
            v.assign(tf.where(overflow, w0, tree._value(v)))
        for v, old in zip(kept, saved, strict=True):
            v.assign(tf.where(overflow, old, tree._value(v)))
        scale = tf.convert_to_tensor(self._loss_scale)
        count = tf.convert_to_tensor(self._growth_count) + 1
        grow = ~overflow & (count >= self.dynamic_growth_steps)
        self._loss_scale.assign(
            tf.where(overflow, tf.maximum(scale / 2, 1.0), tf.where(grow, scale * 2, scale))
        )
        self._growth_count.assign(tf.where(overflow | grow, tf.zeros_like(count), count))
        info = dict(info)
        if "step_size" in info:
            t = info["step_size"]
            info["step_size"] = tf.where(overflow, tf.zeros_like(t), t)
        info["accepted"] = tf.cast(info.get("accepted", True), tf.bool) & ~overflow
        info["loss_scale"] = scale  # the scale this step used
        info["loss_scale_overflow"] = overflow
        return info

    def step(self, ctx: StepContext) -> dict[str, tf.Tensor]:
        """Direction rule, clipping, step-size rule, move. Returns metrics for ``minimize``."""
        loss, d, slope = self.compute_direction(ctx)
        d, slope = self._clip_direction(ctx, d, slope)
        finite = tf.math.is_finite(loss) & tf.math.is_finite(slope)
        t, accepted = self.compute_step_size(ctx, loss, d, slope)
        ok = finite & tf.math.is_finite(t)
        t = tf.where(ok, tf.cast(t, loss.dtype), tf.zeros_like(loss))
        self._move(ctx, t, d, ok)
        # no step: not accepted
        return step_info(loss, t, tf.logical_and(tf.cast(accepted, tf.bool), ok), slope)

    # -- the two rules ---------------------------------------------------------------------
    def compute_direction(self, ctx: StepContext) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        """Direction rule: ``(loss, d, slope = ∇L·d)``; default ``−∇L`` or the inner optimizer's.

        Subclasses may override it (random directions, momentum...). A direction with
        ``slope ≥ 0`` is replaced by ``−∇L`` (counted in ``metrics['fallback']``).
        """
        loss, grads = ctx.loss_and_gradient()
        ctx.gradient = grads
        steepest = [-g for g in grads]
        if self.direction_optimizer is None:
            return loss, steepest, -tf.cast(tree.dot(grads, grads), loss.dtype)
        d = self._inner_direction(ctx, grads)
        slope = tf.cast(tree.dot(grads, d), loss.dtype)
        bad = ~(slope < 0)
        ctx.metrics["fallback"] = bad
        d = [tf.where(bad, s, x) for s, x in zip(steepest, d, strict=True)]
        slope = tf.where(bad, -tf.cast(tree.dot(grads, grads), loss.dtype), slope)
        return loss, d, slope

    def compute_step_size(
        self, ctx: StepContext, loss: tf.Tensor, direction: list[tf.Tensor], slope: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Step-size rule: ``(t, accepted)``; default the (scheduled) learning rate."""
        lr = tf.cast(self._get_current_learning_rate(), loss.dtype)
        return lr, tf.constant(True)

    # -- internals -------------------------------------------------------------------------
    def _inner_direction(self, ctx: StepContext, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """The inner Keras optimizer's update ``Δw`` for gradient ``grads`` (its state advances)."""
        if ctx.replicas is None:
            self.direction_optimizer.apply(grads, ctx.variables)
        else:  # the global gradient, applied to every copy
            ctx.replicas.apply(self.direction_optimizer, grads, ctx.variables)
        d = [tree._value(v) - w0 for v, w0 in zip(ctx.variables, ctx.start, strict=True)]
        ctx.restore()
        return d

    def _clip_direction(
        self, ctx: StepContext, d: list[tf.Tensor], slope: tf.Tensor
    ) -> tuple[list[tf.Tensor], tf.Tensor]:
        if not (self.clipnorm or self.clipvalue or self.global_clipnorm):
            return d, slope
        clipped = list(self._clip_gradients(d))
        if ctx.gradient is not None:
            slope = tf.cast(tree.dot(ctx.gradient, clipped), slope.dtype)
        return clipped, slope

    def _move(self, ctx: StepContext, t: tf.Tensor, d: list[tf.Tensor], ok: tf.Tensor) -> None:
        """``w ← w0 + t·d − λ·w0`` where ``ok``, else ``w ← w0`` (a NaN ``d`` never leaks in).

        The decay λ (``weight_decay``) is a fraction of the weights removed per step,
        independent of the step size t: line searches and Newton-type rules pick t per step
        (up to ~1/curvature), and scaling the decay by it would make its strength arbitrary.
        """
        for v, w0, di in zip(ctx.variables, ctx.start, d, strict=True):
            new = w0 + tf.cast(t, w0.dtype) * tf.cast(di, w0.dtype)
            if self.weight_decay and self._use_weight_decay(v):
                new = new - tf.constant(self.weight_decay, w0.dtype) * w0
            v.assign(tf.where(ok, new, w0))

    # -- Keras API that does not fit a closure optimizer -----------------------------------
    def apply(self, grads: Any, trainable_variables: Any = None) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} needs the loss closure, not just gradients: call "
            "opt.minimize(loss_fn, var_list), or train a Keras model with "
            "dirgrad_opt.keras_fit.DirectionalModel / enable_closure_training(model)."
        )

    def apply_gradients(self, grads_and_vars: Any) -> None:
        self.apply(None)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        self.apply(None)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Any:
        """Inverse of :meth:`get_config`; leaves the caller's dict untouched (Keras mutates it).

        Serialized Keras objects among the values (schedules, optimizers) are deserialized.
        """
        config = copy.deepcopy(config)
        for key, value in config.items():
            if key != "direction" and _is_serialized_keras_object(value):
                config[key] = keras.saving.deserialize_keras_object(
                    value, custom_objects=custom_objects
                )
        return super().from_config(config, custom_objects=custom_objects)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for key in ("use_ema", "ema_momentum", "ema_overwrite_frequency"):
            config.pop(key, None)
        if not config.get("loss_scale_factor"):
            config.pop("loss_scale_factor", None)
        config.pop("gradient_accumulation_steps", None)
        for key, default in (
            ("dynamic_loss_scale", None),
            ("initial_loss_scale", 2.0**15),
            ("dynamic_growth_steps", 2000),
        ):  # written when set, so configs of unscaled runs stay as they were
            if getattr(self, key) != default:
                config[key] = getattr(self, key)
        if not self.uses_learning_rate:
            config.pop("learning_rate", None)
        config["direction"] = (
            keras.saving.serialize_keras_object(self.direction_optimizer)
            if self.direction_optimizer is not None
            else None
        )
        for key, value in getattr(self, "_constructor_arguments", {}).items():
            if not _unsaveable(value):  # unsaveable ones were refused at construction
                config.setdefault(key, _serializable(value))
        return config


# -- constructor-argument capture ------------------------------------------------------------
_JSON_SCALARS = (bool, int, float, str, type(None))


def _is_serialized_keras_object(value: Any) -> bool:
    return isinstance(value, dict) and "class_name" in value and "config" in value


def _serializable(value: Any) -> Any:
    """``value`` as get_config data: JSON scalars and containers as is, Keras objects
    (schedules, optimizers, anything with ``get_config``) serialized."""
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, list | tuple):
        return [_serializable(v) for v in value]
    if isinstance(value, dict):
        return {k: _serializable(v) for k, v in value.items()}
    return keras.saving.serialize_keras_object(value)


def _unsaveable(value: Any) -> bool:
    """Whether get_config could not carry ``value`` (a function, an arbitrary object...)."""
    if isinstance(value, _JSON_SCALARS):
        return False
    if isinstance(value, list | tuple):
        return any(_unsaveable(v) for v in value)
    if isinstance(value, dict):
        return any(not isinstance(k, str) or _unsaveable(v) for k, v in value.items())
    return not callable(getattr(value, "get_config", None))


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _capture_constructor_arguments(cls: type) -> None:
    """Wraps ``cls.__init__`` so an instance remembers the arguments it was built with.

    :meth:`DirectionalOptimizer.get_config` adds every remembered argument its (and the
    subclasses') explicit config lacks, so a subclass with a new constructor argument round-trips
    through ``get_config``/``from_config``, ``.keras`` files and ``result.json`` without writing
    ``get_config``. Arguments of every class along the hierarchy are merged, the most derived
    class's winning; ``*args``/``**kwargs`` are not captured (they reach a base class that captures
    or configures them). A value ``get_config`` cannot carry (a function, an arbitrary object)
    raises ``TypeError`` at construction naming the argument, unless the class's own
    ``get_config`` already writes that key.
    """
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_captures_arguments", False):
        return
    signature = inspect.signature(init)
    names = [
        name
        for name, p in signature.parameters.items()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ][1:]  # without self

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:  # pragma: no cover - init accepted these arguments
            return
        bound.apply_defaults()
        captured = {name: bound.arguments[name] for name in names if name in bound.arguments}
        merged = {**self.__dict__.get("_constructor_arguments", {}), **captured}
        # object.__setattr__: no checkpoint tracking of the captured values (e.g. an optimizer).
        object.__setattr__(self, "_constructor_arguments", merged)
        if type(self).__init__ is __init__:  # the outermost constructor: check once
            _check_saveable(self, merged)

    __init__._captures_arguments = True  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]


def _check_saveable(optimizer: Any, arguments: dict[str, Any]) -> None:
    bad = [name for name, value in arguments.items() if _unsaveable(value)]
    if not bad:
        return
    explicit = optimizer.get_config()  # a class's own get_config may carry them its own way
    lost = [name for name in bad if name not in explicit]
    if lost:
        name = lost[0]
        raise TypeError(
            f"{type(optimizer).__name__}({name}={_short(arguments[name])}): argument {name!r} "
            "cannot be saved by get_config (.keras files, result.json); pass a number, string, "
            "list or Keras serializable object, or write get_config/from_config for it."
        )


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Validates a hyperparameter ``> 0`` (or ``>= 0``); returns it as float."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (x >= 0 if allow_zero else x > 0) or x != x or x == float("inf"):
        raise ValueError(
            f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value}"
        )
    return x


def check_open_unit(name: str, value: Any) -> float:
    """Validates a hyperparameter in the open interval (0, 1); returns it as float."""
    x = check_positive(name, value)
    if not x < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return x
