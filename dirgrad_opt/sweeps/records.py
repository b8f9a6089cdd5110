"""Reading runs back: find runs and sweep trials in workdirs, one :class:`RunRecord` each.

A workdir given to the analysis can be

* a sweep (``sweep.json``): its trials, in the order of the sweep file, including trials that
  failed (no ``result.json``) or have not run yet;
* a single run (``result.json`` from ``experiments.train``);
* any folder holding those further down (searched recursively).

Results are read and validated through :mod:`dirgrad_opt.training.schema` — the one definition
of ``result.json`` and ``metrics.jsonl``. A run whose ``trial.json``, ``result.json`` or
``metrics.jsonl`` cannot be read (corrupt, truncated, unreadable) is skipped with a one-line
warning naming the file (and the errno for I/O errors); the rest are reported. Pass a list as
``skipped`` to collect those lines (the report lists them).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from absl import logging

from dirgrad_opt.sweeps import runner
from dirgrad_opt.training import schema

SWEEP_FILE = "sweep.json"
PENDING = "pending"
#: Forward-pass equivalents per counted pass (see :func:`cost_fpe`).
DEFAULT_COST_WEIGHTS = {"forward_passes": 1.0, "backward_passes": 2.0, "jvps": 1.0}


@dataclasses.dataclass
class RunRecord:
    """One run (a sweep trial or a standalone ``experiments.train`` workdir).

    Attributes:
      run_id: the trial id, or the run folder's path relative to the given workdir.
      config_id: runs sharing it differ only in the seed.
      path: the run folder.
      seed: ``train.seed`` (``None`` if unknown: a trial that never ran has its seed in
        ``trial.json``, so this is only for foreign folders).
      bindings: the sweep bindings of the trial (empty for standalone runs).
      status: ``ok``, ``diverged``, ``failed``, or ``pending``/``running``/``interrupted``.
      error: the recorded error, if any.
      result: the validated ``result.json``, or ``None``.
      group: the workdir the run was found under (a sweep, or the folder given).
    """

    run_id: str
    config_id: str
    path: Path
    seed: int | None
    bindings: dict[str, Any]
    status: str
    error: str | None
    result: dict[str, Any] | None
    group: str
    optimizer_hint: str | None = None
    workload_hint: str | None = None
    _metrics: list[dict[str, Any]] | None = dataclasses.field(default=None, repr=False)

    @property
    def optimizer(self) -> str:
        """The optimizer class: from ``result.json``, else a ``train.optimizer`` binding, else
        the one optimizer of the trial's sweep (see :func:`infer_missing`)."""
        if self.result is not None:
            return self.result["optimizer"]["class"]
        return optimizer_from_bindings(self.bindings) or self.optimizer_hint or "unknown"

    @property
    def workload(self) -> str:
        """``dataset/model`` of the run; without a result, the one workload of its sweep."""
        if self.result is None:
            return self.workload_hint or "unknown"
        return f"{self.result['dataset']['name']}/{self.result['model']['name']}"

    def metrics(self) -> list[dict[str, Any]]:
        """The run's ``metrics.jsonl`` records (validated; cached; empty if missing)."""
        if self._metrics is None:
            path = self.path / schema.METRICS_FILE
            self._metrics = schema.read_metrics(path) if path.exists() else []
        return self._metrics


class UnreadableRun(ValueError):
    """A run whose files cannot be read; the message is one line naming the file."""


def describe_error(error: BaseException, path: str | os.PathLike | None = None) -> str:
    """One line for an I/O or format error: ``<path>: <reason> [<ERRNO>]`` for an
    ``OSError`` (``Permission denied [EACCES]``, ``No space left on device [ENOSPC]``...),
    else the error's first line, prefixed with ``path`` when the message does not name it."""
    if isinstance(error, OSError) and error.errno is not None:
        where = error.filename if error.filename is not None else path
        if error.filename2 is not None:
            where = f"{where} -> {error.filename2}"
        code = errno.errorcode.get(error.errno, str(error.errno))
        reason = f"{error.strerror or os.strerror(error.errno)} [{code}]"
        return f"{where}: {reason}" if where is not None else reason
    text = (str(error).splitlines() or [""])[0] or type(error).__name__
    if path is not None and str(path) not in text:
        text = f"{path}: {text}"
    return text


def _skip(error: UnreadableRun, skipped: list[str] | None) -> None:
    logging.warning("skipping an unreadable run: %s", error)
    if skipped is not None:
        skipped.append(str(error))


