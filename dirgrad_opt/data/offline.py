"""Offline data of the benchmark problems (:mod:`dirgrad_opt.problems`): no files, no network.

* ``deepobs_quadratic``: DeepOBS's ``quadratic`` data set — ``train_size`` draws
  x ~ N(0, σ² I) in ``dim`` dimensions (train from ``RandomState(42)``, test from
  ``RandomState(43)``; σ = 0.6, 1000 × 100 as in DeepOBS), the shifts of the loss
  ½ (θ − x)ᵀ Q (θ − x) of :func:`dirgrad_opt.models.problem_models.shifted_quadratic`.
* ``nqm_noise``: the gradient noise of the noisy quadratic model (Zhang et al. 2019): inputs
  ξᵢ = √h ⊙ zᵢ, zᵢ ~ N(0, I), centred over the training set, with h the model's diagonal
  curvature hⱼ = 1/j, so the per-example gradient noise covariance is C = H (the NQM's
  assumption) and a batch of B has C/B. The test split is one zero vector (the exact objective).
* ``python_chars``: a character-level language-modelling corpus built from a pinned list of
  the running Python's standard-library source files (:data:`CORPUS_FILES`); identical on every
  run for a given Python version, whose SHA-256 is :func:`corpus_hash` (recorded per version in
  :data:`KNOWN_CORPUS_HASHES`).

Each is ``@gin.configurable`` and returns an :class:`~dirgrad_opt.data.synthetic.ArrayData`;
they are registered as dataset names of :func:`dirgrad_opt.data.load_dataset`.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import sysconfig
from pathlib import Path

import gin
import numpy as np
from absl import logging

from dirgrad_opt.data.synthetic import CLASSIFICATION, OBJECTIVE, ArrayData

# -- DeepOBS quadratic ---------------------------------------------------------------------------
DEEPOBS_TRAIN_SEED = 42
DEEPOBS_TEST_SEED = 43


@gin.configurable
def deepobs_quadratic(
    dim: int = 100, train_size: int = 1000, noise_level: float = 0.6
) -> ArrayData:
    """DeepOBS's quadratic data: x ~ N(0, noise_level² I), ``train_size`` × ``dim`` per split.

    The draws are DeepOBS's: ``RandomState(42).normal(0, σ, (n, dim))`` for train and
    ``RandomState(43)`` for test, as float32.

    Args:
      dim: dimension of the quadratic (DeepOBS: 100).
      train_size: examples per split (DeepOBS: 1000).
      noise_level: σ, the standard deviation of the shifts (DeepOBS: 0.6).

    Returns:
      An :class:`ArrayData` of task ``"objective"`` (zero labels, unused).
    """
    if dim < 1 or train_size < 1 or noise_level < 0:
        raise ValueError(
            f"deepobs_quadratic: need dim >= 1, train_size >= 1, noise_level >= 0; got {dim}, "
            f"{train_size}, {noise_level}"
        )
    splits = []
    for seed in (DEEPOBS_TRAIN_SEED, DEEPOBS_TEST_SEED):
        rng = np.random.RandomState(seed)
        splits.append(rng.normal(0.0, noise_level, (train_size, dim)).astype(np.float32))
    zeros = np.zeros(train_size, np.float32)
    return ArrayData(splits[0], zeros, splits[1], zeros.copy(), task=OBJECTIVE)


# -- noisy quadratic model ----------------------------------------------------------------------
def nqm_curvature(dim: int) -> np.ndarray:
    """The NQM's diagonal curvature hⱼ = 1/j, j = 1..dim (Zhang et al. 2019, §3)."""
    return 1.0 / np.arange(1, dim + 1, dtype=np.float64)


@gin.configurable
def nqm_noise(dim: int = 1000, num_train: int = 2000, data_seed: int = 0) -> ArrayData:
    """Inputs of the noisy quadratic model: ξᵢ = √h ⊙ (zᵢ − z̄), zᵢ ~ N(0, I).

    With the analytic contract outᵢ = f(w) + ξᵢᵀ(w − w*), a batch of B gives the gradient
    ∇f(w) + ξ̄ whose noise has covariance ≈ H/B (C = H, the NQM's assumption). Centred, so the
    full-training-set loss is f(w) exactly; the test split is one zero vector (f(w)).

    Args:
      dim: parameters (the paper uses 10⁴; 1000 keeps the data at 8 MB).
      num_train: noise vectors per epoch.
      data_seed: seed of the noise.

    Returns:
      An :class:`ArrayData` of task ``"objective"``.
    """
    if dim < 1 or num_train < 2:
        raise ValueError(f"nqm_noise: need dim >= 1 and num_train >= 2, got {dim}, {num_train}")
    z = np.random.default_rng(data_seed).standard_normal((num_train, dim))
    x = ((z - z.mean(axis=0)) * np.sqrt(nqm_curvature(dim))).astype(np.float32)
    return ArrayData(
        x,
        np.zeros(num_train, np.float32),
        np.zeros((1, dim), np.float32),
        np.zeros(1, np.float32),
        task=OBJECTIVE,
    )


