"""Training randomness: a new data order and new augmentation draws every epoch, the same ones when an
epoch is replayed (fgzoom.data.seeding)."""

from __future__ import annotations

import torch

from fgzoom.data.seeding import EpochSeededSampler, derive_seed, seeded_rng


def _epoch(sampler: EpochSeededSampler, epoch: int) -> list[tuple[int, int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_each_epoch_draws_a_new_order_and_new_sample_seeds() -> None:
    sampler = EpochSeededSampler(50, seed=2)
    first, second = _epoch(sampler, 0), _epoch(sampler, 1)
    assert sorted(i for i, _ in first) == list(range(50)) == sorted(i for i, _ in second)
    assert [i for i, _ in first] != [i for i, _ in second]
    seeds_first, seeds_second = dict(first), dict(second)
    assert all(seeds_first[i] != seeds_second[i] for i in range(50))  # a sample is augmented anew each epoch
    assert len(set(seeds_first.values())) == 50  # and differently from the other samples


def test_an_epoch_replays_exactly_and_depends_on_the_run_seed() -> None:
    assert _epoch(EpochSeededSampler(50, seed=2), 3) == _epoch(EpochSeededSampler(50, seed=2), 3)
    assert _epoch(EpochSeededSampler(50, seed=2), 3) != _epoch(EpochSeededSampler(50, seed=3), 3)


def test_seeded_rng_replays_a_draw_and_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    with seeded_rng(derive_seed(2, 1, 7)):
        a = torch.rand(3)
    with seeded_rng(derive_seed(2, 1, 7)):
        b = torch.rand(3)
    with seeded_rng(derive_seed(2, 2, 7)):
        c = torch.rand(3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.rand(3), expected_next)
