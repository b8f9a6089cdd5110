"""Benchmark optimizers on problems: tuning grids × seeds, selection on validation, profiles.

    python -m experiments.benchmark --problems=mnist1d_mlp,rosenbrock,quadratic_deep \
        --optimizers=Adam,ArmijoLineSearch,PolyakStep --seeds=0,1 --budget=0.1 \
        --workdir=runs/benchmark --parallel=2

Problems are ``configs/problems/<name>.gin`` (``--problems=offline`` selects every problem that
needs no download); optimizers are gin names (``train.optimizer = @Name()`` in
``configs/optimizers/``), each tuned over its grid ``configs/benchmark/<Name>.json``.
``--budget`` scales every problem's step budget. Writes one sweep per (problem, optimizer)
under the workdir and the report in ``<workdir>/report/`` (see
:mod:`dirgrad_opt.problems.benchmark`). Rerunning skips finished trials.

Exit codes: 0 every trial ran to an end (some may have failed: see the report); 1 the report
could not be written; 2 bad flags or files (nothing run); 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from experiments import trial_flags  # noqa: E402

_PROBLEMS = flags.DEFINE_string("problems", None, "Comma-separated problem names, or 'offline'.")
_OPTIMIZERS = flags.DEFINE_string("optimizers", None, "Comma-separated optimizer gin names.")
_SEEDS = flags.DEFINE_string("seeds", "0", "Comma-separated seeds, e.g. 0,1,2.")
_BUDGET = flags.DEFINE_float("budget", 1.0, "Factor on every problem's step budget (> 0).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder of the benchmark.")
_GIN_PARAMS = flags.DEFINE_multi_string(
    "gin_param", [], "Binding for every trial, after the problem's (repeatable)."
)
_GRIDS = flags.DEFINE_string("grids_dir", None, "Folder of <Optimizer>.json tuning grids.")
_RETRY_FAILED = trial_flags.RETRY_FAILED
flags.adopt_module_key_flags(trial_flags)
_PLOTS = flags.DEFINE_bool("plots", True, "Write PNG plots (needs matplotlib).")
flags.mark_flags_as_required(["problems", "optimizers", "workdir"])

#: Problems that load through TFDS and need prepared data (left out of 'offline').
DATA_GATED = ("fashion_mnist_2c2d", "cifar10_3c3d", "cifar10_resnet20")


def _fail(message: str, code: int) -> None:
    print(f"benchmark: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}", 2)
    from dirgrad_opt import problems, sweeps
    from dirgrad_opt.problems import benchmark

    logging.set_verbosity(logging.INFO)
    try:
        names = _PROBLEMS.value
        if names.strip() == "offline":
            names = ",".join(p for p in problems.available() if p not in DATA_GATED)
        problem_names = benchmark.split_names(names, "problems")
        optimizer_names = benchmark.split_names(_OPTIMIZERS.value, "optimizers")
        try:
            seeds = [int(s) for s in benchmark.split_names(_SEEDS.value, "seeds")]
        except ValueError:
            raise benchmark.BenchmarkError(f"--seeds={_SEEDS.value!r}: give integers") from None
        grids = Path(_GRIDS.value) if _GRIDS.value else benchmark.GRIDS_DIR
        cells = benchmark.plan(
            _WORKDIR.value,
            problem_names,
            optimizer_names,
            seeds,
            _BUDGET.value,
            grids,
            _GIN_PARAMS.value,
        )
        backend = trial_flags.backend()
    except (benchmark.BenchmarkError, sweeps.SweepError, ValueError, ImportError) as error:
        _fail(str(error), 2)
    try:
        counts = benchmark.run(_WORKDIR.value, cells, backend, _RETRY_FAILED.value)
    except (sweeps.SweepError, sweeps.backends.BackendError) as error:
        _fail(str(error), 2)
    except KeyboardInterrupt:
        print("benchmark: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    try:
        benchmark.write_report(_WORKDIR.value, cells, _PLOTS.value)
    except (ValueError, OSError) as error:
        _fail(f"the trials ran, but the report failed: {error}", 1)
    logging.info(
        "Benchmark done (%s). Report: %s",
        ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        Path(_WORKDIR.value) / benchmark.REPORT_DIR / "benchmark.md",
    )


if __name__ == "__main__":
    app.run(main)
