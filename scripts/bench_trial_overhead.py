"""Per-trial overhead of ``python -m experiments.train``: process wall time minus training time.

    python scripts/bench_trial_overhead.py --before=/tmp/old_checkout --after=. --pairs=5

Runs the trial a sweep runs — ``python -m experiments.train`` of the MNIST-1D MLP with Adam,
``--steps`` steps (default 500), one evaluation at the end (plus the step-0 one where the code
has it) — in a fresh workdir, alternating the two checkouts (``--before``, ``--after``: project
roots, each put first on ``PYTHONPATH``) so a change in machine load hits both alike, and
prints a Markdown table of medians over ``--pairs`` pairs:

* ``wall``: the process, from start to exit (``subprocess.run``);
* ``train``: ``result.json`` ``times.train_s`` plus ``times.trace_s`` where reported (the old
  code counted tracing in ``train_s``; the overhead is then compared on the same footing);
* ``overhead`` = wall − train, and the per-pair ratio after / before (median);
* the split of the overhead: ``start-up`` (interpreter, imports, gin parse: wall − the run's
  own ``times.wall_s``), ``eval`` (``times.eval_s``), ``setup`` (the rest of the run's wall:
  data, model, checkpoints, outputs).

The table goes to stdout and ``--out``. Timings on a shared machine are noisy: compare the
ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_trial(project: Path, workdir: Path, steps: int) -> dict[str, float]:
    """One trial process in ``project``; its wall time and the times in its result.json."""
    env = dict(os.environ, PYTHONPATH=str(project), TF_CPP_MIN_LOG_LEVEL="3")
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        "--gin_file=configs/mnist1d/mlp_adam.gin",
        f"--gin_param=train.num_steps = {steps}",
        f"--gin_param=train.eval_every = {steps}",
        f"--gin_param=train.checkpoint_every = {steps}",
        f"--workdir={workdir}",
    ]
    t0 = time.perf_counter()
    subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    times = json.loads((workdir / "result.json").read_text())["times"]
    train = times["train_s"] + times.get("trace_s", 0.0)
    return {
        "wall": wall,
        "train": train,
        "overhead": wall - train,
        "startup": wall - times["wall_s"],
        "eval": times["eval_s"],
        "setup": times["wall_s"] - train - times["eval_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, type=Path, help="project root of the old code")
    parser.add_argument("--after", default=ROOT, type=Path, help="project root of the new code")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    rows: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as tmp:
        for i in range(args.pairs):
            order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
            for name in order:
                r = run_trial(trees[name], Path(tmp) / f"{name}{i}", args.steps)
                rows[name].append(r)
                print(f"pair {i} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
    ratios = [
        a["overhead"] / b["overhead"] for a, b in zip(rows["after"], rows["before"], strict=True)
    ]
    keys = ["wall", "train", "overhead", "startup", "setup", "eval"]
    lines = [
        f"{args.steps}-step MNIST-1D MLP trial (Adam), medians of {args.pairs} alternated pairs, s",
        "",
        "| code | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name in ("before", "after"):
        cells = [f"{statistics.median(r[k] for r in rows[name]):.2f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"overhead after / before, median of per-pair ratios: {statistics.median(ratios):.2f}"
    )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
