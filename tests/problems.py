"""Shared test problems for the optimizer tests (one definition, many tables)."""

import keras
import numpy as np
import scipy.optimize
import tensorflow as tf
from sklearn.datasets import load_breast_cancer

LAMBDA = 1e-3
"""L2 coefficient of the logistic-regression problem."""


class ZeroRate(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate of exactly 0 (the base class rejects the float 0.0)."""

    def __call__(self, step):
        return tf.zeros([], tf.float32)

    def get_config(self):
        return {}


def quadratic(dtype, kappa=100.0, dim=20):
    """f(w) = ½ wᵀAw, eigenvalues log-spaced in [1, κ], random rotation; f* = 0, w₀ = 1."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    a = tf.constant((q * np.logspace(0, np.log10(kappa), dim)) @ q.T, dtype)
    w = tf.Variable(tf.ones(dim, dtype))

    def loss_fn():
        return 0.5 * tf.tensordot(w, tf.linalg.matvec(a, w), 1)

    return [w], loss_fn


def logistic_data():
    """sklearn's breast-cancer set (569 × 30), standardized features, float64 labels."""
    x, y = load_breast_cancer(return_X_y=True)
    return (x - x.mean(0)) / x.std(0), y.astype(np.float64)


def logistic_optimum():
    """f* of mean log-loss + λ/2 ‖w‖² (bias unregularised) by scipy L-BFGS-B, float64."""
    x, y = logistic_data()
    xb = np.hstack([x, np.ones((len(x), 1))])

    def f(theta):
        z = xb @ theta
        loss = np.mean(np.logaddexp(0, z) - y * z) + 0.5 * LAMBDA * theta[:-1] @ theta[:-1]
        grad = xb.T @ (1 / (1 + np.exp(-z)) - y) / len(y)
        grad[:-1] += LAMBDA * theta[:-1]
        return loss, grad

    res = scipy.optimize.minimize(
        f, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B", options={"gtol": 1e-12}
    )
    assert res.success
    return res.fun


def logistic(dtype):
    """The same objective in TensorFlow over variables [w, b] starting at 0."""
    x, y = logistic_data()
    xt, yt = tf.constant(x, dtype), tf.constant(y, dtype)
    w = tf.Variable(tf.zeros(x.shape[1], dtype), name="w")
    b = tf.Variable(tf.zeros((), dtype), name="b")

    def loss_fn():
        z = tf.linalg.matvec(xt, w) + b
        data = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=yt, logits=z))
        return data + 0.5 * LAMBDA * tf.reduce_sum(w * w)

    return [w, b], loss_fn


def mlp(dtype=tf.float32):
    """A 8-16-2 tanh MLP on 64 fixed Gaussian points with a linear label rule."""
    keras.utils.set_random_seed(0)
    x = tf.random.stateless_normal((64, 8), seed=[0, 1], dtype=dtype)
    y = tf.cast(tf.reduce_sum(x[:, :2], axis=1) > 0, tf.int32)
    model = keras.Sequential(
        [
            keras.Input((8,), dtype=dtype),
            keras.layers.Dense(16, activation="tanh", dtype=dtype),
            keras.layers.Dense(2, dtype=dtype),
        ]
    )

    def loss_fn():
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True)
        )

    return model.trainable_variables, loss_fn


def run(opt, variables, loss_fn, steps):
    """Builds first, then steps in one tf.function; returns (the step, per-step infos)."""
    opt.build(variables)
    step = tf.function(lambda: opt.minimize(loss_fn, variables))
    infos = [step() for _ in range(steps)]
    return step, infos


def assert_checkpoint_round_trip(make_optimizer, tmp_path, steps=5):
    """Train `steps`, checkpoint, restore into a fresh optimizer: same state, same next step."""
    import numpy.testing as npt

    variables, loss_fn = quadratic(tf.float32)
    opt = make_optimizer()
    run(opt, variables, loss_fn, steps)
    path = tf.train.Checkpoint(optimizer=opt, weights=variables).save(str(tmp_path / "ckpt"))
    saved = [v.numpy().copy() for v in opt.variables]

    variables2, loss_fn2 = quadratic(tf.float32)
    opt2 = make_optimizer()
    opt2.build(variables2)
    tf.train.Checkpoint(optimizer=opt2, weights=variables2).restore(path).assert_consumed()
    assert int(opt2.iterations) == steps
    assert len(saved) == len(opt2.variables)
    for a, b in zip(saved, opt2.variables, strict=True):
        npt.assert_array_equal(a, b.numpy())
    info1 = opt.minimize(loss_fn, variables)
    info2 = opt2.minimize(loss_fn2, variables2)
    assert float(info1["step_size"]) == float(info2["step_size"])
    npt.assert_array_equal(variables[0].numpy(), variables2[0].numpy())


# Record keys that hold seconds: they differ between runs that are otherwise bit-identical.
TIME_KEYS = frozenset({"wall_s", "train_time_s", "eval_time_s", "trace_s"})

TINY_RUN = [
    "load_dataset.name = 'blobs'",
    "load_dataset.batch_size = 20",
    "gaussian_blobs.num_train = 200",
    "gaussian_blobs.num_test = 100",
    "gaussian_blobs.dim = 8",
    "create_model.model_fn = @mlp",
    "mlp.widths = (16,)",
]
"""Gin bindings of the smallest real training problem (8-d Gaussian blobs, a 16-unit MLP);
tests add the optimizer and step budget."""


def train_error_line(capsys) -> str:
    """The one ``train: error: ...`` line an in-process run wrote to stderr (no traceback)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # exactly one line, no traceback
    assert err[0].startswith("train: error: "), err
    return err[0]


def run_cli(*args: str) -> int:
    """Runs ``experiments.train.main`` in-process (flags, gin, run); returns its exit code."""
    from absl import flags

    from experiments import train as cli

    flags.FLAGS.unparse_flags()
    argv = flags.FLAGS(["train", *args])
    try:
        cli.main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def mlp_problem(
    seed: int = 0,
    dtype: tf.DType = tf.float32,
    widths=(8, 3),
    inputs: int = 5,
    variable=tf.Variable,
):
    """A tiny tanh MLP's variables and a fixed-batch cross-entropy closure.

    ``variable=keras.Variable`` gives the weights a Keras model has.
    """
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((16, inputs)), dtype)
    y = tf.constant(rng.integers(0, widths[-1], 16), tf.int32)
    sizes = [inputs, *widths]
    variables = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        variables.append(
            variable(rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in), dtype=dtype)
        )
        variables.append(variable(0.1 * rng.standard_normal(fan_out), dtype=dtype))

    def loss_fn() -> tf.Tensor:
        h = x
        for i in range(0, len(variables), 2):
            h = h @ variables[i] + variables[i + 1]
            if i + 2 < len(variables):
                h = tf.tanh(h)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, h))

    return variables, loss_fn
