"""Exactness of the MPS Born machine against brute-force enumeration of all 2^N states.

Every probability test compares three independent routes to ``log P(x)``:

* the dense reference (quimb contracts ``model.tn`` to a ``2^N`` vector,
  then ``|psi|^2 / sum |psi|^2``; see ``conftest.exact_log_probs``);
* the MPS fast path (:meth:`MPSBornMachine.log_prob`: rescaled left-to-right
  products and ``log Z`` from the canonical centre);
* the generic path of the base class (:meth:`BornMachine._log_amplitude_contract`
  and :meth:`BornMachine.log_norm`, the log-scaled contraction of the network).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tnborn
from tnborn import MPSBornMachine
from tnborn.interface import BornMachine

from conftest import all_configs, chain_log_prob_bound, dense_psi, exact_log_probs, record_cutoff_margins, shared_file
from tolerances import rounding_bound, tol

# (N, bond_dim); bond_dim None = the exact maximum 2^floor(N/2)
SIZES = [(n, d) for n in (2, 5, 8, 12) for d in (1, 2, 3, 5, None)]


def _exact_max(n: int) -> int:
    return 2 ** (n // 2)


def _model(n: int, d: int | None, seed: int = 0, dtype: str = "float64") -> MPSBornMachine:
    return MPSBornMachine.random(n, _exact_max(n) if d is None else d, seed=seed, dtype=dtype)


def _generic_log_prob(model: BornMachine, x: torch.Tensor) -> torch.Tensor:
    """log P through the base-class (geometry-agnostic) contraction code only."""
    log_abs, _ = BornMachine._log_amplitude_contract(model, x)
    return 2.0 * log_abs - BornMachine.log_norm(model)


# --------------------------------------------------------------------------- #
# criterion 1: log_prob equals brute force, probabilities sum to one
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n,d", SIZES)
def test_log_prob_matches_brute_force(n, d, chain_kernels):
    model = _model(n, d, seed=n * 10 + (d or 0))
    x = all_configs(n)
    exact = exact_log_probs(model)
    fast = model.log_prob(x)
    generic = _generic_log_prob(model, x)
    # per configuration, from the conditioning of its amplitude: a near-cancellation (P ~ e^-31,
    # kappa ~ 7e6 at N=12, D=5) loses digits on any machine, by an amount that depends on the
    # summation order; a fixed 1e-10 was met there with a factor 2 to spare on one CPU only
    eps = chain_log_prob_bound(model)
    assert fast.dtype == torch.float64 and fast.shape == (2**n,)
    assert bool(((fast - exact).abs() <= eps).all()), float(((fast - exact).abs() / eps).max())
    assert bool(((generic - exact).abs() <= eps).all()), float(((generic - exact).abs() / eps).max())
    # normalisation of the fast path on its own (not relative to the reference)
    assert abs(float(torch.logsumexp(fast, dim=0))) < tol(torch.float64, "norm")
    assert abs(float(torch.logsumexp(generic, dim=0))) < tol(torch.float64, "norm")


def test_bond_dims_as_requested():
    """The exact-maximum case really has the maximal bond profile (so SIZES covers it)."""
    model = _model(8, None)
    assert model.bond_dims() == [2, 4, 8, 16, 8, 4, 2]
    assert _model(8, 3).bond_dims() == [2, 3, 3, 3, 3, 3, 2]
    assert _model(8, 1).bond_dims() == [1] * 7


def test_log_amplitude_sign_and_magnitude(chain_kernels):
    """log|psi| and the sign agree with the dense amplitudes themselves (not only |psi|^2)."""
    model = _model(7, 4, seed=3)
    psi = dense_psi(model)
    x = all_configs(7)
    log_abs, phase = model.log_amplitude(x)
    assert torch.allclose(log_abs, torch.log(psi.abs()), atol=1e-10, rtol=0)
    assert torch.equal(phase, torch.sign(psi))
    log_abs_g, phase_g = BornMachine._log_amplitude_contract(model, x)
    assert torch.allclose(log_abs_g, torch.log(psi.abs()), atol=1e-10, rtol=0)
    assert torch.equal(phase_g, torch.sign(psi))


@pytest.mark.parametrize("n,d", [(8, 3), (10, 5), (12, None)])
def test_invariant_under_moving_the_center(n, d):
    model = _model(n, d, seed=5)
    x = all_configs(n)
    exact = exact_log_probs(model)
    eps = tol(torch.float64, "gauge")
    # per configuration: the table's value, or more where the amplitude is ill-conditioned
    # (a near-cancellation, kappa ~ 1e7 at N=12); a centre move adds a QR of each site
    # (d D_l D_r rounded steps at most per entry) to the chain's own rounding
    qr_ops = sum(model.phys_dim * a * b for a, b in zip([1] + model.bond_dims(), model.bond_dims() + [1]))
    eps_x = chain_log_prob_bound(model, extra_operations=qr_ops).clamp_min(eps)
    for k in (0, 1, n // 2, n - 2, n - 1, 2):
        model.move_center(k)
        assert model.center == k
        assert bool(((model.log_prob(x) - exact).abs() <= eps_x).all())
        # the centre is really canonical: log Z from the centre equals the full contraction
        assert abs(float(model.log_norm() - BornMachine.log_norm(model))) < eps
    # forget the centre: log_norm by transfer matrices (MPS) and by the generic contraction
    model.drop_center()
    assert bool(((model.log_prob(x) - exact).abs() <= eps_x).all())
    assert bool(((_generic_log_prob(model, x) - exact).abs() <= eps_x).all())


@pytest.mark.parametrize("where", ["center", "other"])
def test_non_normalised_state_gives_normalised_probabilities(where):
    n = 9
    model = _model(n, 4, seed=11)
    model.move_center(3)
    site = 3 if where == "center" else 6
    t = model.node_tensor(site)
    t.modify(data=t.data * 3.7)
    if where == "other":
        # the state is no longer canonical around 3: say so
        model.drop_center()
    x = all_configs(n)
    exact = exact_log_probs(model)
    eps = tol(torch.float64)
    if where == "center":
        assert abs(float(model.log_norm()) - 2 * math.log(3.7)) < eps
    for lp in (model.log_prob(x), _generic_log_prob(model, x)):
        assert torch.allclose(lp, exact, rtol=0, atol=eps)
        assert abs(float(torch.logsumexp(lp, dim=0))) < tol(torch.float64, "norm")
    # bringing it back to canonical form keeps everything
    model.move_center(1)
    assert torch.allclose(model.log_prob(x), exact, rtol=0, atol=eps)


def test_unnormalised_non_canonical_arrays(chain_kernels):
    """A chain built from raw random arrays (no canonical form, Z far from 1)."""
    gen = torch.Generator().manual_seed(7)
    dims = [1, 2, 3, 3, 2, 1]
    arrays = [3.0 * torch.randn(dims[k], 2, dims[k + 1], generator=gen, dtype=torch.float64) for k in range(5)]
    model = MPSBornMachine(arrays)
    assert model.center is None
    x = all_configs(5)
    exact = exact_log_probs(model)
    assert torch.allclose(model.log_prob(x), exact, rtol=0, atol=1e-10)
    assert torch.allclose(_generic_log_prob(model, x), exact, rtol=0, atol=1e-10)
    # the construction order (D_l, d, D_r) is honoured: compare with a direct product
    psi = dense_psi(model)
    for row in (0, 7, 19, 31):
        v = all_configs(5)[row]
        m = arrays[0][:, v[0], :]
        for k in range(1, 5):
            m = m @ arrays[k][:, v[k], :]
        assert abs(float(m.reshape(())) - float(psi[row])) < 1e-12 * max(1.0, abs(float(psi[row])))


def test_complex_state():
    model = MPSBornMachine.random(6, 3, seed=2, dtype="complex128")
    x = all_configs(6)
    exact = exact_log_probs(model)
    assert torch.allclose(model.log_prob(x), exact, rtol=0, atol=1e-10)
    assert torch.allclose(_generic_log_prob(model, x), exact, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_tolerance_table(dtype):
    """Each dtype meets its row of the shared tolerance table against the float64 reference."""
    ref = _model(10, 6, seed=4)
    model = ref.copy().to(dtype=dtype)
    assert model.dtype == getattr(torch, dtype)
    x = all_configs(10)
    lp = model.log_prob(x)
    assert lp.dtype == getattr(torch, dtype)
    exact = exact_log_probs(ref)
    # total variation distance to the exact distribution
    tv = 0.5 * float((torch.exp(lp.double()) - torch.exp(exact)).abs().sum())
    assert tv < tol(dtype, "norm"), tv
    # log-probabilities wherever the amplitude is not the result of a near-cancellation
    # (amplitudes of tiny probability lose relative precision in float32 by construction)
    typical = exact > math.log(1e-6)
    assert typical.sum() > 500
    err = float((lp.double() - exact)[typical].abs().max())
    assert err < tol(dtype), err


def test_copy_is_independent_and_exact():
    model = _model(8, 4, seed=9)
    model.move_center(2)
    new = model.copy()
    x = all_configs(8)
    assert new.center == 2
    assert torch.equal(new.log_prob(x), model.log_prob(x))
    t = new.node_tensor(4)
    t.modify(data=t.data * 0)
    assert torch.isfinite(model.log_prob(x)).all()


def test_nll_and_score_samples():
    model = _model(6, 3, seed=1)
    exact = exact_log_probs(model)
    x = all_configs(6)[[0, 5, 17, 63, 5]]
    idx = torch.tensor([0, 5, 17, 63, 5])
    assert abs(model.nll(x, batch_size=2) + float(exact[idx].mean())) < 1e-10
    np.testing.assert_allclose(model.score_samples(x), exact[idx].numpy(), atol=1e-10, rtol=0)
    # a single configuration given as a 1-D array
    assert torch.allclose(model.log_prob(x[1].numpy()), exact[idx[1:2]], atol=1e-10, rtol=0)


# --------------------------------------------------------------------------- #
# criterion 5: N = 784, D = 100 in float32 and float64
# --------------------------------------------------------------------------- #
def _structured_784(seed: int) -> MPSBornMachine:
    """A 'trained-like' chain: close to a product state of MNIST-like pixel marginals.

    Site tensors are ``sqrt(p_k(s)) * I + noise`` with strongly peaked
    marginals (most pixels almost surely 0), so ``P`` is far from uniform and
    log-probabilities span hundreds of nats, as after training.
    """
    gen = torch.Generator().manual_seed(seed)
    n, d = 784, 100
    k = torch.arange(n, dtype=torch.float64)
    row, col = k // 28, k % 28
    ink = 0.02 + 0.5 * torch.exp(-((row - 13.5) ** 2 + (col - 13.5) ** 2) / 60.0)
    arrays = []
    for s in range(n):
        dl = 1 if s == 0 else d
        dr = 1 if s == n - 1 else d
        a = 0.05 * torch.randn(dl, 2, dr, generator=gen, dtype=torch.float64)
        eye = torch.eye(dl, dr, dtype=torch.float64)
        a[:, 0, :] += math.sqrt(1 - ink[s]) * eye
        a[:, 1, :] += math.sqrt(ink[s]) * eye
        arrays.append(a)
    model = MPSBornMachine(arrays)
    model.move_center(n // 2)
    # Z ~ e^300 here: normalise, as training does (an unnormalised centre overflows float32)
    model.normalize()
    assert abs(float(model.log_norm())) < 1e-10
    return model


def _check_float32_drift(model: MPSBornMachine, x: torch.Tensor) -> None:
    lp64 = model.log_prob(x)
    lp32 = model.copy().to(dtype="float32").log_prob(x)
    assert lp32.dtype == torch.float32
    assert torch.isfinite(lp64).all() and torch.isfinite(lp32).all()
    drift = float((lp32.double() - lp64).abs().max())
    assert drift < tol(torch.float32, "logp_drift"), drift


def test_784_sites_random_state_float32_close_to_float64(chain_kernels):
    model = MPSBornMachine.random(784, 100, seed=3)
    assert model.max_bond == 100
    x = torch.randint(0, 2, (8, 784), generator=torch.Generator().manual_seed(0))
    lp = model.log_prob(x)
    # a random state spreads its weight: log P is around -784 ln 2 and far below the float64 range
    assert (lp < -400).all() and (lp > -800).all()
    _check_float32_drift(model, x)
    # the generic contraction agrees with the fast path at this size too
    assert torch.allclose(_generic_log_prob(model, x[:2]), lp[:2], atol=1e-8, rtol=0)


def test_784_sites_trained_like_state_float32_close_to_float64(chain_kernels):
    model = _structured_784(seed=1)
    try:
        x = torch.as_tensor(np.load(shared_file("mnist1k_train_thr50.npy"))[:8].astype(np.int64))
    except pytest.skip.Exception:
        x = torch.zeros((8, 784), dtype=torch.int64)
        x[:, 300:320] = 1
    _check_float32_drift(model, x)
    lp = model.log_prob(x)
    # the chain is peaked: an image is far more likely than under the uniform distribution
    assert (lp > -784 * math.log(2)).all()


def test_784_sites_partly_trained_state_float32_close_to_float64():
    """A state after real sweep updates (bond dimension 100) on a handful of MNIST images."""
    from tnborn import SweepTrainer
    from tnborn.environments import EnvironmentCache

    x = torch.as_tensor(np.load(shared_file("mnist1k_train_thr50.npy"))[:10].astype(np.int64))
    model = MPSBornMachine.random(784, 100, seed=5)
    trainer = SweepTrainer(model, lr=0.1, descent_steps=10, cutoff=0.0, max_bond=100, progress=False)
    cache = EnvironmentCache(model, x)
    before = model.log_prob(x)
    for source, target in model.sweep_schedule()[0][:60]:
        trainer.update_bond(cache, source, target)
    after = model.log_prob(x)
    assert float(after.mean()) > float(before.mean()) + 20  # it did learn something
    assert model.max_bond == 100
    _check_float32_drift(model, x)
    # and unseen images keep finite float32 log-probabilities too
    _check_float32_drift(model, x.flip(1))


# --------------------------------------------------------------------------- #
# criterion 10: repr
# --------------------------------------------------------------------------- #
def test_repr_shows_geometry_size_bonds_dtype_device():
    model = _model(6, 3, seed=0)
    r = repr(model)
    for part in ("mps", "num_variables=6", "max_bond=3", "2 3 3 3 2", "float64", "cpu"):
        assert part in r, (part, r)
    r32 = repr(model.copy().to(dtype="float32"))
    assert "float32" in r32
    long = repr(MPSBornMachine.random(40, 5, seed=0))
    assert "num_variables=40" in long and "..." in long and "max_bond=5" in long


def test_registered_as_mps():
    assert tnborn.get_geometry("mps") is MPSBornMachine
    assert "mps" in tnborn.available_geometries()
    assert MPSBornMachine.geometry == "mps"


# --------------------------------------------------------------------------- #
# fast two-site merge/split of the MPS == the generic ones of the base class
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("u,v", [(0, 1), (1, 0), (3, 4), (4, 3), (6, 7), (7, 6)])
@pytest.mark.parametrize("cutoff,max_bond,min_bond", [(0.0, None, 1), (0.2, None, 1), (0.05, 3, 2), (0.99, None, 2)])
def test_fast_merge_split_equals_generic(monkeypatch, u, v, cutoff, max_bond, min_bond):
    margins = record_cutoff_margins(monkeypatch)
    fast = _model(8, 6, seed=13)
    fast.move_center(u)
    generic = fast.copy()
    bf = fast.merge(u, v)
    bg = BornMachine.merge(generic, u, v)
    # the copy has its own bond names: translate the generic block's names to the fast one's
    rename = {generic.bond_index(a, b): fast.bond_index(a, b) for a, b in generic.edges()}
    g_inds = [rename.get(ix, ix) for ix in bg.inds]
    assert sorted(bf.inds) == sorted(g_inds) and bf.physical == bg.physical
    assert {rename[ix]: val for ix, val in bg.virtual.items()} == bf.virtual
    assert set(bf.left_inds) == {rename.get(ix, ix) for ix in bg.left_inds}
    perm = [g_inds.index(ix) for ix in bf.inds]
    assert torch.allclose(bf.data, bg.data.permute(*perm), atol=1e-14, rtol=0)
    # perturb the block identically, then split both ways
    noise = torch.randn(bg.data.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    new_g = bg.data + 0.2 * noise
    new_g = new_g / torch.linalg.vector_norm(new_g)
    new_f = new_g.permute(*perm)
    info_f = fast.split(bf, new_f, target=v, cutoff=cutoff, max_bond=max_bond, min_bond=min_bond)
    info_g = BornMachine.split(generic, bg, new_g, target=v, cutoff=cutoff, max_bond=max_bond, min_bond=min_bond)
    # two SVD drivers on the same block: equal kept dimensions need the singular values clear of the
    # cutoff by more than their rounding (the block has at most 12 x 12 = 144 entries, unit norm)
    assert margins and min(margins) > rounding_bound(torch.float64, bg.data.numel()), margins
    assert info_f.bond_dim == info_g.bond_dim
    assert abs(info_f.max_discarded - info_g.max_discarded) < 1e-12
    assert abs(info_f.discarded_weight - info_g.discarded_weight) < 1e-12
    assert fast.center == generic.center == v
    assert fast.bond_dims() == generic.bond_dims()
    x = all_configs(8)
    exact = exact_log_probs(generic)
    assert torch.allclose(fast.log_prob(x), exact, atol=1e-10, rtol=0)
    assert torch.allclose(_generic_log_prob(fast, x), exact, atol=1e-10, rtol=0)
    # both leave a normalised canonical form with the centre on v
    assert abs(float(BornMachine.log_norm(fast))) < 1e-10
    assert abs(float(fast.log_norm())) < 1e-10


def test_entanglement_entropies_match_dense_svd():
    model = _model(8, 5, seed=2)
    psi = dense_psi(model)
    psi = psi / torch.linalg.vector_norm(psi)
    ent = model.entanglement_entropies()
    assert len(ent) == 7
    for k in range(7):
        s = torch.linalg.svdvals(psi.reshape(2 ** (k + 1), -1))
        p = s**2
        p = p[p > 1e-300]
        assert abs(ent[k] - float(-(p * torch.log(p)).sum())) < 1e-10


def test_zero_amplitudes_give_minus_infinity(chain_kernels):
    model = _model(6, 3, seed=1)
    t = model.node_tensor(2)
    data = t.data.clone()
    data.select(t.inds.index(model.variable_index(2)), 1).zero_()
    t.modify(data=data)
    model.drop_center()
    x = all_configs(6)
    exact = exact_log_probs(model)
    zero = x[:, 2] == 1
    for lp in (model.log_prob(x), _generic_log_prob(model, x)):
        assert torch.isneginf(lp[zero]).all()
        assert torch.allclose(lp[~zero], exact[~zero], atol=1e-10, rtol=0)
    assert model.nll(x) == math.inf
