"""Networks no built-in geometry makes, through :func:`tnborn.from_quimb` (issue 12 acceptance).

The reference is the user's own quimb network, contracted by quimb with numpy
arrays: independent of tnborn's contraction code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import quimb.tensor as qtn
import torch

import tnborn
from tnborn.errors import ConfigError

from conftest import all_configs, amplitude_condition, assert_samples_match, config_index
from tolerances import rounding_bound


def irregular_tree(seed: int = 3) -> qtn.TensorNetwork:
    """A tree of 7 nodes on 11 variables, physical indices on inner nodes, one node without any."""
    rng = np.random.default_rng(seed)
    parent = {1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 5}
    owner = {0: 1, 1: 1, 2: 0, 3: 3, 4: 3, 5: 3, 6: 4, 7: 5, 8: 6, 9: 6, 10: 0}  # node 2 carries none
    bond = {1: 3, 2: 2, 3: 2, 4: 3, 5: 2, 6: 3}
    tensors = []
    for node in range(7):
        inds = [f"e{node}"] if node in parent else []
        inds += [f"e{c}" for c, p in parent.items() if p == node]
        inds += [f"k{v}" for v, o in owner.items() if o == node]
        shape = [bond[int(ix[1:])] if ix.startswith("e") else 2 for ix in inds]
        tensors.append(qtn.Tensor(rng.normal(size=shape) + 0.3, inds=inds, tags={f"T{node}"}))
    return qtn.TensorNetwork(tensors)


def renamed_peps(seed: int = 1) -> qtn.TensorNetwork:
    """A 3x3 ``PEPS.rand`` with its physical indices renamed ``x0 .. x8`` (row-major)."""
    peps = qtn.PEPS.rand(3, 3, bond_dim=2, seed=seed, dtype="float64")
    return peps.reindex({f"k{i},{j}": f"x{3 * i + j}" for i in range(3) for j in range(3)})


def reference_log_probs(tn: qtn.TensorNetwork, site_ind_id: str, n: int) -> np.ndarray:
    """log P of every configuration (all_configs order) by quimb on the numpy network."""
    out = [site_ind_id.format(v) for v in range(n)]
    psi = tn.contract(all, output_inds=out, preserve_tensor=True).transpose(*out).data.reshape(-1)
    w = np.abs(psi) ** 2
    return np.log(w) - np.log(w.sum())


CASES = {
    "tree11": (irregular_tree, "k{}", 11),
    "peps3x3": (renamed_peps, "x{}", 9),
}


def _log_prob_bound(model) -> torch.Tensor:
    """Per-configuration bound on ``|log P - log P_exact|`` for any network, from the conditioning.

    Every amplitude is a sum of products over all bond indices. In a tree each
    pairwise contraction sums over one bond, so whatever the order a product
    passes through ``sum(bond dims)`` rounded additions; with loops a contraction
    may sum over several bonds at once (``prod(bond dims)``, a safe count). ``log |psi|^2``
    amplifies an error of ``psi`` by ``2 kappa(x)`` (``kappa``: the contraction of
    the absolute values over ``|psi(x)|``, ``conftest.amplitude_condition``).
    Two contractions (tnborn's and quimb's numpy reference) each contribute.
    """
    dims = model.bond_dims()
    ops = (sum(dims) if model.is_tree else math.prod(dims)) + model.num_variables
    return rounding_bound(torch.float64, ops) * (4.0 * amplitude_condition(model) + 2.0)


@pytest.mark.parametrize("case", list(CASES))
def test_probabilities_equal_enumeration_and_sum_to_one(case):
    build, ids, n = CASES[case]
    tn = build()
    model = tnborn.from_quimb(tn, site_ind_id=ids)
    assert model.num_variables == n and model.geometry == "network"
    assert model.is_tree == (case == "tree11")
    logp = model.log_prob(all_configs(n))
    ref = torch.from_numpy(reference_log_probs(tn, ids, n))
    bound = _log_prob_bound(model)
    assert bool(((logp - ref).abs() <= bound).all())
    assert abs(float(torch.logsumexp(logp, 0))) <= rounding_bound(torch.float64, 2**n)
    if model.is_tree:  # the canonical form derived generically gives the same numbers
        for node in model.nodes():
            model.move_center(node)
            # plus one QR per node and bond entry of the gauge moves (condition number 1)
            moved = bound + rounding_bound(torch.float64, sum(d * d for d in model.bond_dims()))
            assert bool(((model.log_prob(all_configs(n)) - ref).abs() <= moved).all())


def test_the_callers_network_is_not_touched():
    tn = irregular_tree()
    before = [t.data.copy() for t in tn]
    model = tnborn.from_quimb(tn)
    model.move_center(4)
    assert all(np.array_equal(a, t.data) for a, t in zip(before, tn))
    assert all(isinstance(t.data, np.ndarray) for t in tn)


@pytest.mark.parametrize("case", list(CASES))
def test_samples_pass_chi_square(case):
    build, ids, n = CASES[case]
    model = tnborn.from_quimb(build(), site_ind_id=ids)
    if model.is_tree:
        model.move_center(2)  # sampling from the canonical centre
    logp = model.log_prob(all_configs(n))
    samples, sample_logp = model.sample(4000, seed=11)
    idx = torch.arange(2**n)
    assert_samples_match(samples, idx, logp)
    torch.testing.assert_close(sample_logp, logp[config_index(samples)], rtol=0, atol=1e-9)


@pytest.mark.parametrize("case", list(CASES))
def test_checkpoint_round_trips(case, tmp_path):
    build, ids, n = CASES[case]
    model = tnborn.from_quimb(build(), site_ind_id=ids)
    path = tnborn.save(tmp_path / "m.tnb", model)
    again = tnborn.load(path)
    assert type(again) is tnborn.NetworkBornMachine and again.site_ind_id == ids
    x = all_configs(n)
    # the same arrays and the same contraction code: only the path search could differ
    assert bool(((again.log_prob(x) - model.log_prob(x)).abs() <= _log_prob_bound(model)).all())
    assert [again.node_tensor(v).inds for v in again.nodes()] == [model.node_tensor(v).inds for v in model.nodes()]


def test_sweep_trainer_lowers_the_nll_of_the_tree():
    model = tnborn.from_quimb(irregular_tree())
    data = tnborn.random_binary(60, 11, seed=4)
    before = float(model.nll(data))
    trainer = tnborn.SweepTrainer(model, lr=1e-2, descent_steps=5, cutoff=1e-10, max_bond=8, progress=False)
    history = trainer.fit(data, loops=2)
    after = float(model.nll(data))
    assert after < before - 0.1
    assert history[-1]["train_nll"] == pytest.approx(after, abs=1e-9)
    trained = qtn.TensorNetwork([qtn.Tensor(t.data.numpy(), inds=t.inds) for t in model.tn])
    ref = reference_log_probs(trained, "k{}", 11)  # the trained network, contracted by quimb in numpy
    diff = torch.from_numpy(np.abs(model.log_prob(all_configs(11)).numpy() - ref))
    assert bool((diff <= _log_prob_bound(model)).all())


def test_gradient_trainer_lowers_the_nll_of_the_peps():
    model = tnborn.from_quimb(renamed_peps(), site_ind_id="x{}")
    data = tnborn.random_binary(40, 9, seed=5)
    before = float(model.nll(data))
    tnborn.GradientTrainer(model, lr=0.05, progress=False).fit(data, epochs=20)
    assert float(model.nll(data)) < before - 0.1
    with pytest.raises(ConfigError, match="not a tree.*GradientTrainer"):
        tnborn.SweepTrainer(model, progress=False)
    with pytest.raises(NotImplementedError, match="loop"):
        model.move_center(0)


def test_bad_networks_get_clear_errors():
    with pytest.raises(ConfigError, match="TensorNetwork"):
        tnborn.from_quimb([np.ones(2)])
    tn = irregular_tree()
    with pytest.raises(ConfigError, match="physical"):  # wrong template: open indices not physical
        tnborn.from_quimb(tn, site_ind_id="q{}")
    bad = tn.copy()
    next(iter(bad)).modify(data=np.full(next(iter(bad)).shape, np.nan))
    with pytest.raises(ConfigError, match="NaN|finite"):
        tnborn.from_quimb(bad)


def test_a_network_too_large_to_contract_is_refused_before_any_work(monkeypatch):
    import tnborn.contraction as contraction

    model = tnborn.from_quimb(renamed_peps(), site_ind_id="x{}")
    float(model.log_norm())  # fits the default limit
    # the 3x3 doubled PEPS needs intermediates of more than 2^6 entries: with that limit it is refused
    monkeypatch.setattr(contraction, "MAX_INTERMEDIATE_ENTRIES", 2**6)
    calls = []
    monkeypatch.setattr(contraction.torch, "einsum", lambda *a, **k: calls.append(a))
    with pytest.raises(ConfigError, match="too large to contract exactly"):
        model.log_norm()
    with pytest.raises(ConfigError, match="too large to contract exactly"):
        model.log_prob(all_configs(9)[:4])
    assert not calls  # no contraction was started
    big = tnborn.from_quimb(qtn.PEPS.rand(6, 6, bond_dim=8, seed=0), site_ind_id="k{},{}")
    monkeypatch.setattr(contraction, "MAX_INTERMEDIATE_ENTRIES", 2**28)
    with pytest.raises(ConfigError, match=r"2\^3\d"):
        big.log_norm()
