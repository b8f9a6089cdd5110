"""Tables of a sweep: one row per trial, one per configuration (aggregated over seeds), and the
best configuration of each optimizer.

Aggregation over the seeds of a configuration uses only the seeds whose status is ``ok`` and
whose value is finite: mean, sample standard deviation (``ddof = 1``; empty with one seed) and
median. Diverged, failed and unfinished seeds are never averaged in: they are counted in the
``n_ok`` / ``n_diverged`` / ``n_failed`` / ``n_incomplete`` columns, and a configuration's
``status`` is ``ok`` only when every seed is.

Best configuration per optimizer: among the configurations of an optimizer, the one with the
most ``ok`` seeds (a diverged or failed seed counts as the worst possible value), then the best
mean **selection metric** — by default ``final_train_loss``, the loss on the full training set
at the last step (there is no validation split), lowest wins — and it is *reported* on the test
set. The selection metric is never a test metric unless the caller asks for one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dirgrad_opt.sweeps import runner
from dirgrad_opt.sweeps.records import RunRecord, cost_fpe
from dirgrad_opt.sweeps.spec import render_value
from dirgrad_opt.training import schema

#: Per-run metrics (name → how to read it from ``result.json``), in table order.
METRICS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "final_train_loss": lambda r: r["final"]["train_loss"],
    "final_train_accuracy": lambda r: r["final"]["train_accuracy"],
    "final_test_loss": lambda r: r["final"]["test_loss"],
    "final_valid_loss": lambda r: r["final"].get("valid_loss"),  # problems' validation split
    "final_valid_accuracy": lambda r: r["final"].get("valid_accuracy"),
    "final_test_accuracy": lambda r: r["final"]["test_accuracy"],
    "best_test_accuracy": lambda r: (r["best"]["test_accuracy"] or {}).get("value"),
    "best_test_loss": lambda r: (r["best"]["test_loss"] or {}).get("value"),
    "steps": lambda r: r["steps"],
    "train_s": lambda r: r["times"]["train_s"],
    "wall_s": lambda r: r["times"]["wall_s"],
    "steps_per_s": lambda r: r["times"]["steps_per_s"],
    "forward_passes": lambda r: r["totals"]["forward_passes"],
    "backward_passes": lambda r: r["totals"]["backward_passes"],
    "jvps": lambda r: r["totals"]["jvps"],
    "cost_fpe": lambda r: cost_fpe(r["totals"]),
}
DEFAULT_SELECT = "final_train_loss"
INCOMPLETE = "incomplete"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"


def higher_is_better(metric: str) -> bool:
    """Accuracies are maximised, everything else (losses, times, costs) minimised."""
    return "accuracy" in metric


def run_metric(record: RunRecord, metric: str) -> float | int | None:
    """A run's metric (an int for counts, else a finite float), or ``None`` (no result, null,
    or not finite)."""
    if record.result is None:
        return None
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    value = METRICS[metric](record.result)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if isinstance(value, int) else (float(value) if math.isfinite(value) else None)


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean, sample std (``None`` for one value), median and count of finite values."""

    n: int
    mean: float | None
    std: float | None
    median: float | None

    def __str__(self) -> str:
        return format_stat(self)


