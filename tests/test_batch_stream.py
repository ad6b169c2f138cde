"""The trainers' batch stream (tnborn.training.base.BatchStream): a fresh seeded permutation per epoch."""

from __future__ import annotations

import random

import pytest
import torch

from tnborn.training.base import BatchStream


def _permutations(seed: int, n: int, count: int) -> torch.Tensor:
    """The stream's definition: ``randperm(n)`` draws of one generator, one after another."""
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(count)])


@pytest.mark.parametrize("n", [1, 7, 100])
def test_take_continues_the_permutations_across_epochs(n):
    """Any sequence of takes, of any sizes (within an epoch, to its end, over several), reads the
    concatenated permutations in order; the stream's own epoch stands where the last take ended."""
    rng = random.Random(n)
    for seed in range(5):
        stream = BatchStream(seed)
        counts = [rng.choice([0, 1, n - 1, n, n + 1, 3 * n + 2, rng.randrange(7 * n)]) for _ in range(8)]
        reference = _permutations(seed, n, -(-sum(counts) // n) + 1)
        at = 0
        for count in counts:
            rows = stream.take(n, count)
            assert rows.dtype == torch.int64 and torch.equal(rows, reference[at : at + count]), (seed, counts)
            at += count
        if at:  # the epoch under way is the permutation the last row came from
            epoch = (at - 1) // n
            assert torch.equal(stream.perm, reference[epoch * n : (epoch + 1) * n])
            assert stream.pointer == at - epoch * n


def test_snapshot_restore_rewinds_and_restart_opens_a_new_epoch():
    stream = BatchStream(3)
    stream.take(10, 4)
    snap = stream.snapshot()
    first = stream.take(10, 25)
    stream.restore(snap)
    assert torch.equal(stream.take(10, 25), first)
    stream.restart()
    reference = _permutations(3, 10, 5)
    assert torch.equal(stream.take(10, 10), reference[30:40])  # 29 rows used: epochs 0-2 drawn
