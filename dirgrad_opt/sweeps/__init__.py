"""Sweeps and analysis: configurations × seeds, run locally or on Ray, then tables and plots.

    python -m experiments.sweep --gin_file=configs/mnist1d/mlp_adam.gin \
        --sweep_file=configs/sweeps/mnist1d_lr/adam.json --workdir=runs/sweeps/adam_lr --parallel=2
    python -m experiments.analyze --workdir=runs/sweeps/adam_lr --target="test_accuracy>=0.6"

Library::

    from dirgrad_opt import sweeps
    spec = sweeps.load_sweep("configs/sweeps/mnist1d_lr/adam.json")
    report = sweeps.run_sweep("runs/x", spec, ["configs/mnist1d/mlp_adam.gin"],
                              backend=sweeps.LocalBackend(parallel=2))
    sweeps.write_tables("runs/x")                       # summary.csv, summary.md
    sweeps.write_report(sweeps.discover(["runs/x"]), "runs/x/analysis",
                        target=sweeps.parse_target("test_accuracy>=0.6"))

Modules: :mod:`~dirgrad_opt.sweeps.spec` (sweep files, gin literals, trial ids),
:mod:`~dirgrad_opt.sweeps.runner` (one trial = one ``experiments.train`` process),
:mod:`~dirgrad_opt.sweeps.backends` (local processes, Ray tasks, progress),
:mod:`~dirgrad_opt.sweeps.driver` (the sweep), :mod:`~dirgrad_opt.sweeps.records` (reading runs
back), :mod:`~dirgrad_opt.sweeps.summary` (tables), :mod:`~dirgrad_opt.sweeps.analysis` (time
to target, performance profiles, curves), :mod:`~dirgrad_opt.sweeps.report` (the report files),
:mod:`~dirgrad_opt.sweeps.plots` (PNG figures), :mod:`~dirgrad_opt.sweeps.sensitivity` (final
metrics vs swept hyperparameters), :mod:`~dirgrad_opt.sweeps.preflight` (every configuration's
gin checked in one process before a sweep runs), :mod:`~dirgrad_opt.sweeps.landscape` (loss
along the step direction at a checkpoint).
"""

from dirgrad_opt.sweeps.backends import LocalBackend, RayBackend
from dirgrad_opt.sweeps.driver import SweepReport, run_sweep, write_tables
from dirgrad_opt.sweeps.records import RunRecord, cost_fpe, discover
from dirgrad_opt.sweeps.report import write_report
from dirgrad_opt.sweeps.spec import (
    SweepError,
    SweepSpec,
    Target,
    Trial,
    expand,
    load_sweep,
    parse_sweep,
    parse_target,
    render_value,
)

__all__ = [
    "LocalBackend",
    "RayBackend",
    "RunRecord",
    "SweepError",
    "SweepReport",
    "SweepSpec",
    "Target",
    "Trial",
    "cost_fpe",
    "discover",
    "expand",
    "load_sweep",
    "parse_sweep",
    "parse_target",
    "render_value",
    "run_sweep",
    "write_report",
    "write_tables",
]
