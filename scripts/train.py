"""Train a fine-grained classifier: python scripts/train.py [hydra overrides]. See README.md."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # works from a checkout even before `pip install -e .`

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from fgzoom.runtime import one_line_errors  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="train.yaml")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    from fgzoom.train import train

    metrics = train(cfg)
    return metrics.get("val/acc")  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
