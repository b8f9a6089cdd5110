"""Activity perturbation: perturb the layers' pre-activations, not the weights (Ren et al. 2022).

A weight-perturbation estimator (forward gradient, SPSA) has a variance that grows with the
number of weights n (``E‖g̃‖² ≈ (n+2)‖∇L‖²``). Perturbing the *activities* instead — the
pre-activations ``z_l = x_l W_l + b_l`` of the dense layers, one independent perturbation per
example — has a variance that grows with the number of units per example (522 for the MNIST-1D
MLP, against 79k weights), and the weight update is then formed *locally* from the layer's own
input, as backprop would, but without any backward pass:

    u_{l,b} ~ N(0, I) (or ±1)            for every tapped layer l and example b
    j_b  = Σ_l ∇_{z_{l,b}} ℓ_b · u_{l,b}   one JVP of the per-example losses ℓ_b (forward mode), or
    j_b ≈ (ℓ_b(z + εu) − ℓ_b(z − εu)) / 2ε  two forward passes (zeroth order, "node perturbation")
    ĝ_{z_l} = (1/B) j ⊙ u_l                estimate of ∂L/∂z_l,  L = (1/B) Σ_b ℓ_b
    ĝ_{W_l} = x_lᵀ ĝ_{z_l},  ĝ_{b_l} = Σ_b ĝ_{z_l,b}

``E[ĝ_{z_l}] = ∂L/∂z_l`` because the perturbations of different layers and examples are
independent with ``E[u uᵀ] = I``; so ``ĝ_W`` is unbiased for ``∇_W L`` (forward mode; the
zeroth-order version has the central difference's O(ε²) bias, plus an O(ε²) bias from using
the mean of the two perturbed passes' layer inputs as ``x_l``). The estimate is then used like
a gradient: ``w ← w − η ĝ`` or handed to ``inner`` (e.g. Adam).

**Getting at a Keras model's layers without backprop.** The estimators need each layer's input
``x_l`` and a way to add ``p_l`` to its pre-activation. :func:`tap_dense_layers` replaces the
``call`` of a model's ``Dense`` layers by an equivalent one that, only while a :class:`Taps`
context is active, adds the context's perturbation to ``x W + b`` and records ``x`` and ``z``.
Outside a context the model computes exactly what it did before. Use it directly::

    taps = tap_dense_layers(model)            # once; idempotent
    with Taps(taps) as record:                # no perturbation: just record
        logits = model(x)
    record.inputs[0], record.preactivations[0]   # layer 0's x and x W + b

The optimizers get the model, batch and loss from the closure: the training runner passes a
:class:`ModelClosure` (``closure.model``, ``.inputs``, ``.labels``, ``.loss_fn``); outside the
runner build one yourself, ``opt.minimize(ModelClosure(model, loss_fn, x, y),
model.trainable_variables)``. From gin: ``train.optimizer = @ActivityForwardGradient()`` and
``ActivityForwardGradient.layers = ['dense', 'dense_1']`` (default: every Dense layer).

**Local losses** (``local_losses=True``, Ren et al. 2022 sec. 4): every tapped layer but the
last is trained on the loss of its own linear classifier head (an optimizer variable, trained
by the same estimate), with stop-gradient between blocks in forward mode; see
:class:`ActivityForwardGradient`.

Requirements (each checked with a clear error): every trainable variable belongs to a tapped
``Dense`` layer (kernel or bias); the layers see 2-D inputs ``[batch, features]``; no
quantised layers; the model has no regularisation losses (their gradients are not estimated).
Per-example losses are the loss function applied to each example alone
(``tf.vectorized_map``), which is exact for mean-reduced losses such as softmax cross-entropy.

Reference:
  M. Ren, S. Kornblith, R. Liao, G. Hinton, "Scaling Forward Gradient With Local Losses",
  ICLR 2023 (arXiv:2210.03310): activity perturbation, local losses. Node perturbation (the
  zeroth-order version) goes back to Williams 1992 / Flower & Jabri 1993.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from dirgrad_opt import directional, directions, tree
from dirgrad_opt.optimizers.base import DirectionalOptimizer, StepContext, check_positive
from dirgrad_opt.optimizers.random_direction import (
    EstimateStep,
    _step_seed,
    estimator_diagnostics,
)

__all__ = [
    "ActivityForwardGradient",
    "ActivityZerothOrder",
    "ModelClosure",
    "Taps",
    "activity_gradient_estimate",
    "per_example_losses",
    "tap_dense_layers",
]

ACTIVITY_DISTRIBUTIONS = ("gaussian", "rademacher")

_STATE = threading.local()


# ----------------------------------------------------------------------------- layer taps


class Taps:
    """A context in which tapped ``Dense`` layers record their input and perturb ``x W + b``.

    Args:
      layers: the tapped layers (from :func:`tap_dense_layers`), in the order of
        ``perturbations``.
      perturbations: ``None`` (record only) or one tensor ``[batch, units_l]`` per layer, added
        to the layer's pre-activation.

    Attributes (filled while the model runs inside the context):
      inputs: per layer, the input ``x_l`` it was called with (the last call wins).
      preactivations: per layer, ``x_l W_l + b_l + p_l``.
      outputs: per layer, its output ``act(x_l W_l + b_l + p_l)``.

    With ``stop_inputs=True`` each tapped layer computes ``stop_gradient(x_l) W_l + b_l``:
    no tangent (forward mode) or gradient crosses a tapped layer's input, so what reaches a
    layer's output depends on its own perturbation only (the local-loss mode's block
    isolation; the values are unchanged).
    """

    def __init__(
        self,
        layers: Sequence[keras.layers.Dense],
        perturbations: Sequence[Any] | None = None,
        stop_inputs: bool = False,
    ):
        self.layers = list(layers)
        self.stop_inputs = bool(stop_inputs)
        if perturbations is not None and len(perturbations) != len(self.layers):
            raise ValueError(
                f"Taps: {len(perturbations)} perturbations for {len(self.layers)} layers"
            )
        self.perturbations = None if perturbations is None else list(perturbations)
        self.inputs: list[tf.Tensor | None] = [None] * len(self.layers)
        self.preactivations: list[tf.Tensor | None] = [None] * len(self.layers)
        self.outputs: list[tf.Tensor | None] = [None] * len(self.layers)
        self._index = {id(layer): i for i, layer in enumerate(self.layers)}

    def __enter__(self) -> Taps:
        stack = getattr(_STATE, "stack", None)
        if stack is None:
            stack = _STATE.stack = []
        stack.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _STATE.stack.pop()

    def _visit(self, layer: keras.layers.Dense, x: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
        i = self._index.get(id(layer))
        if i is None:
            return z
        self.inputs[i] = x
        if self.perturbations is not None:
            z = z + tf.cast(self.perturbations[i], z.dtype)
        self.preactivations[i] = z
        return z

    def _stops(self, layer: keras.layers.Dense) -> bool:
        return self.stop_inputs and id(layer) in self._index

    def _output(self, layer: keras.layers.Dense, out: tf.Tensor) -> tf.Tensor:
        i = self._index.get(id(layer))
        if i is not None:
            self.outputs[i] = out
        return out


def _active() -> Taps | None:
    stack = getattr(_STATE, "stack", None)
    return stack[-1] if stack else None


def _tapped_call(layer: keras.layers.Dense) -> Callable[..., Any]:
    original = layer.call

    def call(inputs: Any, training: Any = None) -> Any:
        taps = _active()
        if taps is None:
            return original(inputs, training=training)
        x = tf.stop_gradient(inputs) if taps._stops(layer) else inputs
        z = keras.ops.matmul(x, layer.kernel)
        if layer.bias is not None:
            z = keras.ops.add(z, layer.bias)
        z = taps._visit(layer, x, z)
        return taps._output(layer, layer.activation(z) if layer.activation is not None else z)

    call._dirgrad_original = original  # type: ignore[attr-defined]
    return call


def tap_dense_layers(
    model: keras.Model, names: Sequence[str] | None = None
) -> list[keras.layers.Dense]:
    """Makes ``model``'s ``Dense`` layers tappable (idempotent) and returns them in call order.

    Tapping replaces ``layer.call`` on the instance by an equivalent function that consults the
    active :class:`Taps` context; outside one it calls the original ``call`` (bit-identical).

    Args:
      model: a built Keras model.
      names: the names of the layers to tap (default: every ``Dense`` layer of the model, in
        the order ``model`` lists them — for a functional or sequential model, call order).

    Returns:
      The tapped layers.

    Raises:
      ValueError: a named layer is missing or not a ``Dense`` layer, or is quantised.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"tap_dense_layers needs a keras.Model, got {type(model).__name__}")
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.Dense)
    ]
    if names is not None:
        by_name = {layer.name: layer for layer in model._flatten_layers(include_self=False)}
        chosen = []
        for name in names:
            if name not in by_name:
                raise ValueError(
                    f"layer {name!r} is not in model {model.name!r}; its Dense layers are "
                    f"{[layer.name for layer in layers]}"
                )
            if not isinstance(by_name[name], keras.layers.Dense):
                raise ValueError(
                    f"layer {name!r} is a {type(by_name[name]).__name__}; only Dense layers "
                    "can be tapped"
                )
            chosen.append(by_name[name])
        layers = chosen
    if not layers:
        raise ValueError(f"model {model.name!r} has no Dense layer to tap")
    for layer in layers:
        if getattr(layer, "quantization_mode", None):
            raise ValueError(f"layer {layer.name!r} is quantised; it cannot be tapped")
        if not getattr(layer.call, "_dirgrad_original", None):
            object.__setattr__(layer, "call", _tapped_call(layer))
    return layers


