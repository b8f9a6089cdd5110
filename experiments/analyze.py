"""Analyse runs and sweeps: leaderboard, time to target, performance profiles, plots.

    python -m experiments.analyze --workdir=runs/sweeps/mnist1d_comparison \
        --target="test_accuracy>=0.65"
    python -m experiments.analyze --workdir=runs/a --workdir=runs/b --output_dir=runs/ab \
        --target="train_loss<=0.3" --cost_weights="backward=2,jvp=1"
    python -m experiments.analyze --workdir=runs/sweeps/x \
        --slice_run=runs/sweeps/x/trials/c1234abcd-s0 --slice_direction=gradient

Thin by design: parse the flags, call :mod:`dirgrad_opt.sweeps`. Each ``--workdir`` may be a
sweep, a single run, or a folder of them. Writes into ``--output_dir`` (default
``<first workdir>/analysis``): ``summary.csv``/``summary.md`` over every run found,
``leaderboard.md``/``.csv``, with a target ``time_to_target.csv`` and ``profiles.csv``, and
``plots/*.png``; a sweep's own ``summary.*`` is rewritten too. The target comes from
``--target`` or, for a sweep, its sweep file's ``"target"``. Prints the leaderboard.
``--import=my_opt`` (repeatable) imports your own module first (a loss slice rebuilds a run's
dataset and model through gin; the folders a run's ``operative_config.gin`` records are
importable anyway).

Runs whose ``trial.json``, ``result.json`` or ``metrics.jsonl`` cannot be read are skipped with
a warning (listed at the end of ``leaderboard.md``); the rest are analysed.

Exit codes: 0 done; 2 bad flags, no readable runs, or an I/O error (one line on stderr naming
the path, and the errno for I/O errors).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "Run or sweep folder (repeatable).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Default: <first workdir>/analysis.")
_TARGET = flags.DEFINE_string("target", None, "e.g. 'test_accuracy>=0.6' or 'train_loss<=0.3'.")
_SELECT = flags.DEFINE_string(
    "select_metric", "final_train_loss", "Metric choosing each optimizer's best configuration."
)
_COST_WEIGHTS = flags.DEFINE_string(
    "cost_weights", "", "Forward-pass equivalents per pass, e.g. 'backward=2,jvp=1' (defaults)."
)
_BEST_SWEEP = flags.DEFINE_string(
    "best_sweep_file",
    None,
    "Also write a sweep file rerunning each optimizer's selected configuration on --best_seeds.",
)
_BEST_SEEDS = flags.DEFINE_list(
    "best_seeds", ["0", "1", "2", "3", "4"], "Seeds of --best_sweep_file."
)
_TAU_MAX = flags.DEFINE_float("tau_max", 4.0, "Largest ratio of the performance profiles.")
_PLOTS = flags.DEFINE_bool("plots", True, "Write PNG plots (needs matplotlib).")
_SLICE_RUN = flags.DEFINE_string(
    "slice_run", None, "Run folder: plot the loss along the step direction at its checkpoint."
)
_SLICE_DIRECTION = flags.DEFINE_enum(
    "slice_direction",
    "gradient",
    ["gradient", "update"],
    "-grad on the next batch, or the update between the last two checkpoints.",
)
_SLICE_RANGE = flags.DEFINE_string(
    "slice_range", None, "t range 'min,max' (default: 3 Newton steps)."
)
_SLICE_STEP = flags.DEFINE_integer("slice_step", None, "Checkpoint step (default: latest).")
_IMPORTS = flags.DEFINE_multi_string(
    "import", [], "Your own module to import first, e.g. my_opt (repeatable; for --slice_run)."
)
_IMPORT_PATHS = flags.DEFINE_multi_string(
    "import_path", [], "Folder to look in for --import modules (repeatable; default: cwd)."
)
flags.mark_flag_as_required("workdir")

EXIT_CONFIG_ERROR = 2


def _fail(message: str) -> None:
    print(f"analyze: error: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIG_ERROR)


def _slice_range(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        _fail(f"--slice_range={text!r}: write 'min,max', e.g. '-0.5,1.5'")
    if not low < high:
        _fail(f"--slice_range={text!r}: min must be < max")
    return low, high


def _sweep_target(workdirs: list[Path]) -> object:
    """The ``"target"`` of the first sweep among ``workdirs`` that has one, else ``None``."""
    from dirgrad_opt.sweeps import records, runner

    for w in workdirs:
        spec = (runner.read_json(w / records.SWEEP_FILE) or {}).get("spec", {})
        if "target" in spec:
            return spec["target"]
    return None


def _sweep_json(spec: dict) -> str:
    """A sweep file's JSON with one line per sub-sweep (readable, diff-friendly)."""
    union = ",\n".join("    " + json.dumps(u) for u in spec["union"])
    rest = "".join(f',\n  "{k}": {json.dumps(v)}' for k, v in spec.items() if k != "union")
    return '{\n  "union": [\n' + union + "\n  ]" + rest + "\n}\n"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}")
    try:  # before the imports below (TensorFlow): a typo fails at once
        best_seeds = [int(v) for v in _BEST_SEEDS.value]
    except ValueError:
        _fail(f"--best_seeds={','.join(_BEST_SEEDS.value)!r}: give integers")
    from dirgrad_opt import sweeps, user_modules
    from dirgrad_opt.sweeps import records, runner, summary

    logging.set_verbosity(logging.INFO)
    try:  # the user's optimizers, datasets, models: a loss slice rebuilds them through gin
        user_modules.import_modules(_IMPORTS.value, _IMPORT_PATHS.value)
    except user_modules.ImportFailed as error:
        _fail(str(error))
    workdirs = [Path(w) for w in _WORKDIRS.value]
    out = Path(_OUTPUT_DIR.value) if _OUTPUT_DIR.value else workdirs[0] / "analysis"
    try:
        if _SELECT.value not in summary.METRICS:
            raise ValueError(
                f"--select_metric={_SELECT.value!r} is unknown; use one of "
                f"{', '.join(summary.METRICS)}"
            )
        weights = records.parse_cost_weights(_COST_WEIGHTS.value)
        skipped: list[str] = []  # unreadable runs, each warned about and left out
        found = sweeps.discover(workdirs, skipped)
        target = sweeps.parse_target(_TARGET.value, "--target") if _TARGET.value else None
        if target is None:
            for w in workdirs:
                meta = runner.read_json(w / records.SWEEP_FILE) or {}
                if "target" in meta.get("spec", {}):
                    target = sweeps.parse_target(meta["spec"]["target"], f"{w}/sweep.json")
                    break
        for w in workdirs:
            if (w / records.SWEEP_FILE).exists():  # its own tables, from the runs read above
                own = [r for r in found if r.group == str(w)]
                summary.write_summary(w, own, _SELECT.value, f"Sweep {w.name}")
        summary.write_summary(
            out, found, _SELECT.value, "Summary of " + ", ".join(map(str, workdirs))
        )
        written = sweeps.write_report(
            found, out, target, _SELECT.value, weights, _PLOTS.value, _TAU_MAX.value, skipped
        )
        if _BEST_SWEEP.value:
            spec = summary.best_sweep(
                summary.best_per_optimizer(summary.group_configs(found), _SELECT.value),
                best_seeds,
                _sweep_target(workdirs),
            )
            sweeps.parse_sweep(spec, where="--best_sweep_file")  # what experiments.sweep accepts
            Path(_BEST_SWEEP.value).write_text(_sweep_json(spec), encoding="utf-8")
            written.append(Path(_BEST_SWEEP.value))
        if _SLICE_RUN.value:
            from dirgrad_opt.sweeps import landscape, plots

            data = landscape.loss_slice(
                _SLICE_RUN.value,
                _SLICE_DIRECTION.value,
                _slice_range(_SLICE_RANGE.value),
                checkpoint_step=_SLICE_STEP.value,
            )
            name = f"slice_{plots.slug(Path(_SLICE_RUN.value).name)}_step{data['step']}.png"
            written.append(plots.plot_slice(data, out / "plots" / name))
    except (ValueError, OSError, ImportError) as error:
        _fail(records.describe_error(error))  # I/O errors: path and errno
    print((out / "leaderboard.md").read_text(encoding="utf-8"))
    if skipped:
        logging.warning("Skipped %d unreadable run(s); listed in leaderboard.md", len(skipped))
    if target is None:
        logging.info("No target (--target or the sweep file's): no time to target or profiles.")
    logging.info("Wrote %d files to %s", len(written), out)


if __name__ == "__main__":
    app.run(main)
