"""Log-scaled batched contraction (tnborn.contraction) against plain einsum and analytic values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tnborn.contraction import _cached_path, contract_log_scaled, contraction_path, onehot
from tolerances import rounding_bound


def _einsum(arrays, inputs, output):
    letters = {}
    for term in list(inputs) + [output]:
        for ix in term:
            letters.setdefault(ix, chr(ord("a") + len(letters)))
    eq = ",".join("".join(letters[ix] for ix in t) for t in inputs) + "->" + "".join(letters[ix] for ix in output)
    return torch.einsum(eq, *arrays)


def _einsum_bound(arrays, inputs, output):
    """Elementwise bound on two evaluations (any order) of the contraction: rounding_bound of the
    terms summed per entry (the product of the closed index sizes) and the products along a term
    (one per tensor, 4 real operations per complex one), times the contraction of |arrays|."""
    sizes = {ix: n for a, term in zip(arrays, inputs) for ix, n in zip(term, a.shape)}
    closed = math.prod(sizes[ix] for ix in sizes if ix not in output)
    ops = closed + 4 * len(arrays)
    return 2 * rounding_bound(torch.float64, ops) * _einsum([a.abs() for a in arrays], inputs, output)


def _random_network(seed: int, batch: bool, dtype=torch.float64):
    """A random network of 2-6 tensors over shared indices, some of them hyper-indices."""
    rng = np.random.default_rng(seed)
    pool = [f"i{k}" for k in range(int(rng.integers(3, 8)))]
    sizes = {ix: int(rng.integers(1, 4)) for ix in pool}
    n_tensors = int(rng.integers(2, 7))
    inputs = []
    for _ in range(n_tensors):
        k = int(rng.integers(1, 4))
        inputs.append(tuple(rng.choice(pool, size=min(k, len(pool)), replace=False)))
    # one guaranteed hyper-index shared by three tensors (when there are three)
    hyper = "hyper"
    sizes[hyper] = 3
    for t in range(min(3, n_tensors)):
        inputs[t] = inputs[t] + (hyper,)
    used = sorted({ix for t in inputs for ix in t})
    out = [ix for ix in used if rng.random() < 0.3 and ix != hyper]
    if batch:
        sizes["B"] = 5
        for t in rng.choice(n_tensors, size=max(1, n_tensors // 2), replace=False):
            inputs[int(t)] = inputs[int(t)] + ("B",)
        out = ["B"] + out
    gen = torch.Generator().manual_seed(seed)
    arrays = []
    for term in inputs:
        shape = tuple(sizes[ix] for ix in term)
        a = torch.randn(shape, generator=gen, dtype=torch.float64)
        if dtype.is_complex:
            a = torch.complex(a, torch.randn(shape, generator=gen, dtype=torch.float64))
        arrays.append(a)
    return arrays, inputs, tuple(out)


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("batch", [False, True])
def test_random_networks_match_einsum(seed, batch):
    arrays, inputs, out = _random_network(seed, batch)
    want = _einsum(arrays, inputs, out)
    mant, log = contract_log_scaled(arrays, inputs, out, batch_ind="B" if batch else None)
    assert mant.shape == want.shape
    if batch:
        assert log.shape == (5,)
        got = mant * torch.exp(log).reshape([-1] + [1] * (mant.ndim - 1))
        # every batch row is rescaled to unit max-abs on its own
        rows = mant.abs().reshape(5, -1).amax(dim=1)
        nonzero = want.abs().reshape(5, -1).amax(dim=1) > 0
        assert torch.allclose(rows[nonzero], torch.ones_like(rows[nonzero]))
    else:
        assert log.ndim == 0
        got = mant * torch.exp(log)
    # Gaussian entries cancel: bounded by the contraction of absolute values, entry by entry
    assert bool(((got - want).abs() <= _einsum_bound(arrays, inputs, out)).all())


@pytest.mark.parametrize("seed", range(5))
def test_complex_networks_match_einsum(seed):
    arrays, inputs, out = _random_network(seed, True, dtype=torch.complex128)
    want = _einsum(arrays, inputs, out)
    mant, log = contract_log_scaled(arrays, inputs, out, batch_ind="B")
    assert log.dtype == torch.float64
    got = mant * torch.exp(log).reshape([-1] + [1] * (mant.ndim - 1)).to(mant.dtype)
    assert bool(((got - want).abs() <= _einsum_bound(arrays, inputs, out)).all())  # |.|-contraction bound


@pytest.mark.parametrize("optimize", ["greedy", "auto"])
def test_path_optimisers_agree(optimize):
    arrays, inputs, out = _random_network(3, True)
    want = _einsum(arrays, inputs, out)
    mant, log = contract_log_scaled(arrays, inputs, out, batch_ind="B", optimize=optimize)
    got = mant * torch.exp(log).reshape([-1] + [1] * (mant.ndim - 1))
    assert bool(((got - want).abs() <= _einsum_bound(arrays, inputs, out)).all())  # |.|-contraction bound


def _orthogonal(gen, d):
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def test_chain_of_300_matrices_underflowing_in_float64():
    """prod_k c_k Q_k = (prod c_k) * Q with Q orthogonal: the scale is ~1e-900, the mantissa exact."""
    n, d = 300, 3
    gen = torch.Generator().manual_seed(0)
    qs = [_orthogonal(gen, d) for _ in range(n)]
    cs = 1e-3 * (1.0 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64))
    mats = [c * q for c, q in zip(cs, qs)]
    # the plain product underflows to exactly zero
    plain = mats[0]
    for m in mats[1:]:
        plain = plain @ m
    assert torch.all(plain == 0)
    inputs = [(f"b{k}", f"b{k + 1}") for k in range(n)]
    mant, log = contract_log_scaled(mats, inputs, ("b0", f"b{n}"))
    q_total = qs[0]
    for q in qs[1:]:
        q_total = q_total @ q
    log_c = float(torch.log(cs).sum())
    assert log_c < -1900  # far below the float64 range (about -745)
    assert math.isfinite(float(log))
    got = mant * torch.exp(log - log_c)
    # a product of n orthogonal d x d factors: normwise error <= n d u per evaluation (two here),
    # plus the n scales c_k summed in log_c (|log_c| ~ 2000, relative rounding n u)
    bound = 2 * rounding_bound(torch.float64, n * d) + rounding_bound(torch.float64, n, abs(log_c))
    assert torch.allclose(got, q_total, atol=bound, rtol=0)
    # the trace (no open index) as well
    inputs_closed = inputs[:-1] + [(f"b{n - 1}", "b0")]
    mant, log = contract_log_scaled(mats, inputs_closed, ())
    tr = float(torch.trace(q_total))
    assert abs(float(mant) * math.exp(float(log) - log_c) - tr) <= d * bound  # d diagonal entries
    assert abs(float(log) + math.log(abs(float(mant))) - (log_c + math.log(abs(tr)))) <= d * bound / abs(tr)


def test_chain_of_diagonal_matrices_analytic_logs():
    """diag(1e-3, 2e-3)^300: entries e^{300 ln 1e-3} and e^{300 ln 2e-3}, 90 decades apart."""
    n = 300
    mat = torch.diag(torch.tensor([1e-3, 2e-3], dtype=torch.float64))
    inputs = [(f"b{k}", f"b{k + 1}") for k in range(n)]
    mant, log = contract_log_scaled([mat] * n, inputs, ("b0", f"b{n}"))
    logs = torch.log(torch.diagonal(mant)) + log
    want = torch.tensor([n * math.log(1e-3), n * math.log(2e-3)], dtype=torch.float64)
    assert torch.allclose(logs, want, rtol=rounding_bound(torch.float64, n), atol=0)  # n rescalings summed
    assert float(mant[0, 1]) == 0.0 and float(mant[1, 0]) == 0.0


def test_batched_chain_rescales_every_row_separately():
    """Row b of the batch carries the scale c_b^300; rows differ by hundreds of decades."""
    n, d, batch = 300, 2, 4
    gen = torch.Generator().manual_seed(1)
    scales = torch.tensor([1e-3, 1e-1, 1.0, 5.0], dtype=torch.float64)
    qs = [_orthogonal(gen, d) for _ in range(n)]
    mats = [scales[:, None, None] * q[None] for q in qs]  # (B, d, d)
    inputs = [("B", f"b{k}", f"b{k + 1}") for k in range(n)]
    mant, log = contract_log_scaled(mats, inputs, ("B", "b0", f"b{n}"), batch_ind="B")
    q_total = qs[0]
    for q in qs[1:]:
        q_total = q_total @ q
    want_log = n * torch.log(scales)
    for b in range(batch):
        got = mant[b] * torch.exp(log[b] - want_log[b])
        # normwise n d u per evaluation (two), plus |want_log| ~ n |log c_b| summed with relative n u
        bound = 2 * rounding_bound(torch.float64, n * d) + rounding_bound(torch.float64, n, abs(float(want_log[b])))
        assert torch.allclose(got, q_total, atol=bound, rtol=0), b
    assert float(log[0]) < -2000 and float(log[3]) > 400  # both ends outside float64 range


def test_zero_network_gives_minus_infinity():
    a = torch.zeros((2, 2), dtype=torch.float64)
    b = torch.randn((2, 2), dtype=torch.float64)
    mant, log = contract_log_scaled([a, b], [("i", "j"), ("j", "k")], ("i", "k"))
    assert torch.isneginf(log) and torch.all(mant == 0)
    x = torch.zeros((3, 2), dtype=torch.float64)
    x[1] = 1.0  # only row 1 is non-zero
    mant, log = contract_log_scaled([x, b], [("B", "i"), ("i", "k")], ("B", "k"), batch_ind="B")
    assert torch.isneginf(log[0]) and torch.isneginf(log[2]) and torch.isfinite(log[1])


def test_bad_arguments():
    a = torch.randn((2, 3), dtype=torch.float64)
    with pytest.raises(ValueError, match="batch index"):
        contract_log_scaled([a], [("B", "i")], ("i",), batch_ind="B")
    with pytest.raises(ValueError, match="shape"):
        contract_log_scaled([a], [("i",)], ("i",))


def test_single_tensor_and_output_permutation():
    a = torch.randn((2, 3, 4), dtype=torch.float64)
    mant, log = contract_log_scaled([a], [("i", "j", "k")], ("k", "i"))
    # a 3-term sum of unit Gaussians, with the rescaling: a few roundings of |a| summed
    assert bool(((mant * torch.exp(log) - a.sum(dim=1).T).abs() <= rounding_bound(torch.float64, 8) * a.abs().sum(dim=1).T).all())


def test_paths_are_cached():
    inputs = [("a", "b"), ("b", "c"), ("c", "d")]
    sizes = {"a": 2, "b": 3, "c": 4, "d": 2}
    p1 = contraction_path(inputs, ("a", "d"), sizes)
    hits = _cached_path.cache_info().hits
    p2 = contraction_path(inputs, ("a", "d"), dict(sizes, unused=7))
    assert p1 == p2 and _cached_path.cache_info().hits == hits + 1
    assert len(p1) == len(inputs) - 1


def test_onehot():
    v = torch.tensor([0, 2, 1])
    h = onehot(v, 3, torch.float32)
    assert h.dtype == torch.float32
    assert torch.equal(h, torch.eye(3, dtype=torch.float32)[v])
