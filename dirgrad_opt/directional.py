"""Directional derivatives of a loss over a whole model's variables.

For a loss ``L(w)`` over a tree of variables ``w`` and a direction ``v`` of the same structure,

    D_v L(w) = ∇L(w)·v = Σ_i <∂L/∂w_i, v_i>
    vᵀ H v   = d²/dt² L(w + t v) |_{t=0}

This module computes them four ways (the ``method`` argument):

``"reverse"``
    One gradient by reverse mode (``tf.GradientTape``), then one dot product per direction.
    Cost: 1 forward + 1 backward pass, whatever the number of directions K.
``"forward"``
    Forward mode (``tf.autodiff.ForwardAccumulator``): the JVP is propagated with the loss and no
    gradient is materialised. Cost: K forward passes carrying a tangent (on TF 2.21 a JVP is
    computed through each op's gradient twice, so one JVP costs about one gradient).
``"central_difference"``
    ``(L(w + h v) − L(w − h v)) / 2h``, error O(h²). Cost: 1 + 2K loss evaluations, no autodiff.
``"forward_difference"``
    ``(L(w + h v) − L(w)) / h``, error O(h). Cost: 1 + K loss evaluations.
``"auto"``
    The cheapest correct method for the case, chosen by :func:`choose_method` from the costs
    measured in ``BENCHMARKS.md``.

The finite-difference methods perturb the variables in place and restore them **bit-exactly**
(the original values are kept and assigned back; nothing is recomputed as ``w + h v − h v``).
Their default step follows Nocedal & Wright (2006, §8.1), scaled to the dtype and the direction:

    h = ε^(1/3) · (1 + ‖w‖) / ‖v‖      (central)
    h = ε^(1/2) · (1 + ‖w‖) / ‖v‖      (forward)

with ε the machine epsilon of the variables' dtype — or, under a mixed-precision Keras policy,
of the half-precision compute dtype if coarser (under ``mixed_bfloat16`` the float32 weights
are cast to bfloat16, ε = 2⁻⁷, before the loss sees them). Pass ``step=`` to override it.

Mixed precision: a loss computed in float16/bfloat16 is cast to float32 as it leaves ``loss_fn``,
so every loss and derivative returned here is float32 when the variables are — and also when
the variables themselves are float16/bfloat16 (their gradients keep the variables' dtype).

Correctness guard: under XLA (``tf.function(jit_compile=True)``, Keras ``jit_compile=True`` or
global auto-clustering), TF 2.21 computes wrong JVPs through max-pooling (0.1–3 % of tangent
elements off; gradients are right), and wrong second derivatives too (both forward-over-reverse
and reverse-over-reverse go through the max-pool gradient's gradient: a vᵀHv 3 % off was
measured on a small CNN). ``method="forward"`` and :func:`directional_curvature` therefore raise
:class:`UnsafeDerivativeError` when the loss graph contains a max-pool op inside an XLA
context, and ``"auto"`` never chooses forward mode there.

Every entry point validates its inputs with :func:`dirgrad_opt.tree.check_like`: a direction
whose leaf has the wrong shape raises ``ValueError`` naming the leaf and both shapes, instead of
broadcasting into a wrong number.

References:
  Griewank & Walther, *Evaluating Derivatives* (2008) — forward and reverse mode.
  Nocedal & Wright, *Numerical Optimization* (2006), §8.1 — finite-difference steps.
  Pearlmutter, "Fast exact multiplication by the Hessian" (1994) — Hessian-vector products.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import ml_dtypes
import numpy as np
import tensorflow as tf

from dirgrad_opt import tree

__all__ = [
    "METHODS",
    "Cost",
    "UnsafeDerivativeError",
    "choose_method",
    "cost",
    "default_fd_step",
    "directional_curvature",
    "directional_derivative",
    "directional_derivatives",
    "gradient_curvature",
    "in_xla_context",
]

METHODS = ("auto", "forward", "reverse", "central_difference", "forward_difference")
"""Accepted values of ``method``."""

# Ops whose JVP under XLA is wrong on TF 2.21 (see module docstring and tests/test_directional.py).
_XLA_UNSAFE_JVP_OPS = frozenset({"MaxPool", "MaxPoolV2", "MaxPool3D", "MaxPoolWithArgmax"})

# Loop ops TF 2.21's ForwardAccumulator cannot push tangents through (Keras RNN layers).
_LOOP_OPS = frozenset({"While", "StatelessWhile"})

LossFn = Callable[[], Any]

#: Half-precision compute dtypes (Keras ``mixed_float16`` / ``mixed_bfloat16`` policies). A loss
#: computed in one of them is cast to float32 before anything compares or differentiates it.
_HALF = (tf.float16, tf.bfloat16)


class UnsafeDerivativeError(RuntimeError):
    """A derivative TF would compute wrongly, or cannot compute, was asked for.

    Raised for forward-mode JVPs and for any second derivative (curvature) through a max-pool
    op inside an XLA context, and for a forward-mode JVP through a ``tf.while_loop`` (a Keras
    recurrent layer), where TF 2.21's ``ForwardAccumulator`` fails with an internal error.
    First-order reverse mode is correct in both cases and is what ``"auto"`` uses for
    derivatives.
    """

    ag_pass_through = True  # keep this type when raised inside tf.function (autograph)


class Cost(NamedTuple):
    """Passes one call costs: loss evaluations, backpropagations and tangent propagations."""

    forward_passes: int
    backward_passes: int
    jvps: int


def cost(method: str, num_directions: int = 1) -> Cost:
    """Exact cost of a directional-derivative call with ``method`` over K directions.

    ====================  ==============  ===============  ====
    method                forward_passes  backward_passes  jvps
    ====================  ==============  ===============  ====
    reverse               1               1                0
    forward               K               0                K
    central_difference    1 + 2K          0                0
    forward_difference    1 + K           0                0
    ====================  ==============  ===============  ====

    Args:
      method: a concrete method name (not ``"auto"``; resolve it with :func:`choose_method`).
      num_directions: K.

    Returns:
      A :class:`Cost`.
    """
    k = int(num_directions)
    table = {
        "reverse": Cost(1, 1, 0),
        "forward": Cost(k, 0, k),
        "central_difference": Cost(1 + 2 * k, 0, 0),
        "forward_difference": Cost(1 + k, 0, 0),
    }
    if method not in table:
        raise ValueError(f"cost: unknown method {method!r}; expected one of {sorted(table)}")
    return table[method]


def in_xla_context() -> bool:
    """True when the code being traced will be compiled by XLA.

    Covers ``tf.function(jit_compile=True)`` (also when nested in one), Keras
    ``compile(jit_compile=True)`` and global auto-clustering (``tf.config.optimizer.set_jit``).
    """
    if tf.config.optimizer.get_jit():
        return True
    if tf.executing_eagerly():
        return False
    try:  # TF does not expose this publicly; it is how tf.function itself checks.
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))
    except (ImportError, AttributeError):  # pragma: no cover - a future TF moved it
        return True  # unknown: assume the worst so forward mode is checked


def choose_method(
    num_directions: int = 1,
    *,
    reverse_available: bool = True,
    forward_safe: bool = True,
) -> str:
    """The method ``"auto"`` resolves to.

    Rules, from ``scripts/bench_directional.py`` (numbers in ``BENCHMARKS.md``):

    * Reverse mode costs one gradient for any K; a forward-mode JVP costs about one gradient
      *each*. Reverse is therefore never slower for K ≥ 2 and on a par for K = 1, and it is
      correct under XLA: it is the choice whenever backpropagation is available.
    * Without backpropagation (``reverse_available=False``: a gradient op is missing, or the
      caller forbids storing activations), forward mode when it is safe, else central differences.

    Args:
      num_directions: K, the number of directions.
      reverse_available: whether reverse mode may be used.
      forward_safe: whether forward mode gives correct JVPs here (False for max-pool under XLA).

    Returns:
      One of ``"reverse"``, ``"forward"``, ``"central_difference"``.
    """
    if num_directions < 1:
        raise ValueError(f"num_directions must be >= 1, got {num_directions}")
    if reverse_available:
        return "reverse"
    return "forward" if forward_safe else "central_difference"


# ----------------------------------------------------------------------------- helpers


def _primal(v: Any) -> Any:
    """What ``ForwardAccumulator``/``GradientTape`` must watch: a Keras variable's tf.Variable."""
    if isinstance(v, keras.Variable):
        return v.value
    return v


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def _check_variables(variables: Any) -> list[Any]:
    leaves = tree.flatten(variables)
    if not leaves:
        raise ValueError(
            "variables is empty: pass the list (or nest) of variables to differentiate"
        )
    names = tree.leaf_names(variables)
    for name, v in zip(names, leaves, strict=True):
        if not isinstance(v, tf.Variable | keras.Variable):
            raise ValueError(
                f"variables['{name}'] is a {type(v).__name__}, not a tf.Variable or keras "
                "Variable: directional derivatives are taken with respect to variables"
            )
        if not tf.as_dtype(v.dtype).is_floating:
            raise ValueError(
                f"variable '{name}' has dtype {tf.as_dtype(v.dtype).name}; directional "
                "derivatives need floating-point variables"
            )
    _check_one_dtype(names, leaves)
    return leaves


