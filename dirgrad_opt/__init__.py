"""dirgrad_opt: optimizers driven by directional derivatives, on TensorFlow 2 / Keras 3.

Public modules:

* :mod:`dirgrad_opt.tree` — arithmetic over nests of tensors/variables.
* :mod:`dirgrad_opt.directional` — ∇L(w)·v and vᵀHv by forward/reverse mode or finite differences.
* :mod:`dirgrad_opt.directions` — seed-reproducible direction samplers.
* :mod:`dirgrad_opt.line_search` — graph-mode scalar line searches (Armijo, strong Wolfe).
* :mod:`dirgrad_opt.optimizers` — Keras 3 optimizers on the closure-based base class.
* :mod:`dirgrad_opt.keras_fit` — ``model.fit`` with those optimizers.
* :mod:`dirgrad_opt.data`, :mod:`dirgrad_opt.models` — problems (imported on demand: ``data``
  loads tensorflow-datasets, which takes seconds).
* :mod:`dirgrad_opt.training` — the gin-configured training loop behind ``experiments.train``.
"""

from dirgrad_opt import directional, directions, line_search, optimizers, tree

__version__ = "0.1.0"

__all__ = ["__version__", "directional", "directions", "line_search", "optimizers", "tree"]
