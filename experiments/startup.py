"""Start-up of a training process: import TensorFlow and Keras without what a run never uses.

``experiments.train`` calls :func:`import_keras` before it imports ``dirgrad_opt`` (whose
``__init__`` imports Keras, to register the package's serializable classes). Standard library
only, outside the package for that reason.

``import keras`` (3.x) imports scikit-learn, for its ``keras.wrappers`` estimators, and
matplotlib's ``pyplot``, for ``keras.visualization`` — about 1.5 s of a trial's start-up on 2
cores (``python -X importtime``; BENCHMARKS.md), for features a training run never calls.
Keras treats both as optional (``try: import ... except ImportError``), so
:func:`import_keras` hides them while Keras is imported and unhides them at once: a later
``import sklearn`` (the ``digits`` dataset, the user's own code) works as usual; only Keras's
sklearn wrappers and image-gallery plots are unavailable in that process.
"""

from __future__ import annotations

import sys

#: Optional dependencies of Keras that a training run does not use.
KERAS_EXTRAS = ("sklearn", "matplotlib")


def import_keras() -> None:
    """Imports TensorFlow and Keras, skipping their optional scikit-learn and matplotlib
    integrations (unless something imported those already)."""
    if "keras" in sys.modules:
        return
    hidden = [name for name in KERAS_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