def _check_one_dtype(names: list[str], leaves: list[Any]) -> None:
    """ValueError naming the variables when they do not share one floating dtype.

    ∇L·v sums per-variable products, and TensorFlow does not add a float32 to a float64 (a
    raw ``AddN`` error deep inside a step otherwise).
    """
    by_dtype: dict[str, list[str]] = {}
    for name, v in zip(names, leaves, strict=True):
        by_dtype.setdefault(tf.as_dtype(v.dtype).name, []).append(name)
    if len(by_dtype) > 1:
        listed = "; ".join(
            f"{dtype}: {', '.join(repr(n) for n in group[:4])}{' ...' if len(group) > 4 else ''}"
            for dtype, group in by_dtype.items()
        )
        raise ValueError(
            f"variables have mixed dtypes ({listed}); directional derivatives and the "
            "optimizers need one floating dtype for all variables: create them with one dtype "
            "(or cast), or optimise each dtype's variables separately"
        )


def _as_direction(direction: Any, variables: Any, leading_dims: int) -> Any:
    """Converts a direction's leaves to tensors (of the variables' dtypes) and checks them."""

    def convert(d: Any, v: Any) -> tf.Tensor:
        if isinstance(d, tf.Tensor | tf.Variable | keras.Variable):
            return tree._value(d)  # keep the dtype so check_like can report a mismatch
        if isinstance(d, np.ndarray) and not np.issubdtype(d.dtype, np.floating):
            return tf.convert_to_tensor(d)
        return tf.convert_to_tensor(d, dtype=tf.as_dtype(v.dtype))

    try:
        tf.nest.assert_same_structure(direction, variables, check_types=False)
    except (ValueError, TypeError):
        tree.check_like(direction, variables, leading_dims=leading_dims)  # raises a clear error
    converted = tf.nest.map_structure(convert, direction, variables)
    tree.check_like(converted, variables, leading_dims=leading_dims)
    return converted


