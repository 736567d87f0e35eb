"""Train a fine-grained classifier: python scripts/train.py [hydra overrides]. See README.md."""

import hydra
import project_root  # noqa: F401  (PROJECT_ROOT, src/ on sys.path)
from omegaconf import DictConfig

from fgzoom.cli.runtime import one_line_errors


@hydra.main(version_base="1.3", config_path="../configs", config_name="train.yaml")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    from fgzoom.cli.train import objective

    return objective(cfg)  # what a sweeper optimizes: optimized_metric (hparams_search=optuna) or val/acc


if __name__ == "__main__":
    main()
