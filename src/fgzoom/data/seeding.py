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
import itertools
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler


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
    """Run the block with torch's CPU generator seeded to ``seed``; restore the previous state after.

    Seeds the CPU generator alone (``torch.default_generator``: the same stream as ``torch.manual_seed``,
    which also seeds every accelerator's and costs ~0.1 ms, a tenth of a sample's decode and resize)."""
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(state)


def seed_step(seed: int, rank: int, epoch: int, batch: int) -> None:
    """Reseed torch's generators (CPU and CUDA) for one training batch."""
    torch.manual_seed(derive_seed(seed, rank, epoch, batch))


class EpochSeededSampler(DistributedSampler):
    """Yields ``(index, sample_seed)``: a permutation of ``range(dataset_size)`` drawn from ``(seed, epoch)``,
    each index with its augmentation seed; with ``num_replicas`` > 1, rank ``rank``'s share of it.

    Sharding is ``DistributedSampler``'s own, without shuffling, over the positions of the permutation (padded
    to a multiple of ``num_replicas`` by repeating its start, then every ``num_replicas``-th position from
    ``rank``), which is what Lightning's sampler wrapper did with this sampler before it sharded itself; being
    a ``DistributedSampler``, Lightning uses it as it is under DDP.

    Lightning calls :meth:`set_epoch` before every epoch, also after a resume, so epoch ``e`` yields the same
    sequence whenever it runs. :meth:`resume_at` skips the first entries of this rank's share once, for a
    run resumed in the middle of an epoch (the datamodule's ``load_state_dict``); ``len()`` stays the full
    share, so the training loop's batch count and its restored position agree.
    """

    def __init__(self, dataset_size: int, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(dataset_size), num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)
        self.start = 0  # entries of this rank's share to skip in the current epoch (a mid-epoch resume)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def resume_at(self, epoch: int, start: int) -> None:
        """Make epoch ``epoch`` continue after the first ``start`` entries of this rank's share."""
        self.epoch, self.start = epoch, max(0, int(start))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(len(self.dataset), generator=generator).tolist()
        positions = itertools.islice(super().__iter__(), self.start, None)  # this rank's share, padded
        for index in (order[position] for position in positions):
            yield index, derive_seed(self.seed, self.epoch, index)
