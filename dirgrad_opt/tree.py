"""Arithmetic over nested structures ("trees") of tensors and variables.

A *tree* is any nest that ``tf.nest`` understands (list, tuple, dict, namedtuple) whose leaves
are ``tf.Tensor``, ``tf.Variable`` or Keras 3 variables. Every optimizer and the directional
module treat "the model's weights" and "a direction" as two trees of the same structure, and do
linear algebra on them with the functions below:

* ``dot(x, y)     = Σ_i <x_i, y_i>``          (one scalar over all leaves)
* ``axpy(a, x, y) = a·x + y``                  (leafwise)
* ``scale(a, x)   = a·x``
* ``norm(x)       = sqrt(dot(x, x))``
* ``zeros_like(x)``

``check_like`` is the guard every public entry point calls before doing arithmetic: it never
lets a wrong shape broadcast silently, and names the offending leaf in its error, e.g.
``direction for 'dense/kernel' has shape (2, 1); variable has shape (1, 1)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

Tree = Any
"""A nest (list/tuple/dict) of tensors or variables."""

__all__ = [
    "Tree",
    "add",
    "as_tensors",
    "assign",
    "axpy",
    "check_like",
    "dot",
    "flatten",
    "leaf_names",
    "map",
    "norm",
    "num_elements",
    "scale",
    "sub",
    "zeros_like",
]


def _value(x: Any) -> tf.Tensor:
    """The tensor behind a leaf: a Keras 3 variable's backing ``tf.Variable`` value, or ``x``."""
    # Keras 3 variables wrap a tf.Variable in `.value`; arithmetic on the wrapper works too, but
    # autodiff (ForwardAccumulator watches) needs the real tensor.
    if hasattr(x, "value") and not isinstance(x, tf.Tensor | tf.Variable):
        return x.value
    return tf.convert_to_tensor(x)


def flatten(tree: Tree) -> list[Any]:
    """Leaves of ``tree`` in ``tf.nest`` order (variables are leaves, not expanded)."""
    return tf.nest.flatten(tree, expand_composites=False)


def map(fn: Callable[..., Any], *trees: Tree) -> Tree:  # noqa: A001 - mirrors tf.nest
    """``fn`` applied leafwise over trees of the same structure."""
    return tf.nest.map_structure(fn, *trees)


def as_tensors(tree: Tree) -> Tree:
    """The current values of a tree of variables, as plain tensors (a snapshot)."""
    return map(lambda x: tf.identity(_value(x)), tree)


def leaf_names(tree: Tree) -> list[str]:
    """A readable name per leaf: the variable's ``path``/``name``, else its nest path.

    Keras 3 variables carry ``path`` (``'dense/kernel'``); ``tf.Variable`` names are stripped of
    the ``':0'`` suffix. Plain tensors are named by their position in the nest, e.g. ``'[1]'`` or
    ``"['w']"``.
    """
    paths = _nest_paths(tree)
    names = []
    for path, leaf in zip(paths, flatten(tree), strict=True):
        name = getattr(leaf, "path", None)
        if not name:
            raw = getattr(leaf, "name", None) if isinstance(leaf, tf.Variable) else None
            name = raw[:-2] if raw and raw.endswith(":0") else raw
        names.append(name or path or "<root>")
    return names


def _nest_paths(tree: Tree) -> list[str]:
    """``tf.nest``-ordered paths such as ``"[0]"`` or ``"['dense'][1]"``, one per leaf."""
    if tree is None:
        return []
    return ["".join(f"[{p!r}]" for p in path) for path, _ in keras.tree.flatten_with_path(tree)]


