"""The loss along the step direction at a checkpoint: ``φ(t) = L(w + t·d)`` for a range of t.

The run's model is rebuilt from its ``operative_config.gin`` (dataset and model exactly as
trained: ``load_dataset`` with the run's ``train.seed`` and ``train.batch_size``,
``create_model``), and its weights are restored from ``checkpoints/`` (the model part of the
``tf.train.Checkpoint(model=..., optimizer=..., state=...)`` the trainer writes). Then, on the
mini-batch the optimizer sees next (``Dataset.train_from(step)``):

* ``direction="gradient"``: ``d = −∇L_B(w)``, the steepest-descent direction of the batch loss;
* ``direction="update"``: ``d = w_k − w_{k−1}``, the net update between the two latest
  checkpoints (``t = 1`` is where training went).

Beside φ on the batch and on the training set (first ``max_eval_examples``), the result holds
the slope ``φ'(0) = ∇L_B·d`` and the curvature ``φ''(0) = dᵀ∇²L_B d`` from
:func:`dirgrad_opt.directional.directional_curvature`, hence the Newton step along the line
``t* = −φ'(0)/φ''(0)`` (when ``φ''(0) > 0``), which sets the default range ``t ∈ [−t*, 3t*]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dirgrad_opt.training import schema

DIRECTIONS = ("gradient", "update")


def _checkpoint_paths(run_dir: Path) -> list[str]:
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(run_dir / "checkpoints"))
    if state is None or not state.all_model_checkpoint_paths:
        raise ValueError(f"{run_dir}: no checkpoints in {run_dir / 'checkpoints'}")
    return list(state.all_model_checkpoint_paths)


def _step_of(path: str) -> int:
    return int(path.rsplit("-", 1)[-1])


def rebuild(run_dir: str | os.PathLike) -> tuple[Any, Any, int]:
    """``(dataset, model, seed)`` of a run, from its ``operative_config.gin`` (gin is cleared
    and left holding that config)."""
    import gin

    from dirgrad_opt import training, user_modules  # registers optimizers, data and models
    from dirgrad_opt.data import load_dataset
    from dirgrad_opt.models import create_model

    run_dir = Path(run_dir)
    config = run_dir / schema.OPERATIVE_CONFIG_FILE
    if not config.exists():
        raise ValueError(f"{run_dir}: no {schema.OPERATIVE_CONFIG_FILE}; is this a run workdir?")
    try:  # clears gin; the user module folders the run recorded are importable
        user_modules.parse([str(config)], [])
    except Exception as error:  # noqa: BLE001 - any parse failure: say which file
        raise ValueError(
            f"{config}: cannot parse ({training.one_line(error)}); import the module that "
            "defines the missing configurable first"
        ) from error

    def bound(key: str, default: Any) -> Any:
        try:
            return gin.query_parameter(key)
        except ValueError:
            return default

    seed = int(bound("train.seed", 0))
    kwargs: dict[str, Any] = {"seed": seed}
    batch_size = bound("train.batch_size", None)
    if batch_size is not None:
        kwargs["batch_size"] = int(batch_size)
    dataset = load_dataset(**kwargs)
    model = create_model(dataset.input_shape, dataset.num_outputs)
    return dataset, model, seed


def _restore(model: Any, path: str) -> None:
    import tensorflow as tf

    status = tf.train.Checkpoint(model=model).restore(path).expect_partial()
    status.assert_existing_objects_matched()


def loss_slice(
    run_dir: str | os.PathLike,
    direction: str = "gradient",
    t_range: tuple[float, float] | None = None,
    num_points: int = 41,
    checkpoint_step: int | None = None,
    max_eval_examples: int = 10000,
) -> dict[str, Any]:
    """``φ(t) = L(w + t·d)`` at a run's checkpoint (see the module docstring).

    Args:
      run_dir: an ``experiments.train`` workdir (or a sweep trial folder).
      direction: ``"gradient"`` or ``"update"``.
      t_range: ``(t_min, t_max)``; default ``[−t*, 3t*]`` with t* the Newton step along d, or
        ``[−0.5, 1.5]`` when the curvature is not positive.
      num_points: points on the line.
      checkpoint_step: the checkpoint's step; default the latest.
      max_eval_examples: training examples for the training-set curve (# examples).

    Returns:
      ``{"t", "batch_loss", "train_loss"`` (arrays)``, "loss0", "slope", "curvature",
      "newton_step", "direction", "step", "checkpoint", "run_dir"}``.

    Raises:
      ValueError: unknown direction, no checkpoint (or not two for ``"update"``), a config
        that cannot be rebuilt.
    """
    import gin
    import tensorflow as tf

    from dirgrad_opt import directional
    from dirgrad_opt.models import loss_for_task

    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}")
    run_dir = Path(run_dir)
    paths = _checkpoint_paths(run_dir)
    if checkpoint_step is None:
        index = len(paths) - 1
    else:
        steps = [_step_of(p) for p in paths]
        if checkpoint_step not in steps:
            raise ValueError(f"{run_dir}: no checkpoint at step {checkpoint_step}; have {steps}")
        index = steps.index(checkpoint_step)
    if direction == "update" and index == 0:
        raise ValueError(
            f"{run_dir}: direction 'update' needs the checkpoint before step "
            f"{_step_of(paths[index])}; have {[_step_of(p) for p in paths]}"
        )
    try:
        dataset, model, _ = rebuild(run_dir)
        variables = model.trainable_variables
        loss_fn = loss_for_task(dataset.task)
        if direction == "update":
            _restore(model, paths[index - 1])
            before = [v.numpy() for v in variables]
        _restore(model, paths[index])
        w0 = [v.numpy() for v in variables]
        step = _step_of(paths[index])
        x, y = next(iter(dataset.train_from(step)))

        def batch_loss() -> tf.Tensor:
            return loss_fn(model(x, training=False), y)

        if direction == "gradient":
            with tf.GradientTape() as tape:
                value = batch_loss()
            d = [-g for g in tape.gradient(value, variables)]
        else:
            d = [tf.constant(a - b) for a, b in zip(w0, before, strict=True)]
        loss0, slope, curvature = directional.directional_curvature(batch_loss, variables, d)
        loss0, slope, curvature = float(loss0), float(slope), float(curvature)
        newton = -slope / curvature if curvature > 0 and slope < 0 else None
        if t_range is None:
            t_range = (-newton, 3.0 * newton) if newton else (-0.5, 1.5)
        ts = np.linspace(float(t_range[0]), float(t_range[1]), num_points)
        train_batches = []
        seen = 0
        for xb, yb in dataset.train_eval:
            train_batches.append((xb, yb))
            seen += int(xb.shape[0])
            if seen >= max_eval_examples:
                break

        def train_loss() -> float:
            total, count = 0.0, 0
            for xb, yb in train_batches:
                n = int(xb.shape[0])
                total += float(loss_fn(model(xb, training=False), yb)) * n
                count += n
            return total / count

        batch_values, train_values = [], []
        try:
            for t in ts:
                for v, w, dv in zip(variables, w0, d, strict=True):
                    v.assign(w + t * dv.numpy())
                batch_values.append(float(batch_loss()))
                train_values.append(train_loss())
        finally:
            for v, w in zip(variables, w0, strict=True):
                v.assign(w)
    finally:
        gin.clear_config()
    return {
        "t": ts,
        "batch_loss": np.array(batch_values),
        "train_loss": np.array(train_values),
        "loss0": loss0,
        "slope": slope,
        "curvature": curvature,
        "newton_step": newton,
        "direction": "−∇L_B(w)" if direction == "gradient" else "w_k − w_(k−1)",
        "step": step,
        "checkpoint": paths[index],
        "run_dir": str(run_dir),
    }
