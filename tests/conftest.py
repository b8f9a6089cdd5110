"""Shared pytest set-up: quiet TensorFlow, deterministic seeds, gin cleared between tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


def pytest_configure(config):
    """Two logical CPU devices for the data-parallel tests (tests/test_distribute.py); must
    happen before TensorFlow initialises its devices. Single-device code runs on CPU:0 as before."""
    from dirgrad_opt import distribute

    distribute.set_cpu_replicas(2)


@pytest.fixture(autouse=True)
def _fresh_state():
    """Each test starts with fixed seeds and an empty gin config."""
    import keras

    keras.utils.set_random_seed(0)
    try:
        import gin

        gin.clear_config()
    except ImportError:  # pragma: no cover
        pass
    yield
