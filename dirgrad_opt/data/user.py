"""Datasets registered by the user: ``register_dataset(name, fn)``, then ``load_dataset(name)``.

``fn()`` returns the two splits in the ``keras.datasets`` layout::

    (x_train, y_train), (x_test, y_test)            # NumPy arrays (or anything np.asarray takes)

or a pair of ``tf.data.Dataset`` s ``(train, test)`` of ``(x, y)`` elements (unbatched, or batched
with an unknown batch dimension: they are unbatched). The task follows the targets:

* integer labels ``[n]`` → classification with ``max(label) + 1`` classes (over both splits);
* float targets ``[n]`` or ``[n, k]`` → regression (``[n]`` becomes ``[n, 1]``, matching a
  model with one output).

The arrays then go through the same pipeline as every other dataset (:func:`load_dataset`:
shuffling by ``(seed, epoch)``, O(1) resume, integer features scaled by 1/255). ``fn`` is also
registered with gin under ``name``, so its own parameters can be bound (``my_data.noise = 0.1``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gin
import numpy as np
import tensorflow as tf

from dirgrad_opt.data.synthetic import CLASSIFICATION, REGRESSION, ArrayData

#: name -> the gin-configurable loader function, for every dataset registered by the user.
USER_DATASETS: dict[str, Callable[[], Any]] = {}

_LAYOUT = (
    "return ((x_train, y_train), (x_test, y_test)) NumPy arrays (the keras.datasets layout) or a "
    "pair of tf.data.Datasets (train, test) of (x, y) elements"
)


def short_repr(value: Any, limit: int = 200) -> str:
    """A bounded description of ``value`` for error messages: arrays by shape and dtype, other
    values by ``repr`` cut to ``limit`` characters."""
    if isinstance(value, np.ndarray | tf.Tensor):
        return f"{type(value).__name__}(shape={tuple(value.shape)}, dtype={value.dtype.name})"
    if isinstance(value, ArrayData):
        return (
            f"ArrayData(task={value.task!r}, x_train={short_repr(value.x_train)}, "
            f"y_train={short_repr(value.y_train)}, ...)"
        )
    if isinstance(value, tuple | list) and len(value) <= 4:
        inner = ", ".join(short_repr(v, limit // 2) for v in value)
        text = f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def register_dataset(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    """Makes ``load_dataset(name=name)`` (gin: ``load_dataset.name = 'name'``) load ``fn()``.

    Args:
      name: the dataset name; must not shadow a built-in synthetic dataset.
      fn: a zero-argument callable (its other parameters need defaults or gin bindings)
        returning the splits (see the module docstring).

    Returns:
      The gin-configurable version of ``fn``.

    Raises:
      ValueError: a bad name, a non-callable ``fn``, or a name already registered to another
        function.
    """
    from dirgrad_opt.data.synthetic import SYNTHETIC_DATASETS

    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(
            f"register_dataset: name must be a Python identifier string, got {short_repr(name)}"
        )
    if not callable(fn):
        raise ValueError(
            f"register_dataset({name!r}, fn): fn must be callable, got {short_repr(fn)}"
        )
    if name in SYNTHETIC_DATASETS:
        raise ValueError(f"register_dataset: {name!r} is a built-in dataset; choose another name")
    previous = USER_DATASETS.get(name)
    if previous is not None:
        if getattr(previous, "__wrapped__", previous) is fn:
            return previous
        raise ValueError(
            f"register_dataset: {name!r} is already registered to "
            f"{getattr(previous, '__module__', '?')}.{getattr(previous, '__qualname__', '?')}; "
            "choose another name"
        )
    configurable = gin.external_configurable(fn, name=name, module="datasets")
    USER_DATASETS[name] = configurable
    return configurable


def load_user_dataset(name: str) -> ArrayData:
    """Calls the function registered as ``name`` and converts its splits to :class:`ArrayData`."""
    output = USER_DATASETS[name]()
    return to_array_data(name, output)


def to_array_data(name: str, output: Any) -> ArrayData:
    """``((x_train, y_train), (x_test, y_test))`` or ``(train_ds, test_ds)`` as ArrayData."""
    where = f"dataset {name!r}"
    if isinstance(output, ArrayData):
        return output
    if not isinstance(output, tuple | list) or len(output) != 2:
        raise ValueError(f"{where} must {_LAYOUT}; got {short_repr(output)}")
    splits = []
    for split, part in zip(("train", "test"), output, strict=True):
        if isinstance(part, tf.data.Dataset):
            part = _from_tf_data(f"{where} {split} split", part)
        if not isinstance(part, tuple | list) or len(part) != 2:
            raise ValueError(
                f"{where} {split} split must be an (x, y) pair ({_LAYOUT}); got {short_repr(part)}"
            )
        x, y = (np.asarray(a) for a in part)
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"{where} {split} split has x of shape {x.shape} and y of shape {y.shape}; they "
                "need the same non-zero number of rows (examples)"
            )
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise ValueError(f"{where} {split} features have non-numeric dtype {x.dtype}")
        splits.append((x, y))
    (x_train, y_train), (x_test, y_test) = splits
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{where}: train examples have shape {x_train.shape[1:]}, test examples "
            f"{x_test.shape[1:]}; they must match"
        )
    if np.issubdtype(y_train.dtype, np.integer) and np.issubdtype(y_test.dtype, np.integer):
        return _classification(where, x_train, y_train, x_test, y_test)
    if np.issubdtype(y_train.dtype, np.floating) and np.issubdtype(y_test.dtype, np.floating):
        return _regression(where, x_train, y_train, x_test, y_test)
    raise ValueError(
        f"{where}: targets have dtypes {y_train.dtype} (train) and {y_test.dtype} (test); use "
        "integer labels for classification or float targets for regression, the same in both"
    )


def _classification(where: str, x_train, y_train, x_test, y_test) -> ArrayData:
    for split, y in (("train", y_train), ("test", y_test)):
        if y.ndim != 1:
            raise ValueError(
                f"{where}: integer {split} labels must have shape [n] (class indices), got "
                f"{y.shape}; use float targets for regression"
            )
        if y.min() < 0:
            raise ValueError(f"{where}: {split} labels must be >= 0, got {int(y.min())}")
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    if num_classes < 2:
        raise ValueError(f"{where}: classification needs at least 2 classes, labels are all 0")
    return ArrayData(
        x_train,
        y_train.astype(np.int32),
        x_test,
        y_test.astype(np.int32),
        task=CLASSIFICATION,
        num_classes=num_classes,
    )


def _regression(where: str, x_train, y_train, x_test, y_test) -> ArrayData:
    out = []
    for split, y in (("train", y_train), ("test", y_test)):
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2:
            raise ValueError(f"{where}: float {split} targets must be [n] or [n, k], got {y.shape}")
        out.append(y.astype(np.float32))
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError(
            f"{where}: train targets have {out[0].shape[1]} columns, test targets "
            f"{out[1].shape[1]}; they must match"
        )
    return ArrayData(x_train, out[0], x_test, out[1], task=REGRESSION)


def _from_tf_data(where: str, ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All ``(x, y)`` elements of a finite dataset as two arrays (batched ones are unbatched)."""
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(f"{where} must yield (x, y) pairs, its elements are {short_repr(spec)}")
    if int(ds.cardinality()) == tf.data.INFINITE_CARDINALITY:
        raise ValueError(f"{where} is infinite (a .repeat()?); pass one pass over the data")
    if spec[0].shape.rank and spec[0].shape[0] is None:
        ds = ds.unbatch()
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError(f"{where} is empty")
    return np.stack(xs), np.stack(ys)