def _call_loss(loss_fn: LossFn) -> tf.Tensor:
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a zero-argument callable, got {type(loss_fn).__name__}")
    loss = loss_fn()
    loss = tf.convert_to_tensor(loss)
    if loss.shape.rank is None or loss.shape.rank != 0:
        raise ValueError(
            f"loss_fn must return a scalar, got shape {loss.shape}; reduce it (e.g. "
            "tf.reduce_mean) inside loss_fn"
        )
    if not loss.dtype.is_floating:
        raise ValueError(f"loss_fn must return a floating-point scalar, got {loss.dtype.name}")
    if loss.dtype in _HALF:  # mixed precision: losses are compared and reported in float32
        loss = tf.cast(loss, tf.float32)
    return loss


def _graph_op_types(graph: Any, start: int) -> set[str]:
    """Op types created in ``graph`` after its first ``start`` ops, following called functions."""
    types: set[str] = set()
    ops_ = graph.get_operations()[start:]
    for op in ops_:
        types.add(op.type)
        f_attr = op.node_def.attr.get("f")
        if f_attr is not None and f_attr.func.name:
            fn = graph._get_function(f_attr.func.name)  # noqa: SLF001 - no public accessor
            if fn is not None and hasattr(fn, "graph"):
                types |= _graph_op_types(fn.graph, 0)
    return types


class _OpWatch:
    """Records the op types ``loss_fn`` creates while traced (empty when running eagerly)."""

    def __enter__(self) -> _OpWatch:
        self.types: set[str] = set()
        self._graph = None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()
        self._start = len(self._graph.get_operations()) if self._graph is not None else 0
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._graph is not None:
            try:
                self.types = _graph_op_types(self._graph, self._start)
            except Exception:  # pragma: no cover - introspection failed: assume unsafe
                self.types = set(_XLA_UNSAFE_JVP_OPS)


