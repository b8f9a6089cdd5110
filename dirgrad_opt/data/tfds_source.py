"""TFDS access that fails fast instead of hanging when a dataset would need the network.

``tfds.load('mnist')`` on a machine without network access retries its download for minutes.
Here a dataset is only downloaded when the caller asks for it (``download=True``); otherwise an
unprepared dataset raises :class:`DatasetNotPreparedError` at once, naming the dataset, the
``data_dir`` and the command that prepares it. The builders in :mod:`dirgrad_opt.data.builders`
(``mnist1d``, ``digits``) need no network, so they are always prepared on first use.

``data_dir=None`` means the TFDS default: ``$TFDS_DATA_DIR`` if set, else
``~/tensorflow_datasets``.
"""

from __future__ import annotations

import difflib

import gin
import tensorflow as tf
import tensorflow_datasets as tfds

from dirgrad_opt.data import builders  # Registers the offline builders with TFDS.

OFFLINE_DATASETS = builders.OFFLINE_DATASETS


class DatasetNotPreparedError(ValueError):
    """A TFDS dataset is not prepared in its ``data_dir`` and downloading was not allowed."""


class UnknownDatasetError(ValueError):
    """A dataset name is neither a TFDS dataset nor one of ours."""


def unknown_dataset_message(name: str, extra_names: tuple[str, ...] = ()) -> str:
    """Say that ``name`` is unknown, suggest close TFDS/extra names, and list the offline ones."""
    base = name.split(":")[0].split("/")[0]
    close = difflib.get_close_matches(base, [*extra_names, *tfds.list_builders()], n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    offline = ", ".join([*extra_names, *OFFLINE_DATASETS])
    return (
        f"unknown dataset {name!r}.{hint} Available without network: {offline}; any other "
        "name must be a TFDS dataset such as 'mnist', 'fashion_mnist' or 'cifar10' (full list: "
        "tensorflow_datasets.list_builders())."
    )


def prepared_builder(
    name: str, data_dir: str | None = None, download: bool = False
) -> tfds.core.DatasetBuilder:
    """Return the TFDS builder of ``name``, prepared in ``data_dir``, without hanging.

    Order of checks: an unknown name is a ``ValueError`` (with close matches); a prepared
    dataset is returned as is; an offline builder (``mnist1d``, ``digits``) is prepared locally;
    any other dataset is downloaded and prepared only if ``download`` is true, else
    :class:`DatasetNotPreparedError` is raised immediately.

    Args:
      name: TFDS name, optionally with config and version (``"mnist"``, ``"cifar10:3.0.2"``).
      data_dir: TFDS data directory; ``None`` uses ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      download: allow downloading a dataset that is not prepared (needs network access).

    Returns:
      A builder whose ``is_prepared()`` is true.

    Raises:
      UnknownDatasetError: ``name`` is not a registered TFDS dataset (a ``ValueError``).
      DatasetNotPreparedError: the dataset is not prepared and ``download`` is false.
    """
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise UnknownDatasetError(unknown_dataset_message(name)) from error
    if builder.is_prepared():
        return builder
    if builder.name in OFFLINE_DATASETS or download:
        builder.download_and_prepare()
        return builder
    root = str(builder.data_dir_root)
    raise DatasetNotPreparedError(
        f"TFDS dataset {name!r} is not prepared in data_dir {root!r} (looked for "
        f"{builder.data_dir!r}) and download=False, so it was not downloaded. Either prepare it "
        f"once where there is network access: `tfds build {builder.name} --data_dir={root}` "
        "(then copy that directory here, or set TFDS_DATA_DIR), or allow the download with "
        "download=True (gin: `load_dataset.download = True`). Datasets that need no network: "
        f"{', '.join(OFFLINE_DATASETS)} and the synthetic ones in dirgrad_opt.data."
    )


@gin.configurable
def tfds_dataset(
    name: str,
    split: str,
    data_dir: str | None = None,
    download: bool = False,
    batch_size: int | None = None,
) -> tf.data.Dataset:
    """Load one split of a TFDS dataset as ``(features, label)`` pairs, failing fast if absent.

    Features and labels keep their stored dtypes (images stay uint8); normalisation is done by
    :func:`dirgrad_opt.data.load_dataset`. See :func:`prepared_builder` for the checks.
    ``load_dataset`` passes its own ``data_dir`` and ``download``: bind those on
    ``load_dataset`` in gin, not here.

    Args:
      name: TFDS name (``"mnist1d"``, ``"digits"``, ``"mnist"``, ``"fashion_mnist"``, ...).
      split: TFDS split string (``"train"``, ``"test"``, ``"train[:10%]"``).
      data_dir: TFDS data directory; ``None`` uses ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      download: allow downloading a dataset that is not prepared (needs network access).
      batch_size: passed to ``as_dataset``; ``-1`` returns the whole split as one batch.

    Returns:
      A finite, unshuffled ``tf.data.Dataset`` of ``(features, label)`` tuples.

    Raises:
      ValueError: unknown name, or a dataset without supervised keys.
      DatasetNotPreparedError: not prepared and ``download`` is false.
    """
    builder = prepared_builder(name, data_dir=data_dir, download=download)
    if builder.info.supervised_keys is None:
        raise ValueError(
            f"TFDS dataset {name!r} has no supervised keys (input, label); only supervised "
            "datasets can be loaded as (features, label) pairs."
        )
    return builder.as_dataset(
        split=split, as_supervised=True, shuffle_files=False, batch_size=batch_size
    )
