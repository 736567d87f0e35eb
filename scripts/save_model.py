"""Write a shareable model folder: python scripts/save_model.py ckpt_path=<run>/checkpoints/last.ckpt [out=...]."""

import hydra
import project_root  # noqa: F401  (PROJECT_ROOT, src/ on sys.path)
from omegaconf import DictConfig

from fgzoom.cli.runtime import one_line_errors


@hydra.main(version_base="1.3", config_path="../configs", config_name="save_model.yaml")
@one_line_errors
def main(cfg: DictConfig) -> None:
    from fgzoom.cli.save_model import save_model

    save_model(cfg)


if __name__ == "__main__":
    main()
