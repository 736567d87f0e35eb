"""Evaluate a checkpoint: python scripts/eval.py ckpt_path=<run>/checkpoints/last.ckpt [data=...]."""

import hydra
import project_root  # noqa: F401  (PROJECT_ROOT, src/ on sys.path)
from omegaconf import DictConfig

from fgzoom.cli.runtime import one_line_errors


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval.yaml")
@one_line_errors
def main(cfg: DictConfig) -> None:
    from fgzoom.cli.evaluate import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
