"""One LightningDataModule for every dataset: a reader gives the splits, this builds the loaders."""

from __future__ import annotations

import inspect
import logging
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from lightning.pytorch.trainer.states import TrainerFn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader

from fgzoom.data.batches import NormalizeOnDevice, collate_uint8
from fgzoom.data.dataset import FGVCDataset, decode_errors
from fgzoom.data.index import DatasetIndex, Sample
from fgzoom.data.mixing import BatchMixing, MixupConfig
from fgzoom.data.readers import PREPARERS, get_reader
from fgzoom.data.seeding import EpochSeededSampler, derive_seed
from fgzoom.data.splits import stratified_split
from fgzoom.data.stats import channel_stats
from fgzoom.data.transforms import build_transforms
from fgzoom.errors import ConfigError

log = logging.getLogger(__name__)

ON_BAD_IMAGE = ("error", "skip")
AUTO = "auto"
NORMALIZATION_KEYS = ("mean", "std")


def _normalization(key: str, value, default: tuple[float, ...]) -> tuple[float, ...] | str:
    """``data.mean``/``data.std`` as a 3-tuple, or ``"auto"``; anything else is a one-line ConfigError."""
    if value is None:
        return default
    if isinstance(value, str):
        if value != AUTO:
            raise ConfigError(f"data.{key}={value!r}: must be {AUTO!r}, null or three numbers")
        return AUTO
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or (key == "std" and min(values) <= 0):
        raise ConfigError(f"data.{key}={value!r}: must be {AUTO!r}, null or three numbers"
                          f"{' > 0' if key == 'std' else ''}, e.g. [0.5,0.5,0.5]")
    return values


