"""The rows the step guard judges a step on (``guard_scope``): the step's batch or all rows of the bond.

The case is built so that the two scopes provably disagree: the batch is one
sample with a small amplitude ``eps`` on the direction ``E1``; the other rows
of the bond (not in the batch) carry almost all the weight on the orthogonal
``E2``. A step of learning rate ``lr`` on the batch adds ``2 lr E1 / eps`` to
``M``: the amplitude of the batch sample grows to ``~ 2 lr / eps`` and, after
the normalisation, every other row loses ``log(1 + (2 lr / eps)^2)`` nats. The
batch NLL falls, so the guard on the batch accepts the step; the NLL of all
the rows rises, so the guard on the bond rejects it (or, with halvings,
accepts the first halved step that does not raise it). The numbers below are
worked out from this algebra and checked against a direct reference.
"""

from __future__ import annotations

import math

import pytest
import torch

import tnborn
import tnborn.training.local_update as lu
from tnborn.errors import ConfigError
from tnborn.training.local_update import GUARD_SCOPES, StepStats, block_gradient_steps
from tnborn.training.settings import GUARD_SCOPE_DEFAULT, SweepSettings

from conftest import block_nll, plain_block_step, record_guard_margins
from tolerances import rounding_bound, tol


def _case(eps: float = 1e-2, others: int = 9):
    """Row 0 (the batch) on ``E1`` with amplitude ``eps``; ``others`` rows on ``E2``."""
    f = torch.zeros(others + 1, 3, dtype=torch.float64)
    r = torch.zeros(others + 1, 2, dtype=torch.float64)
    f[0, 0] = r[0, 0] = 1.0
    f[1:, 1] = r[1:, 1] = 1.0
    m = torch.zeros(3, 2, dtype=torch.float64)
    m[0, 0], m[1, 1] = eps, math.sqrt(1 - eps ** 2)
    return m, f, r


def _random_case(seed: int, rows: int, dl: int, dr: int):
    """Random design ``f`` (rows x dl), environments ``r`` (rows x dr) and a unit-norm block ``m``."""
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(rows, dl, generator=gen, dtype=torch.float64)
    r = torch.randn(rows, dr, generator=gen, dtype=torch.float64)
    m = torch.randn(dl, dr, generator=gen, dtype=torch.float64)
    return m / torch.linalg.vector_norm(m), f, r


def _guarded(m, f, r, sl, lr, shrinks, scope):
    """Reference: one guarded step on batch ``sl``, judged on the batch or on all rows."""
    rows = sl if scope == "batch" else slice(None)
    before = block_nll(m, f[rows], r[rows])
    for k in range(shrinks + 1):
        new = plain_block_step(m, f[sl], r[sl], lr / 2 ** k)
        if block_nll(new, f[rows], r[rows]) <= before:
            return new, "plain" if k == 0 else "shrunk"
    return m, "rejected"


def test_the_case_separates_the_scopes_by_the_worked_out_numbers():
    eps, lr = 1e-2, 1e-2
    m, f, r = _case(eps)
    new = plain_block_step(m, f[:1], r[:1], lr)
    # unnormalised step: E1 gets (1 - 2 lr) eps + 2 lr / eps, E2 keeps (1 - 2 lr) sqrt(1 - eps^2)
    a, b = (1 - 2 * lr) * eps + 2 * lr / eps, (1 - 2 * lr) * math.sqrt(1 - eps ** 2)
    z = a * a + b * b
    assert block_nll(new, f[:1], r[:1]) == pytest.approx(-math.log(a * a / z), abs=tol(torch.float64, "exact"))
    batch_drop = -math.log(eps ** 2) + math.log(a * a / z)  # ~ 9.0 nats
    other_rise = math.log(z / b ** 2) + math.log(1 - eps ** 2)  # ~ 1.64 nats per row
    assert batch_drop > 8.5 and other_rise > 1.6
    # over the 10 rows the rise of the nine others outweighs the batch's drop
    assert (9 * other_rise - batch_drop) / 10 > 0.5
    assert block_nll(new, f, r) - block_nll(m, f, r) == pytest.approx((9 * other_rise - batch_drop) / 10,
                                                            abs=tol(torch.float64, "exact"))


