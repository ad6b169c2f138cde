"""Property-based tests (hypothesis) over random small geometries, bond dimensions and data.

Every property is checked against an independent exact reference: the dense
``d^N`` amplitudes from quimb's full contraction of ``model.tn`` (or plain
``torch.einsum``), and torch autograd.

- normalisation: ``sum_x P(x) = 1`` (MPS, tree, PEPS; real and complex);
- ``log_prob`` equals the enumerated ``log |psi(x)|^2 / Z``;
- the trainer's closed-form two-site gradient step equals an autograd step on
  the enumerated NLL, and the environments reproduce ``psi(x)``;
- moving the canonical centre keeps every probability and ``Z = 1``;
- merge then truncated split: ``1 - |<psi|psi'>|^2`` equals the reported
  discarded weight (and the bond respects ``min_bond``/``max_bond``);
- checkpoints round-trip to the bit, centre included.

The profile is deterministic (``derandomize=True``, no example database) and
small, so the file runs in well under a minute.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tnborn
from tnborn.environments import EnvironmentCache
from tnborn.interface import BornMachine
from tnborn.training.sweep import _design, block_gradient_steps

from conftest import all_configs, amplitude_condition, config_index, dense_psi, norm_condition, norm_operations
from contract import _node_sizes, _operations, log_prob_bound
from tolerances import rounding_bound

PROFILE = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow])


@st.composite
def machines(draw, geometries=("mps", "tree"), dtypes=("float64",), max_states=729):
    """A random small machine: geometry, N, d, bond dimension, seed, dtype."""
    geometry = draw(st.sampled_from(geometries))
    d = 2 if geometry == "peps" else draw(st.sampled_from([2, 2, 3]))
    max_n = max(k for k in range(2, 9) if d**k <= max_states)
    n = draw(st.integers(2, min(max_n, 6 if geometry == "peps" else 8)))
    bond = draw(st.integers(1, 4 if geometry != "peps" else 2))
    seed = draw(st.integers(0, 2**16))
    dtype = draw(st.sampled_from(dtypes))
    cls = tnborn.get_geometry(geometry)
    kwargs = {"layout": draw(st.sampled_from(["binary", "auto"]))} if geometry == "tree" else {}
    return cls.random(n, bond_dim=bond, phys_dim=d, seed=seed, dtype=dtype, **kwargs)


def configs(model) -> torch.Tensor:
    return all_configs(model.num_variables, model.phys_dim)


def exact_log_probs(model) -> torch.Tensor:
    psi = dense_psi(model).to(torch.complex128 if model.dtype.is_complex else torch.float64)
    w = psi.abs() ** 2
    return torch.log(w) - torch.log(w.sum())


@st.composite
def data_for(draw, model, max_rows=9):
    rows = draw(st.integers(1, max_rows))
    values = draw(st.lists(st.lists(st.integers(0, model.phys_dim - 1), min_size=model.num_variables,
                                    max_size=model.num_variables), min_size=rows, max_size=rows))
    return torch.tensor(values, dtype=torch.int64)


# --------------------------------------------------------------------------- #
@PROFILE
@given(machines(("mps", "tree", "peps"), ("float64", "complex128")))
def test_probabilities_sum_to_one(model):
    x = configs(model)
    total = torch.logsumexp(model.log_prob(x).double(), dim=0)
    # as contract.check_normalisation: the P-weighted own log P bound plus a d^N-term sum
    eps = float((torch.exp(exact_log_probs(model)) * log_prob_bound(model, reference=False)).sum())
    assert abs(float(total)) <= eps + rounding_bound(torch.float64, x.shape[0])


@PROFILE
@given(st.data(), machines(("mps", "tree", "peps"), ("float64", "complex128")))
def test_log_prob_matches_enumeration(data, model):
    x = data.draw(data_for(model))
    rows = config_index(x, model.phys_dim)
    want = exact_log_probs(model)[rows]
    got = model.log_prob(x)
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got))
    bound = log_prob_bound(model)[rows]  # per-configuration conditioning (contract.py)
    assert bool(((got[finite].double() - want[finite]).abs() <= bound[finite]).all())


# --------------------------------------------------------------------------- #
def _letters(inds):
    table = {}
    for ix in inds:
        table.setdefault(ix, chr(ord("a") + len(table)) if len(table) < 26 else chr(ord("A") + len(table) - 26))
    return table


def _dense_psi_with_block(model, block, a: torch.Tensor) -> torch.Tensor:
    """Every amplitude of the network with ``a`` in place of the block's two nodes (plain einsum)."""
    tensors = [(model.node_tensor(n).data, model.node_tensor(n).inds) for n in model.nodes() if n not in block.nodes]
    tensors.append((a, block.inds))
    out = [model.variable_index(v) for v in range(model.num_variables)]
    table = _letters([ix for _, inds in tensors for ix in inds])
    eq = ",".join("".join(table[ix] for ix in inds) for _, inds in tensors) + "->" + "".join(table[ix] for ix in out)
    return torch.einsum(eq, *[t for t, _ in tensors]).reshape(-1)