def describe(values: Sequence[float | None]) -> Stat:
    """:class:`Stat` of the finite values among ``values`` (``None``/NaN/inf are dropped)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return Stat(0, None, None, None)
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return Stat(len(finite), statistics.fmean(finite), std, statistics.median(finite))


@dataclasses.dataclass
class ConfigSummary:
    """The seeds of one configuration and their aggregate."""

    config_id: str
    optimizer: str
    bindings: dict[str, Any]
    runs: list[RunRecord]
    stats: dict[str, Stat]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    @property
    def n_incomplete(self) -> int:
        return sum(r.status not in runner.FINISHED for r in self.runs)

    @property
    def status(self) -> str:
        """``ok`` (every seed ok), ``partial`` (some ok), else ``failed``, ``diverged`` or
        ``incomplete``."""
        n_ok = self.count(runner.OK)
        if n_ok == len(self.runs):
            return runner.OK
        if n_ok:
            return "partial"
        if self.count(runner.FAILED):
            return runner.FAILED
        if self.count(runner.DIVERGED):
            return runner.DIVERGED
        return INCOMPLETE

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]


def group_configs(records: Sequence[RunRecord]) -> list[ConfigSummary]:
    """Runs grouped by configuration (first-seen order), aggregated over ``ok`` seeds."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.group, record.config_id), []).append(record)
    out = []
    for (_, config_id), runs in groups.items():
        ok = [r for r in runs if r.status == runner.OK]
        stats = {m: describe([run_metric(r, m) for r in ok]) for m in METRICS}
        optimizer = next((r.optimizer for r in runs if r.result is not None), runs[0].optimizer)
        out.append(ConfigSummary(config_id, optimizer, dict(runs[0].bindings), runs, stats))
    return out


def selection_key(config: ConfigSummary, metric: str) -> tuple[float, float]:
    """Sort key (smaller is better): fraction of seeds not ok, then the signed mean metric."""
    bad = 1.0 - config.count(runner.OK) / len(config.runs)
    mean = config.stats[metric].mean
    if mean is None:
        return bad, math.inf
    return bad, -mean if higher_is_better(metric) else mean


def result_cells(config: ConfigSummary, select: str) -> list[str]:
    """The cells every best-configuration table shows: seeds ok, selection metric, test
    accuracy and loss, train time and cost (aggregated over seeds)."""
    return [
        f"{config.count(runner.OK)}/{len(config.runs)}",
        str(config.stats[select]),
        str(config.stats["final_test_accuracy"]),
        str(config.stats["final_test_loss"]),
        str(config.stats["train_s"]),
        str(config.stats["cost_fpe"]),
    ]


