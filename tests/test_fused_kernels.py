"""The fused ±1 kernel (``dirgrad_opt.kernels``): same bits as the stock ops, built once, optional.

The kernel only changes what a step costs, so every test here holds it to the stock ops'
exact bits — for ``directions.add_signs`` directly and for whole ``ZerothOrder`` runs in each
of its modes — and checks that the fused path really ran (its op is in the graph), that it
steps aside where it cannot run (XLA, a subclass's own perturbations, no compiler), and that a
clean machine builds it once and reuses the cached library.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import keras
import numpy as np
import problems
import pytest
import tensorflow as tf

from dirgrad_opt import directions, kernels, tree
from dirgrad_opt.optimizers.random_direction import ZerothOrder

REPO = Path(__file__).resolve().parents[1]
DTYPES = [tf.float16, tf.bfloat16, tf.float32, tf.float64]


@pytest.fixture(autouse=True)
def _fresh_decision():
    """Each test decides afresh whether the kernel is there, and leaves no decision behind."""
    kernels.reset()
    yield
    kernels.reset()


def _bits(x) -> np.ndarray:
    x = tf.convert_to_tensor(x)
    return tf.bitcast(x, {2: tf.uint16, 4: tf.uint32, 8: tf.uint64}[x.dtype.size]).numpy()


def _ops(fn, *args) -> set[str]:
    graph = fn.get_concrete_function(*args).graph.as_graph_def()
    ops = {n.op for n in graph.node}
    ops |= {n.op for f in graph.library.function for n in f.node_def}
    return ops


def _kernel() -> None:
    """Skips a test that needs the kernel where it cannot be built — but never in CI."""
    if kernels.library() is None and not os.environ.get("CI"):
        pytest.skip("no fused kernel here (no C++ compiler?): stock ops only")


def test_the_kernel_is_available_on_this_machine():
    """CI machines have a C++ compiler: the fused path must be what the other tests exercise."""
    _kernel()
    assert kernels.library() is not None
    assert directions.fused_signs([tf.float32])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_add_signs_kernel_gives_the_stock_ops_bits(dtype):
    """Every leaf of a tree (sizes off a word, a counter, one entry), several scales at once."""
    _kernel()
    shapes = [[37, 41], [1], [31], [32], [33], [4, 4, 5], [1000]]
    variables = [tf.zeros(s, dtype) for s in shapes]
    drawn = directions.rademacher_words(variables, seed=[5, 6])
    z = directions.rademacher(variables, seed=[5, 6])
    rng = np.random.default_rng(0)
    scales = [1e-3, -1e-3, 0.0, tf.constant(0.37, tf.float64)]
    for i, shape in enumerate(shapes):
        w = tf.constant(rng.standard_normal(shape), dtype)
        fused = directions.add_signs(w, drawn, i, scales, fused=True)
        stock = directions.add_signs(w, drawn, i, scales, fused=False)
        assert len(fused) == len(scales)
        for s, f, st in zip(scales, fused, stock, strict=True):
            assert f.dtype == dtype and f.shape == w.shape
            np.testing.assert_array_equal(_bits(f), _bits(st))
            # and both are w + s·z for the tree's own ±1 leaf
            scale = tf.cast(s, dtype) if isinstance(s, tf.Tensor) else tf.constant(s, dtype)
            np.testing.assert_array_equal(_bits(f), _bits(w + scale * z[i]))


def test_add_signs_kernel_matches_on_a_leaf_big_enough_to_be_split_across_threads():
    """Leaves of ≥ 2²⁰ entries are shared among the CPU threads; the bits must not change."""
    _kernel()
    variables = [tf.zeros([7]), tf.zeros([(1 << 20) + 37])]
    drawn = directions.rademacher_words(variables, seed=3)
    w = tf.random.stateless_normal([(1 << 20) + 37], seed=[1, 2])
    fused = directions.add_signs(w, drawn, 1, [0.5, -0.25], fused=True)
    stock = directions.add_signs(w, drawn, 1, [0.5, -0.25], fused=False)
    for f, s in zip(fused, stock, strict=True):
        np.testing.assert_array_equal(_bits(f), _bits(s))


def test_add_signs_kernel_refuses_words_that_do_not_cover_the_leaf():
    _kernel()
    short = directions.SignWords(
        tf.zeros([3], tf.int32), [directions._Segment([100], tf.float32, 100, 0)]
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="3 words from offset 0 hold fewer"):
        directions.add_signs(tf.zeros([100]), short, 0, [1.0], fused=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be a scalar"):
        kernels.library().dirgrad_sign_axpy(
            tf.zeros([10]), tf.zeros([1], tf.int32), [tf.zeros([2])], offset=0
        )


def test_under_xla_add_signs_uses_stock_ops():
    """The kernel has no XLA lowering: a compiled function gets the stock ops and runs."""
    variables = [tf.zeros([9, 7])]
    w = tf.random.stateless_normal([9, 7], seed=[3, 4])

    @tf.function(jit_compile=True)
    def compiled(w):
        drawn = directions.rademacher_words(variables, seed=1)
        assert not directions.fused_signs([tf.float32])
        out = directions.add_signs(w, drawn, 0, [0.5])[0]
        return out, w + 0.5 * directions.rademacher(variables, seed=1)[0]

    assert "DirgradSignAxpy" not in _ops(compiled, w)
    out, expected = compiled(w)
    np.testing.assert_array_equal(out.numpy(), expected.numpy())


def test_fused_signs_only_for_float_leaves_and_not_when_turned_off(monkeypatch):
    assert not directions.fused_signs([tf.float32, tf.int32])
    monkeypatch.setenv(kernels.DISABLE_ENV, "0")
    kernels.reset()
    assert kernels.library() is None
    assert not directions.fused_signs([tf.float32])
    with pytest.raises(RuntimeError, match="not available"):
        drawn = directions.rademacher_words([tf.zeros([4])], 0)
        directions.add_signs(tf.zeros([4]), drawn, 0, [1.0], fused=True)


def test_without_a_compiler_it_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.delenv(kernels.DISABLE_ENV, raising=False)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "cache"))
    kernels.reset()
    with pytest.warns(RuntimeWarning, match="could not be built or loaded"):
        assert kernels.library() is None
    assert kernels.library() is None  # decided once per process: no second warning or build
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-written left behind
    # and a zeroth-order step still runs, on stock ops
    v = keras.Variable(np.ones(5, np.float32))
    opt = ZerothOrder(learning_rate=0.1, distribution="rademacher")
    info = tf.function(lambda: opt.minimize(lambda: tf.reduce_sum(v * v), [v]))()
    assert bool(info["accepted"])


def test_an_unwritable_cache_directory_falls_back_to_the_temporary_directory(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(kernels.CACHE_ENV, str(blocker / "cache"))  # cannot be created
    assert kernels._usable_dir() == Path(tempfile.gettempdir()) / "dirgrad_opt-kernels"
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "cache"))
    assert kernels._usable_dir() == tmp_path / "cache" and (tmp_path / "cache").is_dir()


@pytest.mark.slow
def test_a_clean_machine_builds_the_kernel_once_and_reuses_it(tmp_path):
    """A fresh cache directory holding a damaged file where the kernel belongs: the first process
    rebuilds it (and uses it), a later one loads the file without building again."""
    _kernel()
    script = textwrap.dedent(
        """
        from dirgrad_opt import kernels
        lib = kernels.library()
        assert lib is not None
        out = lib.dirgrad_sign_axpy([1.0, 2.0], [1], [0.5], offset=0)[0].numpy().tolist()
        assert out == [0.5, 2.5], out  # bit 0 set: −0.5; bit 1 clear: +0.5
        print(sorted(p.name for p in kernels.cache_dir().iterdir()))
        """
    )
    cache = tmp_path / "cache"
    env = {**os.environ, kernels.CACHE_ENV: str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop(kernels.DISABLE_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    compiler = kernels._compiler()
    assert compiler is not None
    cache.mkdir()
    library = cache / f"sign_axpy-{kernels._build_key(compiler)}.so"
    library.write_bytes(b"not a shared library")  # e.g. a copy cut short
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "could not be built" not in done.stderr
        runs.append(done.stdout.strip().splitlines()[-1])
        if len(runs) == 1:
            built = library.stat().st_mtime_ns
            assert library.read_bytes()[:4] == b"\x7fELF"  # rebuilt in place
    assert runs == [f"['.build.lock', '{library.name}']"] * 2  # one file, no temporary left
    assert library.stat().st_mtime_ns == built  # the second process did not rebuild


def test_jobs_starting_together_build_once_and_the_others_wait_for_it(monkeypatch, tmp_path):
    """Two loaders at once on a clean cache (a sweep's workers starting on a fresh machine): the
    second arrives while the first is compiling, waits for it, and loads its file; one build."""
    monkeypatch.delenv(kernels.DISABLE_ENV, raising=False)
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(kernels, "_compiler", lambda: sys.executable)  # any program will do
    builds, building = [], threading.Event()

    def slow_build(compiler: str, target: Path) -> None:
        builds.append(target)
        building.set()
        time.sleep(1.0)  # a compile takes ~15 s; the other loader arrives meanwhile
        target.write_bytes(b"built")

    def load(path: str) -> str:
        assert Path(path).read_bytes() == b"built", "loaded before the build finished"
        return path

    monkeypatch.setattr(kernels, "_build", slow_build)
    monkeypatch.setattr(kernels.tf, "load_op_library", load)
    loaded = []
    first = threading.Thread(target=lambda: loaded.append(kernels._load()))
    second = threading.Thread(target=lambda: loaded.append(kernels._load()))
    first.start()
    assert building.wait(60)
    second.start()
    first.join(60)
    second.join(60)
    assert len(builds) == 1, builds
    assert loaded == [str(builds[0])] * 2


# ----------------------------------------------------------------------------- ZerothOrder


CONFIGS = {
    "exact": dict(),
    "exact-K3": dict(num_directions=3),
    "one-sided-K2": dict(one_sided=True, num_directions=2),
    "decay": dict(weight_decay=0.01),
    "rate-0": dict(learning_rate=problems.ZeroRate()),
    "in-place": dict(in_place=True),
    "in-place-K2": dict(in_place=True, num_directions=2),
    "in-place-one-sided": dict(in_place=True, one_sided=True),
    "in-place-decay": dict(in_place=True, weight_decay=0.01),
    "in-place-rate-0": dict(in_place=True, learning_rate=problems.ZeroRate()),
    "diagnostics": dict(diagnostics=True),
    "float64": dict(),
    "tf.Variable": dict(),
}


def _zo_run(config: str, fused: bool, monkeypatch) -> tuple[list[np.ndarray], dict, set[str]]:
    monkeypatch.setattr(ZerothOrder, "_fused", lambda self, ctx: fused and _real(self, ctx))
    variable = tf.Variable if config == "tf.Variable" else keras.Variable
    dtype = tf.float64 if config == "float64" else tf.float32
    variables, loss_fn = problems.mlp_problem(dtype=dtype, widths=(40, 3), variable=variable)
    kwargs = {"learning_rate": 0.05, "eps": 1e-2, "distribution": "rademacher", "seed": 4}
    opt = ZerothOrder(**{**kwargs, **CONFIGS[config]})
    opt.build(variables)

    @tf.function
    def step():
        return opt.minimize(loss_fn, variables)

    infos = [step() for _ in range(4)]
    metrics = {k: np.array([float(i[k]) for i in infos]) for k in infos[0]}
    return [tree._value(v).numpy() for v in variables], metrics, _ops(step)


_real = ZerothOrder._fused


@pytest.mark.parametrize("config", list(CONFIGS))
def test_zeroth_order_steps_are_bit_identical_with_and_without_the_kernel(config, monkeypatch):
    _kernel()
    weights, metrics, ops = _zo_run(config, True, monkeypatch)
    stock_weights, stock_metrics, stock_ops = _zo_run(config, False, monkeypatch)
    assert "DirgradSignAxpy" in ops  # the fused path ran
    assert "DirgradSignAxpy" not in stock_ops
    for w, s in zip(weights, stock_weights, strict=True):
        np.testing.assert_array_equal(_bits(w), _bits(s))
    assert metrics.keys() == stock_metrics.keys()
    for k in metrics:
        np.testing.assert_array_equal(metrics[k], stock_metrics[k], err_msg=k)
    if "rate-0" not in config:
        start = problems.mlp_problem(widths=(40, 3))[0][0].numpy()  # the same draw (seed 0)
        assert not np.array_equal(weights[0], start)  # it moved


def test_the_exact_step_never_materialises_z_with_the_kernel(monkeypatch):
    """One K=1 exact step: no sign spread (no gather of the sign table), one kernel per pass."""
    _kernel()
    _, _, ops = _zo_run("exact", True, monkeypatch)
    assert "GatherV2" not in ops and "LeftShift" not in ops
    _, _, stock_ops = _zo_run("exact", False, monkeypatch)
    assert "GatherV2" in stock_ops  # the test can tell the two apart


def test_a_subclass_with_its_own_perturbations_keeps_them():
    """Overriding ``perturbation(s)`` turns the fused path off: the subclass's z is used."""

    class Halved(ZerothOrder):
        def perturbation(self, variables, seed, index):
            return 0.5 * super().perturbation(variables, seed, index)

        def perturbations(self, variables, seed):
            return [0.5 * z for z in super().perturbations(variables, seed)]

    variables, loss_fn = problems.mlp_problem(widths=(40, 3), variable=keras.Variable)
    start = [v.numpy() for v in variables]
    kwargs = {"learning_rate": 0.05, "eps": 1e-2, "distribution": "rademacher", "seed": 4}
    for mode in (False, True):
        for v, s in zip(variables, start, strict=True):
            v.assign(s)
        opt = Halved(in_place=mode, **kwargs)
        opt.build(variables)
        z = [p.numpy() for p in opt.perturbations(variables, _seed(4, 0))]
        info = tf.function(lambda opt=opt: opt.minimize(loss_fn, variables))()
        step = float(info["step_size"])
        coefficient = float(tf.sqrt(-info["slope"]))
        moved = [s - v.numpy() for v, s in zip(variables, start, strict=True)]
        # w moved along ±η c z with the subclass's halved z (|entries| = 0.5 η |c|)
        for m, zi in zip(moved, z, strict=True):
            np.testing.assert_allclose(np.abs(m), step * coefficient * np.abs(zi), rtol=1e-3)


def _seed(seed: int, iteration: int) -> tf.Tensor:
    """Direction 0's seed of step ``iteration`` (as ZerothOrder.step derives it)."""
    return directions.make_seed(directions.make_seed(seed, iteration), 0)
