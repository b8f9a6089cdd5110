"""Comparisons across runs: time to target, AlgoPerf-style performance profiles, learning curves.

Time to target (per run): the first logged record whose ``metric`` meets the target (eval
records for ``train_loss``/``test_loss``/``*_accuracy``, train records for ``loss``...), read as
three clocks of that record: ``steps``; ``seconds`` = ``train_time_s`` (training only, evaluation
never charged); ``fpe`` = forward-pass equivalents of the cumulative counters
(:func:`~dirgrad_opt.sweeps.records.cost_fpe`). Never reached → ``inf``.

Pricing a JVP: by default ``fpe`` counts a JVP as 1 forward pass on top of the forward pass it
rides on (the operation count of forward mode, Baydin et al. 2022), not as measured: on TF 2.21
(CPU) a forward pass with one JVP takes about as long as a gradient, i.e. the JVP costs ≈ 2
(``scripts/bench_directional.py``: forward / gradient ×1.02–1.12 at K = 1 on the benchmark MLP,
×1.6 on the small CNN). The default keeps costs comparable across frameworks and hardware;
``seconds`` shows the TF 2.21 price, and ``weights={..., "jvps": 2.0}`` (``experiments/analyze.py
--cost_weights="backward=2,jvp=2"``) prices a JVP as measured. Resolution is the
logging period: a run reaching the target between two evaluations is credited at the later one.

Per configuration, the time is the **median over seeds** with ``inf`` for seeds that miss (so
a configuration reaches the target only if more than half its seeds do). Per optimizer and
workload (``dataset/model``), its **fastest configuration** on that measure counts — AlgoPerf's
external tuning, where the tuning trials that reach the target compete on time.

Performance profile (Dolan & Moré 2002; Dahl et al. 2023, AlgoPerf §4.3): for workloads p and
optimizers s with times ``t[p, s]``, ``r[p, s] = t[p, s] / min_s t[p, s]`` and
``ρ_s(τ) = |{p : r[p, s] ≤ τ}| / |P|`` for ``τ ∈ [1, τ_max]``; the score is the normalised area
``∫₁^τmax ρ_s(τ) dτ / (τ_max − 1)`` (1 = fastest on every workload, 0 = never within τ_max).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from dirgrad_opt.sweeps import runner
from dirgrad_opt.sweeps.records import RunRecord, cost_fpe
from dirgrad_opt.sweeps.spec import Target
from dirgrad_opt.sweeps.summary import (
    ConfigSummary,
    best_per_optimizer,
    config_label,
    group_configs,
    varying_bindings,
)

MEASURES = ("steps", "seconds", "fpe")
MEASURE_LABELS = {
    "steps": "training steps",
    "seconds": "training time (s, evaluation excluded)",
    "fpe": "forward-pass equivalents (fwd + 2·bwd + jvp; a TF 2.21 JVP measures ≈ 2)",
}
DEFAULT_TAU_MAX = 4.0


@dataclasses.dataclass(frozen=True)
class Hit:
    """When a run first met the target (``inf`` everywhere if it never did)."""

    reached: bool
    steps: float
    seconds: float
    fpe: float

    def get(self, measure: str) -> float:
        return getattr(self, measure)


MISS = Hit(False, math.inf, math.inf, math.inf)


def points_with(
    records: Sequence[dict[str, Any]], metric: str, where: str = ""
) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` records carrying ``metric``, by step: the eval records if any
    has it (``train_loss``, ``test_accuracy``...), else the train records (``loss``...).

    Raises:
      ValueError: records exist but none has ``metric`` (a misspelt metric); the message
        lists the known ones.
    """
    for kind in ("eval", "train"):
        points = [r for r in records if r["kind"] == kind and metric in r]
        if points:
            return sorted(points, key=lambda r: r["step"])
    if records:
        known = sorted({k for r in records for k in r} - {"kind"})
        raise ValueError(
            f"metric {metric!r} is in no record of {where or 'the run'}; known: {', '.join(known)}"
        )
    return []


def time_to_target(
    record: RunRecord, target: Target, weights: dict[str, float] | None = None
) -> Hit:
    """The first logged point at which a run meets ``target`` (see the module docstring).

    A diverged run counts if it met the target before diverging; a run without metrics misses.

    Raises:
      ValueError: the run's records do not have the target's metric (a misspelt metric).
    """
    for point in points_with(record.metrics(), target.metric, str(record.path)):
        if target.reached(point.get(target.metric)):
            fpe = cost_fpe(point, weights)
            return Hit(True, float(point["step"]), float(point["train_time_s"]), fpe or math.inf)
    return MISS


def median_time(times: Sequence[float]) -> float:
    """The median of per-seed times, misses as ``inf``: ``inf`` when half or more of the seeds
    miss."""
    if not times:
        return math.inf
    return float(statistics.median(times))


@dataclasses.dataclass
class ConfigTimes:
    """Time to target of one configuration: per seed and the median over seeds."""

    config: ConfigSummary
    hits: list[Hit]

    def median(self, measure: str) -> float:
        return median_time([h.get(measure) for h in self.hits])

    @property
    def reached(self) -> int:
        return sum(h.reached for h in self.hits)


def config_times(
    configs: Sequence[ConfigSummary], target: Target, weights: dict[str, float] | None = None
) -> list[ConfigTimes]:
    """:class:`ConfigTimes` of every configuration (failed trials miss)."""
    out = []
    for c in configs:
        out.append(ConfigTimes(c, [time_to_target(r, target, weights) for r in c.runs]))
    return out