def best_per_optimizer(
    configs: Sequence[ConfigSummary], metric: str = DEFAULT_SELECT
) -> dict[str, ConfigSummary]:
    """The best configuration of each optimizer (see the module docstring), by optimizer name.

    Optimizers none of whose configurations has an ``ok`` seed are left out.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown selection metric {metric!r}; known: {', '.join(METRICS)}")
    best: dict[str, ConfigSummary] = {}
    for config in configs:
        if config.count(runner.OK) == 0:
            continue
        current = best.get(config.optimizer)
        if current is None or selection_key(config, metric) < selection_key(current, metric):
            best[config.optimizer] = config
    return best


def best_sweep(
    best: dict[str, ConfigSummary], seeds: Sequence[int], target: Any = None
) -> dict[str, Any]:
    """A union sweep (JSON-ready) that reruns each optimizer's selected configuration on
    ``seeds``: the second stage of "tune on few seeds, confirm the winners on many".

    One ``{"grid": {binding: [value]}}`` sub-sweep per optimizer (sorted by name), so every
    trial keeps its configuration id; ``target`` (a sweep file's ``"target"``) is copied.

    Raises:
      ValueError: no optimizer, or no or repeated seeds.
    """
    if not best:
        raise ValueError("no optimizer has an ok configuration to rerun")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"give distinct seeds, got {seeds}")
    union = [{"grid": {k: [v] for k, v in best[name].bindings.items()}} for name in sorted(best)]
    out: dict[str, Any] = {"union": union, "seeds": seeds}
    if target is not None:
        out["target"] = target
    return out


# -- labels ------------------------------------------------------------------------------------
def varying_bindings(configs: Sequence[ConfigSummary]) -> list[str]:
    """Binding names whose value differs between configurations (or is missing in some)."""
    names: list[str] = []
    for c in configs:
        names.extend(n for n in c.bindings if n not in names)
    out = []
    for name in names:
        values = {render_value(c.bindings[name]) if name in c.bindings else None for c in configs}
        if len(values) > 1:
            out.append(name)
    return out


def short_binding(name: str, optimizer: str) -> str:
    """``Adam.learning_rate`` → ``learning_rate`` for an Adam configuration."""
    head, _, param = name.rpartition(".")
    return param if head.split("/")[-1] == optimizer else name


def config_label(config: ConfigSummary, varying: Sequence[str]) -> str:
    """``Adam learning_rate=0.001``: the optimizer and the bindings that vary in the sweep."""
    parts = []
    for name in varying:
        if name == "train.optimizer" or name not in config.bindings:
            continue
        parts.append(
            f"{short_binding(name, config.optimizer)}={render_value(config.bindings[name])}"
        )
    if not config.bindings and config.runs:
        parts.append(f"({Path(config.runs[0].path).name})")
    return " ".join([config.optimizer, *parts])


# -- formatting --------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a table: integers and values ≥ 1000 without decimals, else 4 significant
    digits; ``—`` for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def format_stat(stat: Stat) -> str:
    """``0.6731 ± 0.0102 (median 0.6712)``; one value: just the value; none: ``—``."""
    if stat.n == 0:
        return "—"
    if stat.n == 1:
        return fmt(stat.mean)
    return f"{fmt(stat.mean)} ± {fmt(stat.std)} (med {fmt(stat.median)})"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- the two files -----------------------------------------------------------------------------
def summary_rows(records: Sequence[RunRecord]) -> tuple[list[str], list[dict[str, Any]]]:
    """``(columns, rows)`` of ``summary.csv``: trial rows (``kind = trial``) then configuration
    rows (``kind = config``; metric columns hold the mean over ok seeds, ``*_std`` and
    ``*_median`` beside them)."""
    configs = group_configs(records)
    binding_names: list[str] = []
    for r in records:
        binding_names.extend(n for n in r.bindings if n not in binding_names)
    metric_columns = []
    for m in METRICS:
        metric_columns += [m, f"{m}_std", f"{m}_median"]
    columns = [
        "kind",
        "id",
        "config_id",
        "optimizer",
        *binding_names,
        "seed",
        "status",
        "n_seeds",
        "n_ok",
        "n_diverged",
        "n_failed",
        "n_incomplete",
        *metric_columns,
        "error",
        "path",
    ]
    rows = []
    for r in records:
        row: dict[str, Any] = {
            "kind": "trial",
            "id": r.run_id,
            "config_id": r.config_id,
            "optimizer": r.optimizer,
            "seed": r.seed,
            "status": r.status,
            "error": r.error,
            "path": str(r.path),
        }
        row.update({n: render_value(r.bindings[n]) for n in binding_names if n in r.bindings})
        row.update({m: run_metric(r, m) for m in METRICS})
        rows.append(row)
    for c in configs:
        row = {
            "kind": "config",
            "id": c.config_id,
            "config_id": c.config_id,
            "optimizer": c.optimizer,
            "seed": ";".join(str(s) for s in c.seeds),
            "status": c.status,
            "n_seeds": len(c.runs),
            "n_ok": c.count(runner.OK),
            "n_diverged": c.count(runner.DIVERGED),
            "n_failed": c.count(runner.FAILED),
            "n_incomplete": c.n_incomplete,
        }
        row.update({n: render_value(c.bindings[n]) for n in binding_names if n in c.bindings})
        for m, stat in c.stats.items():
            row.update({m: stat.mean, f"{m}_std": stat.std, f"{m}_median": stat.median})
        rows.append(row)
    return columns, rows


def summary_csv(records: Sequence[RunRecord]) -> str:
    """The text of ``summary.csv``."""
    columns, rows = summary_rows(records)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return out.getvalue()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_escape(str(c)) for c in row) + " |" for row in rows]
    return lines


def summary_markdown(
    records: Sequence[RunRecord], select: str = DEFAULT_SELECT, title: str = "Sweep summary"
) -> str:
    """The text of ``summary.md``: counts, best configuration per optimizer, configurations,
    trials."""
    configs = group_configs(records)
    varying = varying_bindings(configs)
    labels = {id(c): config_label(c, varying) for c in configs}
    counts = {s: sum(r.status == s for r in records) for s in runner.FINISHED}
    incomplete = len(records) - sum(counts.values())
    lines = [f"# {title}", ""]
    lines.append(
        f"{len(records)} trials in {len(configs)} configurations: {counts[runner.OK]} ok, "
        f"{counts[runner.DIVERGED]} diverged, {counts[runner.FAILED]} failed, {incomplete} "
        "not finished. Values over seeds: mean ± sample std (median) over the `ok` seeds only; "
        "diverged/failed seeds are counted, never averaged. Cost: forward-pass equivalents "
        "(forward + 2·backward + JVP)."
    )
    lines.append("")
    best = best_per_optimizer(configs, select)
    goal = "highest" if higher_is_better(select) else "lowest"
    lines.append(
        f"## Best configuration per optimizer — selected on {goal} mean `{select}` "
        "(most ok seeds first), reported on the test set"
    )
    lines.append("")
    header = [
        "optimizer",
        "configuration",
        "seeds ok",
        f"{select} (selection)",
        "final test accuracy",
        "final test loss",
        "train time (s)",
        "cost (fpe)",
    ]
    rows = []
    for optimizer, c in sorted(best.items(), key=lambda kv: selection_key(kv[1], select)):
        rows.append([optimizer, f"{labels[id(c)]} `{c.config_id}`", *result_cells(c, select)])
    lines += _table(header, rows) if rows else ["No configuration has an `ok` seed."]
    lines += ["", "## Configurations (aggregated over seeds)", ""]
    header = [
        "configuration",
        "id",
        "status",
        "ok/div/fail/todo",
        "final train loss",
        "final test accuracy",
        "best test accuracy",
        "train time (s)",
        "cost (fpe)",
    ]
    rows = [
        [
            labels[id(c)],
            c.config_id,
            c.status,
            f"{c.count(runner.OK)}/{c.count(runner.DIVERGED)}/{c.count(runner.FAILED)}/"
            f"{c.n_incomplete}",
            str(c.stats["final_train_loss"]),
            str(c.stats["final_test_accuracy"]),
            str(c.stats["best_test_accuracy"]),
            str(c.stats["train_s"]),
            str(c.stats["cost_fpe"]),
        ]
        for c in configs
    ]
    lines += _table(header, rows)
    lines += ["", "## Trials", ""]
    header = ["trial", "configuration", "seed", "status", "steps", "final train loss",
              "final test accuracy", "train time (s)", "cost (fpe)", "error"]  # fmt: skip
    by_config = {c.config_id: labels[id(c)] for c in configs}
    rows = [
        [
            r.run_id,
            by_config.get(r.config_id, r.config_id),
            str(r.seed),
            r.status,
            fmt(run_metric(r, "steps")),
            fmt(run_metric(r, "final_train_loss")),
            fmt(run_metric(r, "final_test_accuracy")),
            fmt(run_metric(r, "train_s")),
            fmt(run_metric(r, "cost_fpe")),
            (r.error or "").splitlines()[0][:200] if r.error else "",
        ]
        for r in records
    ]
    lines += _table(header, rows)
    return "\n".join(lines) + "\n"


def write_summary(
    out_dir: str | os.PathLike,
    records: Sequence[RunRecord],
    select: str = DEFAULT_SELECT,
    title: str = "Sweep summary",
) -> tuple[Path, Path]:
    """Writes ``summary.csv`` and ``summary.md`` into ``out_dir`` (atomically); returns paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / SUMMARY_CSV, out / SUMMARY_MD
    schema.write_text_atomic(csv_path, summary_csv(records))
    schema.write_text_atomic(md_path, summary_markdown(records, select, title))
    return csv_path, md_path
