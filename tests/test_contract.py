"""The Born machine contract, run over every registered geometry (see ``tests/contract.py``).

Everything is checked against brute-force enumeration of all ``2^N``
configurations (N <= 12) built from quimb's contraction of ``model.tn``.
"""

from __future__ import annotations

import pytest
import torch

import tnborn

import contract

GEOMETRIES = tnborn.available_geometries()
TREES = [g for g in GEOMETRIES if tnborn.get_geometry(g).is_tree]


def test_registry_lists_the_built_in_geometries():
    assert {"mps", "peps"} <= set(GEOMETRIES)
    for name in GEOMETRIES:
        assert tnborn.get_geometry(name).geometry == name


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("n,bond_dim", [(4, 2), (9, 3), (12, 2)])
@pytest.mark.parametrize("name", GEOMETRIES)
def test_log_prob_and_normalisation(name, n, bond_dim, dtype):
    model = contract.make_model(name, n, bond_dim=bond_dim, seed=n, dtype=dtype)
    assert model.num_variables == n and model.geometry == name
    contract.check_log_prob(model)
    contract.check_normalisation(model)


@pytest.mark.parametrize("n", [4, 9])
@pytest.mark.parametrize("name", GEOMETRIES)
def test_gradient_of_nll_matches_dense_autograd(name, n):
    model = contract.make_model(name, n, bond_dim=3, seed=2)
    data = contract.random_data(n, 12, seed=n)
    contract.check_gradient(model, data)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_gradient_of_nll_large_batch(name):
    """Batch-size-dependent fast paths (grouped kernels ...) must stay differentiable."""
    bond_dim = 16 if tnborn.get_geometry(name).is_tree else 2
    model = contract.make_model(name, 9, bond_dim=bond_dim, seed=3)
    contract.check_gradient(model, contract.random_data(9, 2000, seed=2))


@pytest.mark.parametrize("name", GEOMETRIES)
def test_gradient_of_nll_complex(name):
    model = contract.make_model(name, 6, bond_dim=2, seed=5, dtype="complex128")
    contract.check_gradient(model, contract.random_data(6, 10, seed=1))


@pytest.mark.parametrize("n", [4, 9])
@pytest.mark.parametrize("name", GEOMETRIES)
def test_sampler_matches_exact_distribution(name, n):
    model = contract.make_model(name, n, bond_dim=2, seed=3)
    contract.check_sampler(model, num_samples=20_000 if n <= 6 else 12_000)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_conditional_sampler_matches_exact_conditionals(name):
    model = contract.make_model(name, 8, bond_dim=2, seed=4)
    contract.check_conditional_sampler(model, num_samples=3000)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_checkpoint_roundtrip(name, tmp_path):
    model = contract.make_model(name, 9, bond_dim=3, seed=6)
    contract.check_checkpoint_roundtrip(model, tmp_path / f"{name}.tnb")


@pytest.mark.parametrize("name", GEOMETRIES)
def test_float32_cast(name):
    contract.check_float32(contract.make_model(name, 9, bond_dim=3, seed=7))


@pytest.mark.parametrize("name", GEOMETRIES)
def test_repr_mentions_the_geometry(name):
    contract.check_repr(contract.make_model(name, 4, bond_dim=2, seed=0))


@pytest.mark.parametrize("name", GEOMETRIES)
def test_non_tree_geometries_refuse_the_sweep(name):
    model = contract.make_model(name, 4, bond_dim=2, seed=0)
    if model.is_tree:
        assert len(model.sweep_schedule()) >= 1
    else:
        with pytest.raises(NotImplementedError, match="GradientTrainer"):
            model.sweep_schedule()
        with pytest.raises(tnborn.ConfigError, match="GradientTrainer"):
            tnborn.SweepTrainer(model, progress=False)


@pytest.mark.parametrize("n", [4, 9])
@pytest.mark.parametrize("name", TREES)
def test_move_center_invariance(name, n):
    contract.check_move_center(contract.make_model(name, n, bond_dim=3, seed=8))


@pytest.mark.parametrize("name", TREES)
def test_merge_split_roundtrip(name):
    contract.check_merge_split(contract.make_model(name, 9, bond_dim=3, seed=9))


@pytest.mark.parametrize("name", GEOMETRIES)
def test_checks_can_fail(name):
    """The checks detect a model whose answers belong to another state."""
    model = contract.make_model(name, 4, bond_dim=2, seed=1)
    other = contract.make_model(name, 4, bond_dim=2, seed=2)
    model.log_prob = other.log_prob
    with pytest.raises(AssertionError, match="log_prob vs brute force"):
        contract.check_log_prob(model)
    model = contract.make_model(name, 4, bond_dim=2, seed=1)
    model.sample = other.sample
    with pytest.raises(AssertionError):
        contract.check_sampler(model, num_samples=5000)