def workload_of(config: ConfigSummary) -> str:
    """The configuration's ``dataset/model`` (from a seed with a result, else the hint of
    :func:`~dirgrad_opt.sweeps.records.infer_missing`; ``unknown`` if neither)."""
    return next((r.workload for r in config.runs if r.result is not None), config.runs[0].workload)


def fastest_per_optimizer(
    times: Sequence[ConfigTimes], measure: str
) -> dict[str, dict[str, ConfigTimes]]:
    """``{workload: {optimizer: fastest ConfigTimes on measure}}`` (ties: first listed).

    Configurations whose workload is unknown (no seed ever produced a result) are left out.
    """
    out: dict[str, dict[str, ConfigTimes]] = {}
    for t in times:
        workload = workload_of(t.config)
        if workload == "unknown":
            continue
        slot = out.setdefault(workload, {})
        current = slot.get(t.config.optimizer)
        if current is None or t.median(measure) < current.median(measure):
            slot[t.config.optimizer] = t
    return out


@dataclasses.dataclass(frozen=True)
class Profile:
    """A performance profile: ``rho[s]`` over ``taus``, per optimizer, and its score."""

    measure: str
    taus: np.ndarray
    rho: dict[str, np.ndarray]
    ratios: dict[str, dict[str, float]]  # optimizer -> workload -> r
    score: dict[str, float]


def performance_profile(
    table: dict[str, dict[str, float]],
    measure: str,
    tau_max: float = DEFAULT_TAU_MAX,
    num: int = 301,
) -> Profile:
    """AlgoPerf performance profile of times ``table[workload][optimizer]`` (``inf`` = missed).

    An optimizer absent from a workload counts as missing it. A workload no optimizer solved
    gives every optimizer ``r = inf`` there.

    Args:
      table: times per workload and optimizer.
      measure: the measure's name (recorded in the result).
      tau_max: the largest ratio plotted and integrated (AlgoPerf uses 4).
      num: points of the τ grid.

    Returns:
      The :class:`Profile`.
    """
    if tau_max <= 1:
        raise ValueError(f"tau_max must be > 1, got {tau_max}")
    workloads = sorted(table)
    optimizers = sorted({s for row in table.values() for s in row})
    ratios: dict[str, dict[str, float]] = {s: {} for s in optimizers}
    for p in workloads:
        best = min(table[p].values(), default=math.inf)
        for s in optimizers:
            t = table[p].get(s, math.inf)
            ratios[s][p] = t / best if math.isfinite(best) and math.isfinite(t) else math.inf
    taus = np.linspace(1.0, tau_max, num)
    rho, score = {}, {}
    for s in optimizers:
        r = np.array([ratios[s][p] for p in workloads])
        rho[s] = np.array([(r <= tau).mean() if len(r) else 0.0 for tau in taus])
        score[s] = float(np.trapezoid(rho[s], taus) / (tau_max - 1.0))
    return Profile(measure, taus, rho, ratios, score)


# -- learning curves -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Curve:
    """One optimizer's curve on one workload: mean over seeds with a min–max band.

    Seeds are aligned by step (every seed of a configuration logs at the same steps); the x
    value for time and cost axes is the mean over seeds at that step.
    """

    label: str
    x: dict[str, np.ndarray]  # measure -> x values
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int


def _x_of(point: dict[str, Any], measure: str, weights: dict[str, float] | None) -> float:
    if measure == "steps":
        return float(point["step"])
    if measure == "seconds":
        return float(point["train_time_s"])
    value = cost_fpe(point, weights)
    return math.nan if value is None else value


def curve(
    runs: Sequence[RunRecord], metric: str, label: str, weights: dict[str, float] | None = None
) -> Curve | None:
    """The curve of ``metric`` over the runs' common logged steps (``None`` if nothing logged).

    Only steps every run logged are kept, so a diverged seed shortens the band to where it
    stopped instead of silently dropping out of the mean.
    """
    series = []
    for run in runs:
        points = {
            r["step"]: r
            for r in points_with(run.metrics(), metric, str(run.path))
            if r.get(metric) is not None
        }
        if points:
            series.append(points)
    if not series:
        return None
    steps = sorted(set.intersection(*(set(s) for s in series)))
    if not steps:
        return None
    values = np.array([[s[step][metric] for step in steps] for s in series], dtype=float)
    x = {
        m: np.array([np.mean([_x_of(s[step], m, weights) for s in series]) for step in steps])
        for m in MEASURES
    }
    return Curve(label, x, values.mean(0), values.min(0), values.max(0), len(series))


def best_curves(
    records: Sequence[RunRecord],
    metric: str,
    select: str,
    weights: dict[str, float] | None = None,
) -> dict[str, list[Curve]]:
    """``{workload: [curve per optimizer]}`` of each optimizer's best configuration (selected
    as in :func:`~dirgrad_opt.sweeps.summary.best_per_optimizer`), over its ``ok`` and
    ``diverged`` seeds; labelled ``Adam learning_rate=0.01`` (the optimizer and the bindings
    that vary in the sweep, :func:`~dirgrad_opt.sweeps.summary.config_label`)."""
    by_workload: dict[str, list[ConfigSummary]] = {}
    for c in group_configs(records):
        by_workload.setdefault(workload_of(c), []).append(c)
    out: dict[str, list[Curve]] = {}
    for workload, configs in by_workload.items():
        curves = []
        varying = varying_bindings(configs)  # the legend names each curve's hyperparameters
        for _, c in sorted(best_per_optimizer(configs, select).items()):
            runs = [r for r in c.runs if r.status in (runner.OK, runner.DIVERGED)]
            made = curve(runs, metric, config_label(c, varying), weights)
            if made is not None:
                curves.append(made)
        if curves:
            out[workload] = curves
    return out
