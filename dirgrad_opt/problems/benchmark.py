"""A fair multi-problem benchmark: every optimizer's tuning grid × seeds on every problem.

For each problem p and optimizer s the benchmark is one sweep (:mod:`dirgrad_opt.sweeps`) in
``<workdir>/<p>/<s>/`` whose trials load ``configs/problems/<p>.gin`` then the optimizer's gin
file (the one binding ``train.optimizer = @<s>()`` in ``configs/optimizers/``), with
``Problem.budget = <budget>`` and the optimizer's own grid from ``configs/benchmark/<s>.json``
(a sweep file without seeds: ``{"grid": {...}}``, optionally ``"random"``/``"num_random"``).
All trials of all sweeps run through one backend, so ``parallel`` slots stay busy.

Selection (AlgoPerf's external tuning, on the validation split only): per problem and
optimizer, the reported configuration is the one with the best mean final value of the
problem's target metric (``final_valid_accuracy`` or ``final_valid_loss``) over ``ok`` seeds;
time to target takes, per optimizer, the configuration that reaches the problem's target
(``valid_*``) fastest (median over seeds, a seed that misses counts as ∞). Test metrics are
reported, never used to choose. Performance profiles over the problems, in steps, seconds and
forward-pass equivalents, are those of :func:`dirgrad_opt.sweeps.analysis.performance_profile`.

Report (``<workdir>/report/``): ``benchmark.md`` (per-problem tables and profile scores),
``profiles.csv``, ``leaderboard_<problem>.csv``, ``plots/profile_<measure>.png`` (one curve per
optimizer) and ``plots/curves_<problem>_<measure>.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dirgrad_opt import problems
from dirgrad_opt.sweeps import analysis, backends, driver, launch, plots, records, report, runner
from dirgrad_opt.sweeps.backends import Backend, LocalBackend, Progress
from dirgrad_opt.sweeps.spec import SweepError, SweepSpec, Target, parse_sweep, parse_target
from dirgrad_opt.sweeps.summary import group_configs
from dirgrad_opt.training import schema

OPTIMIZERS_DIR = problems.PROJECT_ROOT / "configs" / "optimizers"
GRIDS_DIR = problems.PROJECT_ROOT / "configs" / "benchmark"
BENCHMARK_FILE = "benchmark.json"
REPORT_DIR = "report"
_OPTIMIZER_LINE = re.compile(r"^\s*train\.optimizer\s*=\s*@([A-Za-z_]\w*)\(\)", re.M)


class BenchmarkError(ValueError):
    """Bad benchmark arguments or files; the message names the culprit."""


def optimizer_files(directory: Path = OPTIMIZERS_DIR) -> dict[str, Path]:
    """``{gin name: file}`` of the optimizer files binding ``train.optimizer = @Name()``."""
    out = {}
    for path in sorted(directory.glob("*.gin")):
        match = _OPTIMIZER_LINE.search(path.read_text(encoding="utf-8"))
        if match:
            out.setdefault(match.group(1), path)
    return out


def tuning_spec(optimizer: str, seeds: Sequence[int], grids_dir: Path = GRIDS_DIR) -> SweepSpec:
    """The optimizer's tuning grid (``<grids_dir>/<optimizer>.json``) with ``seeds``.

    Raises:
      BenchmarkError: the file is missing, not JSON, gives seeds, or is not a valid sweep.
    """
    path = Path(grids_dir) / f"{optimizer}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchmarkError(
            f"no tuning grid for {optimizer!r}: write {path} (a sweep file without seeds, e.g. "
            f'{{"grid": {{"{optimizer}.learning_rate": [0.001, 0.01]}}}})'
        ) from None
    except json.JSONDecodeError as error:
        raise BenchmarkError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or "seeds" in data:
        raise BenchmarkError(f"{path}: a tuning grid is a JSON object without 'seeds' (--seeds)")
    try:
        return parse_sweep({**data, "seeds": list(seeds)}, where=str(path))
    except SweepError as error:
        raise BenchmarkError(str(error)) from None


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (problem, optimizer) sweep of the benchmark."""

    problem: str
    optimizer: str
    sweep_dir: Path
    spec: SweepSpec
    gin_files: tuple[str, ...]
    gin_params: tuple[str, ...]


