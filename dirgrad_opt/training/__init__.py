"""The experiment runner: a gin-configurable training loop, its outputs and their schema.

    python -m experiments.train --gin_file=configs/quickstart.gin --workdir=runs/quickstart

Contract::

    from dirgrad_opt import training
    gin.parse_config_files_and_bindings([...], [...], skip_unknown=False)
    result = training.run(workdir)          # = train(workdir=...) configured by gin
    training.validate_result(result)        # the result.json schema, in one place

* :func:`train` — ``train.dataset``, ``train.model``, ``train.optimizer``, ``train.num_steps``,
  ``train.batch_size``, ``train.eval_every``, ``train.checkpoint_every``, ``train.log_every``,
  ``train.seed``, ``train.jit_compile``... (see its docstring). Same loop, metrics and cost
  counting for closure optimizers (``minimize``) and stock Keras optimizers (gradients).
* Workdir: ``config.gin``, ``operative_config.gin``, ``metrics.jsonl``, ``result.json``,
  ``tensorboard/``, ``checkpoints/``, and ``model.keras`` (the final model with its optimizer
  state) once complete. Deterministic resume by rerunning the same command.
* :func:`load_run` ``(workdir) -> Run(model, optimizer, operative_config, result)``.
* ``train.loss``: a Keras loss name, ``keras.losses.Loss`` or ``(y_true, y_pred)`` function.
* :mod:`~dirgrad_opt.training.registry` registers every Keras and dirgrad_opt optimizer and
  every Keras learning-rate schedule with gin (``@Adam()``, ``@ArmijoLineSearch()``...);
  :func:`register_optimizer` adds your own.
* Errors: :class:`ConfigError` (bad configuration or unusable workdir, raised before anything
  is written), :class:`TrainingDiverged` (NaN/inf loss or evaluation; ``result.json`` says
  ``"diverged"``; :class:`TrainingStalled`: every step rejected, ``"stalled"``),
  :class:`TrainingInterrupted` (SIGTERM/SIGINT, after a checkpoint; ``"interrupted"``),
  :class:`RunIOError` (the workdir could not be read or written during the run).
"""

from dirgrad_opt.training.artifacts import MODEL_FILE, Run, load_run
from dirgrad_opt.training.errors import (
    ConfigError,
    RunIOError,
    TrainingDiverged,
    TrainingInterrupted,
    TrainingStalled,
    one_line,
)
from dirgrad_opt.training.loop import run, train
from dirgrad_opt.training.registry import register_optimizer, register_optimizers
from dirgrad_opt.training.schema import (
    SCHEMA_VERSION,
    SchemaError,
    read_metrics,
    read_result,
    validate_record,
    validate_result,
)

__all__ = [
    "MODEL_FILE",
    "SCHEMA_VERSION",
    "ConfigError",
    "Run",
    "RunIOError",
    "SchemaError",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingStalled",
    "load_run",
    "one_line",
    "read_metrics",
    "read_result",
    "register_optimizer",
    "register_optimizers",
    "run",
    "train",
    "validate_record",
    "validate_result",
]
