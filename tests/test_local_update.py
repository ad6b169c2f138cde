"""The one local update of the sweep (tnborn.training.local_update): rules and the step guard.

The guard cases are built so that the rule provably acts: one sample with a
tiny amplitude ``eps`` on the direction ``E1`` and ``good`` samples on an
orthogonal direction ``E2`` carrying almost all the weight. The term of the
tiny sample in ``G / B`` has norm ``1 / (B eps)``, so a step of learning rate
``lr`` moves ``M`` by ~``2 lr / (B eps)`` towards ``E1`` and takes the
amplitude of the ``good`` samples with it: the batch NLL rises (checked
directly with the reference below), and the guard must shrink or reject.
"""

from __future__ import annotations

import math

import pytest
import torch

import tnborn
import tnborn.training.local_update as lu
from tnborn.errors import NumericalError
from tnborn.training.local_update import StepStats, block_gradient_steps

from conftest import HostReads, block_nll, plain_block_step, record_guard_margins
from tolerances import tol


def _case(eps: float, good: int = 9):
    f = torch.zeros(good + 1, 4, dtype=torch.float64)
    r = torch.zeros(good + 1, 3, dtype=torch.float64)
    f[0, 0] = r[0, 0] = 1.0
    f[1:, 1] = r[1:, 1] = 1.0
    m = torch.zeros(4, 3, dtype=torch.float64)
    m[0, 0], m[1, 1] = eps, math.sqrt(1 - eps ** 2)
    return m, f, r


def _guarded(m, f, r, lr, bound, shrinks):
    """Reference step guard: (new block, 'plain' | 'shrunk' | 'rejected')."""
    before = block_nll(m, f, r)
    for k in range(shrinks + 1):
        new = plain_block_step(m, f, r, lr / 2 ** k)
        if block_nll(new, f, r) <= before + bound:
            return new, "plain" if k == 0 else "shrunk"
    return m, "rejected"


@pytest.mark.parametrize("eps, lr, shrinks, outcome", [
    (1e-1, 1e-3, 0, "plain"), (1e-4, 1e-2, 3, "shrunk"), (1e-4, 1e-2, 0, "rejected"),
    (1e-5, 5e-2, 3, "rejected"), (1e-5, 5e-2, 0, "rejected")])
def test_step_guard_arithmetic_where_it_acts(step_ops, eps, lr, shrinks, outcome, monkeypatch):
    margins = record_guard_margins(monkeypatch)
    m, f, r = _case(eps)
    plain = plain_block_step(m, f, r, lr)
    rise = block_nll(plain, f, r) - block_nll(m, f, r)
    # the case is built so that the plain step rises the batch NLL exactly when the guard must act
    assert (rise > 0) == (outcome != "plain")
    want, kind = _guarded(m, f, r, lr, 0.0, shrinks)
    assert kind == outcome
    stats = StepStats()
    got = block_gradient_steps(m, f, r, [slice(None)], lr, max_nll_rise=0.0, max_shrinks=shrinks, stats=stats)
    assert stats == StepStats(steps=1, shrunk=int(outcome == "shrunk"), rejected=int(outcome == "rejected"))
    # every decision at the bound 0 is outside rounding (conftest.record_guard_margins): the outcome
    # is the algebra's, on any CPU
    assert margins and all(abs(d) > b for d, b in margins)
    torch.testing.assert_close(got, want, rtol=0, atol=tol(torch.float64, "exact"))
    # without the guard the same call is the plain step
    unguarded = block_gradient_steps(m, f, r, [slice(None)], lr)
    torch.testing.assert_close(unguarded, plain, rtol=0, atol=tol(torch.float64, "exact"))
    if outcome != "plain":
        assert float(torch.linalg.vector_norm(got - plain)) > 0.1  # the guard changed the step


def test_step_guard_bound_lets_a_bounded_rise_through(step_ops):
    m, f, r = _case(1e-4)
    lr = 1e-2
    rise = block_nll(plain_block_step(m, f, r, lr), f, r) - block_nll(m, f, r)
    assert rise > 0
    stats = StepStats()
    got = block_gradient_steps(m, f, r, [slice(None)], lr, max_nll_rise=2 * rise, stats=stats)
    assert stats == StepStats(steps=1)
    torch.testing.assert_close(got, plain_block_step(m, f, r, lr), rtol=0, atol=tol(torch.float64, "exact"))