def split_names(text: str | Sequence[str], what: str) -> list[str]:
    """``"a, b"`` → ``["a", "b"]``; an empty list or duplicates are a :class:`BenchmarkError`
    naming the flag ``--<what>``."""
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    items = [t for t in items if t]
    if not items:
        raise BenchmarkError(f"--{what}: give at least one name")
    duplicates = sorted({t for t in items if items.count(t) > 1})
    if duplicates:
        raise BenchmarkError(f"--{what}: duplicate name(s) {duplicates}")
    return items


def plan(
    workdir: str | Path,
    problem_names: Sequence[str],
    optimizer_names: Sequence[str],
    seeds: Sequence[int],
    budget: float = 1.0,
    grids_dir: Path = GRIDS_DIR,
    gin_params: Sequence[str] = (),
) -> list[Cell]:
    """Validates the arguments and lays out the benchmark's sweeps (nothing is run).

    Raises:
      BenchmarkError: unknown problem or optimizer, missing grid, bad seeds or budget, or a
        workdir of a benchmark with another budget.
    """
    if not isinstance(budget, int | float) or not math.isfinite(budget) or budget <= 0:
        raise BenchmarkError(f"--budget must be a number > 0, got {budget!r}")
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise BenchmarkError(f"--seeds: give integers >= 0, got {list(seeds)!r}")
    for name in problem_names:
        try:
            problems.problem_file(name)
        except problems.ProblemError as error:
            raise BenchmarkError(str(error)) from None
    files = optimizer_files()
    unknown = [o for o in optimizer_names if o not in files]
    if unknown:
        raise BenchmarkError(
            f"unknown optimizer(s) {unknown}; known (gin names in {OPTIMIZERS_DIR}): "
            f"{', '.join(files)}"
        )
    workdir = Path(workdir)
    meta_path = workdir / BENCHMARK_FILE
    old = runner.read_json(meta_path)
    if old is not None and old.get("budget") not in (None, budget):
        raise BenchmarkError(
            f"{workdir} holds a benchmark with --budget={old.get('budget')}, this one has "
            f"{budget}; every trial would change: use a new --workdir"
        )
    specs = {o: tuning_spec(o, seeds, Path(grids_dir)) for o in optimizer_names}
    cells = []
    for p in problem_names:
        for o in optimizer_names:
            cells.append(
                Cell(
                    p,
                    o,
                    workdir / p / o,
                    specs[o],
                    (str(problems.problem_file(p)), str(files[o])),
                    (f"Problem.budget = {float(budget)!r}", *(p.strip() for p in gin_params)),
                )
            )
    return cells


