"""Pins the public surface: these names are what users, docs and configs rely on."""

import dirgrad_opt
from dirgrad_opt import directional, directions, line_search, optimizers, tree


def test_optimizers_exports():
    assert sorted(optimizers.__all__) == [
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


def test_extension_api_exports():
    """The registration API and run loading are public (issue 9)."""
    from dirgrad_opt import data, keras_fit, models, training

    assert {"register_optimizer", "register_dataset", "register_model"} <= set(dirgrad_opt.__all__)
    for name in ("register_optimizer", "register_dataset", "register_model"):
        assert callable(getattr(dirgrad_opt, name)) and getattr(dirgrad_opt, name).__doc__
    assert {"load_run", "Run", "register_optimizer", "MODEL_FILE"} <= set(training.__all__)
    assert {"register_dataset", "USER_DATASETS"} <= set(data.__all__)
    assert {"register_model", "resolve_loss"} <= set(models.__all__)
    assert "step_logs" in keras_fit.__all__
