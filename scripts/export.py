"""Export a checkpoint's model: python scripts/export.py ckpt_path=<run>/checkpoints/last.ckpt format=onnx|torchscript."""

import hydra
import project_root  # noqa: F401  (PROJECT_ROOT, src/ on sys.path)
from omegaconf import DictConfig

from fgzoom.cli.runtime import one_line_errors


@hydra.main(version_base="1.3", config_path="../configs", config_name="export.yaml")
@one_line_errors
def main(cfg: DictConfig) -> None:
    from fgzoom.cli.export import export

    export(cfg)


if __name__ == "__main__":
    main()