def run(
    workdir: str | Path,
    cells: Sequence[Cell],
    backend: Backend | None = None,
    retry_failed: bool = False,
    emit: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Runs every unfinished trial of every cell on one backend; returns status counts.

    Trials that already finished are skipped; interrupted ones resume (as in a sweep).
    """
    backend = backend or LocalBackend(1)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    jobs, already, total = [], [], 0
    for cell in cells:
        trials, files = driver.plan(cell.sweep_dir, cell.spec, cell.gin_files, cell.gin_params)
        total += len(trials)
        for trial in trials:
            folder = runner.trial_dir(cell.sweep_dir, trial.trial_id)
            if folder.exists() and not runner.needs_run(folder, retry_failed):
                already.append((runner.read_status(folder) or {}).get("status"))
                continue
            if launch.alive_elsewhere(str(folder.resolve())) is not None:
                continue
            jobs.append(
                runner.prepare_trial(
                    cell.sweep_dir, trial, files, list(cell.gin_params), backend.threads_per_trial
                )
            )
    meta = {
        "problems": sorted({c.problem for c in cells}),
        "optimizers": sorted({c.optimizer for c in cells}),
        "seeds": cells[0].spec.seeds if cells else [],
        "budget": _budget_of(cells),
        "cells": [f"{c.problem}/{c.optimizer}" for c in cells],
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    schema.write_text_atomic(workdir / BENCHMARK_FILE, json.dumps(meta, indent=2) + "\n")
    progress = Progress(total, backends.count_statuses(already), emit)
    if already:
        progress.emit(f"{len(already)} of {total} trials already finished; skipping them")
    backends.run_jobs(jobs, backend, progress)
    progress.emit(progress.line())
    return dict(progress.counts)


def _budget_of(cells: Sequence[Cell]) -> float | None:
    for cell in cells:
        for line in cell.gin_params:
            if line.startswith("Problem.budget = "):
                return float(line.split("=", 1)[1])
    return None


# -- report ----------------------------------------------------------------------------------
def problem_target(name: str, found: Sequence[records.RunRecord]) -> Target:
    """The problem's target as its file defines it now (targets are re-derived as budgets
    change); from a trial's ``result.json`` if the file is gone."""
    try:
        return parse_target(problems.describe(name)["target"], f"problem {name!r}")
    except problems.ProblemError:
        pass
    for r in found:
        if r.result is not None and "problem" in r.result:
            t = r.result["problem"]["target"]
            return Target(t["metric"], t["goal"], float(t["value"]))
    raise BenchmarkError(f"problem {name!r}: no problem file and no result with its target")


@dataclasses.dataclass
class ProblemResult:
    """One problem's records, target, leaderboard and time-to-target table."""

    name: str
    target: Target
    records: list[records.RunRecord]
    select: str
    times: dict[str, dict[str, float]]  # measure -> optimizer -> median time (inf = missed)


def collect(cells: Sequence[Cell]) -> list[ProblemResult]:
    """Reads every cell's trials back and computes each optimizer's fastest time to target."""
    by_problem: dict[str, list[Cell]] = {}
    for cell in cells:
        by_problem.setdefault(cell.problem, []).append(cell)
    out = []
    for name, group in by_problem.items():
        found: list[records.RunRecord] = []
        for cell in group:
            if (cell.sweep_dir / records.SWEEP_FILE).exists():
                found.extend(records.read_sweep(cell.sweep_dir))
        target = problem_target(name, found)
        select = f"final_{target.metric}"
        configs = group_configs(found)
        config_times = analysis.config_times(configs, target)
        times: dict[str, dict[str, float]] = {}
        for measure in analysis.MEASURES:
            row = {c.optimizer: math.inf for c in group}
            for slot in analysis.fastest_per_optimizer(config_times, measure).values():
                for optimizer, t in slot.items():
                    row[optimizer] = min(row.get(optimizer, math.inf), t.median(measure))
            times[measure] = row
        out.append(ProblemResult(name, target, found, select, times))
    return out


def profiles(results: Sequence[ProblemResult]) -> dict[str, analysis.Profile]:
    """AlgoPerf performance profile per measure across the problems."""
    return {
        m: analysis.performance_profile({r.name: r.times[m] for r in results}, m)
        for m in analysis.MEASURES
    }


