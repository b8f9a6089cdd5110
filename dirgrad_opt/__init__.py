"""dirgrad_opt: optimizers driven by directional derivatives, on TensorFlow 2 / Keras 3.

Public modules:

* :mod:`dirgrad_opt.tree` — arithmetic over nests of tensors/variables.
* :mod:`dirgrad_opt.directional` — ∇L(w)·v and vᵀHv by forward/reverse mode or finite differences.
* :mod:`dirgrad_opt.directions` — seed-reproducible direction samplers.
* :mod:`dirgrad_opt.line_search` — graph-mode scalar line searches (Armijo, strong Wolfe).
* :mod:`dirgrad_opt.optimizers` — Keras 3 optimizers on the closure-based base class.
* :mod:`dirgrad_opt.keras_fit` — ``model.fit`` with those optimizers.
* :mod:`dirgrad_opt.data`, :mod:`dirgrad_opt.models` — problems (imported on demand: ``data``
  loads tensorflow-datasets, which takes seconds).
* :mod:`dirgrad_opt.training` — the gin-configured training loop behind ``experiments.train``.

Extending the runner from your own module (each name is usable in gin right after the call):

* :func:`register_optimizer` — ``@register_optimizer`` on an optimizer class: ``@MyOpt()``.
* :func:`register_dataset` — ``register_dataset("my_data", fn)``: ``load_dataset.name``.
* :func:`register_model` — ``register_model("my_net", fn)``: ``create_model.model_fn``.

``import dirgrad_opt`` registers every Keras-serializable class of the package (optimizers,
``DirectionalModel``/``DirectionalSequential``, the analytic models), so ``keras.models.
load_model`` of a file that uses them works in a fresh process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# keras_fit and models hold Keras-serializable classes: importing them registers them.
from dirgrad_opt import directional, directions, keras_fit, line_search, models, optimizers, tree

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "directional",
    "directions",
    "keras_fit",
    "line_search",
    "models",
    "optimizers",
    "register_dataset",
    "register_model",
    "register_optimizer",
    "tree",
]


def register_optimizer(cls: type | None = None, *, name: str | None = None) -> Any:
    """Makes an optimizer class a gin configurable (``@MyOpt()``) with the built-ins' checks.

    Also a class decorator (``@register_optimizer`` or ``@register_optimizer(name=...)``).
    See :func:`dirgrad_opt.training.registry.register_optimizer`.
    """
    from dirgrad_opt.training import registry  # loads the runner (and TFDS) on first use

    return registry.register_optimizer(cls, name=name)


def register_dataset(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    """Makes ``load_dataset.name = name`` load ``fn()``: ``(x_train, y_train), (x_test, y_test)``
    NumPy arrays (integer labels: classification; float targets ``[n]``/``[n, k]``:
    regression) or a ``(train, test)`` pair of ``tf.data.Dataset`` s.
    See :func:`dirgrad_opt.data.user.register_dataset`.
    """
    from dirgrad_opt.data import user  # loads tensorflow-datasets on first use

    return user.register_dataset(name, fn)


def register_model(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Makes ``create_model.model_fn = 'name'`` (or ``@name``) build
    ``fn(input_shape, num_classes) -> keras.Model``.
    See :func:`dirgrad_opt.models.register_model`.
    """
    return models.register_model(name, fn)
