"""Every optimizer of the package has a benchmark tuning grid (the end-to-end run of one of the
issue-12 optimizers is in tests/test_benchmark.py's benchmark fixture)."""

import re
from pathlib import Path

import pytest

from dirgrad_opt.optimizers import DirectionalOptimizer
from dirgrad_opt.problems import benchmark
from dirgrad_opt.training import registry

ROOT = Path(__file__).resolve().parents[1]
#: Keras optimizers the benchmark compares against (their gin files are in configs/optimizers/).
KERAS_BASELINES = ["Adam", "SGD"]


def package_optimizers() -> list[str]:
    """The gin names of every concrete optimizer ``dirgrad_opt.optimizers`` exports."""
    return sorted(
        cls.__name__
        for cls in registry.dirgrad_optimizer_classes()
        if cls is not DirectionalOptimizer and not cls.__name__.startswith("_")
    )


def test_every_optimizer_of_the_package_has_a_file_and_a_grid(tmp_path):
    names = package_optimizers() + KERAS_BASELINES
    assert len(names) >= 18  # the issue-12 optimizers are in the list
    files = benchmark.optimizer_files()
    missing = [n for n in names if n not in files]
    assert not missing, f"no configs/optimizers/*.gin binds train.optimizer = @{missing}()"
    # plan() refuses an optimizer without configs/benchmark/<Name>.json: it accepts them all.
    cells = benchmark.plan(tmp_path / "b", ["rosenbrock"], names, [0], 0.1)
    assert sorted(c.optimizer for c in cells) == sorted(names)
    for cell in cells:
        text = files[cell.optimizer].read_text(encoding="utf-8")
        specs = cell.spec.union or (cell.spec,)
        for key in (k for s in specs for k in (*s.grid, *s.random)):
            # A grid key binds the optimizer itself or a scope its gin file uses (afg/Adam...).
            configurable = key.rsplit(".", 1)[0]
            assert configurable == cell.optimizer or re.search(
                rf"@{re.escape(configurable)}\(\)", text
            ), (cell.optimizer, key)


def test_an_optimizer_without_a_grid_is_refused_by_name(tmp_path):
    with pytest.raises(benchmark.BenchmarkError, match=r"no tuning grid for 'ZOAdam'"):
        benchmark.plan(tmp_path / "b", ["rosenbrock"], ["ZOAdam"], [0], 0.1, tmp_path)


def test_failure_reason_is_one_line():
    traceback = (
        'Traceback (most recent call last):\n  File "x.py", line 1\nKeyError: \x1b[1m"a"\x1b[0m\n'
    )
    assert benchmark.failure_reason(traceback) == 'KeyError: "a"'
    assert benchmark.failure_reason(None) == "no error recorded"
    assert benchmark.failure_reason("x" * 500, limit=10) == "x" * 9 + "…"
