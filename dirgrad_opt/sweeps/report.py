"""The analysis report of one or more workdirs: leaderboard, time to target, performance
profiles and plots, written to one folder. ``experiments/analyze.py`` is a thin shell over
:func:`write_report`; ``experiments/sweep.py`` calls it at the end of a sweep.

Files (in ``out_dir``)::

    leaderboard.md / leaderboard.csv   per workload, each optimizer's best configuration
                                       (selected on the selection metric), reported on test,
                                       with its time to target if a target is given
    time_to_target.csv                 per run: reached?, steps, seconds, fpe
    profiles.csv                       ρ_s(τ) per measure (with a target)
    plots/curves_<workload>_<measure>.png   loss & accuracy vs steps / seconds / fpe
    plots/profile_<measure>.png        performance profiles (with a target)
    plots/sensitivity_<workload>_<optimizer>.png   final metrics vs each swept numeric
                                       binding of that optimizer (mean ± std over seeds)
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

from dirgrad_opt.sweeps import analysis, plots, sensitivity
from dirgrad_opt.sweeps.records import RunRecord
from dirgrad_opt.sweeps.spec import Target
from dirgrad_opt.sweeps.summary import (
    DEFAULT_SELECT,
    best_per_optimizer,
    config_label,
    group_configs,
    higher_is_better,
    result_cells,
    selection_key,
    varying_bindings,
)
from dirgrad_opt.training import schema

CURVE_METRICS = ("train_loss", "test_accuracy")
#: Metrics of the sensitivity plots, after the selection metric.
SENSITIVITY_METRICS = ("final_test_accuracy",)


def _fmt_time(value: float, measure: str) -> str:
    if not math.isfinite(value):
        return "not reached"
    if measure == "seconds":
        return f"{value:.3g}"
    return f"{value:.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + [
        "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows
    ]


def leaderboard(
    records: Sequence[RunRecord],
    target: Target | None,
    select: str = DEFAULT_SELECT,
    weights: dict[str, float] | None = None,
) -> tuple[str, str]:
    """``(markdown, csv)`` of the leaderboard (see the module docstring)."""
    configs = group_configs(records)
    varying = varying_bindings(configs)
    by_workload: dict[str, list] = {}
    for c in configs:
        by_workload.setdefault(analysis.workload_of(c), []).append(c)
    goal = "highest" if higher_is_better(select) else "lowest"
    md = [
        "# Leaderboard",
        "",
        f"Each optimizer's best configuration, selected on the {goal} mean `{select}` over "
        "seeds (configurations with more `ok` seeds first), reported on the test set: mean ± "
        "sample std (median) over `ok` seeds. Cost in forward-pass equivalents "
        "(forward + 2·backward + 1·JVP).",
    ]
    if target is not None:
        md.append(
            f"Time to target `{target}`: median over seeds of the first logged point meeting "
            "it (a seed that never does counts as ∞); training time excludes evaluation."
        )
    header = ["workload", "optimizer", "configuration", "seeds ok", select,
              "final test accuracy", "final test loss", "train time (s)", "cost (fpe)"]  # fmt: skip
    if target is not None:
        header += ["reached", "steps to target", "seconds to target", "fpe to target"]
    rows = []
    for workload, group in by_workload.items():
        best = best_per_optimizer(group, select)
        ranked = sorted(best.items(), key=lambda kv: selection_key(kv[1], select))
        times = {}
        if target is not None:
            times = {
                t.config.optimizer: t
                for t in analysis.config_times([c for _, c in ranked], target, weights)
            }
        for optimizer, c in ranked:
            row = [
                workload,
                optimizer,
                f"{config_label(c, varying)} ({c.config_id})",
                *result_cells(c, select),
            ]
            if target is not None:
                t = times[optimizer]
                row += [f"{t.reached}/{len(t.hits)}"]
                row += [_fmt_time(t.median(m), m) for m in analysis.MEASURES]
            rows.append(row)
    md += ["", *_table(header, rows)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return "\n".join(md) + "\n", out.getvalue()


def time_to_target_csv(
    records: Sequence[RunRecord], target: Target, weights: dict[str, float] | None = None
) -> str:
    """Per run: workload, optimizer, configuration, seed, status, reached, steps, seconds, fpe."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["workload", "optimizer", "config_id", "run_id", "seed", "status",
                     "reached", "steps", "seconds", "fpe", "target"])  # fmt: skip
    for r in records:
        hit = analysis.time_to_target(r, target, weights)
        values = ["" if not math.isfinite(v) else v for v in (hit.steps, hit.seconds, hit.fpe)]
        writer.writerow([r.workload, r.optimizer, r.config_id, r.run_id, r.seed, r.status,
                         hit.reached, *values, str(target)])  # fmt: skip
    return out.getvalue()


