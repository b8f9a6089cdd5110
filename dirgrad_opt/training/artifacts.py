"""The finished model of a run: ``model.keras`` in the workdir, and :func:`load_run`.

At the end of a complete run the runner saves the final model *with its optimizer and the
optimizer's state* (``iterations``, the cost totals, every variable a rule added with
``add_variable``) as ``model.keras``::

    run = dirgrad_opt.training.load_run("runs/quickstart")
    run.model.predict(x)                  # the trained keras.Model
    run.optimizer.iterations              # the optimizer, state restored
    run.operative_config, run.result      # operative_config.gin text, result.json dict

A model or optimizer Keras cannot save (a custom layer without ``get_config``...) does not fail
the run: the runner logs a warning and writes no ``model.keras``; ``load_run`` then says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import keras
from absl import logging

from dirgrad_opt.training import schema
from dirgrad_opt.training.errors import one_line

MODEL_FILE = "model.keras"


class Run(NamedTuple):
    """A finished run loaded from its workdir (see :func:`load_run`)."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer | None
    operative_config: str
    result: dict[str, Any]


def save_final_model(
    workdir: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer
) -> Path | None:
    """Writes ``workdir/model.keras`` (model + optimizer state) atomically; ``None`` if Keras
    cannot save this model (a warning is logged, the run itself is unaffected)."""
    path = Path(workdir) / MODEL_FILE
    tmp = path.with_name("model.partial.keras")  # Keras insists on the .keras suffix
    try:
        model.compile(optimizer=optimizer)  # so the file carries the optimizer and its state
        model.save(tmp)
        os.replace(tmp, path)
    except Exception as error:  # noqa: BLE001 - a model Keras cannot save must not fail the run
        tmp.unlink(missing_ok=True)
        logging.warning(
            "model.keras not written (Keras cannot save this model): %s", one_line(error)
        )
        return None
    return path


def load_run(workdir: str | os.PathLike, compile: bool = True) -> Run:
    """Loads a finished run: its final model and optimizer, operative config and result.

    Import the modules that define your own optimizer, layers or models first (as the run
    did); dirgrad_opt's own classes are registered by ``import dirgrad_opt``.

    Args:
      workdir: the run's workdir (``--workdir`` of ``experiments.train``, or a sweep trial's).
      compile: restore the optimizer (and its state) with the model.

    Returns:
      A :class:`Run` ``(model, optimizer, operative_config, result)``; ``optimizer`` is ``None``
      when ``compile`` is false.

    Raises:
      FileNotFoundError: the workdir holds no finished run or no ``model.keras``.
      ValueError: ``model.keras`` names a class that is not registered in this process.
    """
    workdir = Path(workdir)
    result_file = workdir / schema.RESULT_FILE
    if not result_file.is_file():
        raise FileNotFoundError(
            f"{str(workdir)!r} holds no finished run (no {schema.RESULT_FILE}); run "
            "experiments.train with this --workdir first"
        )
    result = schema.read_result(result_file)
    path = workdir / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(workdir)!r} has no {MODEL_FILE} (status {result['status']!r}; runs that "
            "did not complete, or whose model Keras could not save, have none)"
        )
    try:
        model = keras.models.load_model(path, compile=compile)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"cannot load {str(path)!r}: {one_line(error)[:300]} — import the module that "
            "defines and registers your classes (dirgrad_opt.register_optimizer, "
            "keras.saving.register_keras_serializable) before load_run"
        ) from error
    config_file = workdir / schema.OPERATIVE_CONFIG_FILE
    operative = config_file.read_text(encoding="utf-8") if config_file.is_file() else ""
    optimizer = getattr(model, "optimizer", None) if compile else None
    return Run(model, optimizer, operative, result)
