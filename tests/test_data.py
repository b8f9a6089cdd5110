"""Tests of dirgrad_opt.data: offline builders, fail-fast TFDS, pipelines, resumability, gin."""

from __future__ import annotations

import pathlib

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from dirgrad_opt import data

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs" / "datasets"

tfds.disable_progress_bar()


@pytest.fixture(autouse=True)
def _clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def mnist1d(data_dir):
    """MNIST-1D prepared into a fresh data_dir; also reports whether global RNG was touched."""
    before = np.random.get_state()[1].copy()  # noqa: NPY002 (the legacy global state)
    ds = data.load_dataset("mnist1d", batch_size=100, seed=3, data_dir=data_dir)
    return ds, np.array_equal(before, np.random.get_state()[1])  # noqa: NPY002


def _take(dataset: tf.data.Dataset, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(n)]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_mnist1d_prepares_offline_with_expected_shapes(mnist1d, data_dir):
    ds, rng_untouched = mnist1d
    assert rng_untouched, "preparing mnist1d must not reseed NumPy's global generator"
    assert ds.task == "classification" and ds.input_shape == (40,)
    assert ds.num_classes == ds.num_outputs == 10
    assert (ds.num_train_examples, ds.num_test_examples) == (4000, 1000)
    x, y = next(iter(ds.train))
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((100, 40), tf.float32, (100,), tf.int32)
    test_x = np.concatenate([x for x, _ in ds.test.as_numpy_iterator()])
    test_y = np.concatenate([y for _, y in ds.test.as_numpy_iterator()])
    assert test_x.shape == (1000, 40) and set(np.unique(test_y)) == set(range(10))
    assert abs(test_x.mean()) < 0.1 and 0.8 < test_x.std() < 1.2  # package standardises
    # Plain tfds.load reloads what the builder wrote, with no network.
    assert len(tfds.load("mnist1d", split="train", data_dir=data_dir)) == 4000


def test_digits_prepare_offline_split_and_scale(data_dir):
    from sklearn.datasets import load_digits

    ds = data.load_dataset("digits", batch_size=50, seed=0, data_dir=data_dir)
    assert (ds.input_shape, ds.num_train_examples, ds.num_test_examples) == ((8, 8, 1), 1437, 360)
    batches = [b for split in (ds.train_eval, ds.test) for b in split.as_numpy_iterator()]
    x = np.concatenate([x for x, _ in batches])
    y = np.concatenate([y for _, y in batches])
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(x * 16, np.round(x * 16))  # exactly k / 16
    reference = load_digits()
    np.testing.assert_array_equal(np.bincount(y), np.bincount(reference.target))
    np.testing.assert_array_equal(  # same images, as a multiset
        np.sort(x.reshape(len(x), -1) * 16, axis=0), np.sort(reference.data, axis=0)
    )
    again = data.load_dataset("digits", batch_size=50, data_dir=data_dir)
    _assert_same_batches(_take(ds.test, 1), _take(again.test, 1))  # deterministic split


def test_shuffling_is_deterministic_per_seed_and_each_epoch_is_a_permutation():
    gin.bind_parameter("gaussian_blobs.num_train", 100)
    a = data.load_dataset("blobs", batch_size=10, seed=1)
    b = data.load_dataset("blobs", batch_size=10, seed=1)
    c = data.load_dataset("blobs", batch_size=10, seed=2)
    _assert_same_batches(_take(a.train, 25), _take(b.train, 25))
    assert not np.array_equal(_take(a.train, 1)[0][0], _take(c.train, 1)[0][0])
    epochs = np.concatenate([x for x, _ in _take(a.train, 20)]).reshape(2, 100, -1)
    train = np.concatenate([x for x, _ in a.train_eval.as_numpy_iterator()])
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch, axis=0), np.sort(train, axis=0))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch


@pytest.mark.parametrize("step", [0, 3, 4, 7, 11])
def test_train_from_step_equals_skipping(step):
    gin.bind_parameter("gaussian_blobs.num_train", 100)
    ds = data.load_dataset("blobs", batch_size=30, seed=4)  # batches straddle epochs
    _assert_same_batches(_take(ds.train_from(step), 5), _take(ds.train.skip(step), 5))
    assert ds.epoch(10) == pytest.approx(3.0)


