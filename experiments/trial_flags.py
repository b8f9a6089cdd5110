"""Flags on where and how trials run, shared by ``experiments.sweep`` and
``experiments.benchmark``, and :func:`backend`, which builds the sweep backend they name.

Defined once here (absl refuses a flag defined twice in one process); each entry point adopts
them as its own key flags, so ``--help`` lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from absl import flags

if TYPE_CHECKING:  # the entry points import TensorFlow through dirgrad_opt.sweeps anyway
    from dirgrad_opt.sweeps import LocalBackend, RayBackend

PARALLEL = flags.DEFINE_integer("parallel", 1, "Trials at a time on this machine.", lower_bound=1)
BACKEND = flags.DEFINE_enum("backend", "local", ["local", "ray"], "Where trials run.")
RAY_ADDRESS = flags.DEFINE_string(
    "ray_address", None, "Existing Ray cluster ('auto', 'ray://host:10001'); default: a local one."
)
RAY_CONNECT_TIMEOUT = flags.DEFINE_float(
    "ray_connect_timeout_s", 10.0, "Ray: give up on --ray_address after this long (exit 2)."
)
CPUS_PER_TRIAL = flags.DEFINE_integer(
    "cpus_per_trial", 1, "Ray: CPUs requested per trial (and its thread limit).", lower_bound=1
)
THREADS = flags.DEFINE_integer(
    "threads_per_trial",
    None,
    "Local: threads per trial (default cores // parallel).",
    lower_bound=1,
)
FRESH = flags.DEFINE_bool(
    "fresh_process_per_trial",
    False,
    "Start a new process (local) or Ray task per trial instead of reusing warm workers "
    "(local: one per slot; Ray: one actor per slot).",
)
TIMEOUT = flags.DEFINE_float(
    "trial_timeout_s", None, "Warm workers: fail a trial running longer (seconds)."
)
RETRY_FAILED = flags.DEFINE_bool("retry_failed", False, "Rerun trials whose status is failed.")


def backend() -> LocalBackend | RayBackend:
    """The backend the flags name: ``--backend=local`` (``--parallel`` processes with
    ``--threads_per_trial`` threads each) or ``ray`` (``--ray_address``, ``--cpus_per_trial``,
    ``--ray_connect_timeout_s``); warm workers unless ``--fresh_process_per_trial``.

    Raises:
      ValueError: an invalid combination the backend refuses.
      ImportError: ``--backend=ray`` without Ray installed.
    """
    from dirgrad_opt import sweeps

    if BACKEND.value == "ray":
        return sweeps.RayBackend(
            RAY_ADDRESS.value,
            PARALLEL.value,
            CPUS_PER_TRIAL.value,
            connect_timeout_s=RAY_CONNECT_TIMEOUT.value,
            warm=not FRESH.value,
            trial_timeout_s=TIMEOUT.value,
        )
    return sweeps.LocalBackend(
        PARALLEL.value, THREADS.value, warm=not FRESH.value, trial_timeout_s=TIMEOUT.value
    )