# ----------------------------------------------------------------------------- the closure


def per_example_losses(loss_fn: Callable[..., Any], outputs: tf.Tensor, labels: Any) -> tf.Tensor:
    """``ℓ_b = loss_fn(outputs[b:b+1], labels[b:b+1])`` for every example b, vectorised.

    For a mean-reduced loss (``L = (1/B) Σ_b ℓ_b``) these are exactly the per-example terms.
    """
    return tf.vectorized_map(
        lambda pair: tf.cast(loss_fn(pair[0][tf.newaxis], pair[1][tf.newaxis]), tf.float32),
        (outputs, labels),
    )


class ModelClosure:
    """A loss closure that also exposes its model and batch (what activity methods need).

    Calling it returns ``loss_fn(model(x, training=True), y) + Σ model.losses``, like the
    training runner's closure, so any :class:`DirectionalOptimizer` accepts it.

    Args:
      model: the Keras model.
      loss_fn: ``(outputs, labels) -> scalar`` mean loss.
      inputs: the batch's inputs ``x``.
      labels: the batch's labels ``y``.
    """

    def __init__(self, model: keras.Model, loss_fn: Callable[..., Any], inputs: Any, labels: Any):
        self.model = model
        self.loss_fn = loss_fn
        self.inputs = inputs
        self.labels = labels

    def outputs(self) -> tf.Tensor:
        """``model(x, training=True)``."""
        return self.model(self.inputs, training=True)

    def __call__(self) -> tf.Tensor:
        loss = tf.cast(self.loss_fn(self.outputs(), self.labels), tf.float32)
        if self.model.losses:
            loss = loss + tf.add_n([tf.cast(v, tf.float32) for v in self.model.losses])
        return loss

    def per_example(self) -> tf.Tensor:
        """Per-example losses ``[B]`` at the current weights (:func:`per_example_losses`)."""
        return per_example_losses(self.loss_fn, self.outputs(), self.labels)


