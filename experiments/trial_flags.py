"""Flags on how trials run, shared by ``experiments.sweep`` and ``experiments.benchmark``.

Defined once here (absl refuses a flag defined twice in one process); each entry point adopts
them as its own key flags, so ``--help`` lists them.
"""

from __future__ import annotations

from absl import flags

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
