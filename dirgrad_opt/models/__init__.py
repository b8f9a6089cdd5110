"""Models for dirgrad_opt: networks, analytic test problems, and task losses.

Contract with the training loop::

    ds = dirgrad_opt.data.load_dataset(...)
    model = create_model(ds.input_shape, ds.num_outputs)       # model_fn chosen by gin
    loss_fn = loss_for_task(ds.task)                           # (outputs, labels) -> scalar
    metrics = metrics_for_task(ds.task)                        # {"accuracy": fn} for classification

* Model functions: ``fn(input_shape, num_classes, **options) -> keras.Model`` (add your own
  with ``register_model(name, fn)``), built (variables
  exist), float32. Networks output logits ``[batch, num_classes]``: ``logistic_regression``,
  ``mlp``, ``mnist1d_mlp`` (residual MLP), ``mnist1d_cnn``, ``cnn2d``, ``resnet``. No dropout;
  ``resnet(batch_norm=False)`` by default, since BatchNorm makes a line search's closure stateful.
* Analytic problems ``quadratic`` and ``rosenbrock`` ignore ``num_classes`` and take their
  dimension from ``input_shape == (dim,)``. They hold the parameters w (one variable ``[dim]``)
  and output the per-example objective ``[batch]``: outᵢ = f(w) + ξᵢᵀ(w − w*), with inputs ξ from
  the ``"analytic"`` dataset (zeros = deterministic; centred Gaussian noise = noisy problem). Their
  loss, ``objective_loss``, is the mean of the outputs; the full-train and test losses are exactly
  f(w). Each model has ``optimum_value`` (0.0) and ``optimum_point`` (w*).
* Losses: ``classification_loss`` (mean sparse softmax cross-entropy from logits),
  ``regression_loss`` (mean squared error), ``objective_loss``; metric ``accuracy``.
* Under XLA (``jit_compile=True``), TF 2.21's forward-mode JVP through Conv2D → MaxPool (``cnn2d``)
  is wrong; use reverse mode or no XLA for that model (tests/test_models.py pins this).
"""

from dirgrad_opt.models import problem_models  # noqa: F401  (registers the problems' models)
from dirgrad_opt.models.analytic import (
    QuadraticObjective,
    RosenbrockObjective,
    quadratic,
    quadratic_problem,
    rosenbrock,
)
from dirgrad_opt.models.factory import MODELS, create_model, register_model
from dirgrad_opt.models.losses import (
    accuracy,
    classification_loss,
    loss_for_task,
    metrics_for_task,
    objective_loss,
    regression_loss,
    resolve_loss,
)
from dirgrad_opt.models.networks import (
    cnn2d,
    logistic_regression,
    mlp,
    mnist1d_cnn,
    mnist1d_mlp,
    resnet,
)

__all__ = [
    "MODELS",
    "QuadraticObjective",
    "RosenbrockObjective",
    "accuracy",
    "classification_loss",
    "cnn2d",
    "create_model",
    "logistic_regression",
    "loss_for_task",
    "metrics_for_task",
    "mlp",
    "mnist1d_cnn",
    "mnist1d_mlp",
    "objective_loss",
    "quadratic",
    "quadratic_problem",
    "register_model",
    "regression_loss",
    "resnet",
    "resolve_loss",
    "rosenbrock",
]