def activity_gradient_estimate(
    coefficients: tf.Tensor,
    perturbations: Sequence[tf.Tensor],
    inputs: Sequence[tf.Tensor],
    second_moment: float = 1.0,
) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """Local weight-gradient estimates from per-example activity directional derivatives.

    ``ĝ_{z_l} = j ⊙ u_l / (B s)``, ``ĝ_{W_l} = x_lᵀ ĝ_{z_l}``, ``ĝ_{b_l} = Σ_b ĝ_{z_l,b}``.

    Args:
      coefficients: ``j``, shape ``[B]`` (``∇_z ℓ_b · u_b`` per example).
      perturbations: ``u_l``, one ``[B, d_l]`` tensor per layer.
      inputs: ``x_l``, one ``[B, m_l]`` tensor per layer.
      second_moment: ``s`` with ``E[u uᵀ] = s I`` (1 for Gaussian / Rademacher).

    Returns:
      Per layer ``(ĝ_W [m_l, d_l], ĝ_b [d_l])``.
    """
    out = []
    for u, x in zip(perturbations, inputs, strict=True):
        batch = tf.cast(tf.shape(u)[0], u.dtype)
        gz = tf.cast(coefficients, u.dtype)[:, tf.newaxis] * u / (batch * second_moment)
        out.append((tf.matmul(tf.cast(x, u.dtype), gz, transpose_a=True), tf.reduce_sum(gz, 0)))
    return out


# ----------------------------------------------------------------------------- optimizers


