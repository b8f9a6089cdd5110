"""Pins the public surface: these names are what users, docs and configs rely on."""

import dirgrad_opt
from dirgrad_opt import directional, directions, line_search, optimizers, tree


def test_optimizers_exports():
    assert sorted(optimizers.__all__) == [
        "ArmijoLineSearch",
        "DirectionalNewton",
        "DirectionalOptimizer",
        "ForwardGradient",
        "GradientOnlyLineSearch",
        "ParabolicLineSearch",
        "PolyakStep",
        "RandomDirectionLineSearch",
        "StepContext",
        "WolfeLineSearch",
        "ZerothOrder",
    ]
    for name in optimizers.__all__:
        assert getattr(optimizers, name).__doc__, name


def test_core_module_exports():
    assert {
        "directional_derivative",
        "directional_derivatives",
        "directional_curvature",
        "gradient_curvature",
        "choose_method",
        "cost",
        "METHODS",
        "UnsafeDerivativeError",
    } <= set(directional.__all__)
    assert {"gaussian", "rademacher", "unit_sphere", "orthogonal", "make_seed"} <= set(
        directions.__all__
    )
    assert {"backtracking_armijo", "strong_wolfe", "parabolic_minimum", "LineSearchResult"} <= set(
        line_search.__all__
    )
    assert {"dot", "axpy", "scale", "norm", "zeros_like", "check_like"} <= set(tree.__all__)
    for module in (directional, directions, line_search, tree):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)
    assert dirgrad_opt.__version__
