"""Gin registration of optimizers and learning-rate schedules, so configs can name them.

After ``import dirgrad_opt.training`` a gin file can say::

    train.optimizer = @Adam()                       # any stock Keras optimizer
    Adam.learning_rate = 1e-2
    train.optimizer = @ArmijoLineSearch()           # any dirgrad_opt optimizer
    ArmijoLineSearch.direction = @Adam()            # "Armijo along Adam's direction"
    SGD.learning_rate = @ExponentialDecay()         # any Keras learning-rate schedule
    ExponentialDecay.initial_learning_rate = 0.1
    ExponentialDecay.decay_steps = 1000             # steps
    ExponentialDecay.decay_rate = 0.5

Registered (module ``keras.optimizers`` / ``keras.optimizers.schedules`` / ``dirgrad_opt``):

* every stock Keras optimizer class in ``keras.optimizers`` (``SGD``, ``Adam``, ``AdamW``,
  ``RMSprop``, ``Adagrad``, ``Nadam``, ``Lion``...; not the wrappers ``LossScaleOptimizer``,
  ``MultiOptimizer``);
* every Keras ``LearningRateSchedule`` (``ExponentialDecay``, ``CosineDecay``...);
* every ``keras.optimizers.Optimizer`` subclass in ``dirgrad_opt.optimizers.__all__``;
* every Keras loss class (``MeanSquaredError``, ``Huber``...; gin module ``keras.losses``), for
  ``train.loss = @Huber()``;
* your own optimizer (or schedule) classes, with :func:`register_optimizer` (a function or a
  class decorator; gin module = the class's module). It also registers the class with Keras
  serialization (package = its module) unless it already is, so ``.keras`` files of it load
  wherever the module is imported.

Each name is registered as a *factory* that returns an instance of the real class (so
``type(opt) is keras.optimizers.Adam``), with two conveniences over registering the class
itself:

1. **Parameter names are checked when the config is parsed.** The factory's signature is the
   union of the constructor parameters along the class hierarchy (the ``**kwargs`` pass-through
   is resolved), so ``Adam.learnig_rate = 0.1`` fails at parse time naming ``Adam`` and the
   parameter, instead of deep inside Keras. Line-search optimizers that pick their own step
   (``uses_learning_rate = False``) do not accept ``learning_rate`` at all.
2. **Integers bound to float parameters are converted to float.** Gin reads ``1`` as an int and
   Keras rejects ``Adam(learning_rate=1)``; a parameter counts as float when its default is a
   float, its annotation says ``float``, or its name is a learning rate.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import gin
import keras

#: Parameters treated as floats even when they have no float default.
_FLOAT_NAMES = frozenset(
    {
        "learning_rate",
        "initial_learning_rate",
        "end_learning_rate",
        "warmup_target",
        "decay_rate",
        "alpha",
        "t_mul",
        "m_mul",
    }
)
#: Keras optimizer classes that wrap other optimizers: not useful from a config.
_SKIPPED_KERAS = frozenset({"Optimizer", "LossScaleOptimizer", "MultiOptimizer", "OptimizerMap"})

#: name -> registered factory, for every configurable this module registered.
REGISTERED: dict[str, Callable[..., Any]] = {}
_LOSSES_REGISTERED: set[str] = set()


def constructor_parameters(cls: type) -> list[inspect.Parameter]:
    """The keyword parameters a class's constructor accepts, ``**kwargs`` pass-through resolved.

    Walks the MRO: the parameters of ``cls.__init__``, then — as long as the constructor so far
    takes ``**kwargs`` — those of the next base class defining ``__init__``, stopping at the
    Keras base optimizer (whose ``**kwargs`` only catch deprecated names and raise otherwise).

    Returns:
      Keyword parameters in declaration order, each name once, without ``self``/``*args``.
    """
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        signature = inspect.signature(klass.__init__)
        has_var_keyword = False
        for name, param in signature.parameters.items():
            if name == "self" or param.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                has_var_keyword = True
                continue
            params.setdefault(name, param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        if not has_var_keyword or klass.__name__ == "BaseOptimizer":
            break
    if not getattr(cls, "uses_learning_rate", True):
        params.pop("learning_rate", None)
    return list(params.values())


def _is_float_parameter(param: inspect.Parameter) -> bool:
    if param.name in _FLOAT_NAMES:
        return True
    if isinstance(param.default, float):
        return True
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return False
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text.replace(" ", "").split("|")[0] == "float"


def _cast_ints(kwargs: dict[str, Any], float_params: frozenset[str]) -> dict[str, Any]:
    """Converts ints bound to float parameters (gin's ``1``) to floats; leaves bools alone."""
    out = dict(kwargs)
    for key, value in kwargs.items():
        if key in float_params and isinstance(value, int) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def make_factory(cls: type) -> Callable[..., Any]:
    """A keyword-only factory for ``cls`` with the resolved signature and int→float casting.

    Args:
      cls: an optimizer or learning-rate-schedule class.

    Returns:
      ``factory(**kwargs) -> cls(**kwargs)`` whose ``__signature__`` lists every accepted
      keyword (gin validates bindings against it).
    """
    params = constructor_parameters(cls)
    allowed = frozenset(p.name for p in params)
    float_params = frozenset(p.name for p in params if _is_float_parameter(p))

    def factory(**kwargs: Any) -> Any:
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise ValueError(
                f"{cls.__name__} got unknown parameter(s) {unknown}; accepted: {sorted(allowed)}"
            )
        return cls(**_cast_ints(kwargs, float_params))

    factory.__name__ = cls.__name__
    factory.__qualname__ = cls.__name__
    factory.__doc__ = cls.__doc__
    factory.__module__ = cls.__module__
    factory.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    factory.wrapped_class = cls  # type: ignore[attr-defined]
    return factory


def _register(cls: type, module: str) -> None:
    name = cls.__name__
    if name in REGISTERED:
        return
    factory = make_factory(cls)
    REGISTERED[name] = gin.external_configurable(factory, name=name, module=module)


def register_optimizer(cls: type | None = None, *, name: str | None = None) -> Any:
    """Makes an optimizer class usable from gin (``@MyOptimizer()``) with the built-ins' checks.

    Usable as ``register_optimizer(MyOptimizer)``, ``@register_optimizer`` or
    ``@register_optimizer(name="Other")``. Bindings are checked like the built-ins': an unknown
    parameter name is an error naming the class, an int bound to a float parameter is
    converted. Registering the same class twice is a no-op.

    Args:
      cls: a ``keras.optimizers.Optimizer`` subclass (typically a ``DirectionalOptimizer``
        subclass) or a ``LearningRateSchedule`` subclass.
      name: the gin name; default the class name.

    Returns:
      ``cls`` itself (so the decorator leaves the class unchanged).

    Raises:
      TypeError: ``cls`` is not such a class.
      ValueError: ``name`` is already registered to another class (e.g. a built-in).
    """
    if cls is None:
        return lambda klass: register_optimizer(klass, name=name)
    bases = (keras.optimizers.Optimizer, keras.optimizers.schedules.LearningRateSchedule)
    if not (isinstance(cls, type) and issubclass(cls, bases)):
        text = repr(cls)
        raise TypeError(
            "register_optimizer expects a keras.optimizers.Optimizer (or LearningRateSchedule) "
            f"subclass, got {text if len(text) <= 200 else text[:197] + '...'}"
        )
    name = name or cls.__name__
    existing = REGISTERED.get(name)
    if existing is not None:
        owner = getattr(existing, "wrapped_class", None)
        if owner is cls:
            return cls
        raise ValueError(
            f"register_optimizer: the gin name {name!r} is already taken by "
            f"{getattr(owner, '__module__', '?')}.{getattr(owner, '__qualname__', name)}; "
            "rename the class or pass name=..."
        )
    if keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is not cls:
        keras.saving.register_keras_serializable(package=cls.__module__)(cls)
    factory = make_factory(cls)
    REGISTERED[name] = gin.external_configurable(factory, name=name, module=cls.__module__)
    return cls


def keras_loss_classes() -> list[type]:
    """The Keras loss classes (the ``Loss`` base and wrappers excluded)."""
    base = keras.losses.Loss
    return [
        obj
        for name in dir(keras.losses)
        if isinstance(obj := getattr(keras.losses, name), type)
        and issubclass(obj, base)
        and obj is not base
        and name != "LossFunctionWrapper"
    ]


def keras_optimizer_classes() -> list[type]:
    """The stock Keras optimizer classes registered here (wrappers excluded)."""
    classes = []
    for name in dir(keras.optimizers):
        obj = getattr(keras.optimizers, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, keras.optimizers.Optimizer)
            and name not in _SKIPPED_KERAS
        ):
            classes.append(obj)
    return classes