def _has_loop(loss_fn: LossFn) -> bool:
    """Whether the loss, traced alone (no accumulator), has a ``tf.while_loop``.

    Only called once forward mode has failed: the accumulator can fail inside the loop's
    construction, before the loop op exists in the graph being traced.
    """
    if tf.executing_eagerly():
        return False
    try:
        traced = tf.function(lambda: _call_loss(loss_fn), autograph=False)
        return bool(_graph_op_types(traced.get_concrete_function().graph, 0) & _LOOP_OPS)
    except Exception:  # noqa: BLE001 - cannot tell: keep the original error
        return False


def _ensure_forward_safe(types: set[str], what: str) -> None:
    bad = sorted(types & _XLA_UNSAFE_JVP_OPS)
    if bad and in_xla_context():
        raise UnsafeDerivativeError(
            f"{what} through {', '.join(bad)} under XLA is wrong on TensorFlow "
            f"{tf.__version__} (TF computes the max-pool gradient's gradient wrongly there). "
            "For first derivatives use method='reverse' or 'auto'; for curvature run the "
            "step without jit_compile."
        )


def _dot_batched(grads: list[tf.Tensor], directions: list[tf.Tensor], k: int) -> tf.Tensor:
    """``[Σ_i <g_i, V_i[k]>]_k`` for leaves ``V_i`` of shape ``[K, *shape_i]`` (a matvec each).

    K = 1 uses an elementwise multiply-and-sum instead: a [1, n] matvec takes a slow CPU path
    in graph mode (2.6 ms vs 1.5 ms on the 784-512-512-10 MLP, scripts/bench_directional.py).
    """
    if k == 1:
        total = tf.add_n(
            [
                tf.reduce_sum(tf.cast(g, d.dtype) * d[0])
                for g, d in zip(grads, directions, strict=True)
            ]
        )
        return tf.reshape(total, [1])
    terms = [
        tf.linalg.matvec(tf.reshape(d, [k, -1]), tf.reshape(tf.cast(g, d.dtype), [-1]))
        for g, d in zip(grads, directions, strict=True)
    ]
    return tf.add_n(terms)


def _num_directions(directions: list[tf.Tensor]) -> int:
    k = tf.TensorShape(directions[0].shape)[0]
    if k is None:
        raise ValueError(
            "the number of directions (leading axis of every direction leaf) must be known "
            "statically; give the tf.function an input_signature with a fixed K"
        )
    if k < 1:
        raise ValueError("directions has K = 0 directions along its leading axis")
    return int(k)


def default_fd_step(
    variables: Any, direction: Any, method: str, *, weight_norm: Any = None
) -> tf.Tensor:
    """Default finite-difference step h (see module docstring): ``ε^p (1 + ‖w‖) / ‖v‖``.

    Args:
      variables: the tree of variables ``w``.
      direction: one direction ``v`` (no batch axis).
      method: ``"central_difference"`` (p = 1/3) or ``"forward_difference"`` (p = 1/2).
      weight_norm: ‖w‖ if already known (saves a pass over the weights per direction).

    Returns:
      A scalar of the variables' dtype; for ``v = 0`` it is the unscaled ``ε^p (1 + ‖w‖)``.
    """
    leaves = tree.flatten(variables)
    dtype = tf.as_dtype(leaves[0].dtype)
    eps = machine_epsilon(dtype)
    if compute_dtype() in _HALF:  # mixed precision: the layers see w + h v rounded to it
        eps = max(eps, machine_epsilon(compute_dtype()))
    power = 1.0 / 3.0 if method == "central_difference" else 0.5
    if weight_norm is None:
        weight_norm = tree.norm([tree._value(v) for v in leaves])
    w_norm = tf.cast(weight_norm, dtype)
    v_norm = tf.cast(tree.norm(direction), dtype)
    safe = tf.where(v_norm > 0, v_norm, tf.ones_like(v_norm))
    return tf.constant(eps**power, dtype) * (1.0 + w_norm) / safe


def compute_dtype() -> tf.DType:
    """The dtype layers compute in under Keras's global dtype policy (float16 under
    ``mixed_float16``, bfloat16 under ``mixed_bfloat16``, else float32)."""
    return tf.as_dtype(keras.config.dtype_policy().compute_dtype)