@PROFILE
@given(st.data(), machines(("mps", "tree")), st.floats(1e-3, 0.2))
def test_closed_form_step_equals_autograd_step(data, model, lr):
    x = data.draw(data_for(model))
    edges = [e for half in model.sweep_schedule() for e in half]
    source, target = edges[data.draw(st.integers(0, len(edges) - 1))]
    model.move_center(source)
    # log |psi(x)| by two tnborn paths (environments of the merged block, log_amplitude):
    # gamma kappa(x) each, the merge summing one more bond
    own, _ = _operations(model)
    env_bound = rounding_bound(model.dtype, 2 * own + 2 * max(model.bond_dims())) * amplitude_condition(model)
    env_bound = env_bound[config_index(x, model.phys_dim)]
    block = model.merge(source, target)
    cache = EnvironmentCache(model, x)
    envs = cache.block_environments(block)
    feats, last, order = _design(block, envs, x, None, model.phys_dim)
    perm = [block.inds.index(ix) for ix in order]
    mat = block.data.permute(*perm).reshape(feats.shape[1], -1)
    # the environments reproduce psi(x), up to their log-scales
    psi_env = ((feats @ mat) * last).sum(dim=1)
    log_scale = sum(log for _, log in envs.values()) if envs else torch.zeros(x.shape[0], dtype=torch.float64)
    log_abs, _ = model.log_amplitude(x)
    finite = torch.isfinite(log_abs)
    err = ((torch.log(psi_env.abs()) + log_scale) - log_abs).abs()
    assert bool((err[finite] <= env_bound[finite]).all())
    if not bool(finite.all()):
        return
    # autograd of the enumerated NLL as a function of the block
    a = block.data.detach().clone().requires_grad_(True)
    psi = _dense_psi_with_block(model, block, a)
    nll = torch.log((psi**2).sum()) - (2.0 / x.shape[0]) * torch.log(psi[config_index(x, model.phys_dim)].abs()).sum()
    (grad,) = torch.autograd.grad(nll, a)
    want = mat - lr * grad.permute(*perm).reshape(mat.shape)
    want = want / torch.linalg.vector_norm(want)
    got = block_gradient_steps(mat, feats, last, [slice(None)], lr)
    assert torch.allclose(got, want, rtol=0, atol=1e-8 * max(1.0, float(grad.abs().max())))


