"""Predict classes of images: python scripts/predict.py ckpt_path=<run>/checkpoints/last.ckpt input=<file|folder>."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from fgzoom.runtime import one_line_errors  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict.yaml")
@one_line_errors
def main(cfg: DictConfig) -> None:
    from fgzoom.predict import predict

    predict(cfg)


if __name__ == "__main__":
    main()