def profiles(
    records: Sequence[RunRecord],
    target: Target,
    weights: dict[str, float] | None = None,
    tau_max: float = analysis.DEFAULT_TAU_MAX,
) -> dict[str, analysis.Profile]:
    """Performance profile per measure, over workloads, of each optimizer's fastest config."""
    times = analysis.config_times(group_configs(records), target, weights)
    out = {}
    for measure in analysis.MEASURES:
        fastest = analysis.fastest_per_optimizer(times, measure)
        table = {p: {s: t.median(measure) for s, t in row.items()} for p, row in fastest.items()}
        out[measure] = analysis.performance_profile(table, measure, tau_max)
    return out


def profiles_csv(profs: dict[str, analysis.Profile]) -> str:
    """Long format: measure, optimizer, score, then ρ at τ = 1, 1.5, 2, 3, 4 (within range)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    marks = [1.0, 1.5, 2.0, 3.0, 4.0]
    writer.writerow(["measure", "optimizer", "score", *(f"rho@{m:g}" for m in marks)])
    for measure, p in profs.items():
        for name, rho in sorted(p.rho.items()):
            values = []
            for m in marks:
                idx = [i for i, t in enumerate(p.taus) if t <= m + 1e-12]
                values.append(f"{rho[idx[-1]]:.4g}" if idx and m <= p.taus[-1] + 1e-12 else "")
            writer.writerow([measure, name, f"{p.score[name]:.4g}", *values])
    return out.getvalue()


def write_report(
    records: Sequence[RunRecord],
    out_dir: str | os.PathLike,
    target: Target | None = None,
    select: str = DEFAULT_SELECT,
    weights: dict[str, float] | None = None,
    make_plots: bool = True,
    tau_max: float = analysis.DEFAULT_TAU_MAX,
    skipped: Sequence[str] = (),
) -> list[Path]:
    """Writes the report files (see the module docstring); returns their paths.

    ``skipped``: one line per run left out because its files could not be read
    (:func:`~dirgrad_opt.sweeps.records.discover`); listed at the end of ``leaderboard.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    md, table = leaderboard(records, target, select, weights)
    if skipped:
        md += f"\n## Skipped: {len(skipped)} unreadable run(s)\n\n"
        md += "".join(f"- {line}\n" for line in skipped)
    for name, text in (("leaderboard.md", md), ("leaderboard.csv", table)):
        schema.write_text_atomic(out / name, text)
        written.append(out / name)
    profs = {}
    if target is not None:
        schema.write_text_atomic(
            out / "time_to_target.csv", time_to_target_csv(records, target, weights)
        )
        profs = profiles(records, target, weights, tau_max)
        schema.write_text_atomic(out / "profiles.csv", profiles_csv(profs))
        written += [out / "time_to_target.csv", out / "profiles.csv"]
    if make_plots:
        plot_dir = out / "plots"
        curves = {m: analysis.best_curves(records, m, select, weights) for m in CURVE_METRICS}
        workloads = sorted({w for by in curves.values() for w in by})
        for workload in workloads:
            by_metric = {m: curves[m].get(workload, []) for m in CURVE_METRICS}
            if not any(by_metric.values()):
                continue
            for measure in analysis.MEASURES:
                path = plot_dir / f"curves_{plots.slug(workload)}_{measure}.png"
                title = f"{workload}: best configuration per optimizer (band: min–max over seeds)"
                written.append(plots.plot_curves(by_metric, measure, path, title))
        for measure, profile in profs.items():
            if profile.rho:
                path = plot_dir / f"profile_{measure}.png"
                written.append(plots.plot_profile(profile, path))
        metrics = list(dict.fromkeys([select, *SENSITIVITY_METRICS]))
        for (workload, optimizer), found in sensitivity.by_optimizer(records, metrics).items():
            path = plot_dir / f"sensitivity_{plots.slug(workload)}_{plots.slug(optimizer)}.png"
            title = f"{optimizer} on {workload}: final metrics vs swept hyperparameters"
            written.append(plots.plot_sensitivity(found, path, title + " (mean ± std over seeds)"))
    return written
