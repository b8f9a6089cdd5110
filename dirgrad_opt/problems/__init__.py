"""Benchmark problems: dataset + model + loss + metric + step budget + target, one gin file each.

A problem is AlgoPerf's *workload*: everything but the optimizer. Its file,
``configs/problems/<name>.gin``, includes a dataset and a model, binds a validation split
(``load_dataset.validation_size``) and configures :class:`Problem`::

    include 'configs/datasets/mnist1d.gin'
    include 'configs/models/mnist1d_mlp.gin'
    load_dataset.validation_size = 500       # examples carved from the training set
    train.problem = 'mnist1d_mlp'
    Problem.name = 'mnist1d_mlp'
    Problem.loss = 'cross_entropy'
    Problem.metrics = ['accuracy']
    Problem.num_steps = 2000                 # steps (the budget)
    Problem.target = 'valid_accuracy>=0.6'   # tuned Adam's median at the budget

Select it by including the file, or with ``train.problem = 'mnist1d_mlp'`` alone (then
:func:`parse_config` loads the file first, so the user's own files and bindings override it).
The training loop takes the loss, the metrics and the number of steps from the problem and
evaluates the validation split beside the train and test sets; the optimizer never sees the
problem. ``Problem.budget`` scales the steps (``--budget`` of ``experiments.benchmark``).

Targets are on the validation split (``valid_loss`` or ``valid_<metric>``), never on the test
split, so selecting settings by them never looks at test data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gin

from dirgrad_opt import user_modules
from dirgrad_opt.models import losses

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Where problem files live: ``<root>/configs/problems/<name>.gin``.
PROBLEMS_DIR = PROJECT_ROOT / "configs" / "problems"

#: Loss names a problem may use.
LOSSES = {
    "cross_entropy": losses.classification_loss,
    "mse": losses.regression_loss,
    "objective": losses.objective_loss,
}
#: Metric names a problem may report (besides its loss).
METRICS = {"accuracy": losses.accuracy}
_TARGET = re.compile(r"\s*(valid_[A-Za-z_]\w*)\s*(>=|<=)\s*(\S+)\s*")


class ProblemError(ValueError):
    """An unknown problem, or a problem file that is not consistent."""


def available() -> list[str]:
    """Names of the problems under :data:`PROBLEMS_DIR`, sorted."""
    return sorted(p.stem for p in PROBLEMS_DIR.glob("*.gin"))


def problem_file(name: str) -> Path:
    """``configs/problems/<name>.gin``.

    Raises:
      ProblemError: no such problem (the message lists the available ones).
    """
    path = PROBLEMS_DIR / f"{name}.gin"
    if not re.fullmatch(r"[A-Za-z0-9_]+", name or "") or not path.is_file():
        raise ProblemError(
            f"unknown problem {name!r}; available: {', '.join(available())} "
            f"(files in {PROBLEMS_DIR})"
        )
    return path


def describe(name: str) -> dict[str, str]:
    """``{name, description, num_steps, target}`` read from a problem file's text (the first
    comment line is its description)."""
    text = problem_file(name).read_text(encoding="utf-8")
    out = {"name": name, "description": "", "num_steps": "?", "target": "?"}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not out["description"]:
            out["description"] = stripped.lstrip("# ").strip()
        match = re.match(r"Problem\.(num_steps|target)\s*=\s*(.+?)\s*(#.*)?$", stripped)
        if match:
            out[match.group(1)] = match.group(2).strip("'\"")
    return out


@gin.configurable
class Problem:
    """A problem's loss, metrics, budget and target (its data and model are bound by gin).

    Args:
      name: the problem's name (its file's name).
      num_steps: the step budget (# training steps) at ``budget = 1``.
      target: ``'valid_<metric> >= value'`` or ``'valid_loss <= value'`` — the value tuned Adam
        reaches at the budget (median over seeds); time to target is measured against it.
      loss: a name in :data:`LOSSES`.
      metrics: names in :data:`METRICS`, evaluated beside the loss on every split.
      budget: multiplies ``num_steps`` (a quick look: ``budget = 0.1``); ≥ 1 step always.
      eval_points: evaluations per run (``eval_every = ceil(steps / eval_points)``).

    Raises:
      ProblemError: unknown loss or metric, a target not on the validation split, bad numbers.
    """

    def __init__(
        self,
        name: str = gin.REQUIRED,
        num_steps: int = gin.REQUIRED,
        target: str = gin.REQUIRED,
        loss: str = "cross_entropy",
        metrics: tuple[str, ...] | list[str] = (),
        budget: float = 1.0,
        eval_points: int = 20,
    ):
        where = f"problem {name!r}"
        if loss not in LOSSES:
            raise ProblemError(f"{where}: unknown loss {loss!r}; known: {', '.join(LOSSES)}")
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ProblemError(f"{where}: unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
            raise ProblemError(f"{where}: num_steps must be an integer >= 1, got {num_steps!r}")
        if not isinstance(budget, int | float) or not math.isfinite(budget) or budget <= 0:
            raise ProblemError(f"{where}: budget must be a number > 0, got {budget!r}")
        if not isinstance(eval_points, int) or eval_points < 1:
            raise ProblemError(f"{where}: eval_points must be an integer >= 1, got {eval_points!r}")
        match = _TARGET.fullmatch(str(target))
        value = _float(match.group(3)) if match else None
        metric_names = {"valid_loss", *(f"valid_{m}" for m in metrics)}
        if match is None or value is None or match.group(1) not in metric_names:
            raise ProblemError(
                f"{where}: target {target!r} must be 'METRIC>=VALUE' or 'METRIC<=VALUE' with "
                f"METRIC one of {sorted(metric_names)} (targets are on the validation split)"
            )
        self.name = name
        self.base_steps = num_steps
        self.budget = float(budget)
        self.loss_name = loss
        self.metric_names = tuple(metrics)
        self.target_metric, self.target_goal, self.target_value = (
            match.group(1),
            match.group(2),
            value,
        )
        self.eval_points = eval_points

    @property
    def num_steps(self) -> int:
        """The budget in steps: ``max(1, round(num_steps · budget))``."""
        return max(1, round(self.base_steps * self.budget))

    @property
    def eval_every(self) -> int:
        """Steps between evaluations: ``ceil(steps / eval_points)``."""
        return max(1, math.ceil(self.num_steps / self.eval_points))

    @property
    def target(self) -> str:
        return f"{self.target_metric}{self.target_goal}{self.target_value:g}"

    def loss_fn(self) -> losses.LossFn:
        return LOSSES[self.loss_name]

    def metric_fns(self) -> dict[str, losses.LossFn]:
        return {m: METRICS[m] for m in self.metric_names}

    def to_json(self) -> dict[str, Any]:
        """The problem as recorded in ``result.json``."""
        return {
            "name": self.name,
            "loss": self.loss_name,
            "metrics": list(self.metric_names),
            "num_steps": self.num_steps,
            "base_num_steps": self.base_steps,
            "budget": self.budget,
            "target": {
                "metric": self.target_metric,
                "goal": self.target_goal,
                "value": self.target_value,
            },
        }


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _bound(key: str) -> tuple[bool, Any]:
    try:
        return True, gin.query_parameter(key)
    except ValueError:
        return False, None


def _system_path_file_exists(path: str) -> bool:
    """gin's check for a config inside an importable package, without its crash on namespace
    packages: with the project root on ``sys.path`` (``PYTHONPATH``, editable installs),
    ``configs/optimizers`` imports as a namespace package with no origin, and gin's own check
    raises ``TypeError`` instead of trying the next search path."""
    from gin import resource_reader

    try:
        return resource_reader.system_path_file_exists(path)
    except TypeError:
        return False


def _patch_gin_readers() -> None:
    from gin import config as gin_config
    from gin import resource_reader

    readers = gin_config._FILE_READERS  # noqa: SLF001 - no public way to replace a check
    for i, (reader, check) in enumerate(readers):
        if check is resource_reader.system_path_file_exists:
            readers[i] = (reader, _system_path_file_exists)


def parse_config(
    gin_files: Sequence[str],
    gin_params: Sequence[str],
    imports: Sequence[str] = (),
    import_paths: Sequence[str] = (),
) -> str | None:
    """Parses gin files and bindings as ``experiments.train`` does (gin cleared first, the
    user's ``imports`` imported, unknown names are errors, each gin file's folder importable:
    :func:`dirgrad_opt.user_modules.parse`), loading the selected problem's file first when
    ``train.problem`` names one whose file is not included. Returns the problem's name
    (``None`` without one).

    Raises:
      ProblemError: ``train.problem`` names no problem file.
      user_modules.ImportFailed: an ``imports`` module is missing or fails.
      Any gin parse error.
    """
    import dirgrad_opt.training  # noqa: F401  (registers train and the optimizers with gin)

    _patch_gin_readers()

    def parse(files: Sequence[str]) -> None:
        user_modules.parse(files, gin_params, imports, import_paths)

    parse(gin_files)
    bound, name = _bound("train.problem")
    if not bound or not isinstance(name, str):
        return None
    path = problem_file(name)
    if _bound("Problem.name") != (True, name):
        parse([str(path), *gin_files])
    return name


def resolve(problem: Problem | str) -> Problem:
    """``train.problem``'s value as a :class:`Problem`: a string builds the gin-configured
    ``Problem()`` and checks that it is the named one.

    Raises:
      ProblemError: the named problem's file is not loaded (or another problem's is).
    """
    if isinstance(problem, Problem):
        return problem
    if not isinstance(problem, str):
        raise ProblemError(f"train.problem must be a problem name or Problem, got {problem!r}")
    problem_file(problem)
    bound, loaded = _bound("Problem.name")
    if loaded != problem:
        raise ProblemError(
            f"train.problem = {problem!r}, but "
            + (f"the loaded problem file is {loaded!r}" if bound else "its file is not loaded")
            + f"; include 'configs/problems/{problem}.gin' or parse the config with "
            "dirgrad_opt.problems.parse_config (experiments.train does)"
        )
    return Problem()


__all__ = [
    "LOSSES",
    "METRICS",
    "PROBLEMS_DIR",
    "Problem",
    "ProblemError",
    "available",
    "describe",
    "parse_config",
    "problem_file",
    "resolve",
]
