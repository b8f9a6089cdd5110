"""Sweep throughput: trials per second with ``--parallel=1`` vs ``--parallel=2`` (local and Ray).

    python scripts/bench_sweep.py                      # 8 short MNIST-1D trials, 3 repeats
    python scripts/bench_sweep.py --trials=8 --steps=200 --repeats=3 --out=/tmp/bench_sweep.md

Each repeat runs the same sweep (``--trials`` learning rates of Adam on the MNIST-1D MLP,
``--steps`` steps each, one evaluation at the end) in fresh workdirs, once per setting, in
alternating order so a change in machine load hits every setting alike. Throughput =
trials / wall-clock seconds of the whole sweep (process start, TF import, data, training,
evaluation, outputs). Settings:

* ``parallel=1``: one trial at a time, all cores to it (TF's default pools);
* ``parallel=2``: two at a time, each limited to cores // 2 threads (the sweep's default);
* ``parallel=2, unlimited`` (``--oversubscribed``): two at a time, each with TF's default
  pools (one thread per core each) — what the thread limit avoids;
* ``warm`` (``--warm``): the same two settings with warm trial workers
  (:mod:`dirgrad_opt.sweeps.workers`: one long-lived process per slot) instead of a process
  per trial;
* ``ray`` (``--ray``): a local Ray instance at parallel=2, one task per trial (a fresh trial
  process each) and warm actors (``reuse_actors``-style: one warm trial worker per actor).

Per-trial overhead = the trial's wall time (``status.json`` duration) minus its training time
(``result.json`` ``times.train_s``): process start, TF import, data, tracing, evaluation, output.

Prints a Markdown table (and writes it to ``--out``) with, per run, the CPU that *other*
processes used meanwhile (``/proc/stat`` busy time minus this process and its trials, in
cores): on a shared machine, runs with other load are not comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from dirgrad_opt import sweeps  # noqa: E402
from dirgrad_opt.sweeps import backends  # noqa: E402


def sweep_spec(num_trials: int) -> sweeps.SweepSpec:
    """``num_trials`` Adam learning rates, log-spaced in [1e-4, 1e-1], seed 0."""
    rates = [float(f"{10 ** (-4 + 3 * i / max(1, num_trials - 1)):.4g}") for i in range(num_trials)]
    return sweeps.parse_sweep({"grid": {"Adam.learning_rate": rates}, "seeds": [0]})


def busy_cpu_s() -> float:
    """CPU seconds all processes on the machine have used (``/proc/stat``, non-idle time)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and its finished children (the trial processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_once(
    spec, gin_params, parallel: int, threads: int | None, root: Path, warm: bool, ray: bool = False
):
    """``(wall seconds, cores used by other processes, per-trial overheads)`` of one sweep in
    a fresh workdir; raises if a trial did not finish ok."""
    workdir = Path(tempfile.mkdtemp(dir=root, prefix=f"p{parallel}_"))
    if ray:  # a local Ray instance, started and stopped by the sweep (counted in its wall time)
        backend = backends.RayBackend(parallel=parallel, cpus_per_trial=1, warm=warm)
    else:
        backend = backends.LocalBackend(parallel, threads, warm=warm)
    busy0, own0 = busy_cpu_s(), own_cpu_s()
    t0 = time.perf_counter()
    report = sweeps.run_sweep(
        workdir,
        spec,
        ["configs/mnist1d/mlp_adam.gin"],
        gin_params,
        backend=backend,
        emit=lambda line: None,
    )
    seconds = time.perf_counter() - t0
    foreign = max(0.0, (busy_cpu_s() - busy0) - (own_cpu_s() - own0)) / seconds
    bad = [o for o in report.ran if o.status != "ok"]
    if bad:
        raise RuntimeError(f"trial {bad[0].trial_id} {bad[0].status}: {bad[0].error}")
    overheads = []
    for trial in (workdir / "trials").iterdir():
        status = json.loads((trial / "status.json").read_text())
        result = json.loads((trial / "result.json").read_text())
        overheads.append(status["duration_s"] - result["times"]["train_s"])
    shutil.rmtree(workdir, ignore_errors=True)
    return seconds, foreign, overheads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per sweep")
    parser.add_argument("--steps", type=int, default=200, help="training steps per trial")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--oversubscribed", action="store_true", help="also parallel=2 unlimited")
    parser.add_argument("--warm", action="store_true", help="also the warm-worker settings")
    parser.add_argument(
        "--ray", action="store_true", help="also Ray at parallel=2: a task per trial, warm actors"
    )
    parser.add_argument("--out", default=None, help="also write the Markdown table here")
    args = parser.parse_args()

    cores = backends.available_cores()
    spec = sweep_spec(args.trials)
    gin_params = [
        f"train.num_steps = {args.steps}",
        f"train.eval_every = {args.steps}",
        f"train.checkpoint_every = {args.steps}",
        f"train.log_every = {args.steps}",
    ]
    # (name, parallel, threads, warm, ray)
    settings = [
        ("parallel=1", 1, None, False, False),
        (f"parallel=2, {max(1, cores // 2)} thread(s) each", 2, None, False, False),
    ]
    if args.oversubscribed:
        settings.append(("parallel=2, unlimited threads", 2, cores, False, False))
    if args.warm:
        settings.append(("parallel=1, warm workers", 1, None, True, False))
        settings.append(
            (f"parallel=2, {max(1, cores // 2)} thread(s), warm workers", 2, None, True, False)
        )
    if args.ray:
        settings.append(("ray, parallel=2, a task per trial", 2, None, False, True))
        settings.append(("ray, parallel=2, warm actors", 2, None, True, True))
    times: dict[str, list[float]] = {name: [] for name, *_ in settings}
    others: dict[str, list[float]] = {name: [] for name, *_ in settings}
    overhead: dict[str, list[float]] = {name: [] for name, *_ in settings}
    root = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    try:
        for repeat in range(args.repeats):
            order = settings if repeat % 2 == 0 else list(reversed(settings))
            for name, parallel, threads, warm, ray in order:
                seconds, foreign, extra = run_once(
                    spec, gin_params, parallel, threads, root, warm, ray
                )
                times[name].append(seconds)
                others[name].append(foreign)
                overhead[name].extend(extra)
                print(f"repeat {repeat}: {name}: {seconds:.1f} s "
                      f"({args.trials / seconds:.3f} trials/s; other processes used "
                      f"{foreign:.2f} cores)", file=sys.stderr)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = statistics.median(times[settings[0][0]])
    lines = [
        f"{args.trials} trials × {args.steps} steps (MNIST-1D MLP, Adam), {cores} cores, "
        f"{args.repeats} repeats. 'Other load' = cores busy with other processes during the "
        "run (from /proc/stat minus this process and its trials).",
        "",
        "| setting | wall s per sweep: median (all runs) | other load (cores) per run | "
        "trials/s | speed-up vs parallel=1 | per-trial overhead s (median) |",
        "|---|---|---|---|---|---|",
    ]
    for name, *_ in settings:
        median = statistics.median(times[name])
        runs = ", ".join(f"{t:.1f}" for t in times[name])
        load = ", ".join(f"{x:.2f}" for x in others[name])
        rate, speedup = args.trials / median, base / median
        extra = statistics.median(overhead[name])
        lines.append(
            f"| {name} | {median:.1f} ({runs}) | {load} | {rate:.3f} | {speedup:.2f}× "
            f"| {extra:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    print(json.dumps({"seconds": times, "other_cores": others, "overhead_s": overhead}),
          file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
