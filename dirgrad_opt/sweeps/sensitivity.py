"""Hyperparameter sensitivity: an optimizer's final metrics against each numeric binding it swept.

For one optimizer on one workload, every *swept numeric binding* — a binding whose value
differs between the optimizer's configurations and is a number in all of them
(``Adam.learning_rate``, ``ArmijoLineSearch.max_step``...) — gives one panel: the metric of
each configuration (mean ± sample std over its ``ok`` seeds, the aggregate of
:func:`~dirgrad_opt.sweeps.summary.group_configs`) against the binding's value. When the
optimizer swept other bindings too, configurations that share their values form one line,
labelled with them. Drawn by :func:`dirgrad_opt.sweeps.plots.plot_sensitivity`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from dirgrad_opt.sweeps.analysis import workload_of
from dirgrad_opt.sweeps.records import RunRecord
from dirgrad_opt.sweeps.spec import render_value
from dirgrad_opt.sweeps.summary import (
    ConfigSummary,
    group_configs,
    short_binding,
    varying_bindings,
)


@dataclasses.dataclass(frozen=True)
class Series:
    """One line of a panel: x = the binding's values, the metric's mean, std and seed count."""

    label: str
    x: list[float]
    mean: list[float]
    std: list[float]
    n: list[int]


@dataclasses.dataclass(frozen=True)
class Panel:
    """One binding against one metric."""

    binding: str
    label: str  # the binding, short (``learning_rate`` for an Adam binding)
    metric: str
    series: list[Series]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_swept(configs: Sequence[ConfigSummary]) -> list[str]:
    """The bindings that vary among ``configs`` and hold a number in every one of them."""
    return [
        name
        for name in varying_bindings(configs)
        if name != "train.optimizer"
        and all(name in c.bindings and _is_number(c.bindings[name]) for c in configs)
    ]


def panels(configs: Sequence[ConfigSummary], metrics: Sequence[str]) -> list[Panel]:
    """The panels of one optimizer's configurations: every numeric swept binding × metric;
    empty when nothing numeric was swept or no configuration has a finite value."""
    if len(configs) < 2:
        return []
    swept = numeric_swept(configs)
    others_all = [n for n in varying_bindings(configs) if n != "train.optimizer"]
    out = []
    for metric in metrics:
        for name in swept:
            others = [n for n in others_all if n != name]
            groups: dict[str, list[ConfigSummary]] = {}
            for c in configs:
                key = " ".join(
                    f"{short_binding(o, c.optimizer)}={render_value(c.bindings[o])}"
                    for o in others
                    if o in c.bindings
                )
                groups.setdefault(key, []).append(c)
            series = []
            for key, members in groups.items():
                points = []
                for c in members:
                    stat = c.stats.get(metric)
                    if stat is not None and stat.mean is not None:
                        points.append((float(c.bindings[name]), stat.mean, stat.std or 0.0, stat.n))
                if points:
                    points.sort()
                    xs, means, stds, ns = (list(v) for v in zip(*points, strict=True))
                    series.append(Series(key, xs, means, stds, ns))
            if series:
                label = short_binding(name, configs[0].optimizer)
                out.append(Panel(name, label, metric, series))
    return out


def by_optimizer(
    records: Sequence[RunRecord], metrics: Sequence[str]
) -> dict[tuple[str, str], list[Panel]]:
    """``{(workload, optimizer): panels}`` for every optimizer with something to plot."""
    grouped: dict[tuple[str, str], list[ConfigSummary]] = {}
    for c in group_configs(records):
        grouped.setdefault((workload_of(c), c.optimizer), []).append(c)
    out = {}
    for key, configs in sorted(grouped.items()):
        found = panels(configs, metrics)
        if found:
            out[key] = found
    return out
