"""The geometry-agnostic contract, run over every registered geometry, plus input validation.

Every geometry registered with :func:`tnborn.register_geometry` must build a
small random instance with ``cls.random(num_variables, bond_dim, seed=...)``
and then satisfy, against brute-force enumeration of all ``2^N`` states:
its own ``log_prob`` and the base class's generic contraction agree with the
dense reference, its samplers draw from the exact (conditional) distribution,
merge followed by an untruncated split leaves ``P`` unchanged, and its
structure methods describe the quimb network it holds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tnborn
from tnborn.errors import ConfigError, DataError, DeviceError, NumericalError, TnbornError
from tnborn.interface import BornMachine
from tnborn.primitives import draw_categorical, truncation_rank

from conftest import (
    all_configs,
    assert_samples_match,
    assert_unchanged,
    chi_square_pvalue,
    config_index,
    exact_conditional,
    exact_log_probs,
    snapshot,
)
from tolerances import tol

GEOMETRIES = tnborn.available_geometries()


def make(name: str, n: int = 9, bond_dim: int = 2, seed: int = 0) -> BornMachine:
    """A small random machine of geometry ``name`` (skips geometries without ``random``)."""
    cls = tnborn.get_geometry(name)
    if not hasattr(cls, "random"):
        pytest.skip(f"geometry {name!r} has no random constructor")
    return cls.random(n, bond_dim, seed=seed)


def _generic_log_prob(model: BornMachine, x: torch.Tensor) -> torch.Tensor:
    log_abs, _ = BornMachine._log_amplitude_contract(model, x)
    return 2.0 * log_abs - BornMachine.log_norm(model)


@pytest.fixture(params=GEOMETRIES)
def geometry(request) -> str:
    return request.param


# --------------------------------------------------------------------------- #
# structure
# --------------------------------------------------------------------------- #
def test_structure_describes_the_network(geometry):
    model = make(geometry, n=9, bond_dim=3, seed=1)
    nodes = model.nodes()
    assert len(set(nodes)) == len(nodes)
    assert model.tn.num_tensors == len(nodes)
    owners: dict[str, list] = {}
    for node in nodes:
        for ix in model.node_tensor(node).inds:
            owners.setdefault(ix, []).append(node)
    # bonds: symmetric, shared by exactly the two neighbours
    for u in nodes:
        for v in model.neighbours(u):
            assert u in model.neighbours(v)
            ix = model.bond_index(u, v)
            assert ix == model.bond_index(v, u)
            assert sorted(map(repr, owners[ix])) == sorted(map(repr, (u, v)))
    # physical indices: one per variable, on its node, on no other node
    for var in range(model.num_variables):
        ix = model.variable_index(var)
        assert owners[ix] == [model.variable_node(var)]
        assert var in model.node_variables(model.variable_node(var))
    assert sum(len(model.node_variables(n)) for n in nodes) == model.num_variables
    # every index is a bond or a physical index
    phys = {model.variable_index(v) for v in range(model.num_variables)}
    bonds = {model.bond_index(u, v) for u, v in model.edges()}
    assert set(owners) == phys | bonds
    assert len(model.edges()) == len(bonds)
    dims = model.bond_dims()
    for (u, v), dim in zip(model.edges(), dims):
        assert model.node_tensor(u).ind_size(model.bond_index(u, v)) == dim
    assert model.max_bond == max(dims) == 3
    assert model.num_parameters() == sum(model.node_tensor(n).data.numel() for n in nodes)
    assert model.dtype == torch.float64 and model.device.type == "cpu"


def test_tree_geometries_have_a_consistent_sweep(geometry):
    model = make(geometry, n=9, bond_dim=2)
    if not model.is_tree:
        with pytest.raises(NotImplementedError):
            model.sweep_schedule()
        return
    schedule = model.sweep_schedule()
    steps = [s for half in schedule for s in half]
    edges = {frozenset(e) for e in model.edges()}
    # each step is a bond, and the centre walks: a step starts where the last one ended
    for (src, dst) in steps:
        assert frozenset((src, dst)) in edges
    # (also across the loop boundary: the next loop starts where this one ended)
    for (a, b), (c, d) in zip(steps, steps[1:] + steps[:1]):
        assert b in (c, d), f"step {(c, d)} does not contain the centre {b}"
    if geometry == "mps":
        assert len(steps) == 2 * (model.num_variables - 2)
    assert {frozenset(s) for s in steps} == edges


# --------------------------------------------------------------------------- #
# probabilities against brute force
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n,bond_dim", [(4, 1), (6, 2), (9, 3)])
def test_log_prob_matches_brute_force(geometry, n, bond_dim):
    model = make(geometry, n=n, bond_dim=bond_dim, seed=n)
    x = all_configs(n)
    exact = exact_log_probs(model)
    eps = tol(torch.float64)
    own = model.log_prob(x)
    assert torch.allclose(own, exact, rtol=0, atol=eps), float((own - exact).abs().max())
    assert torch.allclose(_generic_log_prob(model, x), exact, rtol=0, atol=eps)
    assert abs(float(torch.logsumexp(own, 0))) < tol(torch.float64, "norm")


def test_tree_centre_moves_keep_probabilities(geometry):
    model = make(geometry, n=8, bond_dim=3, seed=2)
    if not model.is_tree:
        pytest.skip("no canonical form")
    x = all_configs(8)
    exact = exact_log_probs(model)
    for node in list(model.nodes())[::3] + [model.nodes()[-1]]:
        model.move_center(node)
        assert model.center == node
        assert torch.allclose(model.log_prob(x), exact, rtol=0, atol=tol(torch.float64, "gauge"))
        assert abs(float(model.log_norm() - BornMachine.log_norm(model))) < tol(torch.float64, "gauge")


def test_sampler_and_conditional_sampler_match_exact(geometry):
    n = 6
    model = make(geometry, n=n, bond_dim=2, seed=3)
    exact = exact_log_probs(model)
    samples, logp = model.sample(6000, seed=5)
    assert samples.shape == (6000, n) and samples.dtype == torch.int64
    assert torch.allclose(logp, exact[config_index(samples)], rtol=0, atol=1e-10)
    assert_samples_match(samples, torch.arange(2**n), exact)
    # scattered known variables
    x = torch.tensor([1, 0, 1, 1, 0, 1])
    known = torch.tensor([True, False, False, True, False, True])
    out, lpc = model.sample_conditional(x[None], known, num_samples=4000, seed=6)
    out = out[0]
    assert torch.equal(out[:, known], x[known].expand(4000, -1))
    idx, cond = exact_conditional(exact, x, known)
    lookup = dict(zip(idx.tolist(), cond.tolist()))
    want = torch.tensor([lookup[int(c)] for c in config_index(out)], dtype=torch.float64)
    assert torch.allclose(lpc[0], want, rtol=0, atol=1e-10)
    assert_samples_match(out, idx, cond)


def test_merge_then_exact_split_keeps_the_state(geometry):
    model = make(geometry, n=8, bond_dim=3, seed=4)
    x = all_configs(8)
    exact = exact_log_probs(model)
    for u, v in model.edges()[:4]:
        if model.is_tree:
            model.move_center(u)
        bond = model.bond_dims()[model.edges().index((u, v))]
        block = model.merge(u, v)
        # the block is the contraction of the two tensors over their bond
        tu, tv = model.node_tensor(u), model.node_tensor(v)
        ref = (tu @ tv).transpose(*block.inds).data
        assert torch.allclose(block.data, ref, atol=1e-14, rtol=0)
        left = [block.inds.index(ix) for ix in block.left_inds]
        rest = [i for i in range(len(block.inds)) if i not in left]
        mat = block.data.permute(*left, *rest)
        mat = mat.reshape(int(np.prod(mat.shape[: len(left)])), -1)
        # the rank of a product over a bond of dimension D of random tensors is min(D, rows, cols);
        # a relative cutoff of 1e-8 lies decades above the numerical zeros (worst case
        # rounding_bound(float64, 18 x 18 block) ~ 2e-12) and below every true singular value
        # (checked: the smallest kept one), so the split keeps exactly the rank on any machine
        rank = min(bond, *mat.shape)
        info = model.split(block, target=v, cutoff=1e-8)
        assert model.center == v
        kept = info.singular_values
        assert float(kept.min() / kept.max()) > 1e-6  # the margin that makes the kept dimension certain
        assert info.max_discarded < 1e-8 and info.discarded_weight < 1e-16
        assert model.bond_dims()[model.edges().index((u, v))] == info.bond_dim == rank
        assert torch.allclose(model.log_prob(x), exact, rtol=0, atol=tol(torch.float64, "gauge"))
        assert torch.allclose(_generic_log_prob(model, x), exact, rtol=0, atol=tol(torch.float64, "gauge"))
        if model.is_tree:
            # the target really is the orthogonality centre with Z = 1
            assert abs(float(BornMachine.log_norm(model))) < 1e-10
            assert abs(float(model.log_norm())) < 1e-10


def test_copy_is_exact_and_independent(geometry):
    model = make(geometry, n=6, bond_dim=3, seed=8)
    x = all_configs(6)
    new = model.copy()
    assert type(new) is type(model) and new.center == model.center
    assert torch.equal(new.log_prob(x), model.log_prob(x))
    before = snapshot(model)
    node = new.nodes()[1]
    t = new.node_tensor(node)
    t.modify(data=t.data * 2.5 + 1.0)
    assert_unchanged(model, before)


# --------------------------------------------------------------------------- #
# the split's truncation rule, directly
# --------------------------------------------------------------------------- #
def test_split_truncation_matches_svd():
    model = tnborn.MPSBornMachine.random(8, 16, seed=0)
    model.move_center(3)
    block = model.merge(3, 4)
    left = [block.inds.index(ix) for ix in block.left_inds]
    right = [i for i in range(len(block.inds)) if i not in left]
    mat = block.data.permute(*left, *right)
    mat = mat.reshape(int(np.prod(mat.shape[: len(left)])), -1)
    s = torch.linalg.svdvals(mat)
    assert s.shape[0] == 16
    for cutoff, max_bond, min_bond in [(0.0, None, 1), (0.3, None, 1), (0.3, 3, 1), (0.9, None, 5),
                                       (0.5, 2, 2), (0.999, None, 1)]:
        m = model.copy()
        info = m.split(m.merge(3, 4), cutoff=cutoff, max_bond=max_bond, min_bond=min_bond)
        keep = int((s >= cutoff * s[0]).sum())
        if max_bond is not None:
            keep = min(keep, max_bond)
        keep = max(keep, min_bond)
        assert info.bond_dim == keep == m.bond_dims()[3]
        want_disc = float(s[keep] / s[0]) if keep < 16 else 0.0
        assert abs(info.max_discarded - want_disc) < 1e-12
        assert abs(info.discarded_weight - float((s[keep:] ** 2).sum() / (s**2).sum())) < 1e-12
        assert torch.allclose(info.singular_values, s[:keep] / torch.linalg.vector_norm(s[:keep]), atol=1e-12)
        # the truncated state is the normalised best rank-`keep` approximation: Z = 1
        assert abs(float(BornMachine.log_norm(m))) < 1e-10
        # and its amplitudes are those of the truncated SVD (overlap = kept weight)
        psi_old = torch.as_tensor(model.tn.to_dense()).reshape(-1)
        psi_new = torch.as_tensor(m.tn.to_dense()).reshape(-1)
        overlap = float(psi_old @ psi_new)
        assert abs(overlap - math.sqrt(1 - info.discarded_weight)) < 1e-10


@pytest.mark.parametrize("name", ["mps", "tree", "network"])
@pytest.mark.parametrize("max_bond", [None, 3])
def test_eig_split_keeps_the_largest_singular_values(name, max_bond):
    """``svd_method="svd:eig"`` (the trainer's SVD fallback) truncates like the SVD.

    quimb's eig driver returns ascending values when called without a cutoff,
    as split calls it: the split must sort them, or it would keep the smallest
    (or find the block "zero" when the smallest is 0). A rank-deficient block
    (bond dimension 1 inside a bond-2 network) makes the smallest value 0.
    """
    model = make(name, n=6, bond_dim=2, seed=1)
    (u, v), *_ = model.sweep_schedule()[0]
    model.move_center(u)
    results = {}
    for method in ("svd", "svd:eig"):
        m = model.copy()
        info = m.split(m.merge(u, v), target=v, cutoff=1e-8, max_bond=max_bond, min_bond=1, method=method)
        results[method] = (info, m.log_prob(all_configs(6)))
    (svd, lp_svd), (eig, lp_eig) = results["svd"], results["svd:eig"]
    assert eig.bond_dim == svd.bond_dim
    assert torch.allclose(eig.singular_values, svd.singular_values, atol=1e-7)  # eig: sqrt(eps) accuracy
    assert float((lp_eig - lp_svd).abs().max()) < 1e-6


def test_split_rejects_a_foreign_target():
    model = tnborn.MPSBornMachine.random(5, 2, seed=0)
    block = model.merge(1, 2)
    before = snapshot(model)
    with pytest.raises(ConfigError, match="target"):
        model.split(block, target=4)
    assert_unchanged(model, before)


def test_truncation_rank_rules():
    s = torch.tensor([4.0, 2.0, 1.0, 1e-3, 0.0], dtype=torch.float64)
    assert truncation_rank(s, 0.0, None, 1)[0] == 4  # exact zeros dropped
    assert truncation_rank(s, 0.25, None, 1)[0] == 3  # s_i >= cutoff * s_0, on s (not s^2)
    assert truncation_rank(s, 0.2500001, None, 1)[0] == 2
    assert truncation_rank(s, 0.25, 2, 1)[0] == 2
    assert truncation_rank(s, 0.9, None, 3)[0] == 3
    assert truncation_rank(s, 0.9, None, 50)[0] == 5  # min_bond capped by the rank of the split
    keep, info = truncation_rank(s, 0.4, None, 1)
    assert keep == 2 and info.max_discarded == 0.25
    assert abs(info.discarded_weight - (1 + 1e-6) / (16 + 4 + 1 + 1e-6)) < 1e-15
    with pytest.raises(NumericalError):
        truncation_rank(torch.zeros(3, dtype=torch.float64), 0.1, None, 1)
    with pytest.raises(NumericalError):
        truncation_rank(torch.tensor([1.0, float("nan")]), 0.1, None, 1)


def _scaled(geometry: str, dtype: torch.dtype, factors) -> tuple[BornMachine, torch.Tensor]:
    """A 10-variable model with node ``k`` scaled by ``factors[k]`` (centre dropped), and the exact
    log P of every configuration (scale-invariant: from the unscaled float64 model)."""
    cls = tnborn.MPSBornMachine if geometry == "mps" else tnborn.TreeBornMachine
    exact_model = cls.random(10, 3, seed=4)
    exact = exact_log_probs(exact_model)
    model = exact_model.copy()
    for k, node in enumerate(model.nodes()):
        t = model.node_tensor(node)
        t.modify(data=(t.data * factors[k % len(factors)]).to(dtype))
    model.drop_center()
    return model, exact


def _scaled_bound(geometry: str, dtype: torch.dtype) -> torch.Tensor:
    """Per-configuration bound on log P of a :func:`_scaled` model: the unscaled model's in ``dtype``
    (the conditioning does not depend on the scale) with, as extra rounded steps, one QR sweep (a
    QR of an ``m x n`` node: ``m n`` steps) and two scalings of every entry (the factors, the
    rescaling to Z = 1)."""
    from contract import log_prob_bound

    reference, _ = _scaled(geometry, dtype, [1.0])
    entries = sum(reference.node_tensor(n).data.numel() for n in reference.nodes())
    return log_prob_bound(reference, extra_operations=entries + 2)


@pytest.mark.parametrize("geometry", ["mps", "tree"])
@pytest.mark.parametrize("dtype, factor", [(torch.float32, 1e6), (torch.float64, 1e-50)])
def test_canonical_form_of_a_state_whose_norm_leaves_the_dtype_range(geometry, dtype, factor):
    """sqrt(Z) = factor ** nodes beyond the range (float32: >= 1e48 > 3.4e38; float64: <= 1e-400,
    below the smallest subnormal): the QR moves alone would leave an infinite or zero centre. move_center, normalize,
    log P and sampling give the exact distribution (the rule acts: checked by the plain moves)."""
    model, exact = _scaled(geometry, dtype, [factor])
    plain = model.copy()
    centre = plain.nodes()[-1]
    plain._move_center(centre)  # the QR moves without the rule
    norm = float(torch.linalg.vector_norm(plain.node_tensor(centre).data.double()))
    assert not (math.isfinite(norm) and norm > 0)
    x = all_configs(10)
    bound = _scaled_bound(geometry, dtype)
    assert bool(((model.log_prob(x) - exact).abs() <= bound).all())  # log-scaled: fine before too
    samples, logp = model.sample(20000, seed=3)
    rows = config_index(samples)
    assert bool(((logp - exact[rows]).abs() <= bound[rows]).all())
    assert_samples_match(samples, torch.arange(2**10), exact)
    model.move_center(model.nodes()[2])
    assert all(bool(torch.isfinite(a).all()) for a in (model.node_tensor(n).data for n in model.nodes()))
    assert bool(((model.log_prob(x) - exact).abs() <= bound).all())
    model.drop_center()
    model.normalize()
    assert abs(float(model.log_norm())) <= float(bound.max())


def test_canonical_form_that_overflows_even_at_unit_norm_is_refused_and_changes_nothing():
    """Half the sites scaled by 1e100, half by 1e-100: Z is moderate, but the norm the QR moves carry
    from the left half (1e500) overflows whatever the overall scale. A clear error, the network unchanged."""
    model, exact = _scaled("mps", torch.float64, [1e100] * 5 + [1e-100] * 5)
    assert math.isfinite(float(model.log_norm()))
    before = snapshot(model)
    with pytest.raises(NumericalError, match="canonical form"):
        model.move_center(9)
    assert_unchanged(model, before)
    assert model.center is None
    # what needs no canonical form still works
    bound = _scaled_bound("mps", torch.float64)
    assert bool(((model.log_prob(all_configs(10)) - exact).abs() <= bound).all())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_truncate_spectrum_orders_then_applies_the_rule_with_one_read(dtype):
    """Ascending values (quimb's "svd:eig") are sorted stably, the rule is truncation_rank's, the
    kept values are normalised, and the values are read back to the host once."""
    from conftest import HostReads

    from tnborn.primitives import descending_order, truncate_spectrum

    s = torch.tensor([1e-3, 1.0, 2.0, 1.0, 4.0], dtype=dtype)  # a tie: stable order keeps 1 before 3
    with HostReads() as reads:
        order, keep, info = truncate_spectrum(s, 0.25, None, 1)
    assert len(reads.reads) == 1
    assert order.tolist() == [4, 2, 1, 3, 0] == descending_order(s).tolist()
    want_keep, want = truncation_rank(s[order], 0.25, None, 1)
    assert keep == want_keep == 4 and info.bond_dim == 4
    assert (info.max_discarded, info.discarded_weight) == (want.max_discarded, want.discarded_weight)
    kept = s[order][:4]
    assert torch.equal(info.singular_values, kept / torch.linalg.vector_norm(kept))
    # already descending: no order, the same values
    order, keep2, info2 = truncate_spectrum(s[order], 0.25, None, 1)
    assert order is None and keep2 == keep and torch.equal(info2.singular_values, info.singular_values)
    with pytest.raises(NumericalError, match="non-finite"):
        truncate_spectrum(torch.tensor([1.0, float("nan"), 2.0], dtype=dtype), 0.1, None, 1)
    with pytest.raises(NumericalError, match="zero"):
        truncate_spectrum(torch.zeros(3, dtype=dtype), 0.1, None, 1)


# --------------------------------------------------------------------------- #
# categorical draws
# --------------------------------------------------------------------------- #
def test_draw_categorical_distribution_and_log_prob():
    gen = torch.Generator().manual_seed(0)
    w = torch.tensor([[1.0, 2.0, 7.0, 0.0]], dtype=torch.float64).expand(20000, -1)
    active = torch.ones(20000, dtype=torch.bool)
    vals, logp = draw_categorical(w, active, gen)
    assert int(vals.max()) <= 2  # a zero-weight value is never drawn
    counts = np.bincount(vals.numpy(), minlength=4)
    p, _ = chi_square_pvalue(counts[:3], np.array([0.1, 0.2, 0.7]))
    assert p > 1e-3
    assert torch.allclose(logp, torch.log(torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64))[vals], atol=1e-15)


def test_draw_categorical_inactive_rows_and_zero_rows():
    gen = torch.Generator().manual_seed(0)
    w = torch.tensor([[0.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    vals, logp = draw_categorical(w, torch.tensor([False, True]), gen)
    assert int(vals[0]) == 0 and float(logp[0]) == 0.0
    with pytest.raises(NumericalError, match="probability zero"):
        draw_categorical(w, torch.tensor([True, True]), gen)


# --------------------------------------------------------------------------- #
# criterion 6: bad input -> a clear tnborn error, model unchanged
# --------------------------------------------------------------------------- #
BAD_CONFIGS = [
    (np.zeros((3, 5), dtype=np.int64), "6 columns"),  # wrong length
    (np.full((2, 6), 2), r"\{0, 1\}"),  # value outside {0, 1}
    (-np.ones((1, 6), dtype=np.int64), r"\{0, 1\}"),
    (np.array([[0, 1, np.nan, 0, 1, 0]]), "NaN"),
    (np.zeros((0, 6)), "at least one row"),
    (np.zeros(5, dtype=np.int64), "6 columns"),  # 1-D of the wrong size
    (np.zeros((2, 3, 6)), "2-D"),
    (np.array([["a"] * 6]), "numbers"),
    (np.full((1, 6), 0.5), "integers"),
    (torch.zeros((2, 7), dtype=torch.int64), "6 columns"),  # the int64 tensor fast path
    (torch.full((2, 6), 3, dtype=torch.int64), r"\{0, 1\}"),
    (torch.zeros((0, 6), dtype=torch.int64), "at least one row"),
]


@pytest.mark.parametrize("bad,message", BAD_CONFIGS)
@pytest.mark.parametrize("method", ["log_prob", "log_amplitude", "nll", "sample_conditional"])
def test_bad_configurations_raise_data_error(geometry, bad, message, method):
    model = make(geometry, n=6, bond_dim=2)
    before, center = snapshot(model), model.center
    with pytest.raises(DataError, match=message):
        if method == "sample_conditional":
            getattr(model, method)(bad, np.zeros(6, dtype=bool), seed=0)
        else:
            getattr(model, method)(bad)
    assert_unchanged(model, before)
    assert model.center == center


BAD_MASKS = [
    (np.zeros(5, dtype=bool), "6 entries"),
    (np.zeros((3, 6), dtype=bool), r"shape \(6,\) or \(2, 6\)"),
    (np.zeros((2, 7), dtype=bool), r"shape \(6,\) or \(2, 6\)"),
    (np.zeros((1, 2, 6), dtype=bool), "1-D or 2-D"),
    (np.full(6, 2), "boolean"),
]


@pytest.mark.parametrize("mask,message", BAD_MASKS)
def test_bad_masks_raise_data_error(geometry, mask, message):
    model = make(geometry, n=6, bond_dim=2)
    before = snapshot(model)
    x = np.zeros((2, 6), dtype=np.int64)
    with pytest.raises(DataError, match=message):
        model.sample_conditional(x, mask, seed=0)
    assert_unchanged(model, before)


def test_bad_sample_counts(geometry):
    model = make(geometry, n=6, bond_dim=2)
    with pytest.raises(ConfigError, match=">= 1"):
        model.sample(0)
    with pytest.raises(ConfigError, match=">= 1"):
        model.sample_conditional(np.zeros((1, 6)), np.ones(6, dtype=bool), num_samples=0)


def test_errors_are_tnborn_and_builtin():
    model = make("mps", n=6, bond_dim=2)
    with pytest.raises(TnbornError):
        model.log_prob(np.full((1, 6), 7))
    with pytest.raises(ValueError):  # DataError is also a ValueError
        model.log_prob(np.full((1, 6), 7))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: the error path is not reachable")
def test_cuda_when_absent_raises_device_error(geometry):
    model = make(geometry, n=6, bond_dim=2)
    before = snapshot(model)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        model.to(device="cuda")
    assert_unchanged(model, before)
    assert model.device.type == "cpu"
    cls = tnborn.get_geometry(geometry)
    with pytest.raises(DeviceError, match="CUDA"):
        cls.random(6, 2, seed=0, device="cuda")
    with pytest.raises(DeviceError, match="device must be"):
        model.to(device="tpu")
    with pytest.raises(DeviceError, match="dtype must be one of"):
        model.to(dtype="int32")
    assert_unchanged(model, before)


def test_complex_to_real_cast_refused():
    model = tnborn.MPSBornMachine.random(5, 2, seed=0, dtype="complex128")
    before = snapshot(model)
    with pytest.raises(ConfigError, match="phases"):
        model.to(dtype="float64")
    assert_unchanged(model, before)


def test_same_seed_same_samples(geometry):
    model = make(geometry, n=6, bond_dim=2, seed=1)
    a, la = model.sample(300, seed=42)
    b, lb = model.sample(300, seed=42)
    c, _ = model.sample(300, seed=43)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)
    gen1, gen2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(model.sample(50, generator=gen1)[0], model.sample(50, generator=gen2)[0])


def test_fit_uses_the_geometry_default_trainer():
    """``tnborn.training.fit`` trains a tree geometry by sweeps and a non-tree one by gradients."""
    import math

    import tnborn

    data = tnborn.bars_and_stripes(2, 2)
    mps = tnborn.MPSBornMachine.random(4, 2, seed=0)
    history = tnborn.training.fit(mps, data, loops=2, lr=0.1, cutoff=5e-5)
    assert "half_sweep" in history[-1]
    assert abs(mps.nll(data) - math.log(6)) < 1e-3
    peps = tnborn.get_geometry("peps").random(4, bond_dim=2, seed=0)
    history = tnborn.training.fit(peps, data, loops=5, lr=0.1)
    assert len(history) == 5 and peps.nll(data) < history[0]["train_nll"] + 1e-12


# --------------------------------------------------------------------------- #
# the model notices edits of its network; constructors check values
# --------------------------------------------------------------------------- #
def _total_probability(model):
    x = all_configs(model.num_variables)
    return float(torch.logsumexp(model.log_prob(x), 0).exp())


@pytest.mark.parametrize("name", ["mps", "tree"])
@pytest.mark.parametrize("edit", ["canonize", "multiply", "compress", "in_place"])
def test_editing_the_network_drops_a_stale_centre(name, edit):
    model = tnborn.get_geometry(name).random(8, bond_dim=4, seed=1)
    assert model.center is not None
    before = model.log_prob(all_configs(8))
    tn = model.tn
    if edit == "canonize":  # a gauge move elsewhere: the state is the same, the centre is not
        if name == "mps":
            tn.canonize(0)
        else:
            import quimb.tensor as qtn
            qtn.tensor_canonize_bond(model.node_tensor(model.root), model.node_tensor(model.neighbours(model.root)[0]),
                                     absorb="right", method="qr")
    elif edit == "multiply":
        tn.multiply_(2.0, spread_over="all")
    elif edit == "compress":  # changes the state, keeps it unnormalised
        if name == "mps":
            tn.compress(max_bond=2, cutoff=0.0, cutoff_mode="rel")
        else:
            t = model.node_tensor(0)
            t.modify(data=t.data * 0.5)
    else:
        model.node_tensor(model.nodes()[1]).data.mul_(3.0)
    assert model.center is None  # noticed before the centre was trusted
    assert abs(_total_probability(model) - 1.0) <= 1e-10
    if edit in ("canonize", "multiply"):
        assert torch.allclose(model.log_prob(all_configs(8)), before, atol=1e-10, rtol=0)
    model.move_center(model.nodes()[-1])
    assert model.center == model.nodes()[-1] and abs(_total_probability(model) - 1.0) <= 1e-10


def test_replacing_a_tensor_rederives_the_structure():
    model = tnborn.MPSBornMachine.random(5, bond_dim=2, seed=0)
    t = model.node_tensor(2)
    tags, inds, data = set(t.tags), t.inds, t.data.clone()
    model.tn.pop_tensor(model.tn._get_tids_from_tags(tags).pop())
    with pytest.raises(ConfigError, match="open but is not a physical index"):
        model.log_prob(all_configs(5))
    import quimb.tensor as qtn
    model.tn.add_tensor(qtn.Tensor(data * 2, inds=inds, tags=tags))
    assert model.center is None and model.node_tensor(2).data is not data
    assert abs(_total_probability(model) - 1.0) <= 1e-10


@pytest.mark.parametrize("bad, message", [
    (lambda a: a.fill_(float("nan")), "NaN or infinite"),
    (lambda a: a.zero_(), "all zero"),
    (lambda a: a.to(torch.int64), "floating or complex"),
])
@pytest.mark.parametrize("name", ["mps", "tree", "peps"])
def test_constructors_check_values(name, bad, message):
    model = tnborn.get_geometry(name).random(6, bond_dim=2, seed=0)
    arrays = [a.clone() for a in model.arrays()]
    arrays[1] = bad(arrays[1])
    with pytest.raises(ConfigError, match=message):
        type(model).from_arrays(arrays, model.config())


@pytest.mark.parametrize("name", ["mps", "tree", "peps"])
def test_constructors_accept_numpy_arrays(name):
    model = tnborn.get_geometry(name).random(6, bond_dim=2, seed=0)
    again = type(model).from_arrays([a.numpy() for a in model.arrays()], model.config())
    x = all_configs(6)
    # same arrays; the copy has no recorded centre, so its norm is contracted in
    # another order: agreement to exact-evaluation accuracy, not bit-for-bit
    torch.testing.assert_close(again.log_prob(x), model.log_prob(x), rtol=0, atol=tol(torch.float64, "exact"))
    with pytest.raises(ConfigError, match="floating or complex"):
        type(model).from_arrays([a.numpy().astype(np.int32) for a in model.arrays()], model.config())


@pytest.mark.parametrize("geometry", ["mps", "tree"])
def test_split_refuses_a_target_outside_the_block(geometry):
    """The fast path (MPS) and the generic split (tree) check the target the same way."""
    model = tnborn.get_geometry(geometry).random(6, bond_dim=2, seed=0)
    u, v = model.edges()[0]
    model.move_center(u)
    block = model.merge(u, v)
    other = next(n for n in model.nodes() if n not in (u, v))
    before = [a.clone() for a in model.arrays()]
    with pytest.raises(tnborn.ConfigError, match="is not one of the block's nodes"):
        model.split(block, target=other)
    assert all(torch.equal(a, b) for a, b in zip(model.arrays(), before))