@pytest.mark.parametrize("shrinks, batch_kind, bond_kind", [(0, "plain", "rejected"), (3, "plain", "shrunk")])
def test_bond_scope_refuses_a_step_the_batch_scope_accepts(step_ops, shrinks, batch_kind, bond_kind):
    m, f, r = _case()
    lr = 1e-2
    for scope, kind in (("batch", batch_kind), ("bond", bond_kind)):
        want, got_kind = _guarded(m, f, r, slice(0, 1), lr, shrinks, scope)
        assert got_kind == kind
        stats = StepStats()
        got = block_gradient_steps(m, f, r, [slice(0, 1)], lr, max_nll_rise=0.0, max_shrinks=shrinks,
                                   guard_scope=scope, stats=stats)
        assert stats == StepStats(steps=1, shrunk=int(kind == "shrunk"), rejected=int(kind == "rejected"))
        torch.testing.assert_close(got, want, rtol=0, atol=tol(torch.float64, "exact"))
    # the halved step of the bond scope is the step at lr / 2 exactly
    if bond_kind == "shrunk":
        torch.testing.assert_close(got, plain_block_step(m, f[:1], r[:1], lr / 2), rtol=0,
                                   atol=tol(torch.float64, "exact"))


def test_bond_scope_bound_lets_a_bounded_rise_through(step_ops):
    m, f, r = _case()
    lr = 1e-2
    rise = block_nll(plain_block_step(m, f[:1], r[:1], lr), f, r) - block_nll(m, f, r)
    assert rise > 0.5
    for bound, rejected in ((0.9 * rise, 1), (1.1 * rise, 0)):
        stats = StepStats()
        block_gradient_steps(m, f, r, [slice(0, 1)], lr, max_nll_rise=bound, guard_scope="bond", stats=stats)
        assert stats == StepStats(steps=1, rejected=rejected)


@pytest.mark.parametrize("shrinks", [0, 2])
def test_bond_scope_over_several_batches_never_raises_the_nll_of_the_bond(step_ops, shrinks, monkeypatch):
    m, f, r = _random_case(0, 40, 6, 5)
    lr = 0.2
    batches = [slice(10 * (k % 4), 10 * (k % 4) + 10) for k in range(12)]
    kinds, cur, bond = [], m, [block_nll(m, f, r)]
    for sl in batches:  # the reference, step by step
        cur, kind = _guarded(cur, f, r, sl, lr, shrinks, "bond")
        kinds.append(kind)
        bond.append(block_nll(cur, f, r))
    assert all(b <= a for a, b in zip(bond, bond[1:]))  # the NLL of the bond's rows never rises
    assert kinds.count("plain") < 12  # the guard acted
    # ... where the batch scope lets the NLL of the bond's rows rise
    batch_cur, batch_bond = m, [block_nll(m, f, r)]
    for sl in batches:
        batch_cur, _ = _guarded(batch_cur, f, r, sl, lr, shrinks, "batch")
        batch_bond.append(block_nll(batch_cur, f, r))
    assert any(b > a + 1e-6 for a, b in zip(batch_bond, batch_bond[1:]))
    stats = StepStats()
    margins = record_guard_margins(monkeypatch)
    got = block_gradient_steps(m, f, r, batches, lr, max_nll_rise=0.0, max_shrinks=shrinks, guard_scope="bond",
                               stats=stats)
    assert stats == StepStats(steps=12, shrunk=kinds.count("shrunk"), rejected=kinds.count("rejected"))
    # the counts pin every decision at the bound 0: none is within rounding of it (conftest)
    assert len(margins) >= 12 + stats.shrunk + stats.rejected * shrinks  # one per step and halving tried
    assert all(abs(d) > b for d, b in margins), min(margins, key=lambda x: abs(x[0]) / x[1])
    # 12 steps of ~40 * 6 * 5 products each: rounding grows with the steps; the reference's
    # accept/reject decisions are the same (checked by the counts), so the blocks agree closely
    torch.testing.assert_close(got, cur, rtol=0, atol=1e2 * tol(torch.float64, "exact"))


def test_full_batches_make_the_scopes_equal(step_ops, monkeypatch):
    """With every row in every batch the two scopes judge on the same rows."""
    margins = record_guard_margins(monkeypatch)
    m, f, r = _random_case(1, 12, 4, 3)
    runs = {}
    for scope in GUARD_SCOPES:
        stats = StepStats()
        runs[scope] = (block_gradient_steps(m, f, r, [slice(None)] * 6, 0.4, max_nll_rise=0.0, guard_scope=scope,
                                            stats=stats), stats)
    assert runs["batch"][1] == runs["bond"][1] and runs["bond"][1].rejected > 0
    # the two scopes compute their NLLs on different paths: equal decisions at the bound 0 are
    # certain only where no step's NLL change is within rounding of 0 (conftest.record_guard_margins)
    assert len(margins) == 2 * 6 and all(abs(d) > b for d, b in margins)
    torch.testing.assert_close(runs["batch"][0], runs["bond"][0], rtol=0, atol=tol(torch.float64, "exact"))


