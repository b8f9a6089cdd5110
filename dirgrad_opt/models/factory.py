"""``create_model``: the one gin-configurable place where the training loop gets its model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gin
import keras

from dirgrad_opt.models import analytic, networks

ModelFn = Callable[..., keras.Model]

#: Registered model functions, by name.
MODELS: dict[str, ModelFn] = {
    "logistic_regression": networks.logistic_regression,
    "mlp": networks.mlp,
    "mnist1d_mlp": networks.mnist1d_mlp,
    "mnist1d_cnn": networks.mnist1d_cnn,
    "cnn2d": networks.cnn2d,
    "resnet": networks.resnet,
    "quadratic": analytic.quadratic,
    "rosenbrock": analytic.rosenbrock,
}


#: Names of the built-in models (``register_model`` may not replace them).
BUILTIN_MODELS = frozenset(MODELS)


def register_model(name: str, fn: ModelFn) -> ModelFn:
    """Makes ``name`` a model: ``create_model.model_fn = 'name'`` (or ``@name``) builds ``fn``.

    Args:
      name: the model name (a Python identifier, not a built-in model's name).
      fn: ``fn(input_shape, num_classes, **options) -> keras.Model``; ``num_classes`` is the
        output width (``Dataset.num_outputs``: classes, or regression targets). It is registered
        with gin under ``name``, so its options can be bound (``my_model.width = 64``).

    Returns:
      The gin-configurable version of ``fn`` (also stored in :data:`MODELS`).

    Raises:
      ValueError: a bad or taken name, or a non-callable ``fn``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_model: name must be a Python identifier, got {name!r:.200}")
    if not callable(fn):
        raise ValueError(f"register_model({name!r}, fn): fn must be callable, got {fn!r:.200}")
    if name in BUILTIN_MODELS:
        raise ValueError(f"register_model: {name!r} is a built-in model; choose another name")
    previous = MODELS.get(name)
    if previous is not None:
        if getattr(previous, "__wrapped__", previous) is fn:
            return previous
        raise ValueError(
            f"register_model: {name!r} is already registered to {previous.__module__}."
            f"{previous.__qualname__}; choose another name"
        )
    configurable = gin.external_configurable(fn, name=name, module="models")
    MODELS[name] = configurable
    return configurable


@gin.configurable
def create_model(
    input_shape: Sequence[int],
    num_classes: int,
    model_fn: ModelFn | str = gin.REQUIRED,
    seed: int | None = None,
) -> keras.Model:
    """Build the configured model for a dataset.

    Args:
      input_shape: ``Dataset.input_shape``.
      num_classes: width of the output layer, ``Dataset.num_outputs``.
      model_fn: a model function ``(input_shape, num_classes) -> keras.Model`` (in gin:
        ``create_model.model_fn = @mlp``) or the name of one in :data:`MODELS` (built-in or
        added by :func:`register_model`).
      seed: if given, ``keras.utils.set_random_seed(seed)`` is called first so the initial
        weights are reproducible (this seeds Python, NumPy and TensorFlow globally).

    Returns:
      A built ``keras.Model``.
    """
    if isinstance(model_fn, str):
        if model_fn not in MODELS:
            raise ValueError(
                f"create_model: unknown model {model_fn!r}; available: {', '.join(MODELS)} "
                "(or pass any function (input_shape, num_classes) -> keras.Model)."
            )
        model_fn = MODELS[model_fn]
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = model_fn(input_shape=tuple(input_shape), num_classes=num_classes)
    if not isinstance(model, keras.Model):
        name = getattr(model_fn, "__name__", "model_fn")
        text = repr(model)
        text = text if len(text) <= 200 else text[:197] + "..."
        raise ValueError(f"model function {name!r} must return a keras.Model, got {text}")
    return model
