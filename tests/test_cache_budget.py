"""A memory budget on the environment cache changes memory, never results.

:class:`tnborn.environments.EnvironmentCache` drops least-recently-used
messages when ``max_bytes`` is exceeded and recomputes them on demand. These
tests force heavy eviction (a budget of a few messages) and check that
messages, training trajectories and invalidation are exactly as without it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tnborn import MPSBornMachine, SweepTrainer
from tnborn.environments import EnvironmentCache, default_cache_bytes
from tnborn.errors import ConfigError

from conftest import config_index
from contract import log_prob_bound
from tolerances import rounding_bound

N = 10


def _data(rows=120, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((rows, N)) < 0.3).astype(np.int64)


def _message_bytes(model, rows):
    return rows * max(model.bond_dims()) * 8 + rows * 8


def test_messages_equal_with_a_tiny_budget():
    model = MPSBornMachine.random(N, 4, seed=3)
    x = model.as_configurations(_data())
    free = EnvironmentCache(model, x, max_bytes=None)
    tight = EnvironmentCache(model, x, max_bytes=3 * _message_bytes(model, x.shape[0]))
    # exact equality: an evicted message is recomputed by the same recursion from the same
    # arrays and the same cached neighbours, a deterministic re-run in this process
    for src in range(N - 1):
        a, b = free.message(src, src + 1), tight.message(src, src + 1)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert tight.nbytes() <= max(tight.max_bytes, 0) + 2 * _message_bytes(model, x.shape[0])
    for src in range(N - 1, 0, -1):
        a, b = free.message(src, src - 1), tight.message(src, src - 1)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert tight._evicted, "the budget never forced an eviction: the test checks nothing"


@pytest.mark.parametrize("budget_messages", [2, 5])
def test_training_trajectory_identical_under_a_budget(budget_messages, monkeypatch):
    data = _data()
    histories = []
    for budget in (None, budget_messages):
        model = MPSBornMachine.random(N, 2, seed=1)
        trainer = SweepTrainer(model, lr=0.005, descent_steps=3, batch_size=40, cutoff=1e-4,
                               max_bond=6, progress=False)
        trainer.fit(data, loops=0)
        trainer._cache.max_bytes = None if budget is None else budget * _message_bytes(model, 120) * 3
        trainer.fit(data, loops=2)
        if budget is not None:
            assert trainer._cache._evicted
        histories.append([(r["train_nll"], r["bond_dims"]) for r in trainer.history])
        # the cached NLL equals a fresh evaluation: two of tnborn's evaluations of the rows'
        # log P (another contraction order), each within its own bound, and the mean of B terms
        rows = config_index(torch.as_tensor(data))
        eps = 2 * float(log_prob_bound(model, reference=False)[rows].mean()) + rounding_bound(torch.float64, len(data))
        assert abs(trainer.history[-1]["train_nll"] - model.nll(data)) <= eps
    assert histories[0] == histories[1]


def test_invalidation_after_eviction_leaves_no_stale_message():
    model = MPSBornMachine.random(N, 4, seed=5)
    x = model.as_configurations(_data())
    cache = EnvironmentCache(model, x, max_bytes=3 * _message_bytes(model, x.shape[0]))
    cache.message(N - 1, N - 2)
    cache.message(0, 1)
    cache.message(N - 2, N - 1)
    assert cache._evicted
    # change site 4, invalidate, and compare everything still cached with a fresh cache
    model.move_center(4)
    t = model.node_tensor(4)
    t.modify(data=t.data * 1.5)
    cache.invalidate(4)
    fresh = EnvironmentCache(model, x, max_bytes=None)
    for (s, d), (vec, log) in list(cache._messages.items()):
        ref = fresh.message(s, d)
        assert torch.allclose(vec, ref[0], atol=1e-12) and torch.allclose(log, ref[1], atol=1e-10)


def test_budget_validation_and_default(monkeypatch):
    model = MPSBornMachine.random(4, 2)
    x = model.as_configurations(np.zeros((3, 4), dtype=np.int64))
    for bad in (0, -5, 1.5, "big", True):
        with pytest.raises(ConfigError):
            EnvironmentCache(model, x, max_bytes=bad)
    monkeypatch.setenv("TNBORN_CACHE_BYTES", "12345")
    assert default_cache_bytes() == 12345
    assert EnvironmentCache(model, x).max_bytes == 12345
    monkeypatch.delenv("TNBORN_CACHE_BYTES")
    assert 0 < default_cache_bytes() <= 4 * 2**30
