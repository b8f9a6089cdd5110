"""Datasets for dirgrad_opt: TFDS (failing fast when offline), offline builders, synthetic data.

Contract with the training loop::

    ds = load_dataset(name="mnist1d", batch_size=100, seed=0)     # usually configured by gin
    for x, y in ds.train_from(step).take(num_steps - step): ...    # resumes at `step`, O(1)
    for x, y in ds.test: ...                                       # finite, unshuffled

* ``load_dataset(name, batch_size=128, seed=0, data_dir=None, download=False,
  eval_batch_size=1000, train_eval_size=None, feature_scale=None, train_split="train",
  test_split="test") -> Dataset``.
* ``Dataset`` fields: ``name, task, input_shape, num_classes, num_outputs, num_train_examples,
  num_test_examples, batch_size, seed, train, train_eval, test``; methods ``train_from(step)``,
  ``epoch(step)``. ``task`` is ``"classification"`` (int32 labels ``[B]``), ``"regression"``
  (float32 targets ``[B, k]``) or ``"objective"`` (analytic problems; float32 zero labels,
  ignored). Build the model with ``num_outputs`` as its output width.
* Resuming: epoch e visits the training set in the order ``stateless_shuffle(range(N),
  seed=[seed, e])``, so ``ds.train_from(s)`` yields exactly the batches of ``ds.train`` after
  ``s`` steps, without replaying them. Alternatively, an iterator over ``ds.train`` can be put in
  a ``tf.train.Checkpoint`` (its state is a few counters and one epoch's index permutation).
* Names: synthetic ``blobs``, ``linear_regression``, ``analytic`` (noise inputs of the analytic
  problems in :mod:`dirgrad_opt.models`); offline TFDS builders ``mnist1d`` (4000/1000, 40
  features) and ``digits`` (1437/360, 8x8x1); any prepared TFDS classification dataset
  (``mnist``, ``fashion_mnist``, ``cifar10``...); any name given to ``register_dataset(name,
  fn)`` (:mod:`dirgrad_opt.data.user`: NumPy arrays in the keras.datasets layout or a tf.data
  pair; the task follows the targets). An unprepared TFDS dataset raises
  :class:`DatasetNotPreparedError` at once unless ``download=True``.
"""

from dirgrad_opt.data.builders import OFFLINE_DATASETS
from dirgrad_opt.data.datasets import Dataset, load_dataset
from dirgrad_opt.data.offline import OFFLINE_PROBLEM_DATASETS
from dirgrad_opt.data.synthetic import (
    CLASSIFICATION,
    OBJECTIVE,
    REGRESSION,
    SYNTHETIC_DATASETS,
    TASKS,
    ArrayData,
    analytic_noise,
    gaussian_blobs,
    linear_regression,
)
from dirgrad_opt.data.tfds_source import (
    DatasetNotPreparedError,
    UnknownDatasetError,
    prepared_builder,
    tfds_dataset,
)
from dirgrad_opt.data.user import USER_DATASETS, register_dataset, short_repr

SYNTHETIC_DATASETS.update(OFFLINE_PROBLEM_DATASETS)  # the benchmark problems' offline data

__all__ = [
    "CLASSIFICATION",
    "OBJECTIVE",
    "OFFLINE_DATASETS",
    "REGRESSION",
    "SYNTHETIC_DATASETS",
    "TASKS",
    "USER_DATASETS",
    "ArrayData",
    "Dataset",
    "DatasetNotPreparedError",
    "UnknownDatasetError",
    "analytic_noise",
    "gaussian_blobs",
    "linear_regression",
    "load_dataset",
    "prepared_builder",
    "register_dataset",
    "short_repr",
    "tfds_dataset",
]
