"""Derive each problem's target from a tuned-Adam benchmark run (AlgoPerf's rule).

    python -m experiments.benchmark --problems=offline --optimizers=Adam --seeds=0,1 \
        --budget=1 --workdir=runs/targets --parallel=2
    python scripts/problem_targets.py --workdir=runs/targets            # print
    python scripts/problem_targets.py --workdir=runs/targets --write    # update the gin files

Target = the median over seeds of the final validation metric (the problem's target metric) of
Adam's best configuration on that metric (its grid: configs/benchmark/Adam.json), at the full
budget, rounded to 3 significant digits toward "easier" (down for >=, up for <=) so that tuned
Adam itself meets it. ``--write`` replaces the ``Problem.target`` line of each problem file and
the comment above it that records how it was obtained.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dirgrad_opt import problems  # noqa: E402
from dirgrad_opt.problems import benchmark  # noqa: E402
from dirgrad_opt.sweeps import runner, summary  # noqa: E402

MARK = "# Target (scripts/problem_targets.py):"


def round_toward(value: float, goal: str, digits: int = 3) -> float:
    """``value`` to ``digits`` significant digits, down for ``>=`` and up for ``<=``."""
    if value == 0 or not math.isfinite(value):
        return value
    scale = 10 ** (digits - 1 - math.floor(math.log10(abs(value))))
    rounded = (math.floor if goal == ">=" else math.ceil)(value * scale) / scale
    return float(f"{rounded:.{digits}g}")


def derive(workdir: Path) -> dict[str, tuple[float, str]]:
    """``{problem: (target value, how)}`` from the Adam cells of a benchmark workdir."""
    out = {}
    for folder in sorted(p for p in workdir.iterdir() if (p / "Adam" / "sweep.json").exists()):
        name = folder.name
        cell = benchmark.Cell(name, "Adam", folder / "Adam", None, (), ())  # type: ignore[arg-type]
        (result,) = benchmark.collect([cell])
        best = summary.best_per_optimizer(summary.group_configs(result.records), result.select)
        if "Adam" not in best:
            print(f"{name}: no ok Adam configuration", file=sys.stderr)
            continue
        config = best["Adam"]
        values = [summary.run_metric(r, result.select) for r in config.runs]
        values = [v for v in values if v is not None and r_ok(config, v)]
        median = statistics.median(values)
        value = round_toward(median, result.target.goal)
        lr = config.bindings.get("Adam.learning_rate")
        steps = next(r.result["steps"] for r in config.runs if r.result is not None)
        how = (
            f"{MARK} tuned Adam (learning rate {lr} best of "
            f"configs/benchmark/Adam.json) reaches a median {result.target.metric} of "
            f"{median:.4g} over {len(values)} seeds after {steps} steps; rounded to {value:g}."
        )
        out[name] = (value, how)
    return out


def r_ok(config: summary.ConfigSummary, value: float) -> bool:
    return any(r.status == runner.OK for r in config.runs) and math.isfinite(value)


def write(name: str, value: float, how: str) -> None:
    path = problems.problem_file(name)
    lines, skipping = [], False
    for line in path.read_text().splitlines():  # drop an earlier target comment
        skipping = line.startswith(MARK) or (skipping and line.startswith("#   "))
        if not skipping:
            lines.append(line)
    metric_goal = re.match(r"(valid_\w+)(>=|<=)", problems.describe(name)["target"])
    assert metric_goal is not None
    target = f"Problem.target = '{metric_goal.group(1)}{metric_goal.group(2)}{value:g}'"
    out = []
    for line in lines:
        if line.startswith("Problem.target ="):
            out += textwrap.wrap(how, 99, subsequent_indent="#   ") + [target]
        else:
            out.append(line)
    path.write_text("\n".join(out) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--write", action="store_true", help="update configs/problems/*.gin")
    args = parser.parse_args()
    for name, (value, how) in derive(args.workdir).items():
        print(f"{name}: {value:g}  ({how[len(MARK) + 1 :]})")
        if args.write:
            write(name, value, how)


if __name__ == "__main__":
    main()