def optimizer_from_bindings(bindings: dict[str, Any]) -> str | None:
    """``'Adam'`` from a ``train.optimizer = '@Adam()'`` binding, else ``None``."""
    value = bindings.get("train.optimizer")
    if isinstance(value, str):
        match = re.fullmatch(r"@(?:[\w.]*/)*(?:[\w]+\.)*(\w+)(?:\(\))?", value)
        if match:
            return match.group(1)
    return None


# -- costs -------------------------------------------------------------------------------------
def parse_cost_weights(text: str) -> dict[str, float]:
    """``"backward=2,jvp=1"`` → weights over :data:`DEFAULT_COST_WEIGHTS` (forward is 1).

    Raises:
      ValueError: unknown name or a non-numeric / negative weight.
    """
    aliases = {"forward": "forward_passes", "backward": "backward_passes", "jvp": "jvps"}
    weights = dict(DEFAULT_COST_WEIGHTS)
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, value = item.partition("=")
        key = aliases.get(name.strip())
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if key is None or not math.isfinite(number) or number < 0:
            raise ValueError(
                f"cost weight {item!r}: write NAME=VALUE with NAME in forward, backward, jvp "
                "and VALUE >= 0, e.g. 'backward=2,jvp=1'"
            )
        weights[key] = number
    return weights


def cost_fpe(counters: dict[str, Any], weights: dict[str, float] | None = None) -> float | None:
    """Forward-pass equivalents of cumulative counters.

    ``fpe = forward_passes + 2·backward_passes + 1·jvps`` by default: a backward pass costs about
    two forward passes (reverse mode, Griewank & Walther 2008, §4.6) and a JVP's tangent
    propagation about one (its primal forward pass is counted in ``forward_passes``). These are
    the textbook operation counts, not TF timings (a TF 2.21 JVP costs about a gradient on CPU);
    seconds are reported beside them.
    """
    weights = weights or DEFAULT_COST_WEIGHTS
    if any(counters.get(k) is None for k in weights):
        return None
    return float(sum(w * counters[k] for k, w in weights.items()))


# -- discovery ---------------------------------------------------------------------------------
def _config_key_of_run(path: Path) -> str:
    """Config id of a standalone run: hash of ``config.gin`` without its ``train.seed`` line."""
    config = path / schema.CONFIG_FILE
    if not config.exists():
        return "r" + hashlib.sha256(str(path).encode()).hexdigest()[:8]
    lines = [
        line.strip()
        for line in config.read_text(encoding="utf-8").splitlines()
        if line.strip()
        and not line.strip().startswith("#")
        and not re.match(r"train\.seed\s*=", line.strip())
    ]
    return "r" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:8]


def _read_result(path: Path) -> dict[str, Any] | None:
    file = path / schema.RESULT_FILE
    try:
        return schema.read_result(file) if file.exists() else None
    except (OSError, ValueError) as error:
        raise UnreadableRun(describe_error(error, file)) from None


def _check_metrics(record: RunRecord) -> RunRecord:
    """Reads (and caches) the run's ``metrics.jsonl`` now, so a corrupt one skips the run at
    discovery instead of failing the report halfway through."""
    try:
        record.metrics()
    except (OSError, ValueError) as error:
        raise UnreadableRun(describe_error(error, record.path / schema.METRICS_FILE)) from None
    return record


def _status_of_result(result: dict[str, Any] | None) -> str:
    if result is None:
        return PENDING
    if result["status"] == "interrupted":  # SIGTERM/SIGINT after a checkpoint: resumable
        return runner.INTERRUPTED
    return runner.OK if result["status"] == "complete" else runner.DIVERGED  # or stalled


def read_trial(trial_path: Path, group: str) -> RunRecord:
    """A sweep trial from its folder (``trial.json``, ``status.json``, ``result.json``)."""
    info = runner.read_json(trial_path / runner.TRIAL_FILE)
    if info is None or not {"trial_id", "config_id"} <= info.keys():
        raise UnreadableRun(f"{trial_path / runner.TRIAL_FILE}: missing, unreadable or invalid")
    result = _read_result(trial_path)
    status_data = runner.read_status(trial_path)
    if status_data is None and (trial_path / runner.STATUS_FILE).exists():
        logging.warning(
            "%s: unreadable; the trial's status is taken from its result",
            trial_path / runner.STATUS_FILE,
        )
    status_data = status_data or {}
    status = status_data.get("status") or _status_of_result(result)
    if status == runner.OK and (result is None or result["status"] != "complete"):
        status, error = runner.FAILED, f"status ok but no complete {schema.RESULT_FILE}"
    else:
        error = status_data.get("error")
    record = RunRecord(
        run_id=info["trial_id"],
        config_id=info["config_id"],
        path=trial_path,
        seed=info.get("seed"),
        bindings=dict(info.get("bindings", {})),
        status=status,
        error=error,
        result=result,
        group=group,
    )
    return _check_metrics(record)


