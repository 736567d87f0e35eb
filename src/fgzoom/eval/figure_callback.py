"""Lightning Callbacks that draw the attention/zoom pictures: the grid on validation images during training
(:class:`ZoomFigures`), one picture per image during ``trainer.predict`` (:class:`PredictionFigures`)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from fgzoom.callbacks.loggers import log_figure
from fgzoom.errors import ConfigError
from fgzoom.eval.figures import grid_data, grid_figure, save_figure, select_indices, zoom_grid

log = logging.getLogger(__name__)


class ZoomFigures(L.Callback):
    """Every ``every_n_epochs`` training epochs and after the last one, after validation, write ``<dirpath>/epoch{NNN}.png``: the
    grid of :func:`fgzoom.eval.figures.grid_figure` on ``num_images`` fixed images of ``split`` (eval
    transform; every zoom option: all k boxes, integer or fractional, and the zoomed views), and send it to
    every attached logger that takes images (:func:`fgzoom.callbacks.loggers.log_figure`). Runs on global rank 0 only, during ``fit``
    only.

    Args:
        dirpath: output folder (``${paths.output_dir}/figures``).
        every_n_epochs: period in epochs; 0 disables.
        num_images: images in the grid.
        split: ``val`` (default) or ``train`` (shown with the eval transform) or ``test``.
    """

    def __init__(
        self, dirpath: str, every_n_epochs: int = 1, num_images: int = 16, split: str = "val"
    ) -> None:
        if every_n_epochs < 0:
            raise ConfigError(
                f"callbacks.zoom_figures.every_n_epochs={every_n_epochs}: must be >= 0 (0 disables)"
            )
        if num_images < 1:
            raise ConfigError(f"callbacks.zoom_figures.num_images={num_images}: must be >= 1")
        if split not in ("train", "val", "test"):
            raise ConfigError(f"callbacks.zoom_figures.split={split!r}: must be one of train, val, test")
        self.dirpath = Path(str(dirpath))
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.split = split

    def _due(self, trainer: L.Trainer) -> bool:
        return (
            self.every_n_epochs > 0
            and trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
            and trainer.is_global_zero
            and (
                (trainer.current_epoch + 1) % self.every_n_epochs == 0
                or trainer.current_epoch + 1 == trainer.max_epochs  # always picture the final model
            )
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._due(trainer):
            return
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "dataset"):
            log.info("zoom_figures: no FGVCDataModule attached to the trainer; no figures written")
            return
        dataset = datamodule.dataset(self.split, train_transform=False)
        indices = select_indices(self.num_images, len(dataset))
        if not indices:
            return
        names = datamodule.class_names
        mean, std = datamodule.transform_args["mean"], datamodule.transform_args["std"]
        epoch = trainer.current_epoch
        fig = zoom_grid(pl_module, dataset, indices, names, mean, std, f"epoch {epoch}: {self.split} images")
        path = save_figure(fig, self.dirpath / f"epoch{epoch:03d}.png")
        log.info("zoom_figures: wrote %s", path)
        log_figure(trainer.loggers, fig, trainer.global_step)


class PredictionFigures(L.Callback):
    """During ``trainer.predict``, for each batch, write one picture per image (:func:`grid_figure`: attention,
    zoom boxes and zoomed view; the plain model's picture has the predicted class only) to
    ``<dirpath>/<NNNNN>_<file stem>.png``, ``NNNNN`` the image's ``index`` in ``files``.

    Args:
        dirpath: output folder.
        files: the image files, in dataset order (the batch's ``index`` points into it).
        class_names: K class names.
        mean, std: the normalization of the images (to show real colours).
    """

    def __init__(self, dirpath: str | Path, files: list[Path], class_names: list[str], mean, std) -> None:
        self.dirpath = Path(dirpath)
        self.files = files
        self.class_names = class_names
        self.mean, self.std = mean, std

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: dict,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        data = grid_data(pl_module, {"image": batch["image"]})
        for row, i in enumerate(batch["index"].tolist()):
            path = self.files[i]
            fig = grid_figure(data.select([row]), self.class_names, self.mean, self.std,
                              title=f"{path.parent.name}/{path.name}")
            save_figure(fig, self.dirpath / f"{i:05d}_{path.stem}.png")
