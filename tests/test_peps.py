"""The PEPS Born machine: grid structure, initialisation, layout round trips, refusals.

Exactness of log_prob, normalisation, gradients and samplers against
brute-force enumeration is checked for every geometry in ``test_contract.py``;
this file covers what is particular to the PEPS.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import quimb.tensor as qtn
import torch

import tnborn
from tnborn import ConfigError, PEPSBornMachine
from tnborn.geometries.peps import grid_shape, random_peps_arrays

from conftest import (all_configs, amplitude_condition, amplitude_operations, exact_log_probs, generic_log_prob_bound,
                      norm_condition, norm_operations)
from tolerances import rounding_bound, tol


@pytest.mark.parametrize("n,shape,expected", [
    (16, None, (4, 4)), (12, None, (3, 4)), (9, None, (3, 3)), (6, None, (2, 3)), (7, None, (1, 7)),
    (2, None, (1, 2)), (12, (4, 3), (4, 3)), (12, [2, 6], (2, 6)), (5, (5, 1), (5, 1)),
])
def test_grid_shape(n, shape, expected):
    assert grid_shape(n, shape) == expected


@pytest.mark.parametrize("n,shape", [(1, None), (12, (3, 3)), (12, (0, 12)), (12, (12,)), (12, "ab"), (4, (-2, -2))])
def test_grid_shape_rejects_bad_input(n, shape):
    with pytest.raises(ConfigError):
        grid_shape(n, shape)


@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (1, 5), (2, 2)])
def test_structure_is_the_open_grid(shape):
    h, w = shape
    model = PEPSBornMachine.random(h * w, bond_dim=2, seed=0, image_shape=shape)
    assert isinstance(model.tn, qtn.PEPS) and model.image_shape == shape
    assert model.nodes() == tuple(itertools.product(range(h), range(w)))
    assert model.is_tree == (min(h, w) == 1) and model.geometry == "peps" and model.center is None
    edges = set()
    for i, j in model.nodes():
        nbs = model.neighbours((i, j))
        assert set(nbs) == {(i + di, j + dj) for di, dj in ((1, 0), (0, 1), (-1, 0), (0, -1))
                            if 0 <= i + di < h and 0 <= j + dj < w}
        t = model.node_tensor((i, j))
        assert t.ndim == len(nbs) + 1
        for nb in nbs:
            ix = model.bond_index((i, j), nb)
            assert ix == model.bond_index(nb, (i, j))
            assert ix in t.inds and ix in model.node_tensor(nb).inds
            edges.add(frozenset(((i, j), nb)))
    assert len(model.edges()) == len(edges) == h * (w - 1) + w * (h - 1)
    assert model.bond_dims() == [2] * len(edges)
    for v in range(h * w):
        node = model.variable_node(v)
        assert node == (v // w, v % w) and model.node_variables(node) == (v,)
        assert model.variable_index(v) == model.tn.site_ind(*node)
        assert model.variable_index(v) in model.node_tensor(node).inds
    with pytest.raises(ConfigError, match="not neighbours"):
        model.bond_index((0, 0), (h - 1, w - 1)) if h * w > 2 else model.bond_index((0, 0), (0, 0))
    with pytest.raises(ConfigError):
        model.node_tensor((h, 0))
    with pytest.raises(ConfigError):
        model.neighbours(3)


def test_product_state_initialisation_is_uniform():
    model = PEPSBornMachine.random(9, bond_dim=3, seed=0, noise=0.0)
    lp = model.log_prob(all_configs(9))
    # every amplitude is a single product (all other terms are exact zeros) and the
    # rounded entries are still equal, so P is exactly uniform: only the rounding of
    # the contractions (no cancellation: condition 1) and of -9 log 2 remains
    bound = rounding_bound(torch.float64, 2 * amplitude_operations(model, 2**9) + norm_operations(model) + 1)
    assert float((lp + 9 * math.log(2)).abs().max()) <= bound


@pytest.mark.parametrize("shape,bond_dim", [((4, 4), 3), ((3, 4), 2), ((3, 4), 4)])
def test_random_initialisation_is_normalised_and_has_no_vanishing_amplitudes(shape, bond_dim):
    n = shape[0] * shape[1]
    model = PEPSBornMachine.random(n, bond_dim=bond_dim, seed=1, image_shape=shape)
    # normalize() divided by its own log Z (error gamma Z_abs/Z), then rescaled every
    # entry (2N multiplications per term); log_norm() errs again by gamma Z_abs/Z
    cond_z = norm_condition(model)
    assert abs(float(model.log_norm())) <= (2 * rounding_bound(torch.float64, norm_operations(model)) * cond_z
                                            + rounding_bound(torch.float64, 2 * n))
    lp = model.log_prob(all_configs(n))
    # log sum_x P(x) = 0 up to sum_x P(x) err(x), the log-norm error and the logsumexp of 2^N terms
    p = torch.exp(exact_log_probs(model))
    bound = float((p * generic_log_prob_bound(model)).sum()) + abs(float(model.log_norm())) + rounding_bound(torch.float64, 2**n)
    assert abs(float(torch.logsumexp(lp, 0))) <= bound
    # no configuration is orders of magnitude less likely than uniform
    assert float(lp.min()) > -n * math.log(2) - 10
    assert float(lp.max()) < -n * math.log(2) + 10
    # a different seed is a different state
    other = PEPSBornMachine.random(n, bond_dim=bond_dim, seed=2, image_shape=shape)
    assert float((other.log_prob(all_configs(n)[:500]) - lp[:500]).abs().max()) > 1e-2


def test_random_arrays_shapes_and_dtypes():
    arrays = random_peps_arrays((2, 3), bond_dim=3, phys_dim=2, seed=0, dtype=torch.complex128)
    assert [tuple(a.shape) for a in arrays] == [(3, 3, 2), (3, 3, 3, 2), (3, 3, 2),
                                                (3, 3, 2), (3, 3, 3, 2), (3, 3, 2)]
    assert all(a.dtype == torch.complex128 and bool(a.imag.abs().max() > 0) for a in arrays)
    model = PEPSBornMachine.random(6, bond_dim=2, seed=0, dtype="float32")
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")
    # a complex model has genuinely complex amplitudes (not a real state cast to complex)
    model = PEPSBornMachine.random(6, bond_dim=2, seed=0, dtype="complex128")
    _, phase = model.log_amplitude(all_configs(6))
    assert float((phase - phase[0]).abs().max()) > 0.1
    # normalize()'s log Z and this one each err by gamma Z_abs/Z, plus 2N rescalings per term
    assert abs(float(model.log_norm())) <= (2 * rounding_bound(model.dtype, norm_operations(model)) * norm_condition(model)
                                            + rounding_bound(model.dtype, 2 * model.num_variables))


def test_higher_physical_dimension():
    model = PEPSBornMachine.random(4, bond_dim=2, phys_dim=3, seed=0)
    x = all_configs(4, 3)
    assert model.phys_dim == 3
    lp = model.log_prob(x)
    ref = exact_log_probs_dim(model, 3)
    # the dense reference sums every bond at once in the worst case: prod(D) + N steps
    bound = generic_log_prob_bound(model, math.prod(model.bond_dims()) + model.num_variables)
    assert bool(((lp - ref).abs() <= bound).all())
    p = torch.exp(ref)
    assert abs(float(torch.logsumexp(lp, 0))) <= (float((p * bound).sum()) + abs(float(model.log_norm()))
                                                  + rounding_bound(torch.float64, x.shape[0]))
    s, slp = model.sample(100, seed=0)
    # the sampler sums N logs of ratios of marginals of the doubled network. Each
    # marginal sums at most T = d^N prod(D)^2 terms (any order: <= T additions per
    # term) with condition sum psi_abs^2 / sum psi^2 <= max_x kappa(x)^2 (numerator
    # and denominator of each ratio); log_prob adds its own bound at the sample
    terms = x.shape[0] * math.prod(model.bond_dims()) ** 2
    marginals = 2 * model.num_variables * rounding_bound(torch.float64, terms + 4 * model.num_variables)
    marginals = marginals * float(amplitude_condition(model).max()) ** 2
    bound = marginals + generic_log_prob_bound(model)[_index(s, 3)]
    assert int(s.max()) <= 2 and bool(((slp - model.log_prob(s)).abs() <= bound).all())


def _index(x, d):
    return (x.long() * torch.tensor([d ** (x.shape[1] - 1 - k) for k in range(x.shape[1])])).sum(1)


def exact_log_probs_dim(model, d):
    out = [model.variable_index(v) for v in range(model.num_variables)]
    t = model.tn.contract(all, output_inds=out, preserve_tensor=True).transpose(*out)
    w = torch.as_tensor(t.data).reshape(-1).abs() ** 2
    return torch.log(w) - torch.log(w.sum())


def test_layout_survives_permuted_indices_and_checkpoints(tmp_path):
    model = PEPSBornMachine.random(6, bond_dim=2, seed=3, image_shape=(2, 3))
    x = all_configs(6)
    ref = model.log_prob(x)
    # the same values in another memory layout (transposed, permuted back, reloaded
    # contiguous) may take another summation order (path key, BLAS kernel): two
    # evaluations of the same exact log P, each within the conditioning bound
    bound = 2 * generic_log_prob_bound(model)
    # reorder the indices of two tensors (as an SVD split may): the config records it
    for node in [(0, 1), (1, 2)]:
        t = model.node_tensor(node)
        t.transpose_(*reversed(t.inds))
    assert bool(((model.log_prob(x) - ref).abs() <= bound).all())
    cfg = model.config()
    assert cfg["layout"][1] == "plru" and cfg["image_shape"] == [2, 3]
    rebuilt = PEPSBornMachine.from_arrays(model.arrays(), cfg)
    assert bool(((rebuilt.log_prob(x) - ref).abs() <= bound).all())
    loaded = tnborn.load(tnborn.save(tmp_path / "p.tnb", model))
    assert all(torch.equal(a, b) for a, b in zip(loaded.arrays(), rebuilt.arrays()))  # a lossless round trip
    assert bool(((loaded.log_prob(x) - ref).abs() <= bound).all())
    # the generic merge/split (no truncation) keeps the distribution, then a round trip
    block = model.merge((0, 0), (0, 1))
    model.split(block, target=(0, 1), cutoff=0.0)
    assert torch.allclose(model.log_prob(x), ref, atol=tol(torch.float64, "gauge"))
    again = tnborn.load(tnborn.save(tmp_path / "q.tnb", model))
    assert torch.allclose(again.log_prob(x), ref, atol=tol(torch.float64, "gauge"))


def test_from_arrays_validates():
    model = PEPSBornMachine.random(6, bond_dim=2, seed=0, image_shape=(2, 3))
    arrays, cfg = model.arrays(), model.config()
    with pytest.raises(ConfigError, match="site arrays"):
        PEPSBornMachine.from_arrays(arrays[:-1], cfg)
    bad = list(arrays)
    bad[0] = torch.ones(3, 2, 2, dtype=torch.float64)  # bond (0,0)-(1,0) of size 3 vs 2
    with pytest.raises(ConfigError, match="differ"):
        PEPSBornMachine.from_arrays(bad, {k: v for k, v in cfg.items() if k != "layout"})
    bad[0] = torch.ones(2, 2, 2, 2, dtype=torch.float64)  # one axis too many
    with pytest.raises(ConfigError, match="bond axes"):
        PEPSBornMachine.from_arrays(bad, {k: v for k, v in cfg.items() if k != "layout"})
    with pytest.raises(ConfigError, match="layout"):
        PEPSBornMachine.from_arrays(arrays, dict(cfg, layout=["urp"] * 6))
    with pytest.raises(ConfigError):
        PEPSBornMachine(arrays, (3, 2))
    with pytest.raises(ConfigError):
        PEPSBornMachine([np.zeros((2, 2, 2))] * 4, (2, 2))


@pytest.mark.parametrize("kwargs", [{"bond_dim": 0}, {"phys_dim": 1}, {"noise": -1.0}, {"noise": float("nan")},
                                    {"image_shape": (3, 3)}, {"dtype": "int32"}])
def test_random_rejects_bad_arguments(kwargs):
    with pytest.raises((ConfigError, tnborn.DeviceError)):
        PEPSBornMachine.random(4, **kwargs)


def test_no_canonical_form_and_no_sweep():
    model = PEPSBornMachine.random(4, bond_dim=2, seed=0)
    with pytest.raises(NotImplementedError, match="GradientTrainer"):
        model.sweep_schedule()
    with pytest.raises(NotImplementedError):
        model.move_center((0, 0))
    with pytest.raises(ConfigError, match="GradientTrainer"):
        tnborn.SweepTrainer(model, progress=False)


def test_registered_exported_and_copyable():
    assert tnborn.get_geometry("peps") is PEPSBornMachine
    assert "peps" in tnborn.available_geometries()
    model = PEPSBornMachine.random(4, bond_dim=2, seed=0)
    twin = model.copy()
    t = twin.node_tensor((0, 0))
    t.modify(data=t.data * 2)
    assert not torch.equal(twin.node_tensor((0, 0)).data, model.node_tensor((0, 0)).data)
    assert "PEPSBornMachine(geometry='peps'" in repr(model)
