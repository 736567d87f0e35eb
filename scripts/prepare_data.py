"""Check a dataset layout without training: python scripts/prepare_data.py data=<name> data.root=..."""

import hydra
import project_root  # noqa: F401  (PROJECT_ROOT, src/ on sys.path)
from omegaconf import DictConfig

from fgzoom.cli.runtime import one_line_errors


@hydra.main(version_base="1.3", config_path="../configs", config_name="prepare_data.yaml")
@one_line_errors
def main(cfg: DictConfig) -> None:
    from fgzoom.cli.runtime import validate_config
    from fgzoom.data.prepare import check_dataset, format_report

    validate_config(cfg)
    datamodule = hydra.utils.instantiate(cfg.data)
    print(format_report(check_dataset(datamodule, check_images=cfg.check_images)))


if __name__ == "__main__":
    main()
