"""Neural-network models: functions ``(input_shape, num_classes, **options) -> keras.Model``.

Every function builds a Keras 3 functional model (built on return, so its variables exist) that
maps float32 inputs ``[batch, *input_shape]`` to logits ``[batch, num_classes]``. None of them
uses dropout, and batch normalisation is off by default: both make a loss closure stochastic or
stateful, which breaks line searches that re-evaluate the loss at trial points.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import keras


def _inputs(input_shape: Sequence[int], where: str) -> keras.KerasTensor:
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"{where}: input_shape must be non-empty and positive, got {shape}.")
    return keras.Input(shape=shape)


def _check_classes(num_classes: int, where: str) -> None:
    if num_classes < 1:
        raise ValueError(f"{where}: num_classes must be >= 1, got {num_classes}.")


def _as_image(x: keras.KerasTensor, where: str) -> keras.KerasTensor:
    """Accept ``[H, W]`` (adds a channel axis) or ``[H, W, C]`` inputs."""
    if len(x.shape) == 3:
        return keras.layers.Reshape((*x.shape[1:], 1))(x)
    if len(x.shape) != 4:
        raise ValueError(
            f"{where} needs image inputs of shape (height, width[, channels]); got input_shape "
            f"{tuple(x.shape[1:])}. Use mlp or mnist1d_cnn for vector inputs."
        )
    return x


@gin.configurable
def logistic_regression(input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """Multinomial logistic regression: logits = W flatten(x) + b.

    Args:
      input_shape: shape of one example (flattened).
      num_classes: number of outputs.

    Returns:
      A built ``keras.Model`` named ``logistic_regression``.
    """
    _check_classes(num_classes, "logistic_regression")
    inputs = _inputs(input_shape, "logistic_regression")
    logits = keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, logits, name="logistic_regression")


@gin.configurable
def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    widths: Sequence[int] = (256, 256),
    activation: str = "relu",
) -> keras.Model:
    """Multi-layer perceptron: h₀ = flatten(x), hₗ = σ(Wₗ hₗ₋₁ + bₗ), logits = W h_L + b.

    Args:
      input_shape: shape of one example (flattened).
      num_classes: number of outputs.
      widths: hidden layer widths (empty = logistic regression).
      activation: Keras activation name of the hidden layers.

    Returns:
      A built ``keras.Model`` named ``mlp``.
    """
    _check_classes(num_classes, "mlp")
    if any(w < 1 for w in widths):
        raise ValueError(f"mlp: widths must be positive, got {tuple(widths)}.")
    inputs = _inputs(input_shape, "mlp")
    h = keras.layers.Flatten()(inputs)
    for width in widths:
        h = keras.layers.Dense(width, activation=activation)(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(h), name="mlp")


@gin.configurable
def mnist1d_mlp(input_shape: Sequence[int], num_classes: int, width: int = 256) -> keras.Model:
    """The residual MLP of the MNIST-1D training code.

    h = relu(W₁x + b₁); h = h + relu(W₂h + b₂); logits = W₃h + b₃.

    Reference: Greydanus & Kobak, "Scaling down deep learning with MNIST-1D", ICML 2024.

    Args:
      input_shape: shape of one example (flattened; (40,) for MNIST-1D).
      num_classes: number of outputs.
      width: hidden width (256 in the paper's code; 100 loses ~3 points of accuracy).

    Returns:
      A built ``keras.Model`` named ``mnist1d_mlp``.
    """
    _check_classes(num_classes, "mnist1d_mlp")
    inputs = _inputs(input_shape, "mnist1d_mlp")
    h = keras.layers.Dense(width, activation="relu")(keras.layers.Flatten()(inputs))
    h = keras.layers.Add()([h, keras.layers.Dense(width, activation="relu")(h)])
    return keras.Model(inputs, keras.layers.Dense(num_classes)(h), name="mnist1d_mlp")


@gin.configurable
def mnist1d_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    channels: int = 25,
    kernel_sizes: Sequence[int] = (5, 3, 3),
) -> keras.Model:
    """The 1-D CNN of MNIST-1D: stride-2 convolutions with padding 1, ReLU, linear head.

    hₗ = relu(conv1d(pad₁(hₗ₋₁), kₗ, stride 2)); logits = W flatten(h_L) + b. On 40 samples
    the lengths are 40 → 19 → 10 → 5, so the head sees 5 · 25 = 125 features.

    Reference: Greydanus & Kobak, "Scaling down deep learning with MNIST-1D", ICML 2024.

    Args:
      input_shape: ``(length,)`` (a channel axis is added) or ``(length, channels)``.
      num_classes: number of outputs.
      channels: channels of every convolution.
      kernel_sizes: kernel size of each convolution (one layer per entry).

    Returns:
      A built ``keras.Model`` named ``mnist1d_cnn``.
    """
    _check_classes(num_classes, "mnist1d_cnn")
    inputs = _inputs(input_shape, "mnist1d_cnn")
    if len(inputs.shape) == 2:
        h = keras.layers.Reshape((inputs.shape[1], 1))(inputs)
    elif len(inputs.shape) == 3:
        h = inputs
    else:
        raise ValueError(
            f"mnist1d_cnn needs input_shape (length,) or (length, channels), got {input_shape}."
        )
    for kernel_size in kernel_sizes:
        h = keras.layers.ZeroPadding1D(1)(h)  # PyTorch's padding=1.
        h = keras.layers.Conv1D(channels, kernel_size, strides=2, activation="relu")(h)
    logits = keras.layers.Dense(num_classes)(keras.layers.Flatten()(h))
    return keras.Model(inputs, logits, name="mnist1d_cnn")


@gin.configurable
def cnn2d(
    input_shape: Sequence[int],
    num_classes: int,
    filters: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    dense_width: int = 128,
) -> keras.Model:
    """A small image CNN: [conv → relu → 2x2 max-pool] per entry of ``filters``, then dense.

    hₗ = maxpool(relu(conv2d_same(hₗ₋₁))); logits = W₂ relu(W₁ flatten(h_L)) (no hidden dense
    layer if ``dense_width`` is 0).

    Warning: under XLA (``jit_compile=True``) TF 2.21 computes a wrong forward-mode JVP through
    Conv2D → MaxPool (gradients are right); see tests/test_models.py.

    Args:
      input_shape: ``(height, width)`` or ``(height, width, channels)``.
      num_classes: number of outputs.
      filters: output channels of each conv block.
      kernel_size: convolution kernel size (``same`` padding).
      dense_width: width of the hidden dense layer; 0 = none.

    Returns:
      A built ``keras.Model`` named ``cnn2d``.
    """
    _check_classes(num_classes, "cnn2d")
    inputs = _inputs(input_shape, "cnn2d")
    h = _as_image(inputs, "cnn2d")
    for f in filters:
        h = keras.layers.Conv2D(f, kernel_size, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    if dense_width:
        h = keras.layers.Dense(dense_width, activation="relu")(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(h), name="cnn2d")


def _residual_block(
    x: keras.KerasTensor, width: int, stride: int, batch_norm: bool
) -> keras.KerasTensor:
    """relu(F(x) + s(x)), F = conv3x3(stride) → [bn] → relu → conv3x3 → [bn]; s = id or 1x1."""

    def norm(t: keras.KerasTensor) -> keras.KerasTensor:
        return keras.layers.BatchNormalization()(t) if batch_norm else t

    h = norm(keras.layers.Conv2D(width, 3, strides=stride, padding="same")(x))
    h = norm(keras.layers.Conv2D(width, 3, padding="same")(keras.layers.ReLU()(h)))
    shortcut = x
    if stride != 1 or x.shape[-1] != width:
        shortcut = norm(keras.layers.Conv2D(width, 1, strides=stride)(x))
    return keras.layers.ReLU()(keras.layers.Add()([h, shortcut]))


@gin.configurable
def resnet(
    input_shape: Sequence[int],
    num_classes: int,
    widths: Sequence[int] = (16, 32, 64),
    blocks_per_stage: int = 1,
    batch_norm: bool = False,
) -> keras.Model:
    """A small ResNet: conv stem, residual stages, global average pool, linear head.

    Stage i has ``blocks_per_stage`` blocks x ↦ relu(F(x) + s(x)) of width ``widths[i]``; every
    stage after the first halves the resolution (stride 2 in its first block, 1x1 projection
    shortcut). Batch normalisation is off by default: in training mode it makes the loss of a
    batch depend on mutable statistics, so a line search's trial evaluations are not
    comparable.

    Reference: He et al., "Deep residual learning for image recognition", CVPR 2016.

    Args:
      input_shape: ``(height, width)`` or ``(height, width, channels)``.
      num_classes: number of outputs.
      widths: channels of each stage.
      blocks_per_stage: residual blocks per stage.
      batch_norm: add BatchNormalization after each convolution.

    Returns:
      A built ``keras.Model`` named ``resnet``.
    """
    _check_classes(num_classes, "resnet")
    if not widths or blocks_per_stage < 1:
        raise ValueError(
            f"resnet: need at least one stage and block, got widths={tuple(widths)}, "
            f"blocks_per_stage={blocks_per_stage}."
        )
    inputs = _inputs(input_shape, "resnet")
    h = keras.layers.Conv2D(widths[0], 3, padding="same")(_as_image(inputs, "resnet"))
    if batch_norm:
        h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    for stage, width in enumerate(widths):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            h = _residual_block(h, width, stride, batch_norm)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(h), name="resnet")
