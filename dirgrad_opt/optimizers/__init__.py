"""Keras 3 optimizers driven by directional derivatives, on one closure-based base class.

Every optimizer is a ``keras.optimizers.Optimizer`` subclass with a ``minimize(loss_fn,
var_list)`` step (Keras 3 has none) returning a dict of scalar tensors.
"""

from dirgrad_opt.optimizers.activity import (
    ActivityForwardGradient,
    ActivityZerothOrder,
    ModelClosure,
)
from dirgrad_opt.optimizers.base import DirectionalOptimizer, StepContext
from dirgrad_opt.optimizers.forward_gradient import GuidedForwardGradient
from dirgrad_opt.optimizers.guided import (
    DirectionalNewton,
    GradientOnlyLineSearch,
    ParabolicLineSearch,
)
from dirgrad_opt.optimizers.line_searches import ArmijoLineSearch, PolyakStep, WolfeLineSearch
from dirgrad_opt.optimizers.random_direction import (
    ForwardGradient,
    RandomDirectionLineSearch,
    ZerothOrder,
)
from dirgrad_opt.optimizers.zeroth_order import (
    LowRankZerothOrder,
    SparseZerothOrder,
    ZOAdam,
    ZOMomentum,
)

__all__ = [
    "ActivityForwardGradient",
    "ActivityZerothOrder",
    "ArmijoLineSearch",
    "DirectionalNewton",
    "DirectionalOptimizer",
    "ForwardGradient",
    "GradientOnlyLineSearch",
    "GuidedForwardGradient",
    "LowRankZerothOrder",
    "ModelClosure",
    "ParabolicLineSearch",
    "PolyakStep",
    "RandomDirectionLineSearch",
    "SparseZerothOrder",
    "StepContext",
    "WolfeLineSearch",
    "ZOAdam",
    "ZOMomentum",
    "ZerothOrder",
]