def check_like(
    tree: Tree,
    reference: Tree,
    *,
    what: str = "direction",
    reference_what: str = "variable",
    leading_dims: int = 0,
) -> None:
    """Raises ``ValueError`` unless ``tree`` has ``reference``'s structure, shapes and float dtypes.

    Args:
      tree: the tree to check (e.g. a direction).
      reference: the tree it must match (e.g. the variables).
      what: what ``tree`` is called in error messages.
      reference_what: what ``reference`` is called in error messages.
      leading_dims: number of extra leading axes every leaf of ``tree`` carries (1 for a batch of
        K directions); they must be equal across leaves.

    Raises:
      ValueError: naming the offending leaf and both shapes/dtypes, for a structure mismatch, a
        shape mismatch (never broadcast), a non-floating dtype, a dtype that differs from the
        reference, or inconsistent leading (batch) sizes.
    """
    try:
        tf.nest.assert_same_structure(tree, reference, check_types=False)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{what} does not have the structure of the {reference_what}s: {e}. "
            f"Pass one {what} leaf per {reference_what}, in the same nest."
        ) from None
    names = leaf_names(reference)
    leading = None
    for name, x, ref in zip(names, flatten(tree), flatten(reference), strict=True):
        x_dtype = tf.as_dtype(x.dtype)
        ref_dtype = tf.as_dtype(ref.dtype)
        if not ref_dtype.is_floating:
            raise ValueError(
                f"{reference_what} '{name}' has dtype {ref_dtype.name}; directional derivatives "
                "need floating-point variables"
            )
        if not x_dtype.is_floating:
            raise ValueError(
                f"{what} for '{name}' has dtype {x_dtype.name}; it must be floating point "
                f"({ref_dtype.name}, like the {reference_what})"
            )
        if x_dtype != ref_dtype:
            raise ValueError(
                f"{what} for '{name}' has dtype {x_dtype.name}; {reference_what} has dtype "
                f"{ref_dtype.name}. Cast the {what} (tf.cast) to match."
            )
        x_shape = tf.TensorShape(x.shape)
        ref_shape = tf.TensorShape(ref.shape)
        if x_shape.rank is None:
            continue  # unknown rank inside a graph: nothing can be checked statically
        if leading_dims:
            if x_shape.rank != ref_shape.rank + leading_dims:
                raise ValueError(
                    f"{what} for '{name}' has shape {_fmt(x_shape)}; expected {leading_dims} "
                    f"leading batch axis/axes before the {reference_what} shape {_fmt(ref_shape)}"
                )
            lead, body = x_shape[:leading_dims], x_shape[leading_dims:]
            if leading is None:
                leading = lead
            elif lead.is_fully_defined() and leading.is_fully_defined() and lead != leading:
                raise ValueError(
                    f"{what} for '{name}' has leading size {_fmt(lead)}, other leaves have "
                    f"{_fmt(leading)}: every leaf must carry the same number of directions"
                )
        else:
            body = x_shape
        if not body.is_compatible_with(ref_shape) or body.rank != ref_shape.rank:
            shown = _fmt(x_shape)
            raise ValueError(
                f"{what} for '{name}' has shape {shown}; {reference_what} has shape "
                f"{_fmt(ref_shape)}"
            )


def _fmt(shape: tf.TensorShape) -> str:
    dims = shape.as_list() if shape.rank is not None else None
    if dims is None:
        return "<unknown>"
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def dot(x: Tree, y: Tree) -> tf.Tensor:
    """``Σ_i <x_i, y_i>`` over all leaves: one scalar. Structures must match (not checked here)."""
    terms = [
        tf.reduce_sum(_value(a) * tf.cast(_value(b), _value(a).dtype))
        for a, b in zip(flatten(x), flatten(y), strict=True)
    ]
    if not terms:
        return tf.constant(0.0)
    return tf.add_n(terms)


def axpy(a: Any, x: Tree, y: Tree) -> Tree:
    """``a·x + y`` leafwise (``a`` a scalar, cast to each leaf's dtype)."""
    return map(lambda u, v: tf.cast(a, _value(u).dtype) * _value(u) + _value(v), x, y)


def scale(a: Any, x: Tree) -> Tree:
    """``a·x`` leafwise."""
    return map(lambda u: tf.cast(a, _value(u).dtype) * _value(u), x)


def add(x: Tree, y: Tree) -> Tree:
    """``x + y`` leafwise."""
    return map(lambda u, v: _value(u) + _value(v), x, y)


def sub(x: Tree, y: Tree) -> Tree:
    """``x - y`` leafwise."""
    return map(lambda u, v: _value(u) - _value(v), x, y)


def norm(x: Tree) -> tf.Tensor:
    """Euclidean norm over all leaves, ``sqrt(Σ_i ||x_i||²)``."""
    return tf.sqrt(dot(x, x))


def zeros_like(x: Tree) -> Tree:
    """A tree of zeros with ``x``'s structure, shapes and dtypes."""
    return map(lambda u: tf.zeros_like(_value(u)), x)


def num_elements(x: Tree) -> int:
    """Total number of scalars in the tree (static shapes required)."""
    return int(sum(tf.TensorShape(leaf.shape).num_elements() for leaf in flatten(x)))


def assign(variables: Sequence[Any] | Tree, values: Tree) -> None:
    """``variables[i].assign(values[i])`` for every leaf (structures must match)."""
    for v, val in zip(flatten(variables), flatten(values), strict=True):
        v.assign(val)
