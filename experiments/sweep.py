"""Run a sweep: configurations × seeds, each trial its own ``experiments.train`` process.

    python -m experiments.sweep --gin_file=configs/mnist1d/mlp_adam.gin \
        --sweep_file=configs/sweeps/mnist1d_lr/adam.json \
        --workdir=runs/sweeps/mnist1d_lr_adam --parallel=2
    python -m experiments.sweep ... --backend=ray --ray_address=auto --cpus_per_trial=2

Thin by design: parse the flags, call :mod:`dirgrad_opt.sweeps`. Writes
``<workdir>/trials/<id>/`` per trial, ``summary.csv``/``summary.md`` and ``analysis/``
(leaderboard, plots; time to target and profiles when the sweep file or ``--target`` gives a
target). Rerunning the same command skips finished trials and resumes interrupted ones; the
tables and plots are rewritten. Failed trials are recorded (status, error) and do not stop the
others; ``--retry_failed`` reruns them.

Trials whose files cannot be read are left out of the tables and the report with a warning.

Exit codes: 0 every trial ran to an end (some may have failed or diverged: see summary.md);
1 the report could not be written (one line: path and errno); 2 bad flags or sweep file, an
unreachable Ray cluster, or an I/O error such as an unwritable workdir (one line naming the
path and errno); 130 (SIGINT, Ctrl-C) or 143 (SIGTERM) interrupted: the running trials got
SIGTERM, checkpointed and are marked ``interrupted`` (rerun to resume).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from experiments import trial_flags  # noqa: E402

_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Gin file of every trial (repeatable).")
_GIN_PARAMS = flags.DEFINE_multi_string(
    "gin_param", [], "Binding for every trial, before the trial's own (repeatable)."
)
_SWEEP_FILE = flags.DEFINE_string("sweep_file", None, "Sweep JSON (grid/random/union/seeds).")
_IMPORTS = flags.DEFINE_multi_string(
    "import", [], "Your own module every trial imports, e.g. my_opt (repeatable)."
)
_IMPORT_PATHS = flags.DEFINE_multi_string(
    "import_path", [], "Folder to look in for --import modules (repeatable; default: cwd)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder of the sweep.")
_RETRY_FAILED = trial_flags.RETRY_FAILED
flags.adopt_module_key_flags(trial_flags)
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Check every configuration (pre-flight) and list the trials; run nothing."
)
_PREFLIGHT = flags.DEFINE_bool(
    "preflight", True, "Parse and bind every configuration's gin in one process before running."
)
_TARGET = flags.DEFINE_string(
    "target", None, "Target for time-to-target, e.g. 'test_accuracy>=0.6' (overrides the file)."
)
_SELECT = flags.DEFINE_string(
    "select_metric", "final_train_loss", "Metric choosing each optimizer's best configuration."
)
_PLOTS = flags.DEFINE_bool("plots", True, "Write PNG plots (needs matplotlib).")
flags.mark_flags_as_required(["sweep_file", "workdir"])

EXIT_REPORT_FAILED = 1
EXIT_CONFIG_ERROR = 2


def _fail(message: str, code: int) -> None:
    print(f"sweep: error: {message}", file=sys.stderr)
    sys.exit(code)


def _dry_run(workdir: Path, spec) -> None:
    """``--dry_run``: the same pre-flight check as a real sweep, then the plan; writes nothing."""
    from dirgrad_opt import sweeps
    from dirgrad_opt.sweeps import driver

    try:
        imports, paths = driver.resolve_imports(_IMPORTS.value, _IMPORT_PATHS.value)
        trials, files = driver.plan(
            workdir, spec, _GIN_FILES.value, _GIN_PARAMS.value, None, imports, paths, write=False
        )
        checked = 0
        if _PREFLIGHT.value:
            checked = driver.check_configurations(trials, files, _GIN_PARAMS.value, imports, paths)
    except sweeps.SweepError as error:
        _fail(str(error), EXIT_CONFIG_ERROR)
    for trial in trials:
        print(trial.trial_id, " ".join(trial.gin_lines()), sep="\t")
    configs = len({t.config_id for t in trials})
    print(
        f"{len(trials)} trials, {configs} configurations x {len(spec.seeds)} seed(s); "
        f"pre-flight: {checked} configuration(s) checked, all valid",
        file=sys.stderr,
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; use --gin_file / --gin_param", EXIT_CONFIG_ERROR)
    from dirgrad_opt import user_modules

    try:  # a missing --import module fails here, before the pre-flight process starts
        for name in _IMPORTS.value:
            user_modules.find_root(name, _IMPORT_PATHS.value)
    except user_modules.ImportFailed as error:
        _fail(str(error), EXIT_CONFIG_ERROR)
    from dirgrad_opt import sweeps, workdir_lock
    from dirgrad_opt.sweeps import backends, driver, records, summary

    logging.set_verbosity(logging.INFO)
    workdir = Path(_WORKDIR.value)
    try:
        spec = sweeps.load_sweep(_SWEEP_FILE.value)
        target = sweeps.parse_target(_TARGET.value, "--target") if _TARGET.value else spec.target
        if _SELECT.value not in summary.METRICS:
            raise sweeps.SweepError(
                f"--select_metric={_SELECT.value!r} is unknown; use one of "
                f"{', '.join(summary.METRICS)}"
            )
        backend = trial_flags.backend()
    except (sweeps.SweepError, ValueError, ImportError) as error:
        _fail(str(error), EXIT_CONFIG_ERROR)

    if _DRY_RUN.value:
        _dry_run(workdir, spec)
        return
    created = not workdir.exists()
    try:  # one driver per sweep workdir; the OS frees the lock when this process ends
        workdir.mkdir(parents=True, exist_ok=True)
        workdir_lock.acquire(workdir, "sweep workdir")
    except workdir_lock.WorkdirLocked as error:
        _fail(str(error), EXIT_CONFIG_ERROR)
    except OSError as error:  # a workdir below a file, unwritable...
        _fail(records.describe_error(error), EXIT_CONFIG_ERROR)
    received: list[int] = []  # signals caught during the sweep
    try:
        with driver.interrupt_on_signals(received):
            report = sweeps.run_sweep(
                workdir,
                spec,
                _GIN_FILES.value,
                _GIN_PARAMS.value,
                backend=backend,
                retry_failed=_RETRY_FAILED.value,
                sweep_file=_SWEEP_FILE.value,
                imports=_IMPORTS.value,
                import_paths=_IMPORT_PATHS.value,
                check=_PREFLIGHT.value,
            )
    except (sweeps.SweepError, backends.BackendError) as error:
        if created and {p.name for p in workdir.iterdir()} <= {workdir_lock.LOCK_FILE}:
            shutil.rmtree(workdir, ignore_errors=True)  # e.g. the pre-flight failed: no trace
        _fail(str(error), EXIT_CONFIG_ERROR)
    except OSError as error:  # unwritable or full workdir, a workdir below a file...
        _fail(records.describe_error(error), EXIT_CONFIG_ERROR)
    except KeyboardInterrupt:  # SIGINT (Ctrl-C) or SIGTERM, via driver.SweepInterrupted
        signum = received[0] if received else signal.SIGINT
        print(
            f"sweep: interrupted ({signal.Signals(signum).name}); running trials were stopped "
            "and marked interrupted; rerun the same command to resume",
            file=sys.stderr,
        )
        sys.exit(128 + signum)

    try:
        skipped: list[str] = []  # unreadable trials, each warned about and left out
        found = records.read_sweep(workdir, skipped)
        csv_path, md_path = summary.write_summary(
            workdir, found, _SELECT.value, f"Sweep {workdir.name}"
        )
        make_plots = _PLOTS.value
        if make_plots:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                logging.warning("matplotlib is not installed: no plots (pip install matplotlib)")
                make_plots = False
        sweeps.write_report(
            found, workdir / "analysis", target, _SELECT.value, None, make_plots, skipped=skipped
        )
    except (ValueError, OSError) as error:
        message = records.describe_error(error)
        _fail(f"the trials ran, but the report failed: {message}", EXIT_REPORT_FAILED)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(report.counts.items()))
    logging.info(
        "Sweep done: %d trials (%s); ran %d now. Tables: %s, %s; analysis in %s",
        len(report.trials),
        counts,
        len(report.ran),
        csv_path,
        md_path,
        workdir / "analysis",
    )


if __name__ == "__main__":
    app.run(main)
