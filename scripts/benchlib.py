"""Small helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import os
import platform

import keras
import numpy as np
import tensorflow as tf


def machine() -> str:
    """CPU model, visible cores and library versions, for the header of a benchmark report."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs visible; Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, NumPy {np.__version__}"
    )