def test_train_iterator_checkpoint_restores_position(tmp_path):
    ds = data.load_dataset("blobs", batch_size=16, seed=0)
    iterator = iter(ds.train)
    for _ in range(70):  # past an epoch boundary (1000 / 16 = 62.5 steps)
        next(iterator)
    path = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "ckpt"))
    expected = [next(iterator) for _ in range(3)]
    restored = iter(ds.train)
    tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
    got = [next(restored) for _ in range(3)]
    _assert_same_batches(
        [(x.numpy(), y.numpy()) for x, y in got], [(x.numpy(), y.numpy()) for x, y in expected]
    )
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 200_000  # no data copies


def _forbid_downloads(monkeypatch):
    """ "Fails fast" means no download is attempted (it would retry for minutes offline)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)


def test_unprepared_tfds_dataset_fails_fast_with_instructions(tmp_path, monkeypatch):
    _forbid_downloads(monkeypatch)
    for call in (
        lambda: data.load_dataset("mnist", data_dir=str(tmp_path)),
        lambda: data.tfds_dataset("mnist", "train", data_dir=str(tmp_path)),
    ):
        with pytest.raises(data.DatasetNotPreparedError) as info:
            call()
        message = str(info.value)
        for needle in ("'mnist'", str(tmp_path), "tfds build mnist", "download=True", "mnist1d"):
            assert needle in message
    assert not (tmp_path / "mnist").exists()  # nothing half-written


def test_unknown_dataset_lists_available_ones(monkeypatch):
    _forbid_downloads(monkeypatch)
    with pytest.raises(data.UnknownDatasetError) as info:
        data.load_dataset("mnsit")
    message = str(info.value)
    for needle in ("'mnsit'", "Did you mean", "'mnist'", "blobs", "analytic", "mnist1d", "digits"):
        assert needle in message
    assert isinstance(info.value, ValueError)


def test_synthetic_regression_and_analytic_datasets():
    reg = data.load_dataset("linear_regression", batch_size=8)
    x, y = next(iter(reg.train))
    assert (reg.task, reg.num_classes, reg.num_outputs) == ("regression", None, 1)
    assert (x.shape, y.shape, y.dtype) == ((8, 10), (8, 1), tf.float32)
    gin.bind_parameter("analytic_noise.noise_scale", 2.0)
    gin.bind_parameter("analytic_noise.dim", 3)
    noisy = data.load_dataset("analytic", batch_size=10)
    train = np.concatenate([x for x, _ in noisy.train_eval.as_numpy_iterator()])
    assert noisy.task == "objective" and noisy.input_shape == (3,)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-5)  # centred
    assert 1.5 < train.std() < 2.5
    test_x, _ = next(iter(noisy.test))
    np.testing.assert_array_equal(test_x.numpy(), np.zeros((1, 3)))


def test_load_dataset_validates_sizes():
    with pytest.raises(ValueError, match="batch_size=5000 must be in \\[1, 1000\\]"):
        data.load_dataset("blobs", batch_size=5000)
    with pytest.raises(ValueError, match="train_eval_size"):
        data.load_dataset("blobs", train_eval_size=0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        data.load_dataset("blobs").train_from(-1)


def test_dataset_gin_files_parse_and_bind_load_dataset(mnist1d, data_dir, tmp_path):
    files = sorted(CONFIG_DIR.glob("*.gin"))
    assert {"mnist1d", "digits", "mnist", "fashion_mnist", "cifar10"} <= {f.stem for f in files}
    for path in files:
        gin.clear_config()
        gin.parse_config_file(str(path), skip_unknown=False)
        if path.stem in data.OFFLINE_DATASETS:
            gin.bind_parameter("load_dataset.data_dir", data_dir)
            assert data.load_dataset().name == path.stem
        else:  # Real TFDS data are not available in tests: the binding must still be right.
            gin.bind_parameter("load_dataset.data_dir", str(tmp_path))
            with pytest.raises(data.DatasetNotPreparedError, match=repr(path.stem)):
                data.load_dataset()
