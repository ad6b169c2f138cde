"""Per-sample environments (messages) of tree Born machines against brute force.

For an MPS the message ``k-1 -> k`` of configuration ``v`` is the row vector
``A_0[v_0] ... A_{k-1}[v_{k-1}]`` and the message ``k+1 -> k`` the column
vector ``A_{k+1}[v_{k+1}] ... A_{N-1}[v_{N-1}]``; both are computed here by
plain matrix products from the quimb tensors (looked up by index name) and
compared with ``mantissa * exp(log_scale)`` of the cache.
"""

from __future__ import annotations

import math

import pytest
import torch

from tnborn import MPSBornMachine
from tnborn.environments import EnvironmentCache, node_message
from tnborn.interface import BornMachine

from conftest import all_configs, chain_log_prob_bound, config_index, dense_psi
from tolerances import rounding_bound, tol


def _lpr(model, k):
    """Site k as (D_l, d, D_r), from the quimb tensor by index names (independent of tnborn's MPS code)."""
    t = model.node_tensor(k)
    n = model.num_variables
    names = []
    if k > 0:
        names.append(model.bond_index(k - 1, k))
    names.append(model.variable_index(k))
    if k < n - 1:
        names.append(model.bond_index(k, k + 1))
    a = t.transpose(*names).data
    if k == 0:
        a = a.unsqueeze(0)
    if k == n - 1:
        a = a.unsqueeze(-1)
    return a


def _left_vectors(model, x, k):
    """(B, D_{k-1}) products A_0[x_0] ... A_{k-1}[x_{k-1}]."""
    b = x.shape[0]
    m = torch.ones((b, 1), dtype=model.dtype)
    for s in range(k):
        a = _lpr(model, s)
        m = torch.einsum("bi,bij->bj", m, a[:, x[:, s], :].permute(1, 0, 2))
    return m


def _right_vectors(model, x, k):
    """(B, D_k) products A_{k+1}[x_{k+1}] ... A_{N-1}[x_{N-1}]."""
    n = model.num_variables
    b = x.shape[0]
    m = torch.ones((b, 1), dtype=model.dtype)
    for s in range(n - 1, k, -1):
        a = _lpr(model, s)
        m = torch.einsum("bij,bj->bi", a[:, x[:, s], :].permute(1, 0, 2), m)
    return m


def _value(msg):
    vec, log = msg
    return vec * torch.exp(log)[:, None]


def _absolute(model):
    """The model with every entry replaced by its absolute value (no cancellation in its products)."""
    out = model.copy()
    for node in out.nodes():
        t = out.node_tensor(node)
        t.modify(data=t.data.abs())
    return out


def _product_bound(model, magnitude):
    """Elementwise bound on two computations of a product along the chain (any summation order):
    each is within rounding_bound(N * D) of the same product of absolute values, ``magnitude``."""
    ops = model.num_variables * max(model.bond_dims())
    return 2 * rounding_bound(model.dtype, ops) * magnitude


def _close(got, want, bound) -> bool:
    return bool(((got - want).abs() <= bound).all())


@pytest.fixture
def setup():
    n = 8
    model = MPSBornMachine.random(n, 4, seed=2)
    model.move_center(3)
    x = torch.randint(0, 2, (40, n), generator=torch.Generator().manual_seed(0))
    return model, x


def test_messages_match_brute_force(setup):
    model, x = setup
    n = model.num_variables
    cache = EnvironmentCache(model, x)
    absolute = _absolute(model)
    for k in range(1, n):
        msg = cache.message(k - 1, k)
        want = _left_vectors(model, x, k)
        assert msg[0].shape == want.shape
        # signed sums can cancel: bounded elementwise by the same products of absolute values
        assert _close(_value(msg), want, _product_bound(model, _left_vectors(absolute, x, k)))
        # stored with unit max-norm per row
        assert torch.allclose(msg[0].abs().amax(dim=1), torch.ones(x.shape[0], dtype=torch.float64))
    for k in range(n - 1):
        msg = cache.message(k + 1, k)
        want = _right_vectors(model, x, k)
        assert _close(_value(msg), want, _product_bound(model, _right_vectors(absolute, x, k)))
    assert len(cache) == 2 * (n - 1)
    assert cache.nbytes() > 0


