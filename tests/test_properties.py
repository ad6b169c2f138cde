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

from conftest import all_configs, config_index, dense_psi

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
    total = torch.logsumexp(model.log_prob(configs(model)).double(), dim=0)
    assert abs(float(total)) < 1e-10


@PROFILE
@given(st.data(), machines(("mps", "tree", "peps"), ("float64", "complex128")))
def test_log_prob_matches_enumeration(data, model):
    x = data.draw(data_for(model))
    want = exact_log_probs(model)[config_index(x, model.phys_dim)]
    got = model.log_prob(x)
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got))
    assert torch.allclose(got[finite].double(), want[finite], rtol=0, atol=1e-9)


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
    assert torch.allclose((torch.log(psi_env.abs()) + log_scale)[finite], log_abs[finite], atol=1e-9, rtol=0)
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
    for _ in range(3):
        node = model.nodes()[data.draw(st.integers(0, len(model.nodes()) - 1))]
        model.move_center(node)
        assert model.center == node
        assert abs(float(model.log_norm())) < 1e-10
        assert abs(float(BornMachine.log_norm(model))) < 1e-10
        assert torch.allclose(model.log_prob(x), before, rtol=0, atol=1e-9)


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
    block = model.merge(u, v)
    info = model.split(block, target=v, cutoff=cutoff, max_bond=max_bond, min_bond=min_bond)
    psi2 = dense_psi(model).double()
    assert model.center == v
    assert abs(float(torch.linalg.vector_norm(psi2)) - 1.0) < 1e-12
    overlap = float(psi @ psi2)
    assert abs((1.0 - overlap**2) - info.discarded_weight) < 1e-10
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
    assert torch.equal(loaded.log_prob(x), model.log_prob(x))
    for a, b in zip(loaded.arrays(), model.arrays()):
        assert torch.equal(a, b)
