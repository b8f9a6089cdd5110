"""The one place that defines a run's output files: ``result.json`` and ``metrics.jsonl``.

Every reader (tests, sweeps, analysis) validates through this module, and every writer writes
through it, so the format cannot drift. Non-finite floats are stored as ``null`` (strict JSON).

``result.json`` (schema version :data:`SCHEMA_VERSION`)::

    {
      "schema_version": 1,
      "status": "complete" | "diverged" | "stalled" | "interrupted",
      "error": null | "non-finite loss (nan) at step 17 ...",   # null only when complete
      "seed": 0,
      "steps": 8000,                     # completed training steps
      "num_steps": 8000,                 # requested training steps
      "epochs": 200.0,                   # steps * batch_size / num_train_examples
      "final": {"step": 8000, "train_loss": .., "train_accuracy": .., "test_loss": ..,
                "test_accuracy": ..},    # accuracies null for non-classification tasks
      "best": {"test_accuracy": {"value": .., "step": ..} | null, "test_loss": {..} | null,
               "train_loss": {..} | null},
      "times": {"train_s": .., "eval_s": .., "wall_s": .., "steps_per_s": ..,
                "trace_s": ..},          # tracing by the last process, not in train_s
      "totals": {"forward_passes": .., "backward_passes": .., "jvps": ..},
      "dataset": {"name", "task", "batch_size", "num_train_examples", "num_test_examples"},
      "model": {"name", "num_parameters"},
      "optimizer": {"class", "family": "directional" | "keras", "config": {...}},
      "jit_compile": false,
      "mixed_precision": "float32" | "mixed_bfloat16" | "mixed_float16",
                                         (optional: results written before it lack it)
      "distribution": {"strategy": null | "mirrored" | "multi_worker", "num_replicas",
                       "num_workers"},   (optional: results written before it lack it)
      "versions": {"python", "tensorflow", "keras", "dirgrad_opt", "gin", "numpy"}
    }

``metrics.jsonl``: one object per line, ``kind`` ``"train"`` (every ``log_every`` steps: window
means of the step's scalars — ``loss``, ``accuracy``, ``step_size``, optimizer metrics) or
``"eval"`` (every ``eval_every`` steps: ``train_loss``, ``train_accuracy``, ``test_loss``,
``test_accuracy`` on the full evaluation sets). Both carry ``step``, ``epoch``, ``wall_s``,
``train_time_s`` and the cumulative ``forward_passes``, ``backward_passes``, ``jvps``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
#: ``diverged``: a non-finite loss, weights or evaluation; ``stalled``: every step rejected for
#: ``train.max_rejected_steps`` steps; ``interrupted``: stopped by SIGTERM/SIGINT after a
#: checkpoint of that step (rerunning resumes).
STATUSES = ("complete", "diverged", "stalled", "interrupted")
FAMILIES = ("directional", "keras")
COUNTERS = ("forward_passes", "backward_passes", "jvps")
FINAL_KEYS = ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
BEST_KEYS = ("test_accuracy", "test_loss", "train_loss")
TIME_KEYS = ("train_s", "eval_s", "wall_s", "steps_per_s")
VERSION_KEYS = ("python", "tensorflow", "keras", "dirgrad_opt", "gin", "numpy")
RECORD_KINDS = ("train", "eval")
_RECORD_COMMON = ("kind", "step", "epoch", "wall_s", "train_time_s", *COUNTERS)
_RECORD_KIND_KEYS = {
    "train": ("loss",),
    "eval": ("eval_time_s", "train_loss", "test_loss"),
}

RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
OPERATIVE_CONFIG_FILE = "operative_config.gin"
CONFIG_FILE = "config.gin"


class SchemaError(ValueError):
    """A result or metrics record does not follow the schema; the message names the field."""


# -- JSON helpers ----------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """``value`` as strict-JSON data: non-finite floats → None, NumPy/TF scalars → Python.

    Unknown objects become their ``repr`` so a config dict is always writable.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    item = getattr(value, "item", None)  # NumPy scalars, 0-d arrays
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError):
            pass
    return repr(value)


