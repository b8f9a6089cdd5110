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
        ``create_model.model_fn = @mlp``) or the name of one in :data:`MODELS`.
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
    return model_fn(input_shape=tuple(input_shape), num_classes=num_classes)
