"""Sweep files: parse and validate the JSON, render values as gin literals, expand into trials.

A sweep file (JSON)::

    {
      "grid":   {"Adam.learning_rate": [1e-3, 3e-3, 1e-2], "train.batch_size": [50, 100]},
      "random": {"Adam.beta_1": {"min": 0.8, "max": 0.99, "scale": "linear"},
                 "Adam.epsilon": {"min": 1e-8, "max": 1e-4, "scale": "log"}},
      "num_random": 4,
      "seeds": [0, 1, 2],
      "random_seed": 0,                                           # optional, default 0
      "target": {"metric": "test_accuracy", "goal": ">=", "value": 0.6}   # optional
    }

Configurations are the Cartesian product of the grid values, each combined with every one of
the ``num_random`` random points (the same points for every grid point, so grid values are
compared on paired draws). Every configuration runs once per seed; the seed binds
``train.seed``. Random draws: ``scale`` ``"log"`` samples ``exp(U(log min, log max))``,
``"linear"`` samples ``U(min, max)``, from ``numpy.random.default_rng(random_seed)`` — the same
file always gives the same trials — rounded to 4 significant digits (``"integer": true``
rounds to an integer instead).

A **union sweep** compares optimizers that each need their own grid: ``"union"`` is a list of
sub-sweeps, each with its own ``grid`` / ``random`` / ``num_random`` / ``random_seed``; they
share the top-level ``seeds`` and ``target``::

    {
      "union": [
        {"grid": {"train.optimizer": ["@Adam()"], "Adam.learning_rate": [1e-3, 1e-2]}},
        {"grid": {"train.optimizer": ["@ArmijoLineSearch()"],
                  "ArmijoLineSearch.max_step": [1.0, 10.0]}}
      ],
      "seeds": [0, 1]
    }

Its configurations are those of each sub-sweep in turn (a configuration two sub-sweeps share
runs once). Each sub-sweep draws its random points from its own generator, so growing one
sub-sweep changes no configuration of another.

Identity: a configuration's id is a hash of its rendered bindings (``c`` + 8 hex digits), a
trial's id is ``<config id>-s<seed>``. Reordering keys in the file or adding values keeps the
ids of existing trials, so a rerun finds their results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Keys a sweep file may have.
SWEEP_KEYS = ("grid", "random", "num_random", "seeds", "random_seed", "target", "union")
#: Keys of one sub-sweep of a ``union``.
SUB_SWEEP_KEYS = ("grid", "random", "num_random", "random_seed")
#: Keys of one ``random`` entry.
RANGE_KEYS = ("min", "max", "scale", "integer")
SCALES = ("log", "linear")
TARGET_KEYS = ("metric", "goal", "value")
GOALS = (">=", "<=")
SEED_BINDING = "train.seed"
SIGNIFICANT_DIGITS = 4

# scope/.../module.Configurable.parameter ; gin allows dotted module names and scopes.
_BINDING = re.compile(r"^(?:[A-Za-z_][\w.]*/)*[A-Za-z_][\w.]*\.[A-Za-z_]\w*$")
# @name, @name(), @module.name(), @scope/name(), %MACRO, %module.MACRO
_REFERENCE = re.compile(r"^(?:@(?:[A-Za-z_][\w.]*/)*[A-Za-z_][\w.]*(?:\(\))?|%[A-Za-z_][\w.]*)$")


class SweepError(ValueError):
    """The sweep file is invalid; the message names the file, the key and what to do."""


# -- gin literals ------------------------------------------------------------------------------
def render_value(value: Any, where: str = "value") -> str:
    """A JSON value as a gin literal: the text after ``=`` in ``Adam.learning_rate = ...``.

    * floats always carry a decimal point or exponent (``1.0``, ``1e-05``): gin reads ``1``
      as an int, and Keras rejects ``Adam(learning_rate=1)``; NaN/inf are refused;
    * strings are quoted (``'grow'``) unless they are gin references or macros
      (``@Adam()``, ``@mnist1d_mlp``, ``%WIDTH``), which pass through unchanged;
    * ``true``/``false``/``null`` become ``True``/``False``/``None``; lists and objects
      are rendered element by element (``[16, 16]``, ``{'a': 1.0}``).

    Args:
      value: a value parsed from JSON.
      where: the location for error messages (``grid['Adam.learning_rate'][2]``).

    Returns:
      The gin literal.

    Raises:
      SweepError: a non-finite float or a type JSON cannot hold.
    """
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SweepError(f"{where}: {value!r} is not a finite number; gin cannot read it")
        text = repr(value)
        return text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(value, str):
        if value.startswith(("@", "%")):
            if not _REFERENCE.match(value):
                raise SweepError(
                    f"{where}: {value!r} looks like a gin reference but is not one; write "
                    "'@Name()' (a new instance), '@Name' (the callable) or '%MACRO'"
                )
            return value
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, Mapping):
        items = (
            f"{render_value(k, where)}: {render_value(v, f'{where}[{k!r}]')}"
            for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    raise SweepError(f"{where}: cannot render {value!r} ({type(value).__name__}) as a gin literal")


def binding_line(name: str, value: Any) -> str:
    """``'Adam.learning_rate = 0.001'`` for one binding."""
    return f"{name} = {render_value(value, name)}"


# -- the spec ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Range:
    """A random-search range: ``min``, ``max``, ``scale`` (``log``/``linear``), ``integer``."""

    min: float
    max: float
    scale: str = "linear"
    integer: bool = False


@dataclasses.dataclass(frozen=True)
class Target:
    """A target for time-to-target: ``metric`` reaches ``value`` in direction ``goal``."""

    metric: str
    goal: str
    value: float

    def reached(self, x: float | None) -> bool:
        """Whether a metric value meets the target (``None``/NaN never does)."""
        if x is None or not math.isfinite(x):
            return False
        return x >= self.value if self.goal == ">=" else x <= self.value

    def __str__(self) -> str:
        return f"{self.metric}{self.goal}{self.value:g}"


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file (see the module docstring)."""

    grid: dict[str, list[Any]]
    random: dict[str, Range]
    num_random: int
    seeds: list[int]
    random_seed: int = 0
    target: Target | None = None
    #: Sub-sweeps of a union sweep (each with ``seeds`` unused); empty for a plain sweep.
    union: tuple[SweepSpec, ...] = ()

    def _space_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"grid": self.grid}
        if self.random:
            out["random"] = {k: dataclasses.asdict(r) for k, r in self.random.items()}
            out["num_random"] = self.num_random
            out["random_seed"] = self.random_seed
        return out

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON data (the shape of a sweep file)."""
        if self.union:
            out: dict[str, Any] = {"union": [sub._space_json() for sub in self.union]}
        else:
            out = self._space_json()
        out["seeds"] = self.seeds
        if self.target is not None:
            out["target"] = dataclasses.asdict(self.target)
        return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_binding(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _BINDING.match(name):
        raise SweepError(
            f"{where}: {name!r} is not a gin binding name; write 'Configurable.parameter' "
            "(e.g. 'Adam.learning_rate' or 'train.batch_size')"
        )
    if name == SEED_BINDING:
        raise SweepError(f'{where}: do not sweep {SEED_BINDING!r} here; list the seeds in "seeds"')
    return name


def _unknown_keys(data: Mapping, allowed: Sequence[str], where: str) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise SweepError(
            f"{where}: unknown key(s) {unknown}; allowed: {', '.join(map(repr, allowed))}"
        )


def parse_target(text_or_data: str | Mapping[str, Any], where: str = "target") -> Target:
    """A target from ``"test_accuracy>=0.6"`` or ``{"metric", "goal", "value"}``.

    Raises:
      SweepError: malformed text, unknown goal or a non-finite value.
    """
    if isinstance(text_or_data, str):
        match = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*(>=|<=)\s*(\S+)\s*", text_or_data)
        value = None
        if match:
            try:
                value = float(match.group(3))
            except ValueError:
                value = None
        if not match or value is None or not math.isfinite(value):
            raise SweepError(
                f"{where}: {text_or_data!r} is not a target; write METRIC>=VALUE or "
                "METRIC<=VALUE, e.g. 'test_accuracy>=0.6' or 'train_loss<=0.3'"
            )
        return Target(match.group(1), match.group(2), value)
    if not isinstance(text_or_data, Mapping):
        raise SweepError(f"{where}: expected an object {{metric, goal, value}} or 'metric>=value'")
    _unknown_keys(text_or_data, TARGET_KEYS, where)
    missing = [k for k in TARGET_KEYS if k not in text_or_data]
    if missing:
        raise SweepError(f"{where}: missing key(s) {missing}")
    metric, goal, value = (text_or_data[k] for k in TARGET_KEYS)
    if not isinstance(metric, str) or not metric:
        raise SweepError(f"{where}.metric: expected a metric name, got {metric!r}")
    if goal not in GOALS:
        raise SweepError(f"{where}.goal: expected one of {GOALS}, got {goal!r}")
    if not _is_number(value):
        raise SweepError(f"{where}.value: expected a finite number, got {value!r}")
    return Target(metric, goal, float(value))


def _parse_grid(grid: Any, where: str) -> dict[str, list[Any]]:
    if not isinstance(grid, Mapping):
        raise SweepError(f"{where}: expected an object {{binding: [values]}}, got {grid!r}")
    out = {}
    for name, values in grid.items():
        here = f"{where}[{name!r}]"
        _check_binding(name, here)
        if not isinstance(values, list) or not values:
            raise SweepError(f"{here}: expected a non-empty list of values, got {values!r}")
        rendered = [render_value(v, f"{here}[{i}]") for i, v in enumerate(values)]
        duplicates = sorted({r for r in rendered if rendered.count(r) > 1})
        if duplicates:
            raise SweepError(f"{here}: duplicate value(s) {duplicates}")
        out[name] = list(values)
    return out


def _parse_range(data: Any, where: str) -> Range:
    if not isinstance(data, Mapping):
        raise SweepError(
            f'{where}: expected an object {{"min": a, "max": b, "scale": "log"}}, got {data!r}'
        )
    _unknown_keys(data, RANGE_KEYS, where)
    for key in ("min", "max"):
        if key not in data:
            raise SweepError(f"{where}: missing {key!r}")
        if not _is_number(data[key]):
            raise SweepError(f"{where}.{key}: expected a finite number, got {data[key]!r}")
    low, high = float(data["min"]), float(data["max"])
    scale = data.get("scale", "linear")
    integer = data.get("integer", False)
    if scale not in SCALES:
        raise SweepError(f"{where}.scale: expected one of {SCALES}, got {scale!r}")
    if not isinstance(integer, bool):
        raise SweepError(f"{where}.integer: expected true or false, got {integer!r}")
    if not low < high:
        raise SweepError(f"{where}: min ({low:g}) must be < max ({high:g})")
    if scale == "log" and low <= 0:
        raise SweepError(f"{where}: a log scale needs min > 0, got min = {low:g}")
    return Range(low, high, scale, integer)


def parse_sweep(data: Any, where: str = "sweep") -> SweepSpec:
    """Validates sweep-file data (see the module docstring) into a :class:`SweepSpec`.

    Args:
      data: the parsed JSON.
      where: the file name, prefixed to error messages (``sweep.json: grid['x']: ...``).

    Raises:
      SweepError: unknown keys, empty lists, bad ranges, bad seeds, a binding in both
        ``grid`` and ``random``, ``random`` without ``num_random`` (or the reverse), or an
        empty sweep.
    """
    try:
        return _parse_sweep(data)
    except SweepError as error:
        raise SweepError(f"{where}: {error}") from None


def _parse_space(data: Mapping, where: str = "") -> tuple[dict, dict, int, int]:
    """``(grid, random, num_random, random_seed)`` of a sweep or sub-sweep; ``where`` prefixes
    the keys in error messages (``union[1].``)."""
    grid = _parse_grid(data.get("grid", {}), f"{where}grid")
    raw_random = data.get("random", {})
    if not isinstance(raw_random, Mapping):
        raise SweepError(f"{where}random: expected an object {{binding: {{min, max, scale}}}}")
    random = {}
    for name, entry in raw_random.items():
        here = f"{where}random[{name!r}]"
        _check_binding(name, here)
        if name in grid:
            raise SweepError(f'{here}: {name!r} is also in "grid"; sweep it in one place only')
        random[name] = _parse_range(entry, here)
    num_random = data.get("num_random")
    if random:
        if not isinstance(num_random, int) or isinstance(num_random, bool) or num_random < 1:
            raise SweepError(
                f'{where}num_random: "random" needs "num_random", an integer >= 1 (random '
                f"points), got {num_random!r}"
            )
    elif num_random is not None:
        raise SweepError(f'{where}num_random: given without "random" ranges to draw from')
    random_seed = data.get("random_seed", 0)
    if not isinstance(random_seed, int) or isinstance(random_seed, bool) or random_seed < 0:
        raise SweepError(f"{where}random_seed: expected an integer >= 0, got {random_seed!r}")
    return grid, random, num_random or 0, random_seed


def _parse_union(union: Any) -> tuple[SweepSpec, ...]:
    if not isinstance(union, list) or not union:
        raise SweepError(
            'union: expected a non-empty list of sub-sweeps, e.g. [{"grid": {...}}, {"grid": '
            "{...}}]"
        )
    subs = []
    for i, sub in enumerate(union):
        where = f"union[{i}]"
        if not isinstance(sub, Mapping):
            raise SweepError(f"{where}: expected an object with grid/random, got {sub!r}")
        for key in ("seeds", "target", "union"):
            if key in sub:
                raise SweepError(
                    f'{where}: "{key}" belongs at the top level of a union sweep (shared by '
                    "every sub-sweep)"
                )
        _unknown_keys(sub, SUB_SWEEP_KEYS, where)
        if not sub.get("grid") and not sub.get("random"):
            raise SweepError(f'{where}: empty sub-sweep; give it a "grid" or "random"')
        grid, random, num_random, random_seed = _parse_space(sub, f"{where}.")
        subs.append(SweepSpec(grid, random, num_random, [0], random_seed))
    return tuple(subs)


def _parse_sweep(data: Any) -> SweepSpec:
    if not isinstance(data, Mapping):
        raise SweepError(f"expected a JSON object, got {type(data).__name__}")
    _unknown_keys(data, SWEEP_KEYS, "top level")
    if not any(k in data for k in ("grid", "random", "seeds", "union")):
        raise SweepError('empty sweep; give at least one of "grid", "random", "seeds", "union"')
    union: tuple[SweepSpec, ...] = ()
    if "union" in data:
        both = [k for k in ("grid", "random", "num_random", "random_seed") if k in data]
        if both:
            raise SweepError(
                f"union: a union sweep has no top-level {both}; put them in each sub-sweep "
                "(bindings shared by all go in the gin file or --gin_param)"
            )
        union = _parse_union(data["union"])
    grid, random, num_random, random_seed = _parse_space(data)
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise SweepError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    for i, seed in enumerate(seeds):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise SweepError(f"seeds[{i}]: expected an integer >= 0, got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"seeds: duplicate seeds in {seeds}")
    target = parse_target(data["target"], "target") if "target" in data else None
    return SweepSpec(grid, random, num_random, list(seeds), random_seed, target, union)


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Reads and validates a sweep file.

    Raises:
      SweepError: the file is missing, not JSON, or invalid (the message names the key).
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise SweepError(f"sweep file {str(path)!r} not found") from None
    except json.JSONDecodeError as error:
        raise SweepError(f"{path}: not valid JSON ({error})") from None
    return parse_sweep(data, where=str(path))


# -- expansion --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Trial:
    """One run of a sweep: a configuration (gin bindings) and a seed.

    Attributes:
      trial_id: ``<config_id>-s<seed>``; stable across reruns of the same sweep.
      config_id: ``c`` + 8 hex digits of the SHA-256 of the rendered bindings.
      seed: bound to ``train.seed``.
      bindings: binding name → JSON value (grid values first, then random draws).
    """

    trial_id: str
    config_id: str
    seed: int
    bindings: dict[str, Any]

    def gin_lines(self) -> list[str]:
        """The trial's bindings as gin lines, ``train.seed`` last."""
        lines = [binding_line(k, v) for k, v in self.bindings.items()]
        return [*lines, binding_line(SEED_BINDING, self.seed)]