def dumps(value: Any) -> str:
    """Strict JSON (no NaN/Infinity) of ``jsonable(value)``, keys in insertion order."""
    return json.dumps(jsonable(value), allow_nan=False)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` via a temporary file and ``os.replace``: never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_result(path: str | os.PathLike, result: Mapping[str, Any]) -> None:
    """Validates ``result`` and writes it atomically as JSON."""
    data = jsonable(result)
    validate_result(data)
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates a ``result.json``."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise SchemaError(f"{path}: not valid JSON ({error})") from None
    validate_result(data, where=str(path))
    return data


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads ``metrics.jsonl``; validates every record.

    A final line without a newline (a writer killed mid-line) is ignored; any other invalid line
    is an error.
    """
    records = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    complete, tail = lines[:-1], lines[-1]
    del tail  # an unterminated last line is an interrupted write
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise SchemaError(f"{path}:{number}: not valid JSON ({error})") from None
        validate_record(record, where=f"{path}:{number}")
        records.append(record)
    return records


def records_to_lines(records: Iterable[Mapping[str, Any]]) -> str:
    """``metrics.jsonl`` text for ``records`` (each validated), one JSON object per line."""
    out = []
    for record in records:
        data = jsonable(record)
        validate_record(data)
        out.append(json.dumps(data, allow_nan=False) + "\n")
    return "".join(out)


# -- validation ------------------------------------------------------------------------------
def _fail(where: str, message: str) -> None:
    raise SchemaError(f"{where}: {message}")


def _require_keys(obj: Any, keys: Iterable[str], where: str) -> None:
    if not isinstance(obj, dict):
        _fail(where, f"expected an object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        _fail(where, f"missing field(s) {missing}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(value: Any, where: str, *, nullable: bool = False, minimum: float | None = None):
    if value is None and nullable:
        return
    if not _is_number(value):
        _fail(where, f"expected a finite number{' or null' if nullable else ''}, got {value!r}")
    if minimum is not None and value < minimum:
        _fail(where, f"expected >= {minimum}, got {value!r}")


def _check_int(value: Any, where: str, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(where, f"expected an integer >= {minimum}, got {value!r}")


def _check_str(value: Any, where: str, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str):
        _fail(where, f"expected a string, got {value!r}")


def validate_result(result: Any, where: str = "result") -> None:
    """Checks a ``result.json`` object against schema version :data:`SCHEMA_VERSION`.

    Args:
      result: the parsed JSON object.
      where: prefix of error messages (a path).

    Raises:
      SchemaError: naming the first offending field (``result.final.test_loss: ...``).
    """
    _require_keys(
        result,
        (
            "schema_version",
            "status",
            "error",
            "seed",
            "steps",
            "num_steps",
            "epochs",
            "final",
            "best",
            "times",
            "totals",
            "dataset",
            "model",
            "optimizer",
            "jit_compile",
            "versions",
        ),
        where,
    )
    if result["schema_version"] != SCHEMA_VERSION:
        _fail(
            f"{where}.schema_version",
            f"expected {SCHEMA_VERSION}, got {result['schema_version']!r}",
        )
    status = result["status"]
    if status not in STATUSES:
        _fail(f"{where}.status", f"expected one of {STATUSES}, got {status!r}")
    complete = status == "complete"
    _check_str(result["error"], f"{where}.error", nullable=complete)
    if complete and result["error"] is not None:
        _fail(f"{where}.error", "must be null when status is 'complete'")
    _check_int(result["seed"], f"{where}.seed")
    _check_int(result["steps"], f"{where}.steps")
    _check_int(result["num_steps"], f"{where}.num_steps", minimum=1)
    if result["steps"] > result["num_steps"]:
        _fail(f"{where}.steps", f"{result['steps']} exceeds num_steps {result['num_steps']}")
    if complete and result["steps"] != result["num_steps"]:
        _fail(f"{where}.steps", "a complete run has steps == num_steps")
    _check_number(result["epochs"], f"{where}.epochs", minimum=0)

    final = result["final"]
    _require_keys(final, FINAL_KEYS, f"{where}.final")
    _check_int(final["step"], f"{where}.final.step")
    for key in FINAL_KEYS[1:]:
        nullable = not complete or key.endswith("accuracy")
        _check_number(final[key], f"{where}.final.{key}", nullable=nullable)
    if complete and final["step"] != result["steps"]:
        _fail(f"{where}.final.step", "the final evaluation of a complete run is at its last step")

    best = result["best"]
    _require_keys(best, BEST_KEYS, f"{where}.best")
    for key in BEST_KEYS:
        entry = best[key]
        if entry is None:
            continue
        _require_keys(entry, ("value", "step"), f"{where}.best.{key}")
        _check_number(entry["value"], f"{where}.best.{key}.value")
        _check_int(entry["step"], f"{where}.best.{key}.step")

    times = result["times"]
    _require_keys(times, TIME_KEYS, f"{where}.times")
    for key in TIME_KEYS:
        _check_number(times[key], f"{where}.times.{key}", minimum=0)

    totals = result["totals"]
    _require_keys(totals, COUNTERS, f"{where}.totals")
    for key in COUNTERS:
        _check_int(totals[key], f"{where}.totals.{key}")

    dataset = result["dataset"]
    _require_keys(
        dataset,
        ("name", "task", "batch_size", "num_train_examples", "num_test_examples"),
        f"{where}.dataset",
    )
    _check_str(dataset["name"], f"{where}.dataset.name")
    _check_str(dataset["task"], f"{where}.dataset.task")
    _check_int(dataset["batch_size"], f"{where}.dataset.batch_size", minimum=1)

    model = result["model"]
    _require_keys(model, ("name", "num_parameters"), f"{where}.model")
    _check_str(model["name"], f"{where}.model.name")
    _check_int(model["num_parameters"], f"{where}.model.num_parameters")

    optimizer = result["optimizer"]
    _require_keys(optimizer, ("class", "family", "config"), f"{where}.optimizer")
    _check_str(optimizer["class"], f"{where}.optimizer.class")
    if optimizer["family"] not in FAMILIES:
        _fail(f"{where}.optimizer.family", f"expected one of {FAMILIES}")
    if not isinstance(optimizer["config"], dict):
        _fail(f"{where}.optimizer.config", "expected an object")

    if not isinstance(result["jit_compile"], bool):
        _fail(f"{where}.jit_compile", f"expected a boolean, got {result['jit_compile']!r}")
    if result.get("mixed_precision", "float32") not in (
        "float32",
        "mixed_bfloat16",
        "mixed_float16",
    ):
        _fail(f"{where}.mixed_precision", f"unknown policy {result['mixed_precision']!r}")
    if "distribution" in result:
        dist = result["distribution"]
        _require_keys(dist, ("strategy", "num_replicas", "num_workers"), f"{where}.distribution")
        if dist["strategy"] not in (None, "mirrored", "multi_worker"):
            _fail(f"{where}.distribution.strategy", f"unknown strategy {dist['strategy']!r}")
        for key in ("num_replicas", "num_workers"):
            if isinstance(dist[key], bool) or not isinstance(dist[key], int) or dist[key] < 1:
                _fail(f"{where}.distribution.{key}", f"expected an int >= 1, got {dist[key]!r}")
    versions = result["versions"]
    _require_keys(versions, VERSION_KEYS, f"{where}.versions")
    for key in VERSION_KEYS:
        _check_str(versions[key], f"{where}.versions.{key}")


def validate_record(record: Any, where: str = "record") -> None:
    """Checks one ``metrics.jsonl`` object (``kind`` ``"train"`` or ``"eval"``).

    Values other than the required ones must be numbers or null (a non-finite metric).

    Raises:
      SchemaError: naming the offending field.
    """
    _require_keys(record, ("kind",), where)
    kind = record["kind"]
    if kind not in RECORD_KINDS:
        _fail(f"{where}.kind", f"expected one of {RECORD_KINDS}, got {kind!r}")
    _require_keys(record, (*_RECORD_COMMON, *_RECORD_KIND_KEYS[kind]), where)
    _check_int(record["step"], f"{where}.step")
    for key in COUNTERS:
        _check_int(record[key], f"{where}.{key}")
    for key in ("epoch", "wall_s", "train_time_s"):
        _check_number(record[key], f"{where}.{key}", minimum=0)
    for key, value in record.items():
        if key == "kind":
            continue
        _check_number(value, f"{where}.{key}", nullable=True)