# --------------------------------------------------------------------------- #
@PROFILE
@given(st.data(), machines(("mps", "tree")))
def test_centre_moves_preserve_the_state(data, model):
    x = configs(model)
    before = model.log_prob(x)
    for k in range(3):
        node = model.nodes()[data.draw(st.integers(0, len(model.nodes()) - 1))]
        model.move_center(node)
        assert model.center == node
        # at most every node QR'd per move so far (backward stable, as contract.check_move_center);
        # log Z of the normalised canonical state: the doubled network at Z_abs / Z
        moves = (k + 1) * len(model.nodes()) * _node_sizes(model)
        eps_z = rounding_bound(model.dtype, norm_operations(model) + moves) * norm_condition(model)
        assert abs(float(model.log_norm())) <= eps_z
        assert abs(float(BornMachine.log_norm(model))) <= eps_z
        # two own evaluations, the moves amplified by the conditioning
        eps = 2 * log_prob_bound(model, moves, reference=False)
        assert bool(((model.log_prob(x) - before).abs() <= eps).all())


@PROFILE
@given(st.data(), machines(("mps", "tree")), st.sampled_from([0.0, 1e-3, 0.05, 0.3]),
       st.sampled_from([None, 1, 2, 3]), st.integers(1, 3))
def test_merge_split_round_trip_within_the_discarded_weight(data, model, cutoff, max_bond, min_bond):
    if max_bond is not None and max_bond < min_bond:
        max_bond = min_bond
    edges = [e for half in model.sweep_schedule() for e in half]
    u, v = edges[data.draw(st.integers(0, len(edges) - 1))]
    model.move_center(u)
    psi = dense_psi(model).double()
    # the move, merge and split: backward-stable changes of the nodes (as contract.py)
    steps = (len(model.nodes()) + 2) * _node_sizes(model)
    ref_ops = _operations(model)[1]
    abs_before = amplitude_condition(model) * psi.abs()  # the network of |entries|
    block = model.merge(u, v)
    svd_ops = block.data.numel()
    info = model.split(block, target=v, cutoff=cutoff, max_bond=max_bond, min_bond=min_bond)
    psi2 = dense_psi(model).double()
    assert model.center == v
    # ||psi2||: the dense amplitudes' rounding (gamma ||psi_abs|| = gamma sqrt(Z_abs / Z)) and the split
    norm_eps = rounding_bound(torch.float64, ref_ops + steps + svd_ops) * math.sqrt(norm_condition(model))
    assert abs(float(torch.linalg.vector_norm(psi2)) - 1.0) <= norm_eps
    overlap = float(psi @ psi2)
    # each amplitude errs by gamma psi_abs: the 2^N-term dot product, squared (factor 2), and
    # the SVD's backward error and the discarded weight's sum of squares
    abs_after = amplitude_condition(model) * psi2.abs()
    dv = rounding_bound(torch.float64, ref_ops) * float((abs_before * psi2.abs()).sum() + (psi.abs() * abs_after).sum())
    dv += rounding_bound(torch.float64, psi.numel())
    assert abs((1.0 - overlap**2) - info.discarded_weight) <= 2 * dv + rounding_bound(torch.float64, svd_ops + steps)
    kept = info.singular_values
    assert info.bond_dim == kept.shape[0]
    if max_bond is not None:
        assert info.bond_dim <= max_bond
    rows = math.prod(block.data.shape[block.inds.index(ix)] for ix in block.left_inds)
    assert info.bond_dim >= min(min_bond, rows, block.data.numel() // rows)


@PROFILE
@given(machines(("mps", "tree", "peps"), ("float64", "float32", "complex128")), st.booleans())
def test_checkpoint_round_trip(model, move):
    if move and model.is_tree:
        model.move_center(model.nodes()[len(model.nodes()) // 2])
    with tempfile.TemporaryDirectory() as folder:
        loaded = tnborn.load(tnborn.save(Path(folder) / "m.tnb", model))
    assert type(loaded) is type(model) and loaded.center == model.center and loaded.dtype == model.dtype
    assert loaded.bond_dims() == model.bond_dims()
    x = configs(model)
    # exact equality is sound here: the arrays are bit-identical (asserted below) in the same
    # index order, so both evaluations run the same deterministic code path on the same inputs
    assert torch.equal(loaded.log_prob(x), model.log_prob(x))
    for a, b in zip(loaded.arrays(), model.arrays()):
        assert torch.equal(a, b)