def test_amplitudes_at_every_node_match_dense(setup):
    model, x = setup
    psi = dense_psi(model)[config_index(x)]
    magnitude = dense_psi(_absolute(model))[config_index(x)]
    bound = chain_log_prob_bound(model)[config_index(x)]
    cache = EnvironmentCache(model, x)
    for node in model.nodes():
        mant, log = cache.log_amplitudes_at(node)
        assert mant.shape == (x.shape[0], 1)
        # log |psi| to the amplitude's conditioning (conftest.chain_log_prob_bound bounds twice it)
        assert bool(((torch.log(mant[:, 0].abs()) + log - torch.log(psi.abs())).abs() <= bound).all())
        # the sign is determined only where |psi| exceeds its rounding bound (no near-cancellation)
        sure = psi.abs() > _product_bound(model, magnitude)
        assert sure.any()
        assert torch.equal(torch.sign(mant[:, 0])[sure], torch.sign(psi)[sure])


def test_block_environments(setup):
    model, x = setup
    cache = EnvironmentCache(model, x)
    absolute = _absolute(model)
    psi = dense_psi(model)[config_index(x)]
    psi_bound = _product_bound(model, dense_psi(absolute)[config_index(x)])
    for u, v in [(3, 4), (4, 3), (0, 1), (7, 6)]:
        block = model.merge(u, v)
        envs = cache.block_environments(block)
        assert set(envs) == set(block.virtual)
        for ix, (outside, inside) in block.virtual.items():
            vectors = _left_vectors if outside < inside else _right_vectors
            want = vectors(model, x, inside)
            assert _close(_value(envs[ix]), want, _product_bound(model, vectors(absolute, x, inside)))
        # psi from the environments and the block equals the dense amplitude
        phys = {ix: x[:, var] for ix, var in block.physical.items()}
        mant, log = node_message(block.data, block.inds, envs, phys, None, model.phys_dim)
        assert _close(mant[:, 0] * torch.exp(log), psi, psi_bound)


def _expected_after_invalidate(n, k):
    """Messages of a chain that do not depend on site k."""
    # s -> s+1 carries sites 0..s, s+1 -> s carries sites s+1..N-1
    keep = {(s, s + 1) for s in range(n - 1) if s < k}
    keep |= {(s + 1, s) for s in range(n - 1) if s + 1 > k}
    return keep


@pytest.mark.parametrize("k", [0, 3, 7])
def test_invalidation_drops_exactly_the_dependent_messages(setup, k):
    model, x = setup
    n = model.num_variables
    cache = EnvironmentCache(model, x)
    for node in model.nodes():
        cache.log_amplitudes_at(node)
    assert len(cache) == 2 * (n - 1)
    # change site k's tensor (not a gauge move: the state changes)
    t = model.node_tensor(k)
    gen = torch.Generator().manual_seed(k)
    t.modify(data=torch.randn(t.data.shape, generator=gen, dtype=t.data.dtype))
    stale = [cache.log_amplitudes_at(node) for node in model.nodes()]
    cache.invalidate(k)
    assert set(cache._messages) == _expected_after_invalidate(n, k)
    fresh = EnvironmentCache(model, x)
    psi = dense_psi(model)[config_index(x)]
    psi_bound = _product_bound(model, dense_psi(_absolute(model))[config_index(x)])
    changed = False
    for node, old in zip(model.nodes(), stale):
        m1, l1 = cache.log_amplitudes_at(node)
        m2, l2 = fresh.log_amplitudes_at(node)
        assert torch.allclose(m1, m2, atol=1e-14, rtol=0) and torch.allclose(l1, l2, atol=1e-12, rtol=0)
        assert _close(m1[:, 0] * torch.exp(l1), psi, psi_bound)
        changed |= not _close(old[0][:, 0] * torch.exp(old[1]), psi, psi_bound)
    # without the invalidation the cache would have been wrong: the check has teeth
    assert changed


def test_invalidation_after_a_sweep_step(setup):
    """merge/split on a bond, invalidate both nodes: the cache equals a fresh one."""
    model, x = setup
    cache = EnvironmentCache(model, x)
    for node in model.nodes():
        cache.log_amplitudes_at(node)
    block = model.merge(3, 4)
    new = block.data + 0.3 * torch.randn(block.data.shape, generator=torch.Generator().manual_seed(1), dtype=block.data.dtype)
    model.split(block, new / torch.linalg.vector_norm(new), target=4, cutoff=0.1)
    cache.invalidate(3)
    cache.invalidate(4)
    fresh = EnvironmentCache(model, x)
    psi = dense_psi(model)[config_index(x)]
    psi_bound = _product_bound(model, dense_psi(_absolute(model))[config_index(x)])
    for node in model.nodes():
        m1, l1 = cache.log_amplitudes_at(node)
        m2, l2 = fresh.log_amplitudes_at(node)
        assert _close(m1 * torch.exp(l1)[:, None], m2 * torch.exp(l2)[:, None], psi_bound[:, None])
        assert _close(m1[:, 0] * torch.exp(l1), psi, psi_bound)