def machine_epsilon(dtype: Any) -> float:
    """Machine epsilon ε of a floating dtype, bfloat16 included (``np.finfo`` has none)."""
    return float(ml_dtypes.finfo(tf.as_dtype(dtype).as_numpy_dtype).eps)


# ----------------------------------------------------------------------------- methods


def _reverse(loss_fn: LossFn, leaves: list[Any]) -> tuple[tf.Tensor, list[tf.Tensor]]:
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        for v in leaves:
            tape.watch(_primal(v))
        loss = _call_loss(loss_fn)
    grads = tape.gradient(
        loss, [_primal(v) for v in leaves], unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    return loss, grads


def _forward(loss_fn: LossFn, leaves: list[Any], tangents: list[tf.Tensor]) -> tuple[Any, Any]:
    watch = _OpWatch()
    try:
        with watch:
            with tf.autodiff.ForwardAccumulator(
                primals=[_primal(v) for v in leaves], tangents=tangents
            ) as acc:
                loss = _call_loss(loss_fn)
            jvp = acc.jvp(loss, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    except (ValueError, TypeError, LookupError) as error:
        if not (watch.types & _LOOP_OPS or _has_loop(loss_fn)):
            raise
        raise UnsafeDerivativeError(  # TF's own error is a multi-line internal message
            f"a forward-mode JVP cannot go through the loss's tf.while_loop (a Keras recurrent "
            f"layer's loop, e.g. GRU/LSTM) on TensorFlow {tf.__version__}: ForwardAccumulator "
            f"fails there ({type(error).__name__}). Use reverse mode (method='reverse' or "
            "'auto'), finite differences (e.g. ForwardGradient.method = 'central_difference'), "
            "or build the recurrent layer with unroll=True"
        ) from None
    _ensure_forward_safe(watch.types, "forward-mode JVP")
    return loss, jvp


def _finite_differences(
    loss_fn: LossFn,
    leaves: list[Any],
    directions: list[list[tf.Tensor]],
    method: str,
    step: Any,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Loss at w and one finite-difference derivative per direction; restores w bit-exactly.

    The saved values are assigned back after every direction and also when ``loss_fn`` raises
    midway, so the caller's weights are never left perturbed.
    """
    dtype = tf.as_dtype(leaves[0].dtype)
    original = [tf.identity(tree._value(v)) for v in leaves]
    w_norm = tree.norm(original) if step is None else None
    loss = _call_loss(loss_fn)
    derivatives = []
    try:
        for direction in directions:
            if step is None:
                h = default_fd_step(leaves, direction, method, weight_norm=w_norm)
            else:  # dtype_hint keeps a Python float's full precision in float64
                h = tf.cast(tf.convert_to_tensor(step, dtype_hint=dtype), dtype)
            for v, w0, d in zip(leaves, original, direction, strict=True):
                v.assign(w0 + tf.cast(h, w0.dtype) * d)
            plus = _call_loss(loss_fn)
            if method == "central_difference":
                for v, w0, d in zip(leaves, original, direction, strict=True):
                    v.assign(w0 - tf.cast(h, w0.dtype) * d)
                minus = _call_loss(loss_fn)
                value = (plus - minus) / (2.0 * tf.cast(h, plus.dtype))
            else:
                value = (plus - loss) / tf.cast(h, plus.dtype)
            for v, w0 in zip(leaves, original, strict=True):
                v.assign(w0)  # exact restore: the saved values, not w + h v - h v
            derivatives.append(value)
    except BaseException:
        for v, w0 in zip(leaves, original, strict=True):
            v.assign(w0)
        raise
    return loss, tf.stack(derivatives)


def _resolve_auto(loss_fn: LossFn, leaves: list[Any], k: int) -> str | tuple[str, Any]:
    """Runs reverse mode if it works (returning its results), else picks a fallback method."""
    try:
        return ("reverse", _reverse(loss_fn, leaves))
    except LookupError:  # an op in loss_fn has no registered gradient
        return choose_method(k, reverse_available=False, forward_safe=False)


# ----------------------------------------------------------------------------- public API


@tf.autograph.experimental.do_not_convert
def directional_derivatives(
    loss_fn: LossFn,
    variables: Any,
    directions: Any,
    method: str = "auto",
    *,
    step: Any = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Loss and ``[∇L(w)·v_k]_{k=1..K}`` for K directions at once.

    Args:
      loss_fn: zero-argument callable returning the scalar loss at the variables' current value.
      variables: a nest (list, tuple, dict) of ``tf.Variable`` or Keras variables.
      directions: a nest with ``variables``' structure whose leaves carry a leading K axis:
        leaf i has shape ``[K, *variables[i].shape]``. K must be static.
      method: one of :data:`METHODS`.
      step: finite-difference step h (scalar); default :func:`default_fd_step` per direction.

    Returns:
      ``(loss, derivatives)``: the loss at ``w`` (scalar) and a ``[K]`` tensor.

    Raises:
      ValueError: bad method, variables, direction shape/structure/dtype, or non-scalar loss.
      UnsafeDerivativeError: ``method="forward"`` through max-pooling under XLA.
    """
    _check_method(method)
    _check_step(step)
    leaves = _check_variables(variables)
    dirs = tree.flatten(_as_direction(directions, variables, leading_dims=1))
    loss, derivatives, _ = _derivatives(loss_fn, leaves, dirs, method, step)
    return loss, derivatives


def _check_step(step: Any) -> None:
    if isinstance(step, int | float) and not step > 0:
        raise ValueError(f"finite-difference step must be > 0, got {step}")


def _derivatives(
    loss_fn: LossFn, leaves: list[Any], dirs: list[tf.Tensor], method: str, step: Any
) -> tuple[tf.Tensor, tf.Tensor, str]:
    """:func:`directional_derivatives` on validated, flattened inputs (leaves carry K).

    Returns ``(loss, derivatives, method)`` where ``method`` is the concrete method that ran
    (``"auto"`` resolved), so callers that count passes can price exactly what happened.
    """
    k = _num_directions(dirs)
    if method == "auto":
        choice = _resolve_auto(loss_fn, leaves, k)
        if isinstance(choice, tuple):
            loss, grads = choice[1]
            return loss, _dot_batched(grads, dirs, k), "reverse"
        method = choice
    if method == "reverse":
        loss, grads = _reverse(loss_fn, leaves)
        return loss, _dot_batched(grads, dirs, k), method
    per_direction = [[d[i] for d in dirs] for i in range(k)]
    if method == "forward":
        results = [_forward(loss_fn, leaves, tangents) for tangents in per_direction]
        loss = results[0][0]
        return loss, tf.stack([tf.cast(r[1], loss.dtype) for r in results]), method
    loss, derivatives = _finite_differences(loss_fn, leaves, per_direction, method, step)
    return loss, derivatives, method


@tf.autograph.experimental.do_not_convert
def directional_derivative(
    loss_fn: LossFn,
    variables: Any,
    direction: Any,
    method: str = "auto",
    *,
    step: Any = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Loss and ``∇L(w)·v`` for one direction ``v``.

    ``D_v L(w) = Σ_i <∂L/∂w_i, v_i>`` over every variable leaf i. A variable the loss does not
    depend on contributes 0 (never ``None``).

    Args:
      loss_fn: zero-argument callable returning the scalar loss.
      variables: a nest of ``tf.Variable`` or Keras variables.
      direction: a nest with ``variables``' structure, shapes and dtypes.
      method: one of :data:`METHODS`; ``"auto"`` picks via :func:`choose_method`.
      step: finite-difference step h; default :func:`default_fd_step`.

    Returns:
      ``(loss, derivative)``, two scalars.

    Example:
      >>> w = tf.Variable([[2.0]])
      >>> loss, d = directional_derivative(lambda: tf.reduce_sum(w**2), [w], [tf.ones((1, 1))])
      >>> float(d)  # 2·w·v = 4
      4.0
    """
    _check_method(method)
    _check_step(step)
    leaves = _check_variables(variables)
    direction = _as_direction(direction, variables, leading_dims=0)
    batched = [d[tf.newaxis] for d in tree.flatten(direction)]
    loss, derivatives, _ = _derivatives(loss_fn, leaves, batched, method, step)
    return loss, derivatives[0]


@tf.autograph.experimental.do_not_convert
def directional_curvature(
    loss_fn: LossFn,
    variables: Any,
    direction: Any,
    method: str = "auto",
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Loss, ``∇L(w)·v`` and the curvature ``vᵀ∇²L(w)v`` along ``v``.

    ``"forward"`` (forward-over-reverse, Pearlmutter 1994): a gradient under a
    ``ForwardAccumulator`` gives ``Hv`` as the JVP of the gradient; then ``vᵀ(Hv)``.
    Cost: 1 forward, 1 backward, 1 JVP. ``"reverse"`` (reverse-over-reverse): the gradient of
    ``∇L·v``, dotted with ``v``; costs a second backward pass. ``"auto"`` is forward-over-reverse.
    Both raise :class:`UnsafeDerivativeError` through max-pooling under XLA, where TF 2.21
    gets second derivatives wrong.

    Args:
      loss_fn: zero-argument callable returning the scalar loss.
      variables: a nest of variables.
      direction: one direction with the variables' structure.
      method: ``"auto"``, ``"forward"`` or ``"reverse"``.

    Returns:
      ``(loss, derivative, curvature)``, three scalars.
    """
    if method not in ("auto", "forward", "reverse"):
        raise ValueError(
            f"directional_curvature: unknown method {method!r}; expected 'auto', 'forward' "
            "or 'reverse'"
        )
    leaves = _check_variables(variables)
    dirs = tree.flatten(_as_direction(direction, variables, leading_dims=0))
    primals = [_primal(v) for v in leaves]
    with _OpWatch() as watch:
        if method in ("auto", "forward"):
            with tf.autodiff.ForwardAccumulator(primals=primals, tangents=dirs) as acc:
                loss, grads = _reverse(loss_fn, leaves)
            hvp = acc.jvp(grads, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            derivative = tree.dot(grads, dirs)
        else:
            with tf.GradientTape(watch_accessed_variables=False) as outer:
                for p in primals:
                    outer.watch(p)
                loss, grads = _reverse(loss_fn, leaves)
                derivative = tree.dot(grads, dirs)
            hvp = outer.gradient(
                derivative, primals, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
    _ensure_forward_safe(watch.types, "a second derivative (vᵀHv)")
    return loss, derivative, tree.dot(hvp, dirs)


@tf.autograph.experimental.do_not_convert
def gradient_curvature(
    loss_fn: LossFn, variables: Any
) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
    """Loss, gradient ``g = ∇L(w)`` and the curvature along it, ``gᵀ∇²L(w)g``, in one pass.

    The direction is the gradient itself, so forward-over-reverse cannot be used (the tangent
    must be known before the pass that computes it). Reverse-over-reverse forms
    ``g·stop_gradient(g)`` inside an outer tape; its gradient is ``Hg``. Cost: 1 forward +
    2 backward passes, no JVP. Raises :class:`UnsafeDerivativeError` through max-pooling under
    XLA, like :func:`directional_curvature`.

    Args:
      loss_fn: zero-argument callable returning the scalar loss.
      variables: a nest of variables.

    Returns:
      ``(loss, gradient, curvature)``: scalar, a list of tensors (one per variable leaf, in
      ``tf.nest`` order, no gradient attached) and ``gᵀHg``. The curvature along the steepest
      descent direction ``−g`` is the same number.
    """
    return _gradient_curvature(loss_fn, _check_variables(variables))


def _gradient_curvature(
    loss_fn: LossFn, leaves: list[Any], scale: Any = None
) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
    """:func:`gradient_curvature`; with ``scale`` S, backpropagates ``S·L`` (loss scaling).

    With S the backward passes carry ``S·∇L`` and ``S·Hg`` (never S², which would overflow
    float16): ``g = stop_gradient(∇(S L)) / S`` is formed first, so ``∇(S L)·g`` has outer
    gradient ``S·Hg``. The results are unscaled: ``(L, g, gᵀHg)``.
    """
    primals = [_primal(v) for v in leaves]
    closure = loss_fn if scale is None else (lambda: _call_loss(loss_fn) * scale)
    with _OpWatch() as watch:
        with tf.GradientTape(watch_accessed_variables=False) as outer:
            for p in primals:
                outer.watch(p)
            loss, grads = _reverse(closure, leaves)
            fixed = [tf.stop_gradient(g) for g in grads]
            if scale is not None:
                fixed = [g / tf.cast(scale, g.dtype) for g in fixed]
            inner = tree.dot(grads, fixed)
        hg = outer.gradient(inner, primals, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    _ensure_forward_safe(watch.types, "a second derivative (gᵀHg)")
    curvature = tf.cast(tree.dot(hg, fixed), loss.dtype)
    if scale is not None:
        loss, curvature = loss / tf.cast(scale, loss.dtype), curvature / tf.cast(scale, loss.dtype)
    return loss, fixed, curvature