def write_report(workdir: str | Path, cells: Sequence[Cell], make_plots: bool = True) -> list[Path]:
    """Writes ``<workdir>/report/`` (see the module docstring); returns the files written."""
    out = Path(workdir) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    results = collect(cells)
    profs = profiles(results)
    written = []
    md = [
        "# Benchmark",
        "",
        f"Problems: {', '.join(r.name for r in results)}. Budget factor: {_budget_of(cells)}. "
        f"Seeds: {cells[0].spec.seeds if cells else []}.",
        "",
        "Per problem: each optimizer's configuration with the best mean final value of the "
        "problem's validation metric (the selection; test metrics are only reported), and the "
        "median over seeds of the steps / seconds / forward-pass equivalents its fastest "
        "configuration needed to reach the problem's validation target.",
    ]
    for r in results:
        text, table = report.leaderboard(r.records, r.target, r.select)
        md += ["", f"## {r.name} (target `{r.target}`)", ""]
        md += [line for line in text.splitlines()[1:] if line.startswith("|")]
        md += failure_lines(r, [c for c in cells if c.problem == r.name])
        path = out / f"leaderboard_{plots.slug(r.name)}.csv"
        schema.write_text_atomic(path, table)
        written.append(path)
    md += ["", "## Performance profiles", ""]
    md += [
        "Score: normalised area under ρ(τ) for τ ∈ [1, 4] (1 = fastest on every problem). ρ(1): "
        "fraction of problems on which the optimizer was the fastest to the target.",
        "",
        "| optimizer | "
        + " | ".join(f"score ({m})" for m in analysis.MEASURES)
        + " | ρ(1) steps |",
        "|---|" + "---|" * (len(analysis.MEASURES) + 1),
    ]
    for name in sorted({o for p in profs.values() for o in p.rho}):
        scores = " | ".join(f"{profs[m].score[name]:.3f}" for m in analysis.MEASURES)
        md.append(f"| {name} | {scores} | {profs['steps'].rho[name][0]:.2f} |")
    schema.write_text_atomic(out / "benchmark.md", "\n".join(md) + "\n")
    schema.write_text_atomic(out / "profiles.csv", report.profiles_csv(profs))
    written += [out / "benchmark.md", out / "profiles.csv"]
    if make_plots:
        for measure, profile in profs.items():
            title = f"Performance profile over {len(results)} problems ({measure})"
            written.append(
                plots.plot_profile(profile, out / "plots" / f"profile_{measure}.png", title)
            )
        for r in results:
            metric = r.target.metric
            curves = {
                m: analysis.best_curves(r.records, m, r.select).get(_workload(r), [])
                for m in (metric, "train_loss")
            }
            if any(curves.values()):
                path = out / "plots" / f"curves_{plots.slug(r.name)}_steps.png"
                title = f"{r.name}: selected configuration per optimizer"
                written.append(plots.plot_curves(curves, "steps", path, title))
    return written


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failure_reason(error: str | None, limit: int = 240) -> str:
    """One line for a failed trial's recorded error: the error itself, or a traceback's last
    line (the exception), without terminal colours, capped at ``limit`` characters."""
    lines = [line.strip() for line in _ANSI.sub("", error or "").splitlines() if line.strip()]
    text = lines[-1] if lines else "no error recorded"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failure_lines(result: ProblemResult, cells: Sequence[Cell]) -> list[str]:
    """Markdown rows ``| optimizer | failed | reason |`` for the problem's failed trials (one
    row per optimizer and distinct reason), or nothing if none failed."""
    rows = []
    for cell in cells:
        mine = [r for r in result.records if Path(cell.sweep_dir) in r.path.parents]
        reasons: dict[str, int] = {}
        for r in mine:
            if r.status == runner.FAILED:
                reason = failure_reason(r.error)
                reasons[reason] = reasons.get(reason, 0) + 1
        for reason, count in reasons.items():
            escaped = reason.replace("|", "\\|")
            rows.append(f"| {cell.optimizer} | {count} of {len(mine)} | {escaped} |")
    if not rows:
        return []
    return [
        "",
        "Failed trials (the error each recorded in its `status.json`):",
        "",
        "| optimizer | failed | reason |",
        "|---|---|---|",
        *rows,
    ]


def _workload(result: ProblemResult) -> str:
    return next((r.workload for r in result.records if r.result is not None), "unknown")


def summary_lines(workdir: str | Path) -> list[str]:
    """The profile scores of a finished report, for the command's last log lines."""
    path = Path(workdir) / REPORT_DIR / "profiles.csv"
    if not path.exists():
        return []
    return path.read_text(encoding="utf-8").splitlines()


__all__ = [
    "BenchmarkError",
    "Cell",
    "ProblemResult",
    "collect",
    "failure_reason",
    "optimizer_files",
    "plan",
    "profiles",
    "run",
    "split_names",
    "tuning_spec",
    "write_report",
]
