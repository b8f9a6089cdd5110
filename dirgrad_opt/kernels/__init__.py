"""Fused CPU kernels, compiled from source on first use; stock TF ops stand in without them.

TF's graph executor runs every op as its own pass over its data, and on a small model the
passes a zeroth-order step adds around its two forward passes — spread the random bits into a
±1 tensor ``z``, form ``w + εz`` and ``w − εz``, then ``w − a·z`` — cost as much as the forward
passes themselves. ``sign_axpy.cc`` does each in one pass straight from the random words
(``z`` is never materialised); see :func:`dirgrad_opt.directions.add_signs`, which picks the
kernel or the stock ops (bit-identical results, tested).

The kernel is compiled with the C++ compiler TensorFlow's own headers are used with
(``tf.sysconfig.get_compile_flags``; ``$CXX``, else ``c++``/``g++``) and loaded with
``tf.load_op_library`` — once per machine: the library is cached under
``$DIRGRAD_OPT_CACHE`` (default ``~/.cache/dirgrad_opt``), keyed by the source, TensorFlow's
version and flags, and the compiler, and written by an atomic rename, so concurrent jobs never
load a half-written file; a cached file that does not load is rebuilt. One process at a time
builds (an ``fcntl.flock`` on ``.build.lock`` in the cache folder): the workers of a sweep that
start together on a fresh machine compile once, and the others wait for that build and load
it. Without a compiler, or if the build fails, :func:`library` warns once and returns
``None``, and callers use the stock ops. ``DIRGRAD_OPT_FUSED_KERNELS=0`` turns the kernels off.
Where the cache folder cannot be written, builds go to a folder in the system's temporary
directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tensorflow as tf

__all__ = ["DISABLE_ENV", "CACHE_ENV", "cache_dir", "library", "reset"]

DISABLE_ENV = "DIRGRAD_OPT_FUSED_KERNELS"
CACHE_ENV = "DIRGRAD_OPT_CACHE"
_SOURCE = Path(__file__).with_name("sign_axpy.cc")
_FLAGS = ["-shared", "-fPIC", "-O3", "-ffp-contract=off"]
_BUILD_TIMEOUT_S = 600

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "library": the loaded module or None, once decided


def cache_dir() -> Path:
    """Where built kernels are kept: ``$DIRGRAD_OPT_CACHE``, else ``~/.cache/dirgrad_opt``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "dirgrad_opt"


def _usable_dir() -> Path:
    """:func:`cache_dir`, or a folder under the system's temporary directory where that cannot
    be written (a read-only home on a CI runner): a build there lasts until the next reboot."""
    preferred = cache_dir()
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "dirgrad_opt-kernels"


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _cpu_flags() -> list[str]:
    """``-mavx2`` where this x86 CPU has AVX2 (read from Linux's ``/proc/cpuinfo``), else none.

    The kernel is built on the machine that runs it, so it may use that machine's vector width:
    8 floats a step instead of SSE2's 4 (measured: the probe-point pass of a 65k-entry leaf
    ~20 % faster). Not ``-march=native``: TF's Eigen headers do not compile with GCC 12's
    AVX-512-FP16 support. The flags are part of the cache key, so a cache shared by machines
    with different CPUs holds one build per CPU kind. No FMA (``-ffp-contract=off``): the bits
    must equal the stock ops'.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            return ["-mavx2"] if "avx2" in line.split() else []
    return []


def _command(compiler: str, output: str) -> list[str]:
    """The compile command: the one place its flags are listed (the cache key hashes it)."""
    return [
        compiler,
        *_FLAGS,
        *_cpu_flags(),
        str(_SOURCE),
        "-o",
        output,
        *tf.sysconfig.get_compile_flags(),
        *tf.sysconfig.get_link_flags(),
    ]


def _build_key(compiler: str) -> str:
    """What the binary depends on: source, TF version, the compile command, compiler version,
    machine."""
    try:
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except OSError:
        version = ""
    parts = [
        _SOURCE.read_text(),
        tf.__version__,
        " ".join(_command(compiler, "")),
        version,
        platform.machine(),
        sys.platform,
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _build(compiler: str, target: Path) -> None:
    """Compiles the kernel to ``target`` (a temporary file renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    command = _command(compiler, tmp)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"`{' '.join(command)}` failed:\n{tail}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: another job sees the old file or the whole new one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Holds ``folder/.build.lock`` exclusively: one build at a time across processes (and
    across threads, since ``flock`` locks are per open file); the OS releases it if the holder
    dies, so a killed build never blocks the next one."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load() -> Any:
    if os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if sys.byteorder != "little":  # the kernel reads bits in the value order of a word
        return None
    compiler = _compiler()
    if compiler is None:
        warnings.warn(
            "dirgrad_opt: no C++ compiler (set $CXX, or install g++), so the fused ±1 kernels "
            "are not built; zeroth-order steps use stock TF ops (same numbers, slower)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    folder = _usable_dir()
    target = folder / f"sign_axpy-{_build_key(compiler)}.so"
    try:
        with _build_lock(folder):  # a process that waited here finds the file built
            if target.exists():
                try:
                    return tf.load_op_library(str(target))
                except tf.errors.OpError:  # a damaged cached file (a disk that filled up, a
                    target.unlink(missing_ok=True)  # stray write): build it again, once
            _build(compiler, target)
            return tf.load_op_library(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError, tf.errors.OpError) as err:
        warnings.warn(
            f"dirgrad_opt: the fused ±1 kernel could not be built or loaded ({err}); "
            "zeroth-order steps use stock TF ops (same numbers, slower)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def library() -> Any:
    """The loaded kernel library (``.dirgrad_sign_axpy``), or ``None`` where there is none.

    Built and loaded on the first call of a process (~15 s to compile, once per machine), then
    cached; thread-safe.
    """
    with _lock:
        if "library" not in _state:
            _state["library"] = _load()
        return _state["library"]


def reset() -> None:
    """Forgets this process's decision, so the next :func:`library` call decides again (tests).

    A library TF has already loaded stays registered; only the decision to use it is redone.
    """
    with _lock:
        _state.clear()
