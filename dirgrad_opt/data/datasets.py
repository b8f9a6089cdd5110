"""The single entry point of the data layer: :func:`load_dataset` and its :class:`Dataset`.

The whole dataset is held in memory (fine for MNIST/CIFAR-sized data; raw dtypes are kept, so
CIFAR-10 costs ~150 MB) and batches are gathered from it by index. The order of the training
examples is a pure function of ``(seed, epoch)``: epoch e visits the examples in the permutation
``stateless_shuffle(range(N), seed=[seed, e])``. Hence the pipeline can be started at any step
in O(1) (:meth:`Dataset.train_from`), and tf.data iterators over it are also checkpointable with
a small state (no shuffle buffer is stored).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gin
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from dirgrad_opt.data import synthetic, tfds_source, user

#: Per-dataset feature scale for TFDS datasets whose integer features are not 0..255 pixels.
_FEATURE_SCALES = {"digits": 1.0 / 16.0}
_NEVER = 2**62  # Upper bound of the epoch counter: the training stream is effectively infinite.


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: a repeated, shuffled training stream plus finite evaluation streams.

    Every stream yields ``(x, y)`` tuples: ``x`` float32 ``[batch, *input_shape]``; ``y`` int32
    ``[batch]`` for classification, float32 ``[batch, k]`` for regression, float32 zeros
    ``[batch]`` (unused) for analytic objectives.

    Attributes:
      name: the dataset name given to :func:`load_dataset`.
      task: ``"classification"``, ``"regression"`` or ``"objective"``.
      input_shape: shape of one example, without the batch axis.
      num_classes: number of classes (classification), else ``None``.
      num_outputs: width of the model's output layer: ``num_classes`` for classification,
        ``k`` for regression, 1 for objectives (analytic models ignore it).
      num_train_examples, num_test_examples: split sizes (# examples).
      batch_size: training batch size (# examples per step).
      seed: seed of the training order.
      train: infinite stream of training batches from step 0, each exactly ``batch_size``
        examples; equals ``train_from(0)``. Batches may straddle epoch boundaries.
      train_eval: the training set (or its first ``train_eval_size`` examples), finite,
        unshuffled, in batches of ``eval_batch_size`` (the last may be smaller).
      test: the test set, finite, unshuffled, in batches of ``eval_batch_size``.
      valid: the validation set carved from the training set (``validation_size``), finite,
        unshuffled, in batches of ``eval_batch_size``; ``None`` without one.
      num_valid_examples: its size (# examples; 0 without one).
    """

    name: str
    task: str
    input_shape: tuple[int, ...]
    num_classes: int | None
    num_outputs: int
    num_train_examples: int
    num_test_examples: int
    batch_size: int
    seed: int
    train: tf.data.Dataset
    train_eval: tf.data.Dataset
    test: tf.data.Dataset
    _train_from: Callable[[int], tf.data.Dataset] = dataclasses.field(repr=False)
    valid: tf.data.Dataset | None = None
    num_valid_examples: int = 0

    def train_from(self, step: int) -> tf.data.Dataset:
        """Return the training stream starting at batch ``step`` (0-based), in O(1).

        ``train_from(s)`` yields exactly the batches ``train`` yields after skipping ``s``; use it
        to resume a run at step ``s`` without replaying the input pipeline.
        """
        if step < 0:
            raise ValueError(f"train_from(step={step}): step must be >= 0.")
        return self._train_from(int(step))

    def epoch(self, step: int) -> float:
        """Number of epochs completed after ``step`` training batches: step·batch / N."""
        return step * self.batch_size / self.num_train_examples


def _epoch_permutation(num_examples: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """The order of epoch ``epoch``: a permutation of range(N), a pure function of (seed, e)."""
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(num_examples, dtype=tf.int64), key)


