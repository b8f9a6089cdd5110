"""The training loop: ``train`` (gin-configurable) and ``run`` (called by experiments/train.py).

One loop serves both optimizer families (:mod:`dirgrad_opt.training.steps`): a closure optimizer
calls ``minimize`` on a loss closure over the step's batch, a stock Keras optimizer applies
gradients; both report the same scalars and cost counters.

Speed: the steps run inside one ``tf.function`` *chunk* that loops ``n`` steps in graph mode
(the iterator is read inside the graph), from one event (log / eval / checkpoint) to the next,
so Python runs once per chunk, not once per step. ``jit_compile=True`` compiles the step with
XLA (measured on 2 CPU cores with scripts/bench_runner.py --xla: slower for the MNIST-1D MLP,
faster for its 1-D CNN; measure your model). Training time is the time spent in chunks;
tracing the step and the chunk happens once before the first chunk and is reported apart as
``trace_s`` (XLA compiles at the first call, so with ``jit_compile`` compilation is still in
the first chunk); evaluation time is measured apart and never charged to the optimizer. A fresh
run evaluates once at step 0, before any update, so curves start at the initial weights.

Determinism and resume: with ``deterministic=True`` (default) op determinism is on and the
seed fixes the initial weights, the data order and the global ``tf.random.Generator`` (the
runner replaces it with one seeded by ``seed`` and checkpoints it). A checkpoint holds the
weights, the optimizer state (``iterations`` included), the step, the cumulative counters and
clocks, the partial logging window and that generator; the data position is the step itself
(``Dataset.train_from(step)``). Rerunning the same configuration in the same workdir resumes
from the latest complete checkpoint and ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.metadata
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gin
import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2
from tensorflow.python.framework import config as tf_config

import dirgrad_opt
from dirgrad_opt import problems, user_modules
from dirgrad_opt.data import Dataset, load_dataset, short_repr
from dirgrad_opt.models import create_model, metrics_for_task, resolve_loss
from dirgrad_opt.training import artifacts, distributed, preemption, schema, steps
from dirgrad_opt.training import workdir as workdirs
from dirgrad_opt.training.errors import (
    ConfigError,
    RunIOError,
    TrainingDiverged,
    TrainingInterrupted,
    TrainingStalled,
    one_line,
)
from dirgrad_opt.training.registry import register_optimizers

register_optimizers()

COUNTERS = schema.COUNTERS
_BODY_ENTERED: contextvars.ContextVar[bool] = contextvars.ContextVar("_BODY_ENTERED", default=False)


# -- small pure helpers ----------------------------------------------------------------------
def _as_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int ≥ ``minimum`` (integral floats accepted), else ``ConfigError``."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and isinstance(value, float):
        ok = math.isfinite(value) and value.is_integer()
    if not ok or int(value) < minimum:
        raise ConfigError(f"train.{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"train.{name} must be True or False, got {value!r}")
    return value


def next_event(step: int, every: tuple[int, ...], limit: int) -> int:
    """The first step after ``step`` that is a multiple of one of ``every``, capped at ``limit``.

    Example: ``next_event(250, (100, 1000), 8000) == 300``.
    """
    candidates = [(step // k + 1) * k for k in every]
    return min([*candidates, limit])


def is_event(step: int, every: int, num_steps: int) -> bool:
    """Whether an event of period ``every`` (steps) happens after ``step``; always at the end."""
    return step % every == 0 or step == num_steps


def best_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Best eval values: max test accuracy, min test loss, min train loss, with their steps.

    Ties go to the earliest step. Missing or null values are skipped; no value gives ``None``.
    """
    evals = [r for r in records if r["kind"] == "eval"]
    out: dict[str, Any] = {}
    for key, better in (
        ("test_accuracy", max),
        ("test_loss", min),
        ("train_loss", min),
    ):
        points = [(r[key], r["step"]) for r in evals if r.get(key) is not None]
        if not points:
            out[key] = None
            continue
        target = better(v for v, _ in points)
        step = min(s for v, s in points if v == target)
        out[key] = {"value": target, "step": step}
    return out


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""

    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            return "unknown"

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "dirgrad_opt": dirgrad_opt.__version__,
        "gin": dist("gin-config"),
        "numpy": np.__version__,
    }


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` for a progress line."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


def write_scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar via core ``tf.summary.write`` (the tensorboard package is optional).

    Writes what ``tf.summary.scalar`` writes: a float32 scalar tensor tagged for the scalars
    plugin, to the default summary writer.
    """
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=_SCALAR_METADATA)


@contextlib.contextmanager
def _quiet_absl() -> Any:
    """Lowers absl logging to warnings for a block (TFDS logs every file it opens at INFO)."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


@contextlib.contextmanager
def op_determinism(enabled: bool) -> Any:
    """Turns TF op determinism on for a block if ``enabled``, restoring the previous setting.

    The switch is process-wide; restoring it keeps an in-process caller (tests, notebooks) from
    inheriting it — under it, e.g., XLA refuses max-pool gradients.
    """
    before = tf_config.is_op_determinism_enabled()
    if enabled and not before:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not before:
            tf_config.disable_op_determinism()


def _bound_value(key: str) -> tuple[bool, Any]:
    try:
        return True, gin.query_parameter(key)
    except ValueError:
        return False, None


# -- run state (checkpointed) ----------------------------------------------------------------
class RunState(tf.Module):
    """The loop's own checkpointed state, beside the model and the optimizer.

    Attributes:
      step: completed training steps.
      totals: cumulative ``[forward_passes, backward_passes, jvps]``.
      window_sum, window_count: sums of the logged step scalars since the last log line.
      last_loss: the last finite training loss.
      clocks: cumulative ``[train_s, eval_s, wall_s]`` at the last save.
      rng: the run's ``tf.random.Generator`` (installed as the global generator).
      best, best_step: best eval values so far (``BEST_KEYS`` order; NaN / -1 before one),
        so ``result.json``'s ``best`` never depends on ``metrics.jsonl`` surviving.
      rejected: consecutive steps the optimizer rejected (``accepted`` False) up to now.
    """

    def __init__(self, num_window_values: int, seed: int):
        super().__init__(name="run_state")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.totals = tf.Variable(tf.zeros([3], tf.int64), trainable=False, name="totals")
        self.window_sum = tf.Variable(
            tf.zeros([num_window_values], tf.float64), trainable=False, name="window_sum"
        )
        self.window_count = tf.Variable(0, dtype=tf.int64, trainable=False, name="window_count")
        self.last_loss = tf.Variable(float("nan"), dtype=tf.float64, trainable=False)
        self.clocks = tf.Variable(tf.zeros([3], tf.float64), trainable=False, name="clocks")
        self.rng = tf.random.Generator.from_seed(seed)
        n = len(schema.BEST_KEYS)
        self.best = tf.Variable(tf.fill([n], tf.constant(np.nan, tf.float64)), trainable=False)
        self.best_step = tf.Variable(tf.fill([n], tf.constant(-1, tf.int64)), trainable=False)
        self.rejected = tf.Variable(0, dtype=tf.int64, trainable=False, name="rejected")


# -- the configurable ------------------------------------------------------------------------
@gin.configurable(denylist=["workdir", "stop_after"])
def train(
    workdir: str,
    dataset: Callable[..., Dataset] = load_dataset,
    model: Callable[..., keras.Model] = create_model,
    optimizer: Any = gin.REQUIRED,
    loss: Any = None,
    num_steps: int | None = None,
    batch_size: int | None = None,
    eval_every: int | None = None,
    checkpoint_every: int = 1000,
    log_every: int = 100,
    seed: int = 0,
    jit_compile: bool = False,
    batch_metrics: bool = True,
    allow_stateful_layers: bool = False,
    deterministic: bool = True,
    max_checkpoints: int = 3,
    progress_every_s: float = 5.0,
    max_rejected_steps: int | None = 200,
    stop_after: int | None = None,
    problem: problems.Problem | str | None = None,
    strategy: str | None = None,
    cpu_replicas: int | None = None,
    mixed_precision: str | None = None,
) -> dict[str, Any] | None:
    """Train ``model`` on ``dataset`` with ``optimizer`` for ``num_steps``; write the workdir.

    Writes ``config.gin`` (the parsed config), ``operative_config.gin``, ``metrics.jsonl``,
    ``result.json`` (see :mod:`dirgrad_opt.training.schema`), TensorBoard events in
    ``tensorboard/`` and ``checkpoints/``. A workdir holding a complete run of the same config
    returns its result without training; a partial one is resumed; one holding a *different*
    config is refused.

    The workdir is locked for this process (a second ``train`` on it is refused, naming the
    holder's pid and host) and must be empty, new, or one of our runs; nothing else in it is
    touched. Checkpoints are found by listing ``checkpoints/ckpt-*`` and resume walks back
    from the newest to the newest readable one. SIGTERM/SIGINT checkpoint the current step at
    the next chunk boundary, record ``"interrupted"`` and raise :class:`TrainingInterrupted`.

    Divergence: a NaN/inf training loss (or evaluation value) stops the run at that step. No
    checkpoint is written after it (the last good one stays), ``result.json`` gets ``"status":
    "diverged"`` and the error message, and :class:`TrainingDiverged` is raised. Rerunning
    reports the same error.

    Args:
      workdir: output directory (passed by the caller, not gin).
      dataset: ``fn(seed=..., [batch_size=...]) -> Dataset``; gin: ``@load_dataset``.
      model: ``fn(input_shape, num_classes) -> keras.Model``; gin: ``@create_model``. The
        initial weights are seeded with ``seed``.
      optimizer: a Keras optimizer instance (gin: ``@Adam()``, ``@ArmijoLineSearch()``), or a
        zero-argument callable returning one.
      loss: ``None`` for the task's loss (cross-entropy from logits, mean squared error,
        the analytic objective), a Keras loss name (``'mean_squared_error'``), a
        ``keras.losses.Loss`` or a function ``(y_true, y_pred) -> loss``; see
        :func:`dirgrad_opt.models.resolve_loss`. Used for training and evaluation.
      num_steps: training steps (# mini-batches); default: the problem's budget (required
        without a problem).
      batch_size: examples per step; ``None`` keeps the dataset's own (``load_dataset.
        batch_size``); a value here overrides it.
      eval_every: steps between evaluations on the full train-eval, validation (if any) and
        test sets (also at the end); default: the problem's, else 1000.
      checkpoint_every: steps between checkpoints (also at the end).
      log_every: steps between ``metrics.jsonl`` train records (window means).
      seed: the run seed: initial weights, data order, the global RNG. Do not bind
        ``load_dataset.seed`` / ``create_model.seed``.
      jit_compile: compile the step with XLA.
      batch_metrics: log the task metrics (accuracy) of each training batch; costs closure
        optimizers one uncounted forward pass per step.
      allow_stateful_layers: let closure optimizers run on models with Dropout/BatchNorm.
      deterministic: enable TF op determinism (required for bit-exact resume).
      max_checkpoints: checkpoints kept.
      progress_every_s: seconds between progress log lines.
      max_rejected_steps: stop with ``"status": "stalled"`` (:class:`TrainingStalled`) after
        this many consecutive steps the optimizer rejected (``accepted`` False: a line search
        found no decrease); 0 or ``None`` never stops.
      problem: a :class:`dirgrad_opt.problems.Problem` or a problem's name (gin:
        ``train.problem = 'mnist1d_mlp'``): its loss, metrics and step budget replace the
        task's defaults, its validation split is required, and it is recorded in result.json.
      stop_after: test hook — stop like a killed process once this many steps are done (after
        that step's events), writing no ``result.json``; returns ``None``.
      strategy: ``None`` (one device), ``'mirrored'`` or ``'multi_worker'`` data parallelism;
        ``batch_size`` stays the global batch. See :mod:`dirgrad_opt.training.distributed`.
      cpu_replicas: with ``'mirrored'`` and no GPU, split the CPU into this many replicas.
      mixed_precision: ``None``/``'float32'`` (full precision), ``'mixed_bfloat16'`` or
        ``'mixed_float16'``: the Keras global dtype policy the model is built under (float32
        variables, layers computing in the half type), restored when ``train`` returns. Model
        outputs are cast to float32 before the loss and metrics. Closure optimizers compare
        losses in float32 and, under ``mixed_float16``, scale the loss dynamically (see
        :class:`dirgrad_opt.optimizers.DirectionalOptimizer`); a stock Keras optimizer is
        wrapped in ``keras.optimizers.LossScaleOptimizer`` there. Recorded in ``result.json``.

    Returns:
      The ``result.json`` dict, or ``None`` when stopped by ``stop_after``.

    Raises:
      ConfigError: invalid arguments, dataset, model or optimizer; a workdir of another config.
      TrainingDiverged: the loss or an evaluation became non-finite (TrainingStalled: every
        step rejected for ``max_rejected_steps`` steps).
      TrainingInterrupted: SIGTERM/SIGINT (after the checkpoint of the current step).
      RunIOError: reading or writing the workdir failed (one line: path and error number).
    """
    _BODY_ENTERED.set(True)
    if problem is not None:
        try:
            problem = problems.resolve(problem)
        except problems.ProblemError as error:
            raise ConfigError(str(error)) from None
        num_steps = problem.num_steps if num_steps is None else num_steps
        eval_every = problem.eval_every if eval_every is None else eval_every
    if num_steps is None:
        raise ConfigError("train.num_steps is required (or select a problem: train.problem)")
    options = {
        "num_steps": _as_int("num_steps", num_steps, 1),
        "batch_size": None if batch_size is None else _as_int("batch_size", batch_size, 1),
        "eval_every": _as_int("eval_every", 1000 if eval_every is None else eval_every, 1),
        "checkpoint_every": _as_int("checkpoint_every", checkpoint_every, 1),
        "log_every": _as_int("log_every", log_every, 1),
        "seed": _as_int("seed", seed, 0),
        "max_checkpoints": _as_int("max_checkpoints", max_checkpoints, 1),
        "jit_compile": _as_bool("jit_compile", jit_compile),
        "batch_metrics": _as_bool("batch_metrics", batch_metrics),
        "allow_stateful_layers": _as_bool("allow_stateful_layers", allow_stateful_layers),
        "deterministic": _as_bool("deterministic", deterministic),
        "loss": loss,
        "max_rejected_steps": 0
        if max_rejected_steps is None
        else _as_int("max_rejected_steps", max_rejected_steps, 0),
    }
    if not isinstance(progress_every_s, int | float) or not progress_every_s > 0:
        raise ConfigError(f"train.progress_every_s must be > 0 seconds, got {progress_every_s!r}")
    if stop_after is not None:
        stop_after = _as_int("stop_after", stop_after, 1)
    options["mixed_precision"] = _policy_name(mixed_precision)
    dist = distributed.setup(strategy, cpu_replicas)
    if dist is not None and options["jit_compile"]:
        raise ConfigError("train.jit_compile = True is not supported with train.strategy")
    runner = _Runner(Path(workdir), options, float(progress_every_s), stop_after)
    runner.problem = problem
    write_dir = workdir if dist is None else dist.write_dir(runner.workdir)  # '' is refused
    handle = workdirs.open_workdir(write_dir)  # a non-chief worker locks its temporary folder
    try:
        previous = runner.check_workdir()  # the chief's workdir, which every worker reads
        if previous is not None:
            return previous
        if dist is not None:  # a non-chief worker writes into its temporary folder
            runner.dist, runner.source, runner.workdir = dist, runner.workdir, write_dir
        with (
            op_determinism(options["deterministic"]),
            dtype_policy(options["mixed_precision"]),
            preemption.catch_stop_signals() as stop,
        ):
            runner.stop = stop
            runner.setup(dataset, model, optimizer)
            try:
                return runner.run()
            except OSError as error:
                raise RunIOError(workdirs.os_error_line(error, "I/O error on")) from None
    finally:
        workdirs.close_workdir(handle)


#: ``train.mixed_precision`` values (``None`` is ``'float32'``).
MIXED_PRECISION_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def _policy_name(value: Any) -> str:
    """The Keras dtype policy name for ``train.mixed_precision`` (ConfigError if unknown)."""
    if value is None:
        return "float32"
    if value not in MIXED_PRECISION_POLICIES:
        raise ConfigError(
            f"train.mixed_precision = {value!r} is not supported; choose None, "
            + ", ".join(repr(p) for p in MIXED_PRECISION_POLICIES)
        )
    return value


@contextlib.contextmanager
def dtype_policy(name: str) -> Any:
    """Sets Keras's global dtype policy to ``name`` for the block; restores the previous one
    (also on error), so a warm worker's next trial starts from the policy it had.

    Under ``mixed_float16`` on a machine without GPUs, Grappler's remapper is turned off for
    the block: on TF 2.21's CPU (oneDNN) build it fuses float16 ``MatMul + BiasAdd`` into a
    kernel ~50-100× slower than the unfused ops (150 ms vs 2 ms for a 100×40·40×256 Dense layer
    measured here), which made a float16 MNIST-1D step take seconds.
    """
    previous = keras.config.dtype_policy()
    remapper = name == "mixed_float16" and not tf.config.list_physical_devices("GPU")
    options = tf.config.optimizer.get_experimental_options()
    keras.config.set_dtype_policy(name)
    if remapper:
        tf.config.optimizer.set_experimental_options({"remapping": False})
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
        if remapper:
            tf.config.optimizer.set_experimental_options(
                {"remapping": options.get("remapping", True)}
            )


def _float32_outputs(fn: Callable) -> Callable:
    """``fn(outputs, y)`` on the outputs cast to float32 (mixed precision: the model computes in
    float16/bfloat16; the loss and metrics are computed, and compared, in float32)."""

    @functools.wraps(fn)
    def wrapped(outputs: Any, y: Any) -> Any:
        outputs = tf.nest.map_structure(
            lambda t: tf.cast(t, tf.float32) if t.dtype in (tf.float16, tf.bfloat16) else t,
            outputs,
        )
        return fn(outputs, y)

    return wrapped


def run(workdir: str, stop_after: int | None = None) -> dict[str, Any] | None:
    """Calls the gin-configured :func:`train`; errors raised while gin builds its arguments
    (``@Adam()`` with a bad value...) become :class:`ConfigError` like the body's setup errors.
    """
    token = _BODY_ENTERED.set(False)
    try:
        # Devices are split, and a strategy built, before gin builds `@Adam()` & co. (creating
        # an optimizer initialises TensorFlow's devices).
        distributed.setup(_bound_value("train.strategy")[1], _bound_value("train.cpu_replicas")[1])
        return train(workdir=workdir, stop_after=stop_after)
    except (ConfigError, TrainingDiverged, TrainingInterrupted, RunIOError):
        raise
    except Exception as error:
        if not _BODY_ENTERED.get():
            raise ConfigError(one_line(error)) from error
        raise
    finally:
        _BODY_ENTERED.reset(token)


class _Runner:
    """The state and phases of one ``train`` call: workdir check, setup, loop, outputs."""

    def __init__(self, workdir: Path, options: dict[str, Any], progress_every_s: float, stop):
        self.workdir = workdir
        self.o = options
        self.progress_every_s = progress_every_s
        self.stop_after = stop
        self.config_text = gin.config_str()
        self.started = time.perf_counter()
        self.stop: preemption.StopRequest | None = None
        self.saved_step = -1
        self.problem: problems.Problem | None = None
        self.dist: distributed.Distribution | None = None
        self.source = workdir  # where checkpoints are restored from (the chief's workdir)

    # -- phase 1: what is in the workdir already ---------------------------------------------
    def check_workdir(self) -> dict[str, Any] | None:
        """Refuses a workdir of another config; returns the result of a complete run."""
        workdir = self.workdir
        if workdir.exists() and not workdir.is_dir():
            raise ConfigError(f"workdir {str(workdir)!r} exists and is not a directory")
        config_file = workdir / schema.CONFIG_FILE
        result_file = workdir / schema.RESULT_FILE
        has_checkpoint = bool(workdirs.checkpoint_prefixes(workdir / workdirs.CHECKPOINT_DIR))
        if config_file.exists() and (has_checkpoint or result_file.exists()):
            old = workdirs.read_or_refuse(lambda p: p.read_text(encoding="utf-8"), config_file)
            if old != self.config_text:
                raise ConfigError(
                    f"workdir {str(workdir)!r} holds a run of a different configuration "
                    f"({_first_difference(old, self.config_text)}); use a new --workdir, or "
                    "delete this one to start over."
                )
        if not result_file.exists():
            return None
        result = workdirs.read_or_refuse(schema.read_result, result_file)
        if result["status"] == "interrupted":
            return None  # resumed from the checkpoint it saved
        if result["status"] == "complete":
            logging.info(
                "Run in %s is already complete (%d steps, test accuracy %s); nothing to do.",
                workdir,
                result["steps"],
                result["final"]["test_accuracy"],
            )
            return result
        error = TrainingStalled if result["status"] == "stalled" else TrainingDiverged
        raise error(f"{result['error']} (recorded in {result_file}; delete the workdir to retry)")

    # -- phase 2: build everything; any error is a configuration error --------------------------
    def setup(self, dataset_fn: Callable, model_fn: Callable, optimizer: Any) -> None:
        try:
            self._setup(dataset_fn, model_fn, optimizer)
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError, RuntimeError, OSError) as error:
            raise ConfigError(one_line(error)) from error

    def _setup(self, dataset_fn: Callable, model_fn: Callable, optimizer: Any) -> None:
        o = self.o
        for key in ("load_dataset.seed", "create_model.seed"):
            bound, value = _bound_value(key)
            if bound and value is not None:  # None: an operative config's default, harmless
                raise ConfigError(f"{key} is bound; bind train.seed instead (the run's one seed)")
        keras.utils.set_random_seed(o["seed"])
        kwargs: dict[str, Any] = {"seed": o["seed"]}
        if o["batch_size"] is not None:
            kwargs["batch_size"] = o["batch_size"]
            bound, value = _bound_value("load_dataset.batch_size")
            if bound and value != o["batch_size"]:
                logging.info(
                    "train.batch_size = %d overrides load_dataset.batch_size = %s",
                    o["batch_size"],
                    value,
                )
        with _quiet_absl():
            ds = dataset_fn(**kwargs)
        if not isinstance(ds, Dataset):
            raise ConfigError(
                f"train.dataset must return a dirgrad_opt Dataset, got {short_repr(ds)}; to train "
                "on your own arrays, dirgrad_opt.register_dataset(name, fn) and bind "
                "load_dataset.name = 'name'"
            )
        if self.dist is not None:
            self.dist.check_batch(ds.batch_size)
        keras.utils.set_random_seed(o["seed"])
        with self.dist.scope() if self.dist else contextlib.nullcontext():
            net = model_fn(ds.input_shape, ds.num_outputs)
        if not isinstance(net, keras.Model):
            raise ConfigError(f"train.model must return a keras.Model, got {short_repr(net)}")
        if not isinstance(optimizer, keras.optimizers.Optimizer) and callable(optimizer):
            optimizer = optimizer()
        steps.check_optimizer(optimizer)
        workdirs.check_learning_rates(optimizer)
        if (
            o["mixed_precision"] == "mixed_float16"
            and not steps.is_closure_optimizer(optimizer)
            and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        ):  # Keras's dynamic loss scaling for a stock optimizer (closure ones scale themselves)
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        if self.dist is not None:  # gin built it outside the strategy: rebuild it inside
            optimizer = distributed.in_scope(self.dist, optimizer, net.trainable_variables)
        steps.check_closure_model(net, optimizer, o["allow_stateful_layers"])
        pooling = steps.max_pooling_layers(net)
        if o["jit_compile"] and o["deterministic"] and pooling:
            raise ConfigError(
                f"model {net.name!r} has max-pooling layers ({', '.join(pooling)}) and TF 2.21 has "
                "no deterministic XLA max-pool gradient: set train.jit_compile = False (or "
                "train.deterministic = False, giving up bit-exact resume)."
            )
        optimizer.build(net.trainable_variables)

        loss_fn = resolve_loss(o["loss"], ds.task)
        metrics = metrics_for_task(ds.task)
        if self.problem is not None:
            if ds.valid is None:
                raise ConfigError(
                    f"problem {self.problem.name!r} needs a validation split: bind "
                    "load_dataset.validation_size (examples carved from the training set)"
                )
            metrics = self.problem.metric_fns()
            if o["loss"] is None:  # train.loss, when bound, overrides the problem's
                loss_fn = self.problem.loss_fn()
        if o["mixed_precision"] != "float32":
            loss_fn = _float32_outputs(loss_fn)
            metrics = {name: _float32_outputs(fn) for name, fn in metrics.items()}
        step = steps.make_step(net, optimizer, loss_fn, metrics, o["batch_metrics"])
        spec = ds.train.element_spec
        if self.dist is not None:
            step = self.dist.replicated(step)
            spec = self.dist.distribute(ds.train, ds.batch_size).element_spec
        # Traced once here (autograph off: the step has no Python control flow on tensors); the
        # chunk loop calls this concrete function, so it is never traced again.
        step_fn = tf.function(step, jit_compile=o["jit_compile"], autograph=False)
        t0 = time.perf_counter()
        step_fn = step_fn.get_concrete_function(*spec)
        self.trace_s = time.perf_counter() - t0
        outputs = step_fn.structured_outputs
        keys = ["loss", *sorted(k for k in outputs if k not in (*COUNTERS, "loss"))]
        for key in keys:
            if outputs[key].dtype not in (tf.bool, *_NUMERIC):
                raise ConfigError(f"step scalar {key!r} has unsupported dtype {outputs[key].dtype}")

        self.ds, self.model, self.optimizer = ds, net, optimizer
        self.loss_fn, self.metrics = loss_fn, metrics
        self.step_fn, self.keys = step_fn, keys
        self.state = RunState(len(keys), o["seed"])
        tf.random.set_global_generator(self.state.rng)
        self.checkpoint = tf.train.Checkpoint(model=net, optimizer=optimizer, state=self.state)
        self.run_chunk = self._make_chunk_fn()
        self.evaluate = self._make_eval_fn()

    def _make_chunk_fn(self) -> Callable:
        state, step_fn, keys = self.state, self.step_fn, self.keys
        weights = self.model.trainable_variables
        max_rejected = self.o["max_rejected_steps"]

        def body(done, last, finite, rejected, iterator):
            x, y = iterator.get_next()
            info = step_fn(x, y)
            loss = tf.cast(info["loss"], tf.float64)
            ok = tf.math.is_finite(loss)
            # Branch-free bookkeeping (a tf.cond costs ~10 % of a small step): a step whose
            # loss is not finite adds nothing, and the loop stops after it.
            values = tf.stack([tf.cast(info[k], tf.float64) for k in keys])
            counts = tf.stack([tf.cast(info[c], tf.int64) for c in COUNTERS])
            one = tf.cast(ok, tf.int64)
            if "accepted" in info:  # consecutive rejected steps (a Keras optimizer has none)
                refused = ok & tf.logical_not(tf.cast(info["accepted"], tf.bool))
                rejected = tf.where(refused, rejected + 1, tf.zeros_like(rejected))
            updates = [
                state.window_sum.assign_add(tf.where(ok, values, tf.zeros_like(values))),
                state.window_count.assign_add(one),
                state.totals.assign_add(counts * one),
                state.last_loss.assign(tf.where(ok, loss, state.last_loss)),
                state.step.assign_add(one),
                state.rejected.assign(rejected),
            ]
            with tf.control_dependencies(updates):
                return done + one, loss, ok, tf.identity(rejected), iterator

        @tf.function(autograph=False)
        def run_chunk(iterator: Any, n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            """Runs up to ``n`` steps; stops before recording a step whose loss is not finite.

            Returns the steps done, the last loss computed (the non-finite one if it stopped)
            and whether every weight is finite at the end (an update can overflow the weights
            while the loss before it was finite; such weights are never checkpointed). It
            also stops once ``max_rejected_steps`` consecutive steps were rejected.
            """

            def more(done, last, finite, rejected, it):
                go = finite & (done < n)
                return go & (rejected < max_rejected) if max_rejected else go

            done, last, _, _, _ = tf.while_loop(
                more,
                body,
                (
                    tf.constant(0, tf.int64),
                    tf.constant(0.0, tf.float64),
                    tf.constant(True),
                    state.rejected.read_value(),
                    iterator,
                ),
            )
            finite_weights = tf.reduce_all(
                tf.stack([tf.reduce_all(tf.math.is_finite(w)) for w in weights])
            )
            return done, last, finite_weights

        return run_chunk

    def _make_eval_fn(self) -> Callable:
        """``run_eval() -> {train_loss, train_<metric>, test_loss, test_<metric>}``.

        Small evaluation sets (≤ :data:`EVAL_CACHE_BYTES` each) are gathered into memory once
        and evaluated in one graph call without tf.data; larger ones are streamed.
        """
        net, loss_fn, metrics = self.model, self.loss_fn, self.metrics
        names = ["loss", *metrics]

        def batch_sums(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            outputs = net(x, training=False)
            values = [loss_fn(outputs, y), *(fn(outputs, y) for fn in metrics.values())]
            size = tf.cast(tf.shape(x)[0], tf.float64)
            return size * tf.cast(tf.stack(values), tf.float64)

        zeros = tf.zeros([len(names) + 1], tf.float64)  # sums of the values, then the count

        def add_batch(sums: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            count = tf.cast(tf.shape(x)[0], tf.float64)[None]
            return sums + tf.concat([batch_sums(x, y), count], 0)

        @tf.function(autograph=False)
        def evaluate_stream(dataset: tf.data.Dataset) -> tf.Tensor:
            """Example-weighted means of the loss and metrics over a finite dataset."""
            sums = dataset.reduce(zeros, lambda sums, batch: add_batch(sums, *batch))
            return sums[:-1] / sums[-1]

        x_spec, y_spec = self.ds.test.element_spec
        signature = (
            tf.TensorSpec([None, *x_spec.shape[1:]], x_spec.dtype),
            tf.TensorSpec([None, *y_spec.shape[1:]], y_spec.dtype),
            tf.TensorSpec([], tf.int64),
        )

        @tf.function(autograph=False, input_signature=signature)
        def evaluate_cached(x: tf.Tensor, y: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
            """The same means over in-memory tensors, in slices of ``batch`` examples."""
            n = tf.shape(x, out_type=tf.int64)[0]

            def body(start: tf.Tensor, sums: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                end = start + batch
                return end, add_batch(sums, x[start:end], y[start:end])

            _, sums = tf.while_loop(
                lambda start, _: start < n, body, (tf.constant(0, tf.int64), zeros)
            )
            return sums[:-1] / sums[-1]

        splits = {"train": self.ds.train_eval, "test": self.ds.test}
        if self.ds.valid is not None:
            splits = {"train": self.ds.train_eval, "valid": self.ds.valid, "test": self.ds.test}
        cached = {name: _cache(data) for name, data in splits.items()}

        def run_eval() -> dict[str, float]:
            out = {}
            for split, data in splits.items():
                if cached[split] is None:
                    values = evaluate_stream(data).numpy()
                else:
                    x, y, batch = cached[split]
                    values = evaluate_cached(x, y, batch).numpy()
                out.update(
                    {f"{split}_{name}": float(v) for name, v in zip(names, values, strict=True)}
                )
            return out

        return run_eval

    # -- phase 3: outputs and the loop -----------------------------------------------------------
    def run(self) -> dict[str, Any] | None:
        o, workdir, state = self.o, self.workdir, self.state
        num_steps = o["num_steps"]
        schema.write_text_atomic(workdir / schema.CONFIG_FILE, self.config_text)
        operative = user_modules.header() + gin.operative_config_str()  # user module folders
        schema.write_text_atomic(workdir / schema.OPERATIVE_CONFIG_FILE, operative)
        self.records = self._restore()
        start = int(state.step.numpy())
        self.clock0 = state.clocks.numpy().astype(float)  # train_s, eval_s, wall_s at restore
        self.process_train_s = 0.0
        self.process_eval_s = 0.0
        self.process_steps = 0
        self.writer = tf.summary.create_file_writer(str(workdir / "tensorboard"))
        if start:
            logging.info("Resuming %s at step %d/%d.", workdir, start, num_steps)
        else:
            logging.info(
                "Training %s (%d parameters) on %s with %s for %d steps -> %s",
                self.model.name,
                self.model.count_params(),
                self.ds.name,
                type(self.optimizer).__name__,
                num_steps,
                workdir,
            )
        stream = self.ds.train_from(start)
        if self.dist is not None:
            stream = self.dist.distribute(stream, self.ds.batch_size)
        iterator = iter(stream)
        t0 = time.perf_counter()  # trace the chunk now, so the training clock never holds it
        self.run_chunk.get_concrete_function(iterator, tf.TensorSpec([], tf.int64))
        self.trace_s += time.perf_counter() - t0
        if start == 0 and not any(r["kind"] == "eval" for r in self.records):
            initial: list[dict[str, Any]] = []
            values = self._evaluation(0, initial)  # step 0: the initial weights
            self._append(initial)
            self._check_finite(0, values)
        step = start
        last_progress = time.perf_counter()
        periods = (o["log_every"], o["eval_every"], o["checkpoint_every"])
        while step < num_steps:
            if self.stop:
                return self._interrupted(step)
            limit = num_steps if self.stop_after is None else min(num_steps, self.stop_after)
            target = next_event(step, periods, limit)
            t0 = time.perf_counter()
            done, last, finite_weights = self.run_chunk(
                iterator, tf.constant(target - step, tf.int64)
            )
            done = int(done.numpy())
            self.process_train_s += time.perf_counter() - t0
            self.process_steps += done
            step += done
            max_rejected = o["max_rejected_steps"]
            if max_rejected and int(state.rejected.numpy()) >= max_rejected:
                return self._stalled(step)
            if step < target:
                what = f"the loss is {float(last.numpy())} at step {step + 1} (the weights after "
                return self._diverged(step, what + f"{step} updates)")
            if not bool(finite_weights.numpy()):
                return self._diverged(step, f"the weights are not finite after step {step}")
            self._events(step)
            now = time.perf_counter()
            first = self.process_steps == done  # right after tracing: shows the speed early
            if first or now - last_progress >= self.progress_every_s or step == num_steps:
                self._progress(step)
                last_progress = now
            if self.stop_after is not None and step >= self.stop_after and step < num_steps:
                self.writer.flush()
                logging.info("Stopped after %d steps (stop_after).", step)
                return None
        if start == num_steps and not any(
            r["kind"] == "eval" and r["step"] == num_steps for r in self.records
        ):
            self._events(num_steps)  # killed between the final checkpoint and its records
        return self._finish("complete", None, num_steps)

    def _restore(self) -> list[dict[str, Any]]:
        """Restores the newest readable checkpoint (if any) and the metrics records up to its
        step. Without a checkpoint, ``metrics.jsonl`` (of an earlier attempt of this run, or
        none) starts empty; ``tensorboard/`` is never deleted (an event file per attempt)."""
        metrics_file = self.workdir / schema.METRICS_FILE
        checkpoints = self.workdir / workdirs.CHECKPOINT_DIR
        self.manager, latest = workdirs.restore_newest_readable(
            self.checkpoint,
            self.source / workdirs.CHECKPOINT_DIR,  # a non-chief worker resumes from the chief's
            self.o["max_checkpoints"],
            logging.warning,
        )
        if self.source != self.workdir:  # ... and saves its own into its temporary folder
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, str(checkpoints), max_to_keep=self.o["max_checkpoints"]
            )
        if latest is None:
            schema.write_text_atomic(metrics_file, "")
            return []
        step = int(self.state.step.numpy())
        self.saved_step = step
        records = []
        if metrics_file.exists():
            records = workdirs.read_or_refuse(schema.read_metrics, metrics_file)
            records = [r for r in records if r["step"] <= step]
        else:
            logging.warning(
                "%s is missing: its records up to step %d are lost (result.json's best is kept "
                "in the checkpoint).",
                metrics_file,
                step,
            )
        schema.write_text_atomic(metrics_file, schema.records_to_lines(records))
        return records

    def _times(self) -> tuple[float, float, float]:
        train_s = self.clock0[0] + self.process_train_s
        eval_s = self.clock0[1] + self.process_eval_s
        wall_s = self.clock0[2] + (time.perf_counter() - self.started)
        return train_s, eval_s, wall_s

    def _common(self, step: int) -> dict[str, Any]:
        train_s, eval_s, wall_s = self._times()
        totals = self.state.totals.numpy()
        return {
            "step": step,
            "epoch": self.ds.epoch(step),
            "wall_s": wall_s,
            "train_time_s": train_s,
            "trace_s": self.trace_s,
            **{name: int(v) for name, v in zip(COUNTERS, totals, strict=True)},
        }

    def _events(self, step: int) -> None:
        """Log, evaluate and checkpoint as due after ``step`` (in that order)."""
        o, state = self.o, self.state
        num_steps = o["num_steps"]
        new = []
        if is_event(step, o["log_every"], num_steps) and int(state.window_count.numpy()) > 0:
            means = state.window_sum.numpy() / float(state.window_count.numpy())
            record = {"kind": "train", **self._common(step)}
            record.update({k: float(v) for k, v in zip(self.keys, means, strict=True)})
            new.append(record)
            state.window_sum.assign(tf.zeros_like(state.window_sum))
            state.window_count.assign(0)
        values = None
        if is_event(step, o["eval_every"], num_steps):
            values = self._evaluation(step, new)
        if new:
            self._append(new)
        if values is not None:
            self._check_finite(step, values)
        if is_event(step, o["checkpoint_every"], num_steps):
            self._save(step)

    def _save(self, step: int) -> None:
        """Checkpoints ``step`` (clocks included); a failed save raises ``RunIOError``."""
        self.state.clocks.assign(self._times())
        with _quiet_absl():  # TF logs a line per save at INFO
            workdirs.save_checkpoint(self.manager, step)
        self.saved_step = step
        self.writer.flush()

    def _update_best(self, values: dict[str, float], step: int) -> None:
        """Folds one evaluation into ``state.best`` (ties keep the earlier step)."""
        best, best_step = self.state.best.numpy(), self.state.best_step.numpy()
        for i, key in enumerate(schema.BEST_KEYS):
            value = values.get(key)
            if value is None or not math.isfinite(value):
                continue
            higher = key.endswith("accuracy")
            if best_step[i] < 0 or (value > best[i] if higher else value < best[i]):
                best[i], best_step[i] = value, step
        self.state.best.assign(best)
        self.state.best_step.assign(best_step)

    def _best(self) -> dict[str, Any]:
        """``result.json``'s ``best`` from the checkpointed state."""
        best, best_step = self.state.best.numpy(), self.state.best_step.numpy()
        return {
            key: None if best_step[i] < 0 else {"value": float(best[i]), "step": int(best_step[i])}
            for i, key in enumerate(schema.BEST_KEYS)
        }

    def _evaluation(self, step: int, records: list[dict[str, Any]]) -> dict[str, float]:
        """Evaluates on the full train-eval and test sets, adds the ``eval`` record of ``step``
        to ``records``, folds it into ``state.best`` and returns its values."""
        t0 = time.perf_counter()
        values = self.evaluate()
        self.process_eval_s += time.perf_counter() - t0
        record = {"kind": "eval", **self._common(step), "eval_time_s": self._times()[1]}
        record.update(values)
        records.append(record)
        self._update_best(values, step)
        return values

    def _check_finite(self, step: int, values: dict[str, float]) -> None:
        """Follows the diverged path (raises) when an evaluation is not finite; the metrics
        record holds null for those values and no checkpoint is written of this step."""
        bad = [f"{k} = {v}" for k, v in values.items() if not math.isfinite(v)]
        if bad:
            what = f"the evaluation at step {step} is not finite ({', '.join(bad)})"
            self._diverged(step, what, final=values)

    def _append(self, records: list[dict[str, Any]]) -> None:
        text = schema.records_to_lines(records)
        with open(self.workdir / schema.METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
        with self.writer.as_default():
            for record in records:
                kind = record["kind"]
                for key, value in record.items():
                    if key in ("kind", "step") or value is None:
                        continue
                    write_scalar(f"{kind}/{key}", value, record["step"])
        self.records.extend(records)

    def _progress(self, step: int) -> None:
        num_steps = self.o["num_steps"]
        rate = self.process_steps / self.process_train_s if self.process_train_s > 0 else 0.0
        eta = (num_steps - step) / rate if rate > 0 else float("nan")
        train = [r for r in self.records if r["kind"] == "train"]
        parts = [
            f"step {step}/{num_steps} ({100.0 * step / num_steps:.1f}%)",
            f"{rate:.1f} steps/s",
        ]
        if train:
            last = train[-1]
            parts.append(f"loss {last['loss']:.4f}" if last["loss"] is not None else "loss nan")
            if last.get("accuracy") is not None:
                parts.append(f"accuracy {last['accuracy']:.4f}")
        evals = [r for r in self.records if r["kind"] == "eval"]
        if evals and evals[-1].get("test_accuracy") is not None:
            parts.append(f"test accuracy {evals[-1]['test_accuracy']:.4f}")
        parts.append(f"ETA {format_duration(eta) if math.isfinite(eta) else '?'}")
        logging.info(" | ".join(parts))

    def _interrupted(self, step: int) -> None:
        """Checkpoints ``step``, records ``status: interrupted``, raises TrainingInterrupted."""
        if self.saved_step != step:
            self._save(step)
        message = (
            f"interrupted by {self.stop.signal_name} at step {step}/{self.o['num_steps']}; "
            f"checkpoint {self.manager.latest_checkpoint} saved: rerun the same command to resume"
        )
        logging.warning(message)
        self._finish("interrupted", message, step)
        raise TrainingInterrupted(message)

    def _stalled(self, step: int) -> None:
        """Records ``status: stalled`` (no checkpoint) and raises TrainingStalled."""
        n = self.o["max_rejected_steps"]
        message = (
            f"training stalled: {type(self.optimizer).__name__} rejected every step for {n} "
            f"consecutive steps (up to step {step}; loss {float(self.state.last_loss.numpy()):.6g})"
            f". Last checkpoint: {self.manager.latest_checkpoint or 'none'}. Check the step-size "
            "settings, or raise train.max_rejected_steps (0 = never stop)."
        )
        logging.error(message)
        self._finish("stalled", message, step)
        raise TrainingStalled(message)

    def _diverged(self, step: int, what: str, final: dict[str, float] | None = None) -> None:
        """Records ``status: diverged`` (no checkpoint) and raises TrainingDiverged."""
        last_loss = float(self.state.last_loss.numpy())
        latest = self.manager.latest_checkpoint
        seen = (
            f"last finite loss {last_loss:.6g} at step {step}"
            if math.isfinite(last_loss)
            else "no finite training loss yet"
        )
        message = (
            f"training diverged: {what}; {seen}. "
            f"Last good checkpoint: {latest or 'none'}. Lower the step size or check the data."
        )
        logging.error(message)
        self._finish("diverged", message, step, final)
        raise TrainingDiverged(message)

    def _finish(
        self, status: str, error: str | None, step: int, values: dict[str, float] | None = None
    ) -> dict[str, Any]:
        o = self.o
        train_s, eval_s, wall_s = self._times()
        evals = [r for r in self.records if r["kind"] == "eval"]
        final = {k: None for k in schema.FINAL_KEYS}
        final["step"] = step
        if status == "complete":
            last = evals[-1]
            final.update({k: last.get(k) for k in schema.FINAL_KEYS})
            final.update({k: v for k, v in last.items() if k.startswith("valid_")})
        elif values is not None:  # a non-finite evaluation: its values (null where not finite)
            final.update({k: values.get(k) for k in schema.FINAL_KEYS[1:]})
            final.update({k: v for k, v in values.items() if k.startswith("valid_")})
        totals = self.state.totals.numpy()
        result = {
            "schema_version": schema.SCHEMA_VERSION,
            "status": status,
            "error": error,
            "seed": o["seed"],
            "steps": step,
            "num_steps": o["num_steps"],
            "epochs": self.ds.epoch(step),
            "final": final,
            "best": self._best(),
            "times": {
                "train_s": train_s,
                "eval_s": eval_s,
                "wall_s": wall_s,
                "steps_per_s": step / train_s if train_s > 0 else 0.0,
                "trace_s": self.trace_s,  # this process's tracing, outside train_s
            },
            "totals": {name: int(v) for name, v in zip(COUNTERS, totals, strict=True)},
            "dataset": {
                "name": self.ds.name,
                "task": self.ds.task,
                "batch_size": self.ds.batch_size,
                "num_train_examples": self.ds.num_train_examples,
                "num_test_examples": self.ds.num_test_examples,
            },
            "model": {"name": self.model.name, "num_parameters": int(self.model.count_params())},
            "optimizer": {
                "class": type(self.optimizer).__name__,
                "family": "directional" if steps.is_closure_optimizer(self.optimizer) else "keras",
                "config": _optimizer_config(self.optimizer),
            },
            "jit_compile": o["jit_compile"],
            "mixed_precision": o["mixed_precision"],
            "distribution": distributed.describe(self.dist),
            "versions": library_versions(),
        }
        if self.problem is not None:
            result["problem"] = self.problem.to_json()
            result["dataset"]["num_valid_examples"] = self.ds.num_valid_examples
        self.writer.flush()
        if status == "complete":
            artifacts.save_final_model(self.workdir, self.model, self.optimizer)
        schema.write_result(self.workdir / schema.RESULT_FILE, result)
        if self.dist is not None and not self.dist.is_chief:
            self.writer.close()
            self.dist.cleanup(self.source)
        if status == "complete":
            logging.info(
                "Done: %d steps in %.1f s training (+%.1f s eval); test accuracy %s, test loss %s."
                " Results in %s",
                step,
                train_s,
                eval_s,
                _fmt(final["test_accuracy"]),
                _fmt(final["test_loss"]),
                self.workdir,
            )
        return result


#: Evaluation sets up to this size (bytes) are held in memory as tensors.
EVAL_CACHE_BYTES = 256 * 2**20


def _cache(dataset: tf.data.Dataset) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor] | None:
    """``(x, y, batch_size)`` of a finite batched dataset held in memory, or ``None`` if large."""
    x_spec, y_spec = dataset.element_spec
    batches = int(dataset.cardinality().numpy())
    batch = x_spec.shape[0]
    if batches < 0 or batch is None:
        # Unknown size or unbatched spec: take one batch to learn the batch size.
        first = next(iter(dataset), None)
        if first is None or batches < 0:
            return None
        batch = int(first[0].shape[0])
    per_example = sum(
        (spec.shape[1:].num_elements() or 0) * spec.dtype.size for spec in (x_spec, y_spec)
    )
    if batches * batch * per_example > EVAL_CACHE_BYTES:
        return None
    xs, ys = zip(*dataset, strict=True)
    return tf.concat(xs, 0), tf.concat(ys, 0), tf.constant(batch, tf.int64)


_NUMERIC = (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64)


def _optimizer_config(optimizer: keras.optimizers.Optimizer) -> dict[str, Any]:
    """The optimizer's hyperparameters as JSON data, without Keras's auto-generated ``name``
    (``adam_3`` depends on how many optimizers the process built before)."""
    config = schema.jsonable(optimizer.get_config())
    config.pop("name", None)
    if isinstance(config.get("direction"), dict):
        config["direction"].get("config", {}).pop("name", None)
    return config


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _first_difference(old: str, new: str, limit: int = 3) -> str:
    """The bindings only one of two gin configs has, e.g. ``'Adam.learning_rate = 0.5'``."""

    def bindings(text: str) -> list[str]:
        lines = (line.strip() for line in text.splitlines())
        return [line for line in lines if line and not line.startswith("#")]

    old_b, new_b = bindings(old), bindings(new)
    only_old = [line for line in old_b if line not in new_b][:limit]
    only_new = [line for line in new_b if line not in old_b][:limit]
    parts = []
    if only_old:
        parts.append(f"it has {', '.join(map(repr, only_old))}")
    if only_new:
        parts.append(f"this run has {', '.join(map(repr, only_new))}")
    return "; ".join(parts) or "the same bindings in another layout"
