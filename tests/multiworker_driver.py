"""One worker of a 2-process MultiWorkerMirroredStrategy test (TF_CONFIG set by the caller):
trains each named optimizer's MNIST-1D quickstart run in turn, in one process, so the cluster
starts once. Usage: python tests/multiworker_driver.py OUT_DIR NAME [NAME ...]"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402

from dirgrad_opt import training  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK = [
    "train.num_steps = 6",
    "train.log_every = 1",
    "train.eval_every = 6",
    "train.checkpoint_every = 3",
    "train.progress_every_s = 1000.0",
]
RUNNER_OPTIMIZERS = {
    "SGD": "configs/optimizers/sgd.gin",
    "Adam": "configs/optimizers/adam.gin",
    "ArmijoLineSearch": "configs/optimizers/armijo.gin",
    "WolfeLineSearch": "configs/optimizers/wolfe.gin",
    "PolyakStep": "configs/optimizers/polyak.gin",
    "ZerothOrder": "configs/optimizers/zeroth_order.gin",
}


def main(out: str, names: list[str]) -> None:
    for name in names:
        gin.clear_config()
        gin.add_config_file_search_path(str(ROOT))
        files = [str(ROOT / "configs/quickstart.gin"), str(ROOT / RUNNER_OPTIMIZERS[name])]
        gin.parse_config_files_and_bindings(
            files, [*QUICK, "train.strategy = 'multi_worker'"], skip_unknown=False
        )
        training.run(str(Path(out) / name))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