def test_geometry_kernel_equals_generic_kernel(setup):
    """If the geometry supplies a faster message kernel, it must agree with node_message."""
    model, x = setup
    fast = EnvironmentCache(model, x)
    generic = EnvironmentCache(model, x)
    generic._kernel = node_message
    absolute = _absolute(model)
    for k in range(1, model.num_variables):
        for a, b, mag in ((fast.message(k - 1, k), generic.message(k - 1, k), _left_vectors(absolute, x, k)),
                          (fast.message(k, k - 1), generic.message(k, k - 1), _right_vectors(absolute, x, k - 1))):
            assert _close(_value(a), _value(b), _product_bound(model, mag))


def test_long_chain_log_scales_do_not_underflow():
    """N = 300: psi ~ e^-100, below what a bare product could hold after squaring."""
    n = 300
    model = MPSBornMachine.random(n, 4, seed=1)
    x = torch.randint(0, 2, (6, n), generator=torch.Generator().manual_seed(2))
    cache = EnvironmentCache(model, x)
    mant, log = cache.log_amplitudes_at(150)
    log_abs = torch.log(mant[:, 0].abs()) + log
    fast, _ = model.log_amplitude(x)
    generic, _ = BornMachine._log_amplitude_contract(model, x)
    assert (log_abs < -60).all() and torch.isfinite(log_abs).all()
    # log |psi| carries rounding_bound(N * D) times the conditioning kappa = |A|-product / |psi|
    # per computation (the product of absolute values has no cancellation: its own log is accurate)
    log_kappa = _absolute(model).log_amplitude(x)[0] - log_abs
    bound = 2 * rounding_bound(model.dtype, n * max(model.bond_dims())) * torch.exp(log_kappa)
    assert bool(((log_abs - fast).abs() <= bound).all())
    assert bool(((log_abs - generic).abs() <= bound).all())
    # the left message into the last site is still finite and normalised
    vec, lg = cache.message(n - 2, n - 1)
    assert torch.isfinite(vec).all() and torch.isfinite(lg).all()


def test_zero_amplitude_gives_minus_infinity():
    model = MPSBornMachine.random(5, 2, seed=0)
    t = model.node_tensor(2)
    data = t.data.clone()
    data.select(t.inds.index(model.variable_index(2)), 1).zero_()
    t.modify(data=data)
    x = all_configs(5)
    cache = EnvironmentCache(model, x)
    mant, log = cache.log_amplitudes_at(0)
    log_abs = torch.log(mant[:, 0].abs()) + log
    assert torch.isneginf(log_abs[x[:, 2] == 1]).all()
    assert torch.isfinite(log_abs[x[:, 2] == 0]).all()


def test_clear_forgets_everything(setup):
    model, x = setup
    cache = EnvironmentCache(model, x)
    cache.log_amplitudes_at(0)
    assert len(cache) == model.num_variables - 1
    cache.clear()
    assert len(cache) == 0 and cache.nbytes() == 0
    assert math.isfinite(float(cache.log_amplitudes_at(2)[1][0]))


@pytest.mark.parametrize("edit", ["in place", "replaced", "none"])
def test_forget_changed_drops_exactly_the_messages_of_edited_tensors(setup, edit):
    """Messages survive between fits unless a tensor they depend on changed, however it changed."""
    model, x = setup
    cache = EnvironmentCache(model, x)
    cache.log_amplitudes_at(0)  # every message towards node 0: (7 -> 6), ..., (1 -> 0)
    cache.mark_tensors()
    t = model.node_tensor(4)
    if edit == "in place":
        t.data.mul_(2.0)  # torch's version counter notices
    elif edit == "replaced":
        t.modify(data=t.data * 2.0)
    changed = cache.forget_changed()
    kept = set(cache._messages)
    if edit == "none":
        assert changed == 0 and len(kept) == model.num_variables - 1
    else:  # the messages out of 7, 6 and 5 do not depend on node 4; those out of 4 .. 1 do
        assert changed == 1 and kept == {(7, 6), (6, 5), (5, 4)}
    # whatever was kept, the amplitudes are those of the edited model
    mant, log = cache.log_amplitudes_at(0)
    fresh, flog = EnvironmentCache(model, x).log_amplitudes_at(0)
    assert torch.equal(mant, fresh) and torch.equal(log, flog)
    # marks are used up: without new ones, everything is forgotten
    assert cache.forget_changed() == model.num_variables and len(cache) == 0