def test_without_a_bound_the_scope_does_nothing(step_ops):
    m, f, r = _case()
    a = block_gradient_steps(m, f, r, [slice(0, 1)], 1e-2, guard_scope="bond")
    b = block_gradient_steps(m, f, r, [slice(0, 1)], 1e-2, guard_scope="batch")
    assert torch.equal(a, b)
    torch.testing.assert_close(a, plain_block_step(m, f[:1], r[:1], 1e-2), rtol=0, atol=tol(torch.float64, "exact"))


def test_unknown_scope_is_refused():
    m, f, r = _case()
    with pytest.raises(ValueError, match="guard_scope"):
        block_gradient_steps(m, f, r, [slice(0, 1)], 1e-2, max_nll_rise=0.0, guard_scope="epoch")


def test_setting_validates_and_defaults_to_the_bond():
    assert SweepSettings().guard_scope == GUARD_SCOPE_DEFAULT == "bond"
    assert SweepSettings(guard_scope=["batch", "bond"]).validate().at(1).guard_scope == "bond"
    with pytest.raises(ConfigError, match="guard_scope must be one of"):
        SweepSettings(guard_scope="epoch").validate()
    with pytest.raises(ConfigError, match="guard_scope"):
        SweepSettings.parse("guard_scope", "rows")


def _trainer(scope: str, batch_size: int) -> tnborn.SweepTrainer:
    model = tnborn.MPSBornMachine.random(8, 2, seed=1)
    return tnborn.SweepTrainer(model, lr=0.05, descent_steps=4, batch_size=batch_size, cutoff=1e-8, max_bond=4,
                               seed=0, max_nll_rise=0.0, guard_scope=scope, progress=False)


def _data() -> torch.Tensor:
    return torch.randint(0, 2, (40, 8), generator=torch.Generator().manual_seed(0))


def test_trainer_passes_the_scope_to_the_local_update(monkeypatch):
    """Batches of 10 of 40 rows: the scope changes the guard's decisions, counted in the history."""
    margins = record_guard_margins(monkeypatch)
    rejected = {}
    for scope in GUARD_SCOPES:
        trainer = _trainer(scope, 10)
        trainer.fit(_data(), loops=1)
        h = trainer.history
        assert sum(x["steps_rejected"] for x in h) == trainer.step_stats.rejected > 0
        assert sum(x["steps_shrunk"] for x in h) == trainer.step_stats.shrunk == 0
        assert sum(x["steps"] for x in h) == trainer.step_stats.steps == 2 * (8 - 2) * 4
        rejected[scope] = trainer.step_stats.rejected
    # this seeded run's decisions; none is within rounding of the bound 0 (conftest.record_guard_margins),
    # so the counts do not depend on how a CPU rounds the NLLs the guard compares
    assert len(margins) == 2 * 2 * (8 - 2) * 4 and all(abs(d) > b for d, b in margins)
    assert rejected == {"batch": 13, "bond": 18}


def test_bond_scope_trains_where_the_batch_scope_drives_a_sample_to_zero(caplog, monkeypatch):
    """Batches of 5 of 40 rows at lr 0.05 (seeded): judged on its batch only, a step that fits its
    5 rows drives a row of the bond outside the batch to psi = 0 (to within rounding); judged on
    all 20 rows of the bond, no accepted step raises their NLL and the run trains through.

    Once an amplitude is zero to within rounding its computed value is rounding noise (here
    1e-85, 1e-109, then exactly 0.0 from an environment row of exact zeros): whether it is
    exactly 0, and so whether the run stops with a NumericalError, is up to how a CPU rounds.
    The claim is therefore the smallest |psi| (a unit block: |psi|^2 = P(x)) the steps see."""
    seen = []
    for ops in (lu._NUMPY, lu._TORCH):
        def spy(f, m, r, real=ops.psi):
            out = real(f, m, r)
            seen.append(float(abs(out).min()))
            return out

        monkeypatch.setattr(ops, "psi", spy)
    # psi = F M R over normalised environments: zero in exact arithmetic means |psi| below this
    zero = rounding_bound(torch.float64, 64)
    try:
        _trainer("batch", 5).fit(_data(), loops=1)
    except tnborn.errors.NumericalError as err:  # an exact 0 (this CPU): the run stops
        assert "psi" in str(err)
    assert min(seen) <= zero
    seen.clear()
    trainer = _trainer("bond", 5)
    trainer.fit(_data(), loops=1)
    assert trainer.fallbacks == 0 and math.isfinite(trainer.history[-1]["train_nll"])
    assert min(seen) > 1e6 * zero  # no row comes near zero (here >= 1e-4)