def infer_missing(records: list[RunRecord]) -> list[RunRecord]:
    """Gives runs without a result (failed before training) the workload and optimizer that
    every finished run of the same sweep shares, so a failed trial is counted against the
    right optimizer instead of an ``unknown`` one. Returns ``records``."""
    known = [r for r in records if r.result is not None]
    workloads = {r.workload for r in known}
    optimizers = {r.optimizer for r in known}
    swept_optimizer = any("train.optimizer" in r.bindings for r in records)
    for r in records:
        if r.result is None:
            if len(workloads) == 1:
                r.workload_hint = next(iter(workloads))
            if len(optimizers) == 1 and not swept_optimizer:
                r.optimizer_hint = next(iter(optimizers))
    return records


def read_sweep(sweep_dir: str | os.PathLike, skipped: list[str] | None = None) -> list[RunRecord]:
    """Every readable trial listed in ``<sweep_dir>/sweep.json`` (in order), run or not;
    unreadable ones are skipped with a warning (appended to ``skipped``)."""
    sweep_dir = Path(sweep_dir)
    meta = runner.read_json(sweep_dir / SWEEP_FILE)
    if meta is None:
        raise ValueError(f"{sweep_dir}: no valid {SWEEP_FILE}; is this a sweep workdir?")
    records = []
    for trial_id in meta.get("trials", []):
        path = runner.trial_dir(sweep_dir, trial_id)
        if (path / runner.TRIAL_FILE).exists():
            try:
                records.append(read_trial(path, str(sweep_dir)))
            except UnreadableRun as error:
                _skip(error, skipped)
    return infer_missing(records)


def read_run(
    run_dir: str | os.PathLike, group: str | None = None, run_id: str | None = None
) -> RunRecord:
    """A standalone ``experiments.train`` workdir."""
    run_dir = Path(run_dir)
    result = _read_result(run_dir)
    record = RunRecord(
        run_id=run_id or run_dir.name,
        config_id=_config_key_of_run(run_dir),
        path=run_dir,
        seed=None if result is None else result["seed"],
        bindings={},
        status=_status_of_result(result),
        error=None if result is None else result["error"],
        result=result,
        group=group or str(run_dir),
    )
    return _check_metrics(record)


def discover(
    workdirs: Sequence[str | os.PathLike], skipped: list[str] | None = None
) -> list[RunRecord]:
    """Runs and sweep trials under the given folders (see the module docstring); unreadable
    runs are skipped with a warning (appended to ``skipped``).

    Raises:
      ValueError: a folder does not exist or holds no readable run.
    """
    records: list[RunRecord] = []
    skipped = [] if skipped is None else skipped
    for workdir in workdirs:
        root = Path(workdir)
        if not root.is_dir():
            raise ValueError(f"workdir {str(root)!r} does not exist or is not a folder")
        before = len(skipped)
        found = list(_walk(root, skipped))
        if not found:
            unreadable = skipped[before:]
            if unreadable:
                raise ValueError(
                    f"no readable runs under {str(root)!r}: {len(unreadable)} unreadable, "
                    f"e.g. {unreadable[0]}"
                )
            raise ValueError(
                f"no runs under {str(root)!r} (looked for {SWEEP_FILE} and {schema.RESULT_FILE})"
            )
        records.extend(found)
    return records


def _walk(root: Path, skipped: list[str]) -> Iterable[RunRecord]:
    def one(read: Any, *args: Any, **kwargs: Any) -> list[RunRecord]:
        try:
            return [read(*args, **kwargs)]
        except UnreadableRun as error:
            _skip(error, skipped)
            return []

    if (root / SWEEP_FILE).exists():
        yield from read_sweep(root, skipped)
        return
    if (root / runner.TRIAL_FILE).exists():
        yield from one(read_trial, root, str(root))
        return
    if (root / schema.RESULT_FILE).exists():
        yield from one(read_run, root)
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if SWEEP_FILE in filenames:
            yield from read_sweep(here, skipped)
            dirnames.clear()
        elif runner.TRIAL_FILE in filenames:
            yield from one(read_trial, here, str(root))
            dirnames.clear()
        elif schema.RESULT_FILE in filenames:
            yield from one(read_run, here, group=str(root), run_id=str(here.relative_to(root)))
            dirnames.clear()
        else:
            dirnames[:] = sorted(d for d in dirnames if d not in ("checkpoints", "tensorboard"))