def _warn_under_xla(owner: str) -> None:
    """Warns (at trace time) that a forward-mode activity step recompiles under XLA.

    TF 2.21: the JVP of the vectorised per-example losses (``ForwardAccumulator`` transposes
    their ``pfor`` gradients) leaves shapes that XLA must know as constants depending on the
    weights, so XLA treats the weights and the step counter as compile-time constants and
    compiles the step again on every call (~0.9 s a step on the MNIST-1D MLP; its log says
    "Compilation cache entry hit: 0" each time).
    """
    if directional.in_xla_context():
        warnings.warn(
            f"{owner} under XLA (jit_compile=True) is recompiled on every step on TensorFlow "
            f"{tf.__version__} (its forward-mode JVP through the per-example losses makes XLA "
            "treat the weights as compile-time constants): run it without jit_compile",
            RuntimeWarning,
            stacklevel=3,
        )


class _ActivityPerturbation(EstimateStep, DirectionalOptimizer):
    """Shared machinery of the activity-perturbation estimators (not registered)."""

    def __init__(
        self,
        learning_rate: Any = None,
        num_samples: int = 1,
        distribution: str = "gaussian",
        layers: Sequence[str] | None = None,
        inner: keras.optimizers.Optimizer | dict | None = None,
        seed: int = 0,
        diagnostics: bool = False,
        local_losses: bool = False,
        name: str | None = None,
        **kwargs: Any,
    ):
        owner = type(self).__name__
        if kwargs.pop("direction", None) is not None:
            raise ValueError(f"{owner} takes `inner=` (the optimizer fed the estimate)")
        if isinstance(inner, dict):
            inner = keras.optimizers.deserialize(copy.deepcopy(inner))
        if inner is not None and not isinstance(inner, keras.optimizers.Optimizer):
            raise ValueError(
                f"{owner}: inner must be a Keras optimizer instance such as "
                f"keras.optimizers.Adam(1e-3), got {inner!r}"
            )
        if inner is not None and learning_rate is not None:
            raise ValueError(
                f"{owner}: with `inner` set, set the learning rate on the inner optimizer and "
                "leave learning_rate unset"
            )
        super().__init__(
            learning_rate=1e-2 if learning_rate is None else learning_rate,
            direction=inner,
            name=name,
            **kwargs,
        )
        if distribution not in ACTIVITY_DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {', '.join(ACTIVITY_DISTRIBUTIONS)}; "
                f"got {distribution!r}"
            )
        self.distribution = distribution
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
        self.num_samples = num_samples
        if layers is not None and (
            isinstance(layers, str) or not all(isinstance(n, str) for n in layers)
        ):
            raise ValueError(f"layers must be a list of layer names, got {layers!r}")
        self.layers = None if layers is None else list(layers)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.diagnostics = bool(diagnostics)
        if not isinstance(local_losses, bool):
            raise ValueError(f"local_losses must be True or False, got {local_losses!r}")
        self.local_losses = local_losses
        self._head_vars: list[Any] = []
        self._head_inner: keras.optimizers.Optimizer | None = None

    # -- local losses (Ren et al. 2022, section 4) -------------------------------------------
    def build_state(self, var_list: list[Any]) -> None:
        """With ``local_losses``: one linear classifier head per block but the last.

        Block l is the l-th Dense layer (the l-th rank-2 variable of ``var_list``, which must
        list the layers in call order, as ``model.trainable_variables`` does; checked at the
        first step). Head l maps the layer's output (``units_l``) to the model's output width
        (the last kernel's ``units``); LeCun-normal kernel seeded by ``seed``, zero bias. The
        heads are optimizer variables: they checkpoint and restore with the optimizer. With
        ``inner`` the heads get their own copy of it (same configuration, own moments).
        """
        if not self.local_losses:
            return
        owner = type(self).__name__
        kernels = [v for v in var_list if len(v.shape) == 2]
        if len(kernels) < 2:
            raise ValueError(
                f"{owner}: local_losses=True needs at least two Dense layers (a local head on "
                f"every block but the last, which keeps the model's loss); got {len(kernels)}"
            )
        classes = int(kernels[-1].shape[-1])
        for i, kernel in enumerate(kernels[:-1]):
            init = keras.initializers.LecunNormal(seed=self.seed * 7919 + i)
            self._head_vars += [
                self.add_variable(
                    (int(kernel.shape[-1]), classes),
                    initializer=init,
                    dtype=kernel.dtype,
                    name=f"local_head_{i}_kernel",
                ),
                self.add_variable(
                    (classes,), initializer="zeros", dtype=kernel.dtype, name=f"local_head_{i}_bias"
                ),
            ]
        if self.inner is not None:
            self._head_inner = keras.optimizers.deserialize(keras.optimizers.serialize(self.inner))
            self._head_inner.build(self._head_vars)

    @property
    def variables(self) -> list[Any]:
        heads = self._head_inner.variables if self._head_inner is not None else []
        return super().variables + list(heads)

    @property
    def local_heads(self) -> list[tuple[Any, Any]]:
        """The heads ``[(kernel [units_l, C], bias [C]), ...]`` (empty without local losses)."""
        return list(zip(self._head_vars[::2], self._head_vars[1::2], strict=True))

    def _check_heads(self, layers: list) -> list[tuple[Any, Any]]:
        heads = self.local_heads
        shapes = [tuple(k.shape) for k, _ in heads]
        expected = [(int(layer.units), int(layers[-1].units)) for layer in layers[:-1]]
        if shapes != expected:
            raise ValueError(
                f"{type(self).__name__}: local heads {shapes} do not fit the tapped layers "
                f"{[layer.name for layer in layers]} (expected {expected}); the optimizer must "
                "be built on model.trainable_variables (Dense layers in call order)"
            )
        return heads

    def _head_perturbations(
        self, closure: ModelClosure, heads: list, seed: tf.Tensor, offset: int
    ) -> list:
        batch = tf.shape(tf.nest.flatten(closure.inputs)[0])[0]
        return [
            directions.draw_leaf(
                self.distribution,
                tf.stack([batch, int(kernel.shape[-1])]),
                directions.make_seed(seed, offset + i),
                tf.as_dtype(kernel.dtype),
            )
            for i, (kernel, _) in enumerate(heads)
        ]

    @staticmethod
    def _local_losses(closure: ModelClosure, features: list, heads: list, shifts: list) -> list:
        """Per-example local losses ``ℓ^l_b = loss(a_l H_l + c_l + p_l, y)``, one per head."""
        out = []
        for a, (kernel, bias), p in zip(features, heads, shifts, strict=True):
            logits = tf.matmul(tf.cast(a, kernel.dtype), kernel) + bias + tf.cast(p, kernel.dtype)
            out.append(per_example_losses(closure.loss_fn, logits, closure.labels))
        return out

    def _update_heads(self, grads: list[tf.Tensor]) -> None:
        """SGD with ``learning_rate`` (or the heads' inner optimizer); skipped if not finite."""
        finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in grads]))
        if self._head_inner is not None:

            def update() -> tf.Tensor:
                self._head_inner.apply(grads, self._head_vars)
                return tf.constant(True)

            tf.cond(finite, update, lambda: tf.constant(False))
            return
        lr = self._get_current_learning_rate()
        for v, g in zip(self._head_vars, grads, strict=True):
            value = tree._value(v)
            v.assign(tf.where(finite, value - tf.cast(lr, g.dtype) * g, value))

    def local_coefficients(
        self,
        ctx: StepContext,
        closure: ModelClosure,
        layers: list,
        us: list,
        heads: list,
        uhs: list,
    ) -> tuple[tf.Tensor, list, list, list]:
        """``(global loss, [j^1..j^{L-1}, j^L], layer inputs, head inputs)``; by the subclasses."""
        raise NotImplementedError

    # -- model access ------------------------------------------------------------------------
    def _layout(self, closure: Any, variables: Sequence[Any]) -> tuple[list, list[tuple]]:
        """The tapped layers and, per variable, ``(layer index, "kernel" | "bias")``."""
        owner = type(self).__name__
        if not isinstance(closure, ModelClosure):
            raise ValueError(
                f"{owner} perturbs layer activities, so it needs the model: pass "
                "dirgrad_opt.optimizers.activity.ModelClosure(model, loss_fn, x, y) as the "
                "loss closure (the training runner does), not a plain function"
            )
        if closure.model.losses:
            raise ValueError(
                f"{owner}: the model has regularisation losses (model.losses); their gradients "
                "are not estimated by activity perturbation — remove the regularizers"
            )
        layers = tap_dense_layers(closure.model, self.layers)
        where: dict[int, tuple[int, str]] = {}
        for i, layer in enumerate(layers):
            where[id(layer.kernel)] = (i, "kernel")
            if layer.bias is not None:
                where[id(layer.bias)] = (i, "bias")
        layout = []
        for v in variables:
            if id(v) not in where:
                raise ValueError(
                    f"{owner}: variable {v.path if hasattr(v, 'path') else v.name!r} does not "
                    "belong to a tapped Dense layer; activity perturbation estimates only Dense "
                    f"kernels and biases (tapped: {[layer.name for layer in layers]})"
                )
            layout.append(where[id(v)])
        return layers, layout

    def _perturbations(self, closure: ModelClosure, layers: list, seed: tf.Tensor) -> list:
        batch = tf.shape(tf.nest.flatten(closure.inputs)[0])[0]
        out = []
        for i, layer in enumerate(layers):
            dtype = tf.as_dtype(layer.kernel.dtype)
            shape = tf.stack([batch, int(layer.units)])
            out.append(
                directions.draw_leaf(self.distribution, shape, directions.make_seed(seed, i), dtype)
            )
        return out

    def _replicated(self, closure: ModelClosure) -> ModelClosure:
        """The closure on the batch repeated ``num_samples`` times (one perturbation each)."""
        k = self.num_samples
        if k == 1:
            return closure
        tile = lambda t: tf.concat([t] * k, axis=0)  # noqa: E731
        replicated = copy.copy(closure)  # keeps a subclass's behaviour
        replicated.inputs = tf.nest.map_structure(tile, closure.inputs)
        replicated.labels = tf.nest.map_structure(tile, closure.labels)
        return replicated

    def _estimate(
        self, coefficients: tf.Tensor, us: list, xs: list, layout: list[tuple]
    ) -> list[tf.Tensor]:
        for x in xs:
            if x is None:
                raise ValueError(
                    f"{type(self).__name__}: a tapped layer was not called by the model"
                )
            if x.shape.rank != 2:
                raise ValueError(
                    f"{type(self).__name__}: tapped Dense layers must see [batch, features] "
                    f"inputs, got rank {x.shape.rank}"
                )
        if isinstance(coefficients, list):  # local losses: one j per layer
            per_layer = [
                activity_gradient_estimate(c, [u], [x])[0]
                for c, u, x in zip(coefficients, us, xs, strict=True)
            ]
        else:
            per_layer = activity_gradient_estimate(coefficients, us, xs)
        return [per_layer[i][0 if kind == "kernel" else 1] for i, kind in layout]

    # -- the rule ----------------------------------------------------------------------------
    def coefficients(
        self, ctx: StepContext, closure: ModelClosure, layers: list, us: list
    ) -> tuple[tf.Tensor, tf.Tensor, list]:
        """``(loss, j [B], layer inputs)``; implemented by the subclasses."""
        raise NotImplementedError

    def compute_direction(self, ctx: StepContext) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        """``(loss, d, slope)`` with ``d = −ĝ`` (or the inner optimizer's update for ``ĝ``)."""
        layers, layout = self._layout(ctx.loss_fn, ctx.variables)
        closure = self._replicated(ctx.loss_fn)
        seed = _step_seed(self, self.seed)  # the one place step seeds are made
        us = self._perturbations(closure, layers, seed)
        if self.local_losses:
            heads = self._check_heads(layers)
            uhs = self._head_perturbations(closure, heads, seed, len(layers))
            loss, coefs, xs, features = self.local_coefficients(
                ctx, closure, layers, us, heads, uhs
            )
            head_grads = [
                g
                for c, u, a in zip(coefs[:-1], uhs, features, strict=True)
                for g in activity_gradient_estimate(c, [u], [a])[0]
            ]
            self._update_heads(head_grads)
        else:
            loss, coefs, xs = self.coefficients(ctx, closure, layers, us)
        estimate = [
            tf.cast(g, tf.as_dtype(v.dtype))
            for g, v in zip(self._estimate(coefs, us, xs, layout), ctx.variables, strict=True)
        ]
        if self.diagnostics:
            _, grads = ctx.loss_and_gradient()
            ctx.metrics.update(estimator_diagnostics(estimate, grads))
        return self.descend(ctx, loss, estimate)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_samples=self.num_samples,
            distribution=self.distribution,
            layers=self.layers,
            seed=self.seed,
            diagnostics=self.diagnostics,
            local_losses=self.local_losses,
        )
        return config


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class ActivityForwardGradient(_ActivityPerturbation):
    """Forward gradient with activity perturbation (Ren, Kornblith, Liao & Hinton 2022).

    One forward-mode pass carries the tangents ``u_l`` (one per example and tapped layer) on
    the layers' pre-activations and returns the per-example directional derivatives
    ``j_b = Σ_l ∇_{z_{l,b}} ℓ_b · u_{l,b}``; each layer's weight gradient is then estimated
    locally, ``ĝ_{W_l} = x_lᵀ (j ⊙ u_l) / B`` (module docstring). Unbiased: ``E[ĝ] = ∇L``.
    The variance grows with the number of tapped units per example, not with the number of
    weights — the reason it trains an MLP where weight-perturbed forward gradient does not.

    Cost per step: 1 forward pass carrying 1 JVP (``forward_passes=1, jvps=1``), no backward
    pass; then one ``[m_l, B] × [B, d_l]`` product per layer for the local weight gradients
    (as in a backward pass's weight-gradient half, but with no error propagated between
    layers). ``diagnostics=True`` adds 1 forward + 1 backward pass.

    Memory: the perturbations and the layer inputs (activations), ``B·Σ_l (d_l + m_l)``
    floats; the estimate, one weights-sized tensor.

    Args:
      learning_rate: SGD step η on the estimate (default 1e-2; with ``inner`` leave unset).
      distribution: ``"gaussian"`` (default) or ``"rademacher"`` activity perturbations.
      layers: names of the Dense layers to perturb (default: all); every trainable variable
        must belong to one of them.
      inner: a Keras optimizer (e.g. ``keras.optimizers.Adam(1e-3)``) fed the estimate.
      seed: int seed of the perturbation stream (step n uses ``make_seed(seed, n)``).
      diagnostics: report ``cosine`` / ``norm_ratio`` against the true gradient (costs one).
      local_losses: train every tapped layer but the last on its own local loss (Ren et al.
        2022, sec. 4): a linear classifier head ``H_l`` on the layer's output, the local loss
        ``ℓ^l = loss_fn(a_l H_l + c_l + v_l, y)`` with its own logit perturbation ``v_l``, and
        the layer inputs stop-gradiented so that one JVP gives each block
        ``j^l = ∇_{z_l}ℓ^l·u_l + ∇_{p}ℓ^l·v_l``; layer l's weights and head are updated from
        ``j^l`` (``ĝ_{H_l} = a_lᵀ(j^l ⊙ v_l)/B``), the last layer from the model's loss.
        Unbiased for the stop-gradient local-loss gradients. The heads are optimizer
        variables (:attr:`local_heads`; trained with ``learning_rate`` or their own copy of
        ``inner``; no weight decay); cost: one ``[B, units_l] × [units_l, C]`` matmul per
        block inside the counted forward pass. Needs ≥ 2 Dense layers, the optimizer built
        on ``model.trainable_variables``. ``diagnostics`` still compare with the model
        loss's gradient. Default False.
      weight_decay, clipnorm, clipvalue, global_clipnorm, name: as in
        :class:`~dirgrad_opt.optimizers.base.DirectionalOptimizer`.

    Reference:
      M. Ren, S. Kornblith, R. Liao, G. Hinton, "Scaling Forward Gradient With Local Losses",
      ICLR 2023, arXiv:2210.03310 (activity-perturbed forward gradient, "FG-A").
    """

    def coefficients(
        self, ctx: StepContext, closure: ModelClosure, layers: list, us: list
    ) -> tuple[tf.Tensor, tf.Tensor, list]:
        """One forward pass with the tangents ``u_l`` on the pre-activations."""
        _warn_under_xla(type(self).__name__)
        zeros = [tf.zeros_like(u) for u in us]
        with tf.autodiff.ForwardAccumulator(zeros, us) as acc:
            with Taps(layers, zeros) as record:
                per_example = closure.per_example()
        coefs = acc.jvp(per_example, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        ctx.count(forward_passes=self.num_samples, jvps=self.num_samples)
        return tf.reduce_mean(per_example), coefs, [tf.stop_gradient(x) for x in record.inputs]

    def local_coefficients(
        self,
        ctx: StepContext,
        closure: ModelClosure,
        layers: list,
        us: list,
        heads: list,
        uhs: list,
    ) -> tuple[tf.Tensor, list, list, list]:
        """One forward pass, layer inputs stop-gradiented, carrying every ``u_l`` and head ``v_l``.

        Since no tangent crosses a tapped layer's input, the JVP of block l's local loss is
        ``j^l = ∇_{z_l} ℓ^l · u_l + ∇_{p_l} ℓ^l · v_l`` exactly (its own perturbations only),
        and the model loss's is ``∇_{z_L} ℓ · u_L``.
        """
        _warn_under_xla(type(self).__name__)
        zeros = [tf.zeros_like(u) for u in us]
        head_zeros = [tf.zeros_like(v) for v in uhs]
        with tf.autodiff.ForwardAccumulator(zeros + head_zeros, us + uhs) as acc:
            with Taps(layers, zeros, stop_inputs=True) as record:
                per_example = closure.per_example()
            local = self._local_losses(closure, record.outputs[:-1], heads, head_zeros)
        coefs = [
            acc.jvp(value, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            for value in [*local, per_example]
        ]
        ctx.count(forward_passes=self.num_samples, jvps=self.num_samples)
        return (
            tf.reduce_mean(per_example),
            coefs,
            [tf.stop_gradient(x) for x in record.inputs],
            [tf.stop_gradient(a) for a in record.outputs[:-1]],
        )


@keras.saving.register_keras_serializable(package="dirgrad_opt")
class ActivityZerothOrder(_ActivityPerturbation):
    """Zeroth-order activity ("node") perturbation: two forward passes, loss values only.

    Each step evaluates the per-example losses with the pre-activations perturbed by ``+εu``
    and by ``−εu`` and estimates ``j_b = (ℓ_b(+) − ℓ_b(−)) / 2ε ≈ ∇_z ℓ_b · u_b`` (error
    O(ε²)); the layer inputs are the mean of the two passes' (``x_l + O(ε²)``), and the weight
    gradients are formed locally as in :class:`ActivityForwardGradient`. Only forward passes
    run: no JVP, no backward pass.

    Cost per step: 2 forward passes (``diagnostics=True`` adds 1 forward + 1 backward pass).
    The reported ``loss`` is the mean of the two perturbed losses (``L + O(ε²)``).

    Args:
      eps: perturbation scale ε > 0 of the pre-activations (default 1e-2).
      local_losses: as in :class:`ActivityForwardGradient`, from the two perturbed passes
        (``j^l`` by central differences of the local losses; without stop-gradient, since
        only loss values are used, the upstream perturbations add zero-mean noise to
        ``j^l``: unbiased up to O(ε²), more variance).
      learning_rate, distribution, layers, inner, seed, diagnostics, weight_decay, clipnorm,
        clipvalue, global_clipnorm, name: as in :class:`ActivityForwardGradient`.

    References:
      M. Ren, S. Kornblith, R. Liao, G. Hinton, "Scaling Forward Gradient With Local Losses",
      ICLR 2023 (activity perturbation); R. J. Williams, "Simple statistical gradient-following
      algorithms", Machine Learning 8, 1992, and B. Flower, M. Jabri, "Summed weight neuron
      perturbation", NeurIPS 1993 (node perturbation).
    """

    def __init__(self, learning_rate: Any = None, eps: float = 1e-2, **kwargs: Any):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.eps = check_positive("eps", eps)

    def coefficients(
        self, ctx: StepContext, closure: ModelClosure, layers: list, us: list
    ) -> tuple[tf.Tensor, tf.Tensor, list]:
        """Two forward passes at ``z ± εu``."""
        eps = self.eps
        with Taps(layers, [eps * u for u in us]) as plus:
            lp = closure.per_example()
        with Taps(layers, [-eps * u for u in us]) as minus:
            lm = closure.per_example()
        ctx.count(forward_passes=2 * self.num_samples)
        coefs = (lp - lm) / (2.0 * eps)
        xs = [0.5 * (a + b) for a, b in zip(plus.inputs, minus.inputs, strict=True)]
        return tf.reduce_mean(0.5 * (lp + lm)), coefs, xs

    def local_coefficients(
        self,
        ctx: StepContext,
        closure: ModelClosure,
        layers: list,
        us: list,
        heads: list,
        uhs: list,
    ) -> tuple[tf.Tensor, list, list, list]:
        """Two forward passes at ``z ± εu`` with the heads' logits at ``± εv``.

        From loss values alone the blocks cannot be isolated: block l's local loss also moves
        with the upstream perturbations ``u_{l'}``, ``l' < l``. Those are independent of
        ``u_l`` with mean 0, so ``j^l`` stays unbiased for the local gradient (up to O(ε²)), with
        more variance than the forward-mode version's stop-gradient.
        """
        eps = self.eps
        with Taps(layers, [eps * u for u in us]) as plus:
            lp = closure.per_example()
        local_p = self._local_losses(closure, plus.outputs[:-1], heads, [eps * v for v in uhs])
        with Taps(layers, [-eps * u for u in us]) as minus:
            lm = closure.per_example()
        local_m = self._local_losses(closure, minus.outputs[:-1], heads, [-eps * v for v in uhs])
        ctx.count(forward_passes=2 * self.num_samples)
        coefs = [(a - b) / (2.0 * eps) for a, b in zip([*local_p, lp], [*local_m, lm], strict=True)]
        mean = lambda pairs: [0.5 * (a + b) for a, b in pairs]  # noqa: E731
        xs = mean(zip(plus.inputs, minus.inputs, strict=True))
        features = mean(zip(plus.outputs[:-1], minus.outputs[:-1], strict=True))
        return tf.reduce_mean(0.5 * (lp + lm)), coefs, xs, features

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["eps"] = self.eps
        return config