def _train_stream(
    num_examples: int,
    batch_size: int,
    seed: int,
    start_step: int,
    gather: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
) -> tf.data.Dataset:
    """Infinite stream of training batches from ``start_step``: indices, then ``gather``.

    The example stream is the concatenation of the epoch permutations; batch s holds its
    elements [s·B, (s+1)·B). Starting at step s skips ``s·B mod N`` indices of one epoch.
    """
    first_epoch, offset = divmod(start_step * batch_size, num_examples)
    indices = (
        tf.data.Dataset.range(first_epoch, _NEVER)
        .flat_map(
            lambda e: tf.data.Dataset.from_tensor_slices(_epoch_permutation(num_examples, seed, e))
        )
        .skip(offset)
        .batch(batch_size, drop_remainder=True)
    )
    return indices.map(gather).prefetch(tf.data.AUTOTUNE)


def _feature_scale(name: str, x: np.ndarray, override: float | None) -> float:
    if override is not None:
        return float(override)
    base = name.split(":")[0].split("/")[0]
    if base in _FEATURE_SCALES:
        return _FEATURE_SCALES[base]
    return 1.0 / 255.0 if np.issubdtype(x.dtype, np.integer) else 1.0


def _tfds_arrays(
    name: str, data_dir: str | None, download: bool, train_split: str, test_split: str
) -> synthetic.ArrayData:
    """Load two splits of a supervised TFDS classification dataset into NumPy arrays."""
    builder = tfds_source.prepared_builder(name, data_dir=data_dir, download=download)
    label_key = (builder.info.supervised_keys or (None, None))[1]
    label = builder.info.features[label_key] if label_key else None
    if not isinstance(label, tfds.features.ClassLabel):
        raise ValueError(
            f"TFDS dataset {name!r} is not a supervised classification dataset (its supervised "
            f"label is {label!r}); load_dataset supports ClassLabel targets only."
        )
    splits = []
    for split in (train_split, test_split):
        ds = tfds_source.tfds_dataset(name, split, data_dir=data_dir, batch_size=-1)
        splits.extend(tfds.as_numpy(ds))
    x_train, y_train, x_test, y_test = splits
    return synthetic.ArrayData(
        x_train,
        y_train.astype(np.int32),
        x_test,
        y_test.astype(np.int32),
        task=synthetic.CLASSIFICATION,
        num_classes=label.num_classes,
    )


def _load_arrays(
    name: str, data_dir: str | None, download: bool, train_split: str, test_split: str
) -> synthetic.ArrayData:
    if name in synthetic.SYNTHETIC_DATASETS:
        return synthetic.SYNTHETIC_DATASETS[name]()
    if name in user.USER_DATASETS:
        return user.load_user_dataset(name)
    try:
        return _tfds_arrays(name, data_dir, download, train_split, test_split)
    except tfds_source.UnknownDatasetError as error:
        local = (*synthetic.SYNTHETIC_DATASETS, *user.USER_DATASETS)
        message = tfds_source.unknown_dataset_message(name, local)
        raise tfds_source.UnknownDatasetError(f"load_dataset: {message}") from error