class FGVCDataModule(NormalizeOnDevice):
    """Train/val/test loaders for the dataset ``dataset`` found at ``root``.

    Batches leave the loaders as uint8 (``image`` Tensor[B, 3, S, S], channels-last memory) and are scaled and
    normalized by ``mean``/``std`` on their device (:mod:`fgzoom.data.batches`), then mixed (``mixup``).

    The validation split is the dataset's official one when it has one, else ``val_fraction`` of the
    training split held out per class with ``split_seed``. The test split is never used for model
    selection unless ``val_on_test=True`` (an explicit, warned opt-in for comparing with papers).

    Args:
        dataset: reader name (see :data:`fgzoom.data.readers.READERS`).
        root: dataset folder in its publisher's layout.
        image_size: network input side in pixels.
        batch_size: per-process batch size.
        num_workers: DataLoader worker processes (0 loads in the main process).
        val_fraction: share of each class held out from train when there is no official val split.
        val_on_test: select on the test split (warned; see above).
        train_on_val: train on train + val (the refit of ``train.refit``: the validation split then only
            reports in-sample numbers); refused together with ``val_on_test``.
        on_bad_image: ``error`` stops on the first unreadable image naming it; ``skip`` drops unreadable
            images at setup (each file is decoded once) and reports how many.
        crop_pct, resize_mode, hflip, translate, color_jitter, randaugment: see :func:`build_transforms`.
        mean, std: normalization: three floats each, ``"auto"`` for the training split's own statistics
            (:meth:`resolve_normalization`, computed once at setup), or ``None`` for ImageNet's. The entry
            point fills ``None`` in: the backbone's timm values with pretrained weights, ``auto`` without.
            Applied on the device the batch reaches (:meth:`on_after_batch_transfer`).
        pin_memory: page-locked batches (faster, asynchronous copies to a GPU); None: on when CUDA is available.
        persistent_workers: keep the loader workers between epochs (no start-up cost per epoch).
        prefetch_factor: batches each worker loads ahead; None: PyTorch's default (2). Only with workers.
        mixup: ``data.mixup``: timm Mixup/CutMix of training batches (:class:`fgzoom.data.mixing.MixupConfig`;
            both alphas 0 or null: off). Applied after the batch reaches the device.
        download: let torchvision download the dataset when it supports it (opt-in).
        annotation_level: FGVC-Aircraft label granularity (variant | family | manufacturer).
        reader_options: other dataset-specific options passed to the reader.
        seed: seed of the training order and augmentation (see :mod:`fgzoom.data.seeding`); the entry
            point passes the run's ``seed``. None draws one, so such a run cannot be replayed.
    """

    def __init__(
        self,
        dataset: str,
        root: str,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 2,
        val_fraction: float = 0.1,
        on_bad_image: str = "error",
        split_seed: int = 0,
        val_on_test: bool = False,
        train_on_val: bool = False,
        crop_pct: float = 0.875,
        resize_mode: str = "square",
        hflip: float = 0.5,
        translate: float = 0.0,
        color_jitter: float = 0.0,
        randaugment: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        download: bool = False,
        mixup: Mapping | None = None,
        annotation_level: str | None = None,
        reader_options: dict | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if on_bad_image not in ON_BAD_IMAGE:
            raise ConfigError(f"data.on_bad_image={on_bad_image!r}: must be one of {ON_BAD_IMAGE}")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={val_fraction}: must be in (0, 1)")
        if train_on_val and val_on_test:
            raise ConfigError(
                "data.train_on_val=true with data.val_on_test=true would train on the test split; set one of them"
            )
        if image_size < 8:
            raise ConfigError(f"data.image_size={image_size}: must be >= 8")
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(f"data.batch_size={batch_size}, data.num_workers={num_workers}: need >= 1 and >= 0")
        if prefetch_factor is not None and int(prefetch_factor) < 1:
            raise ConfigError(f"data.prefetch_factor={prefetch_factor}: must be >= 1, or null for PyTorch's default")
        self.dataset_name = dataset
        self.reader = get_reader(dataset)
        self.root = Path(str(root)).expanduser() if root is not None else None
        if self.root is None:
            raise ConfigError(f"data.root is not set for data={dataset}; pass data.root=/path/to/{dataset}")
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.on_bad_image = on_bad_image
        self.split_seed = split_seed
        self.val_on_test = val_on_test
        self.train_on_val = train_on_val
        self.transform_args = dict(
            image_size=image_size, crop_pct=crop_pct, resize_mode=resize_mode, hflip=hflip, translate=translate,
            color_jitter=color_jitter, randaugment=randaugment,
            mean=_normalization("mean", mean, IMAGENET_DEFAULT_MEAN), std=_normalization("std", std, IMAGENET_DEFAULT_STD),
        )
        build_transforms(train=True, **self._geometry())  # validate now, not in a worker
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.prefetch_factor = int(prefetch_factor) if prefetch_factor is not None else None
        self.download = download
        self.reader_options = dict(reader_options or {})
        if annotation_level is not None:
            self.reader_options.setdefault("annotation_level", annotation_level)
        self.seed = int(seed) if seed is not None else secrets.randbits(62)
        self.mixup = MixupConfig.from_options(mixup)
        self._mixing: BatchMixing | None = None
        self._resume_position: tuple[int, int] | None = None  # (epoch, samples) of a mid-epoch checkpoint
        self.index: DatasetIndex | None = None
        self.splits: dict[str, list[Sample]] = {}
        self.skipped: dict[str, int] = {}

    # ------------------------------------------------------------------ reading
    def _call(self, fn, **extra):
        options = {**self.reader_options, **extra}
        accepted = inspect.signature(fn).parameters
        if "download" in accepted:
            options["download"] = self.download
        unknown = [k for k in options if k not in accepted]
        if unknown:
            raise ConfigError(
                f"data.reader_options: {unknown} not understood by data.dataset={self.dataset_name!r}; "
                f"it takes {[k for k in accepted if k != 'root']}"
            )
        return fn(self.root, **options)

    def prepare_data(self) -> None:
        """Generate or download (opt-in) on one process per node."""
        if self.dataset_name in PREPARERS:
            self._call(PREPARERS[self.dataset_name])

    def read_index(self) -> DatasetIndex:
        """Parse the dataset layout (no image is decoded). Raises DatasetLayoutError on a broken layout."""
        if self.index is None:
            self.index = self._call(self.reader)
        return self.index

    @property
    def class_names(self) -> list[str]:
        return list(self.read_index().classes)

    @property
    def num_classes(self) -> int:
        return self.read_index().num_classes

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        index = self.read_index()
        train, val = index.train, index.val
        if self.val_on_test:
            log.warning(
                "data.val_on_test=true: checkpoints are selected on the TEST split; the test accuracy is "
                "then optimistic and not comparable with a proper held-out evaluation"
            )
            val = index.test
        elif val is None:
            train, val = stratified_split(train, self.val_fraction, self.split_seed)
        if self.train_on_val:  # the refit of train.refit: the validation samples train too (val/* is then in-sample)
            train = [*train, *val]
        splits = {"train": train, "val": val, "test": index.test}
        if self.on_bad_image == "skip":
            splits = {name: self._drop_unreadable(name, samples) for name, samples in splits.items()}
        self.splits = splits

    def _drop_unreadable(self, split: str, samples: list[Sample]) -> list[Sample]:
        errors = decode_errors(samples, self.num_workers)
        kept = [s for s, error in zip(samples, errors, strict=True) if error is None]
        self.skipped[split] = len(samples) - len(kept)
        if self.skipped[split]:
            bad = [str(s.path) for s, error in zip(samples, errors, strict=True) if error is not None]
            log.warning("data.on_bad_image=skip: dropped %d unreadable %s images (first: %s)",
                        self.skipped[split], split, bad[0])
        return kept

    def resolve_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Replace ``"auto"`` mean/std by the training split's own statistics; return ``(mean, std)``."""
        args = self.transform_args
        if AUTO in (args["mean"], args["std"]):
            self.setup()
            mean, std = channel_stats(
                self.splits["train"], self.image_size, args["crop_pct"], args["resize_mode"],
                workers=max(1, self.num_workers),
            )
            log.info("data.mean=auto: the training split's mean %s, std %s", mean, std)
            if args["mean"] == AUTO:
                args["mean"] = tuple(mean)
            if args["std"] == AUTO:
                args["std"] = tuple(std)
        return args["mean"], args["std"]

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` of the device-side normalization (:meth:`resolve_normalization`)."""
        return self.resolve_normalization()

    # ------------------------------------------------------------------ loaders
    def _geometry(self) -> dict:
        """The arguments of :func:`build_transforms` in ``transform_args`` (all but the normalization)."""
        return {k: v for k, v in self.transform_args.items() if k not in NORMALIZATION_KEYS}

    def dataset(self, split: str, train_transform: bool | None = None) -> FGVCDataset:
        """The ``split``'s dataset: uint8 images (normalize with :meth:`normalization`), the train transform
        for ``train`` unless ``train_transform`` says otherwise. Resolves ``auto`` normalization first."""
        self.setup()
        train_transform = split == "train" if train_transform is None else train_transform
        self.resolve_normalization()
        return FGVCDataset(self.splits[split], build_transforms(train=train_transform, **self._geometry()))

    def _loader(self, split: str) -> DataLoader:
        pin = torch.cuda.is_available() if self.pin_memory is None else self.pin_memory
        dataset = self.dataset(split)
        sampler = None
        if split == "train":  # order and augmentation are functions of (seed, epoch, index): resumable exactly
            trainer = self.trainer
            rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            sampler = EpochSeededSampler(len(dataset), self.seed, num_replicas=world, rank=rank)
            if self._resume_position is not None:  # a run resumed from a checkpoint saved mid-epoch
                sampler.resume_at(*self._resume_position)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=split == "train" and len(self.splits["train"]) > self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_uint8,
            pin_memory=pin,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            prefetch_factor=self.prefetch_factor if self.num_workers > 0 else None,
        )

    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint of a fit: the training epoch in progress, how many of its samples all
        ranks together have trained on (``batch_size`` x the trainer's finished batches x ranks) and the rank
        count, so that a run resumed from a checkpoint saved in the middle of an epoch (``fgzoom.callbacks.preemption``)
        continues with the next batch. At an epoch's end the count is the whole epoch, which a resume skips."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": int(trainer.current_epoch), "samples": int(done) * int(self.batch_size) * trainer.world_size,
                "world_size": int(trainer.world_size)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Lightning calls this before it builds the training loader of a resumed run: the loader's sampler
        then skips the samples the saved run had trained on in that epoch (a later epoch starts whole). Under
        another rank count than the saved run's, each rank skips its share of them (Lightning's own batch
        count of that epoch is then the saved run's, so that one epoch is approximate)."""
        if not state or "epoch" not in state:
            return
        world = self.trainer.world_size if self.trainer is not None else 1
        if int(state.get("world_size", world)) != world:
            log.warning("resuming epoch %d on %d ranks from a checkpoint saved on %s: its remaining samples are "
                        "split anew", state["epoch"], world, state.get("world_size"))
        self._resume_position = (int(state["epoch"]), int(state.get("samples", 0)) // world)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Normalize every batch's uint8 images on their device, then mix training batches (``data.mixup``)."""
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        trainer = self.trainer
        if self.mixup is None or trainer is None or not trainer.training:
            return batch
        if self._mixing is None:
            self._mixing = BatchMixing(self.mixup, self.num_classes)
        seed = derive_seed(self.seed, trainer.current_epoch, int(batch["index"][0]), trainer.global_rank)
        return self._mixing(batch, seed)