def config_id(bindings: Mapping[str, Any]) -> str:
    """``c`` + the first 8 hex digits of SHA-256 over the sorted rendered bindings."""
    text = "\n".join(sorted(binding_line(k, v) for k, v in bindings.items()))
    return "c" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def draw(rng: np.random.Generator, r: Range) -> float | int:
    """One random value from a :class:`Range` (log: exp of a uniform in log space)."""
    if r.scale == "log":
        value = math.exp(rng.uniform(math.log(r.min), math.log(r.max)))
    else:
        value = rng.uniform(r.min, r.max)
    if r.integer:
        return int(min(max(round(value), math.ceil(r.min)), math.floor(r.max)))
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def random_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The ``num_random`` random points of a spec (``[{}]`` without ``random``)."""
    if not spec.random:
        return [{}]
    rng = np.random.default_rng(spec.random_seed)
    names = sorted(spec.random)  # draw order independent of key order in the file
    return [{name: draw(rng, spec.random[name]) for name in names} for _ in range(spec.num_random)]


def configurations(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every configuration: grid product × random points, or for a union sweep those of each
    sub-sweep in turn (duplicates removed, order kept)."""
    spaces = spec.union or (spec,)
    out, seen = [], set()
    for space in spaces:
        names = list(space.grid)
        points = random_points(space)
        for values in itertools.product(*(space.grid[n] for n in names)):
            for point in points:
                bindings = {**dict(zip(names, values, strict=True)), **point}
                key = config_id(bindings)
                if key not in seen:
                    seen.add(key)
                    out.append(bindings)
    return out


def expand(spec: SweepSpec) -> list[Trial]:
    """All trials of a spec: every configuration × every seed, configurations outermost."""
    trials = []
    for bindings in configurations(spec):
        cid = config_id(bindings)
        for seed in spec.seeds:
            trials.append(Trial(f"{cid}-s{seed}", cid, seed, dict(bindings)))
    return trials
