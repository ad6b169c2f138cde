"""Samplers against the exact (conditional) distribution of an N = 10 MPS Born machine.

Each distribution test draws at a fixed seed and applies Pearson's chi-square
test over all consistent configurations (cells with expected count < 5
pooled), failing when the p-value is below ``P_VALUE_THRESHOLD = 1e-3``: the
statistic is compared with the chi-square law of the pooled degrees of
freedom, so the threshold holds whatever the sample size. The returned
log-probabilities are checked against enumeration within bounds from their conditioning
(``contract.sample_log_prob_bound`` / ``conditional_log_prob_bound``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tnborn import MPSBornMachine
from tnborn.errors import NumericalError
from tnborn.interface import BornMachine

from conftest import (
    all_configs,
    assert_samples_match,
    assert_unchanged,
    config_index,
    exact_conditional,
    exact_log_probs,
    snapshot,
)
from contract import conditional_log_prob_bound, sample_log_prob_bound

N = 10
NUM = 20000  # fast-path samples per test
NUM_GENERIC = 5000  # the generic sampler contracts the doubled network per variable


@pytest.fixture(scope="module")
def model() -> MPSBornMachine:
    m = MPSBornMachine.random(N, 4, seed=21)
    m.move_center(4)  # samplers must not depend on where the centre is
    return m


@pytest.fixture(scope="module")
def exact(model) -> torch.Tensor:
    return exact_log_probs(model)


def _generic_conditional(model, x, known, num, seed):
    """The base-class sampler (sequential marginals of the doubled network) on an MPS."""
    xr = torch.where(known, x, torch.zeros_like(x)).repeat_interleave(num, dim=0)
    kr = known.repeat_interleave(num, dim=0)
    gen = torch.Generator().manual_seed(seed)
    return BornMachine._sample_free(model, xr, kr, gen)


def _check_conditional(model, samples, logp, exact, x, known):
    """Known entries copied, log P(free | known) exact, and the chi-square test."""
    n = samples.shape[0]
    assert torch.equal(samples[:, known], x[known].expand(n, -1)), "known variables were changed"
    idx, cond = exact_conditional(exact, x, known)
    lookup = torch.full((2**N,), float("nan"), dtype=torch.float64)
    lookup[idx] = cond
    rows = config_index(samples)
    want = lookup[rows]
    # rounding of the conditional's marginals at their conditioning (contract.conditional_log_prob_bound)
    bound = conditional_log_prob_bound(model, rows, idx)
    assert bool(((logp - want).abs() <= bound).all()), float((logp - want).abs().max())
    if idx.numel() > 1:
        assert_samples_match(samples, idx, cond)
    else:
        assert torch.all(logp == 0)


# --------------------------------------------------------------------------- #
# unconditional
# --------------------------------------------------------------------------- #
def test_fast_sampler_matches_exact(model, exact, chain_kernels):
    before, center = snapshot(model), model.center
    samples, logp = model.sample(NUM, seed=1)
    assert samples.shape == (NUM, N) and samples.dtype == torch.int64
    assert logp.shape == (NUM,) and logp.dtype == torch.float64
    rows = config_index(samples)  # canonical quadratic forms (contract.sample_log_prob_bound)
    assert bool(((logp - exact[rows]).abs() <= sample_log_prob_bound(model, rows)).all())
    assert_samples_match(samples, torch.arange(2**N), exact)
    # sampling works on a canonical copy: the model itself is untouched
    assert_unchanged(model, before)
    assert model.center == center


def test_generic_sampler_matches_exact(model, exact):
    x = torch.zeros((NUM_GENERIC, N), dtype=torch.int64)
    known = torch.zeros_like(x, dtype=torch.bool)
    samples, logp = BornMachine._sample_free(model, x, known, torch.Generator().manual_seed(2))
    rows = config_index(samples)  # doubled-network marginals at kappa^2 (contract.sample_log_prob_bound)
    assert bool(((logp - exact[rows]).abs() <= sample_log_prob_bound(model, rows, generic=True)).all())
    assert_samples_match(samples, torch.arange(2**N), exact)


def test_sampler_without_known_centre(exact, chain_kernels):
    """A model whose centre is unknown (and Z != 1) samples the same distribution."""
    m = MPSBornMachine.random(N, 4, seed=21)
    t = m.node_tensor(3)
    t.modify(data=t.data * 5.0)
    m.drop_center()
    ex = exact_log_probs(m)
    samples, logp = m.sample(NUM, seed=3)
    rows = config_index(samples)  # canonicalised from scratch: the QR moves are in the bound
    assert bool(((logp - ex[rows]).abs() <= sample_log_prob_bound(m, rows)).all())
    assert_samples_match(samples, torch.arange(2**N), ex)


# --------------------------------------------------------------------------- #
# conditional
# --------------------------------------------------------------------------- #
def _masks() -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(5)
    scattered = np.zeros(N, dtype=bool)
    scattered[rng.choice(N, size=5, replace=False)] = True
    single = np.ones(N, dtype=bool)
    single[6] = False
    return {
        "left_half": torch.arange(N) < N // 2,
        "right_half": torch.arange(N) >= N // 2,
        "scattered": torch.as_tensor(scattered),
        "single_free": torch.as_tensor(single),
        "single_free_first": torch.arange(N) > 0,
        "single_free_last": torch.arange(N) < N - 1,
        "all_free": torch.zeros(N, dtype=torch.bool),
        "all_known": torch.ones(N, dtype=torch.bool),
    }


MASKS = _masks()
X_REF = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1, 1])


@pytest.mark.parametrize("name", list(MASKS))
def test_fast_conditional_sampler(model, exact, name, chain_kernels):
    known = MASKS[name]
    out, logp = model.sample_conditional(X_REF[None], known, num_samples=NUM, seed=7)
    assert out.shape == (1, NUM, N) and logp.shape == (1, NUM)
    _check_conditional(model, out[0], logp[0], exact, X_REF, known)


@pytest.mark.parametrize("name", ["left_half", "right_half", "scattered", "single_free", "all_free"])
def test_generic_conditional_sampler(model, exact, name):
    known = MASKS[name]
    samples, logp = _generic_conditional(model, X_REF[None], known[None], NUM_GENERIC, seed=8)
    _check_conditional(model, samples, logp, exact, X_REF, known)


def test_per_row_masks(model, exact, chain_kernels):
    """A 2-D mask: every row has its own known set (and its own known values)."""
    rows = ["left_half", "right_half", "scattered", "single_free", "all_free"]
    known = torch.stack([MASKS[r] for r in rows])
    x = torch.stack([X_REF, 1 - X_REF, X_REF.flip(0), X_REF, 1 - X_REF])
    per_row = 6000
    out, logp = model.sample_conditional(x, known, num_samples=per_row, seed=9)
    assert out.shape == (len(rows), per_row, N)
    for b in range(len(rows)):
        _check_conditional(model, out[b], logp[b], exact, x[b], known[b])
    # the generic sampler handles rows with different known sets in one batch too
    # (fewer samples: mixed known sets make every variable a batched tensor, ~1 ms per row)
    samples, lp = _generic_conditional(model, x, known, 600, seed=10)
    samples = samples.reshape(len(rows), 600, N)
    lp = lp.reshape(len(rows), 600)
    for b in range(len(rows)):
        _check_conditional(model, samples[b], lp[b], exact, x[b], known[b])


def test_unknown_entries_of_x_are_ignored(model):
    known = MASKS["scattered"]
    x2 = torch.where(known, X_REF, 1 - X_REF)
    a, la = model.sample_conditional(X_REF[None], known, num_samples=200, seed=11)
    b, lb = model.sample_conditional(x2[None], known, num_samples=200, seed=11)
    assert torch.equal(a, b) and torch.equal(la, lb)


def test_same_seed_same_samples(model, chain_kernels):
    a = model.sample_conditional(X_REF[None], MASKS["scattered"], num_samples=500, seed=12)
    b = model.sample_conditional(X_REF[None], MASKS["scattered"], num_samples=500, seed=12)
    c = model.sample_conditional(X_REF[None], MASKS["scattered"], num_samples=500, seed=13)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    s1 = model.sample(500, seed=12)
    s2 = model.sample(500, seed=12)
    assert torch.equal(s1[0], s2[0]) and torch.equal(s1[1], s2[1])
    g1 = _generic_conditional(model, X_REF[None], MASKS["left_half"][None], 200, seed=4)
    g2 = _generic_conditional(model, X_REF[None], MASKS["left_half"][None], 200, seed=4)
    assert torch.equal(g1[0], g2[0])


def test_conditioning_on_an_impossible_configuration_raises(chain_kernels):
    m = MPSBornMachine.random(6, 2, seed=0)
    t = m.node_tensor(0)
    data = t.data.clone()
    phys_axis = t.inds.index(m.variable_index(0))
    data.select(phys_axis, 1).zero_()  # psi(x) = 0 whenever x_0 = 1
    t.modify(data=data)
    m.drop_center()
    x = torch.ones((1, 6), dtype=torch.int64)
    known = torch.zeros(6, dtype=torch.bool)
    known[0] = True
    with pytest.raises(NumericalError):
        m.sample_conditional(x, known, seed=0)
    with pytest.raises(NumericalError):
        BornMachine._sample_free(m, x, known[None], torch.Generator().manual_seed(0))
    # but the possible value conditions fine, and x_0 = 1 is never sampled
    s, _ = m.sample(2000, seed=0)
    assert int(s[:, 0].max()) == 0


def test_conditional_samples_match_all_configs_order():
    """Sanity check of the helper: config_index inverts all_configs."""
    configs = all_configs(N)
    assert torch.equal(config_index(configs), torch.arange(2**N))


def test_chi_square_check_rejects_a_wrong_distribution(model, exact):
    """The sampler test has teeth: samples of a slightly different model fail it."""
    other = MPSBornMachine.random(N, 4, seed=21)
    t = other.node_tensor(2)
    t.modify(data=t.data * (1 + 0.3 * torch.randn(t.data.shape, generator=torch.Generator().manual_seed(0),
                                                   dtype=torch.float64)))
    other.drop_center()
    samples, _ = other.sample(NUM, seed=1)
    with pytest.raises(AssertionError, match="chi-square"):
        assert_samples_match(samples, torch.arange(2**N), exact)