def schedule_classes() -> list[type]:
    """The Keras learning-rate schedule classes (the abstract base excluded)."""
    base = keras.optimizers.schedules.LearningRateSchedule
    return [
        obj
        for name in dir(keras.optimizers.schedules)
        if isinstance(obj := getattr(keras.optimizers.schedules, name), type)
        and issubclass(obj, base)
        and obj is not base
    ]


def dirgrad_optimizer_classes() -> list[type]:
    """Every Keras optimizer class exported by ``dirgrad_opt.optimizers.__all__``."""
    from dirgrad_opt import optimizers

    return [
        obj
        for name in optimizers.__all__
        if isinstance(obj := getattr(optimizers, name, None), type)
        and issubclass(obj, keras.optimizers.Optimizer)
    ]


def register_optimizers() -> dict[str, Callable[..., Any]]:
    """Registers every optimizer and schedule with gin (idempotent); returns the registry.

    Keras names live in gin module ``keras.optimizers`` (schedules: ``keras.optimizers.
    schedules``), ours in ``dirgrad_opt``; a short name (``@Adam``) works while it is unique.
    """
    for cls in keras_optimizer_classes():
        _register(cls, "keras.optimizers")
    for cls in schedule_classes():
        _register(cls, "keras.optimizers.schedules")
    for cls in dirgrad_optimizer_classes():
        _register(cls, "dirgrad_opt")
    for cls in keras_loss_classes():
        if cls.__name__ not in _LOSSES_REGISTERED:
            gin.external_configurable(cls, name=cls.__name__, module="keras.losses")
            _LOSSES_REGISTERED.add(cls.__name__)
    return dict(REGISTERED)


register_optimizers()
