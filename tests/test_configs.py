"""Every gin file under configs/ parses strictly; experiment files build and pin their setup."""

from __future__ import annotations

import copy
from pathlib import Path

import gin
import keras
import pytest

from dirgrad_opt import training
from dirgrad_opt.models import create_model

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(ROOT.glob("configs/**/*.gin"))
_search_path_added = False


def parse(path: Path, *bindings: str) -> None:
    global _search_path_added
    if not _search_path_added:  # `include 'configs/...'` resolves against the project root
        gin.add_config_file_search_path(str(ROOT))
        _search_path_added = True
    gin.clear_config()
    gin.parse_config_files_and_bindings(
        [str(path)], list(bindings), skip_unknown=False, finalize_config=False
    )


def is_experiment(path: Path) -> bool:
    parse(path)
    try:
        gin.query_parameter("train.optimizer")
    except ValueError:
        return False
    return True


def test_there_are_configs_of_every_kind():
    names = {str(p.relative_to(ROOT)) for p in CONFIGS}
    assert "configs/quickstart.gin" in names
    for model in ("logreg", "mlp", "cnn"):
        for optimizer in ("adam", "armijo", "wolfe", "polyak"):
            assert f"configs/mnist1d/{model}_{optimizer}.gin" in names
    assert {"configs/optimizers/adam.gin", "configs/optimizers/armijo.gin"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_parses_with_unknown_names_as_errors(path):
    parse(path)
    assert gin.config_str()


@pytest.mark.parametrize(
    "path",
    [p for p in CONFIGS if p.parent.name == "mnist1d" and p.name != "common.gin"]
    + [ROOT / "configs" / "quickstart.gin"],
    ids=lambda p: p.name,
)
def test_experiment_configs_build_their_model_and_optimizer(path):
    assert is_experiment(path)
    optimizer = copy.deepcopy(gin.query_parameter("train.optimizer"))  # evaluates @X()
    assert isinstance(optimizer, keras.optimizers.Optimizer)
    model = create_model((40,), 10)  # MNIST-1D: 40 features, 10 classes
    assert model.output_shape == (None, 10)
    assert gin.query_parameter("load_dataset.name") == "mnist1d"
    assert gin.query_parameter("train.num_steps") == 8000
    assert gin.query_parameter("train.batch_size") == 100


@pytest.mark.parametrize("model", ["logreg", "mlp", "cnn"])
def test_mnist1d_adam_configs_reproduce_the_paper_setup(model):
    parse(ROOT / "configs" / "mnist1d" / f"{model}_adam.gin")
    optimizer = copy.deepcopy(gin.query_parameter("train.optimizer"))
    assert type(optimizer) is keras.optimizers.Adam
    assert float(optimizer.learning_rate) == pytest.approx(1e-2)
    expected = {"logreg": "logistic_regression", "mlp": "mnist1d_mlp", "cnn": "mnist1d_cnn"}
    assert gin.query_parameter("create_model.model_fn").selector.endswith(expected[model])


def test_quickstart_is_a_line_search_on_mnist1d():
    parse(ROOT / "configs" / "quickstart.gin")
    optimizer = copy.deepcopy(gin.query_parameter("train.optimizer"))
    assert type(optimizer).__name__ == "ArmijoLineSearch"
    assert optimizer.steps_per_epoch == 40  # 4000 examples / 100 per step


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [p for p in CONFIGS if p.parent.name == "mnist1d" and p.name != "common.gin"],
    ids=lambda p: p.name,
)
def test_experiment_configs_train_two_steps(tmp_path, path):
    parse(path, "train.num_steps = 2", "train.eval_every = 2", "train.checkpoint_every = 2")
    result = training.run(str(tmp_path))
    training.validate_result(result)
    assert result["steps"] == 2
