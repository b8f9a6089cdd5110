"""dirgrad_opt: optimizers driven by directional derivatives, on TensorFlow 2 / Keras 3.

Public modules:

* :mod:`dirgrad_opt.tree` — arithmetic over nests of tensors/variables.
* :mod:`dirgrad_opt.directional` — ∇L(w)·v and vᵀHv by forward/reverse mode or finite differences.
* :mod:`dirgrad_opt.directions` — seed-reproducible direction samplers.
"""

from dirgrad_opt import directional, directions, tree

__version__ = "0.1.0"

__all__ = ["__version__", "directional", "directions", "tree"]