# -- character-level corpus ---------------------------------------------------------------------
#: Standard-library modules of the corpus, in order: pure-Python files present on every
#: CPython 3.x build (321 675 bytes on 3.11.7).
CORPUS_FILES = (
    "textwrap.py",
    "string.py",
    "heapq.py",
    "bisect.py",
    "fnmatch.py",
    "glob.py",
    "shlex.py",
    "colorsys.py",
    "keyword.py",
    "queue.py",
    "copy.py",
    "abc.py",
    "contextlib.py",
    "functools.py",
    "dataclasses.py",
    "random.py",
    "statistics.py",
)
#: SHA-256 of the concatenated corpus files, by Python version (``platform.python_version()``).
KNOWN_CORPUS_HASHES = {
    "3.11.7": "8ea160eebb14037651341d20ac1948a70da3d8d3dd5390b0d063bd0b29d502d0",
}
#: Vocabulary: 0 = any other byte, 1 = newline, 2.. = printable ASCII 32..126.
VOCAB_SIZE = 2 + 95


def corpus_bytes(files: tuple[str, ...] = CORPUS_FILES) -> bytes:
    """The corpus: the listed standard-library files' bytes, concatenated in order.

    Raises:
      FileNotFoundError: a listed file is missing from this Python's standard library.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in files:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(
                f"python_chars: the standard-library file {str(path)!r} is missing; the corpus "
                "needs a full CPython standard library"
            )
        parts.append(path.read_bytes())
    return b"".join(parts)


def corpus_hash(files: tuple[str, ...] = CORPUS_FILES) -> str:
    """SHA-256 (hex) of :func:`corpus_bytes`."""
    return hashlib.sha256(corpus_bytes(files)).hexdigest()


def encode(text: bytes) -> np.ndarray:
    """Byte string → int32 ids: printable ASCII b ↦ b − 30, newline ↦ 1, other ↦ 0."""
    b = np.frombuffer(text, np.uint8).astype(np.int32)
    ids = np.where((b >= 32) & (b <= 126), b - 30, 0)
    return np.where(b == 10, 1, ids).astype(np.int32)


@functools.lru_cache(maxsize=4)
def _encoded_corpus() -> tuple[np.ndarray, str]:
    data = corpus_bytes()
    digest = hashlib.sha256(data).hexdigest()
    known = KNOWN_CORPUS_HASHES.get(platform.python_version())
    if known is not None and known != digest:
        raise ValueError(
            f"python_chars: the corpus hash on Python {platform.python_version()} is {digest}, "
            f"but {known} is recorded for it; the standard library was modified"
        )
    if known is None:
        logging.warning(
            "python_chars: no corpus hash recorded for Python %s; this one is %s",
            platform.python_version(),
            digest,
        )
    return encode(data), digest


@gin.configurable
def python_chars(sequence_length: int = 64, test_fraction: float = 0.1) -> ArrayData:
    """Next-character prediction on the standard-library corpus (:data:`CORPUS_FILES`).

    The encoded corpus c is split by position: the last ``test_fraction`` is the test text.
    Each split is cut into non-overlapping windows of ``sequence_length`` characters:
    x = c[i : i + T] (ids as float32), y = c[i + 1 : i + T + 1] (int32) — a sequence
    classification task with :data:`VOCAB_SIZE` classes per position.

    Args:
      sequence_length: T, characters per example.
      test_fraction: fraction of the corpus (by position) held out as the test text.

    Returns:
      An :class:`ArrayData` with x ``[N, T]`` and y ``[N, T]``.
    """
    if sequence_length < 2 or not 0 < test_fraction < 1:
        raise ValueError(
            f"python_chars: need sequence_length >= 2 and 0 < test_fraction < 1, got "
            f"{sequence_length}, {test_fraction}"
        )
    ids, _ = _encoded_corpus()
    cut = int(len(ids) * (1 - test_fraction))

    def windows(text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = (len(text) - 1) // sequence_length
        x = text[: n * sequence_length].reshape(n, sequence_length)
        y = text[1 : n * sequence_length + 1].reshape(n, sequence_length)
        return x.astype(np.float32), y.astype(np.int32)

    x_train, y_train = windows(ids[:cut])
    x_test, y_test = windows(ids[cut:])
    return ArrayData(x_train, y_train, x_test, y_test, task=CLASSIFICATION, num_classes=VOCAB_SIZE)


#: Dataset names this module adds to :func:`dirgrad_opt.data.load_dataset`.
OFFLINE_PROBLEM_DATASETS = {
    "deepobs_quadratic": deepobs_quadratic,
    "nqm_noise": nqm_noise,
    "python_chars": python_chars,
}
