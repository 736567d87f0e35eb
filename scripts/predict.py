"""Predict classes of images: python scripts/predict.py ckpt_path=<run>/checkpoints/last.ckpt input=<file|folder>."""

import hydra
import project_root  # noqa: F401  (PROJECT_ROOT, src/ on sys.path)
from omegaconf import DictConfig

from fgzoom.cli.runtime import one_line_errors


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict.yaml")
@one_line_errors
def main(cfg: DictConfig) -> None:
    from fgzoom.cli.predict import predict

    predict(cfg)


if __name__ == "__main__":
    main()