@pytest.mark.parametrize("shrinks", [0, 3])
def test_step_guard_over_several_steps_never_rises_the_batch_nll(step_ops, shrinks, monkeypatch):
    margins = record_guard_margins(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    r = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    m = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    m = m / torch.linalg.vector_norm(m)
    lr = 0.45
    batches = [slice(10 * (k % 4), 10 * (k % 4) + 10) for k in range(12)]
    stats, kinds, cur = StepStats(), [], m
    for sl in batches:  # one call per step, each against the reference
        nxt = block_gradient_steps(cur, f, r, [sl], lr, max_nll_rise=0.0, max_shrinks=shrinks, stats=stats)
        want, kind = _guarded(cur, f[sl], r[sl], lr, 0.0, shrinks)
        rise = block_nll(plain_block_step(cur, f[sl], r[sl], lr), f[sl], r[sl]) - block_nll(cur, f[sl], r[sl])
        if kind != "plain":
            assert rise > 1e-6  # a macroscopic rise, not rounding: the guard provably had to act
        # the library's decisions agree with the reference's only if none is within rounding of 0
        assert margins and all(abs(d) > b for d, b in margins)
        torch.testing.assert_close(nxt, want, rtol=0, atol=1e2 * tol(torch.float64, "exact"))
        # recomputed here: the accepted rise is < -bound in the library, so <= 0 up to that bound
        assert block_nll(nxt, f[sl], r[sl]) <= block_nll(cur, f[sl], r[sl]) + max(b for _, b in margins)
        kinds.append(kind)
        cur = nxt
    assert stats == StepStats(steps=12, shrunk=kinds.count("shrunk"), rejected=kinds.count("rejected"))
    assert kinds.count("plain") < 12
    assert ("shrunk" in kinds) == (shrinks > 0)  # the halvings act only when allowed
    together = block_gradient_steps(m, f, r, batches, lr, max_nll_rise=0.0, max_shrinks=shrinks)
    torch.testing.assert_close(together, cur, rtol=0, atol=1e2 * tol(torch.float64, "exact"))


def test_norm025_rule_is_guarded_too(step_ops):
    m, f, r = _case(1e-5)
    stats = StepStats()
    got = block_gradient_steps(m, f, r, [slice(None)], 5e-2, rule="norm0.25", max_nll_rise=0.0, stats=stats)
    assert stats.rejected == 1 and torch.equal(got, m)


def test_zero_amplitude_before_the_step_is_an_error_also_with_the_guard(step_ops):
    m, f, r = _case(1e-4)
    m = m.clone()
    m[0, 0] = 0.0  # psi = 0 for the first sample: its NLL is infinite
    with pytest.raises(NumericalError, match="psi"):
        block_gradient_steps(m, f, r, [slice(None)], 1e-3, max_nll_rise=0.0)
    with pytest.raises(NumericalError, match="psi"):
        block_gradient_steps(m, f, r, [slice(None)], 1e-3)


def _random_block(rows: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    f = 0.5 + torch.rand(rows, 6, generator=gen, dtype=torch.float64)  # positive: no psi near 0
    r = 0.5 + torch.rand(rows, 5, generator=gen, dtype=torch.float64)
    m = 0.5 + torch.rand(6, 5, generator=gen, dtype=torch.float64)
    return m / torch.linalg.vector_norm(m), f, r


@pytest.mark.parametrize("rule", sorted(lu.RULES))
def test_steps_without_the_guard_read_nothing_back_per_step(rule, monkeypatch):
    """On the torch path (CUDA's) the steps never wait for the device: the norm, the rule's
    rescaling and the finiteness check stay tensors until one check after the last step."""
    monkeypatch.setattr(lu, "NUMPY_STEP_MAX_WORK", -1)
    m, f, r = _random_block(40)
    counts = {}
    for steps in (1, 9):
        batches = [slice(10 * (k % 4), 10 * (k % 4) + 10) for k in range(steps)]
        with HostReads() as reads:
            block_gradient_steps(m, f, r, batches, 0.05, rule=rule)
        counts[steps] = len(reads.reads)
    assert counts[1] == counts[9] == 1, counts  # the one finiteness check after the last step


def test_the_step_guard_reads_its_decision_back_each_step(monkeypatch):
    """The counter sees a read per step where there is one: the guard decides on the host."""
    monkeypatch.setattr(lu, "NUMPY_STEP_MAX_WORK", -1)
    m, f, r = _random_block(40)
    counts = {}
    for steps in (1, 9):
        with HostReads() as reads:
            block_gradient_steps(m, f, r, [slice(0, 10)] * steps, 0.05, max_nll_rise=1.0)
        counts[steps] = len(reads.reads)
    assert counts[9] >= counts[1] + 8, counts


def test_unknown_rule_is_refused():
    m, f, r = _case(1e-1)
    with pytest.raises(ValueError, match="unknown rule"):
        block_gradient_steps(m, f, r, [slice(None)], 1e-3, rule="adam")


def test_trainer_history_counts_the_guard_and_resumes_bit_exactly():
    data = torch.randint(0, 2, (30, 9), generator=torch.Generator().manual_seed(0))
    # full batches: the guard then keeps the NLL of every training sample finite (with batches
    # of 10, lr 0.1 drives samples outside a batch to psi = 0 and the run cannot continue)
    kw = dict(lr=0.1, descent_steps=4, batch_size=None, cutoff=1e-8, max_bond=8, seed=2, max_nll_rise=0.0,
              progress=False)
    model = tnborn.MPSBornMachine.random(9, 2, seed=1)
    trainer = tnborn.SweepTrainer(model, **kw)
    with pytest.MonkeyPatch.context() as mp:
        margins = record_guard_margins(mp)
        trainer.fit(data, loops=1)
    # the guard's decisions (it acted: checked below) are outside rounding of the bound 0
    assert margins and all(abs(d) > b for d, b in margins)
    h = trainer.history
    assert sum(x["steps_shrunk"] for x in h) == trainer.step_stats.shrunk
    assert sum(x["steps_rejected"] for x in h) == trainer.step_stats.rejected
    assert sum(x["steps"] for x in h) == trainer.step_stats.steps == 2 * (9 - 2) * 4
    assert trainer.step_stats.shrunk + trainer.step_stats.rejected > 0  # it acted
    state = trainer.state_dict()
    resumed = tnborn.SweepTrainer(model.copy(), progress=False)
    resumed.load_state_dict(state)
    trainer.fit(data, loops=1)
    resumed.fit(data, loops=1)
    for n in model.nodes():
        assert torch.equal(model.node_tensor(n).data, resumed.model.node_tensor(n).data)
    assert resumed.step_stats == trainer.step_stats


def test_the_settings_name_exactly_the_rules_of_the_local_update():
    from tnborn.training.local_update import RULES
    from tnborn.training.settings import GRADIENT_RESCALE_RULES

    assert tuple(RULES) == GRADIENT_RESCALE_RULES
