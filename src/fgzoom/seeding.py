"""Randomness that is a pure function of (run seed, position in training), so a resumed run replays it.

Lightning restores weights, optimizer, scheduler and loop counters from a checkpoint, but not the
random number generators, and DataLoader workers are created afresh on resume. fgzoom therefore never
lets training randomness depend on generator state carried across steps:

- data order: :class:`EpochSeededSampler` draws epoch ``e``'s permutation from ``(seed, e)``;
- augmentation: each sample is transformed under its own seed ``(seed, e, index)``
  (:func:`seeded_rng`), in whichever worker loads it;
- model-side randomness (the training threshold draw, dropout, attention drop): the global generators
  are reseeded from ``(seed, rank, epoch, batch)`` before every training batch (:func:`seed_step`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer ``keys`` (numpy SeedSequence hashing)."""
    state = np.random.SeedSequence([k % (1 << 64) for k in keys]).generate_state(2, np.uint32)
    return int.from_bytes(state.tobytes(), "little") >> 1


def run_seed() -> int | None:
    """The run's seed as set by ``lightning.seed_everything`` (``PL_GLOBAL_SEED``), or None."""
    value = os.environ.get("PL_GLOBAL_SEED")
    return int(value) if value is not None else None


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded to ``seed``; restore the previous state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def seed_step(seed: int, rank: int, epoch: int, batch: int) -> None:
    """Reseed torch's generators (CPU and CUDA) for one training batch."""
    torch.manual_seed(derive_seed(seed, rank, epoch, batch))


class EpochSeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)``: a permutation of ``range(num_samples)`` drawn from
    ``(seed, epoch)``, each index with its augmentation seed.

    Lightning calls :meth:`set_epoch` before every epoch, also after a resume, and forwards it through
    its distributed sampler wrapper, so epoch ``e`` yields the same sequence whenever it runs.
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        for index in torch.randperm(self.num_samples, generator=generator).tolist():
            yield index, derive_seed(self.seed, self.epoch, index)