@gin.configurable
def load_dataset(
    name: str = gin.REQUIRED,
    batch_size: int = 128,
    seed: int = 0,
    data_dir: str | None = None,
    download: bool = False,
    eval_batch_size: int = 1000,
    train_eval_size: int | None = None,
    feature_scale: float | None = None,
    train_split: str = "train",
    test_split: str = "test",
    validation_size: int = 0,
) -> Dataset:
    """Load a dataset by name into memory and build its input pipelines.

    Names: synthetic ``"blobs"``, ``"linear_regression"``, ``"analytic"`` (see
    :mod:`dirgrad_opt.data.synthetic`; configure them through their own gin functions); those
    registered with :func:`dirgrad_opt.register_dataset` (:mod:`dirgrad_opt.data.user`); offline
    TFDS builders ``"mnist1d"``, ``"digits"``; any other TFDS classification dataset that is
    prepared in ``data_dir`` (or downloadable with ``download=True``).

    Features become float32 times a scale: digits 1/16, other integer (pixel) features 1/255,
    float features (mnist1d, synthetic) unchanged. Training order: epoch e is the permutation
    ``stateless_shuffle(range(N), seed=[seed, e])``, batches of exactly ``batch_size``.

    Args:
      name: dataset name (see above).
      batch_size: training batch size (# examples per step); at most the training set size.
      seed: seed of the training order (the data themselves do not depend on it).
      data_dir: TFDS data directory; ``None`` uses ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      download: allow downloading an unprepared TFDS dataset (needs network). If false, an
        unprepared dataset raises :class:`DatasetNotPreparedError` immediately.
      eval_batch_size: batch size of ``train_eval`` and ``test`` (# examples).
      train_eval_size: evaluate training metrics on the first this many training examples
        (# examples); ``None`` = all.
      feature_scale: override the automatic feature scale.
      train_split, test_split: TFDS split names.
      validation_size: examples moved from the training set into a validation set
        (# examples; 0 = none): a fixed subset, :func:`validation_indices`, independent of
        ``seed``. The training stream and ``train_eval`` then use the remaining examples.

    Returns:
      A :class:`Dataset`.

    Raises:
      UnknownDatasetError: unknown name (the message lists the available ones).
      DatasetNotPreparedError: a TFDS dataset is not prepared and ``download`` is false.
      ValueError: invalid sizes.
    """
    data = _load_arrays(name, data_dir, download, train_split, test_split)
    x_valid = y_valid = None
    if validation_size:
        total = len(data.x_train)
        if not isinstance(validation_size, int) or not 0 < validation_size < total:
            raise ValueError(
                f"load_dataset({name!r}): validation_size={validation_size!r} must be an integer "
                f"in [0, {total - 1}] (the number of training examples minus one)."
            )
        valid, keep = validation_indices(total, validation_size)
        x_valid, y_valid = data.x_train[valid], data.y_train[valid]
        data = dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])
    num_train, num_test = len(data.x_train), len(data.x_test)
    if not 0 < batch_size <= num_train:
        raise ValueError(
            f"load_dataset({name!r}): batch_size={batch_size} must be in [1, {num_train}] "
            "(the number of training examples)."
        )
    if eval_batch_size <= 0:
        raise ValueError(f"load_dataset({name!r}): eval_batch_size must be > 0.")
    if train_eval_size is not None and not 0 < train_eval_size <= num_train:
        raise ValueError(
            f"load_dataset({name!r}): train_eval_size={train_eval_size} must be in "
            f"[1, {num_train}] or None."
        )

    scale = _feature_scale(name, data.x_train, feature_scale)
    label_dtype = tf.int32 if data.task == synthetic.CLASSIFICATION else tf.float32

    def prepare(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.cast(x, tf.float32) * scale, tf.cast(y, label_dtype)

    x_train, y_train = tf.constant(data.x_train), tf.constant(data.y_train)

    def gather(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return prepare(tf.gather(x_train, indices), tf.gather(y_train, indices))

    def train_from(step: int) -> tf.data.Dataset:
        return _train_stream(num_train, batch_size, seed, step, gather)

    def finite(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(eval_batch_size)
        return ds.map(prepare).prefetch(tf.data.AUTOTUNE)

    eval_size = num_train if train_eval_size is None else train_eval_size
    return Dataset(
        name=name,
        task=data.task,
        input_shape=tuple(int(d) for d in data.x_train.shape[1:]),
        num_classes=data.num_classes,
        num_outputs=_num_outputs(data),
        num_train_examples=num_train,
        num_test_examples=num_test,
        batch_size=batch_size,
        seed=seed,
        train=train_from(0),
        train_eval=finite(data.x_train[:eval_size], data.y_train[:eval_size]),
        test=finite(data.x_test, data.y_test),
        _train_from=train_from,
        valid=None if x_valid is None else finite(x_valid, y_valid),
        num_valid_examples=0 if x_valid is None else len(x_valid),
    )


#: Seed of the validation subset (a property of the problem, never of the run).
VALIDATION_SEED = 0


def validation_indices(num_examples: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(valid, keep)``: ``size`` training indices drawn without replacement by
    ``default_rng(VALIDATION_SEED)`` and the rest, both in increasing order (deterministic)."""
    chosen = np.random.default_rng(VALIDATION_SEED).permutation(num_examples)[:size]
    mask = np.zeros(num_examples, bool)
    mask[chosen] = True
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def _num_outputs(data: synthetic.ArrayData) -> int:
    if data.task == synthetic.CLASSIFICATION:
        return int(data.num_classes)
    if data.task == synthetic.REGRESSION:
        return int(data.y_train.shape[-1]) if data.y_train.ndim > 1 else 1
    return 1