# --------------------------------------------------------------------------- #
# the per-sample cap (max_sample_change)
# --------------------------------------------------------------------------- #
def _capped_reference(m, f, r, lr, cap):
    """One plain step with every row's term scaled by min(1, cap / rho_b), written out."""
    psi = torch.einsum("bk,kd,bd->b", f, m, r)
    rho = 2 * lr / f.shape[0] * (f * f).sum(1) * (r * r).sum(1) / psi ** 2
    scale = torch.clamp(cap / rho, max=1.0)
    g = torch.einsum("bk,bd->kd", f, r * (scale / psi)[:, None]) / f.shape[0]
    new = m - 2 * lr * (m - g)
    return new / torch.linalg.vector_norm(new), rho


@pytest.mark.parametrize("cap", [0.5, 1.0, 3.0])
def test_sample_cap_limits_a_rows_own_change_to_the_cap_exactly(step_ops, cap):
    """One row with amplitude eps: rho = 2 lr / eps^2 = 200, so its own term, capped, adds
    exactly cap * eps to its unnormalised amplitude: new psi = ((1 - 2 lr) + cap) eps / ||new||."""
    eps, lr = 1e-2, 1e-2
    m, f, r = _case(eps)
    got = block_gradient_steps(m, f, r, [slice(0, 1)], lr, max_sample_change=cap)
    a = (1 - 2 * lr) * eps + cap * eps  # capped own change
    b = (1 - 2 * lr) * math.sqrt(1 - eps ** 2)
    want = torch.zeros_like(m)
    want[0, 0], want[1, 1] = a, b
    want = want / math.hypot(a, b)
    torch.testing.assert_close(got, want, rtol=0, atol=tol(torch.float64, "exact"))
    # uncapped, the row's own term adds rho * eps = 2 lr / eps = 200 eps
    plain = block_gradient_steps(m, f, r, [slice(0, 1)], lr)
    assert float(plain[0, 0] / plain[1, 1]) == pytest.approx(((1 - 2 * lr) * eps + 2 * lr / eps) / b, rel=1e-12)


def test_sample_cap_above_every_rho_is_the_exact_gradient(step_ops):
    eps, lr = 1e-2, 1e-2  # rho = 200 for the only row of the batch
    m, f, r = _case(eps)
    torch.testing.assert_close(block_gradient_steps(m, f, r, [slice(0, 1)], lr, max_sample_change=200.5),
                               block_gradient_steps(m, f, r, [slice(0, 1)], lr), rtol=0,
                               atol=tol(torch.float64, "exact"))


def test_sample_cap_scales_only_the_rows_above_it(step_ops):
    m, f, r = _random_case(3, 16, 5, 4)
    lr = 0.05
    _, rho = _capped_reference(m, f, r, lr, 1.0)
    cap = float(rho.median())  # half the rows are capped, half exact
    assert 0 < int((rho > cap).sum()) < 16
    want, _ = _capped_reference(m, f, r, lr, cap)
    got = block_gradient_steps(m, f, r, [slice(None)], lr, max_sample_change=cap)
    torch.testing.assert_close(got, want, rtol=0, atol=tol(torch.float64, "exact"))
    assert float(torch.linalg.vector_norm(got - block_gradient_steps(m, f, r, [slice(None)], lr))) > 1e-6


def test_sample_cap_is_refused_unless_positive():
    m, f, r = _case()
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_sample_change"):
            block_gradient_steps(m, f, r, [slice(0, 1)], 1e-2, max_sample_change=bad)
        with pytest.raises(ConfigError, match="max_sample_change"):
            SweepSettings(max_sample_change=bad).validate()
    assert SweepSettings().max_sample_change is None
    assert SweepSettings.parse("max_sample_change", "none") is None
    assert SweepSettings.parse("max_sample_change", "1,0.5") == [1.0, 0.5]


def test_trainer_forwards_scope_and_cap_to_the_local_update(monkeypatch):
    import tnborn.training.sweep as sweep

    seen = []

    def spy(*args, **kwargs):
        seen.append((kwargs["guard_scope"], kwargs["max_sample_change"], kwargs["max_nll_rise"]))
        return block_gradient_steps(*args, **kwargs)

    monkeypatch.setattr(sweep, "block_gradient_steps", spy)
    trainer = _trainer("batch", 10)
    trainer.fit(_data(), loops=1, max_sample_change=[2.0, 1.0])
    assert seen and set(seen) == {("batch", 2.0, 0.0)}
    seen.clear()
    # the per-sample cap alone (no guard) also leaves the compiled kernel for the local update
    model = tnborn.MPSBornMachine.random(8, 2, seed=1)
    tnborn.SweepTrainer(model, lr=0.05, batch_size=10, max_bond=4, max_sample_change=1.0,
                        progress=False).fit(_data(), loops=1)
    assert len(seen) == 2 * (8 - 2) and set(seen) == {("bond", 1.0, None)}
