"""The contract every registered Born machine geometry must honour, as reusable checks.

Each ``check_*`` function takes a freshly built model and asserts one part of
the :class:`~tnborn.interface.BornMachine` contract against an exact reference
that does not go through tnborn's own contraction code: the dense ``d^N``
amplitudes come from quimb's full contraction of ``model.tn``
(:func:`conftest.dense_psi`), and gradients from torch autograd through that
dense vector. ``tests/test_contract.py`` runs every check over every name in
:func:`tnborn.available_geometries`; a new geometry passes the suite without
writing a line of it (add a size rule to :func:`make_model` only if its
``random`` needs extra arguments).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

import tnborn
from tnborn.training.gradient import batch_nll

from conftest import (
    all_configs,
    assert_samples_match,
    config_index,
    dense_psi,
    exact_conditional,
    exact_log_probs,
)
from tolerances import tol

__all__ = [
    "make_model",
    "check_log_prob",
    "check_normalisation",
    "check_gradient",
    "check_sampler",
    "check_conditional_sampler",
    "check_checkpoint_roundtrip",
    "check_float32",
    "check_repr",
    "check_move_center",
    "check_merge_split",
]

#: Grid shapes for geometries whose ``random`` takes an ``image_shape``.
IMAGE_SHAPES = {4: (2, 2), 6: (2, 3), 8: (2, 4), 9: (3, 3), 12: (3, 4), 16: (4, 4)}


def make_model(name: str, n: int, bond_dim: int = 2, seed: int = 0, dtype: Any = None) -> tnborn.BornMachine:
    """Build ``get_geometry(name).random(n, bond_dim=..., seed=...)`` for the contract tests.

    Parameters
    ----------
    name : str
        Registered geometry name.
    n : int
        Number of variables (<= 12: everything is enumerated).
    bond_dim : int
        Bond dimension.
    seed : int
        Initialisation seed.
    dtype : str or torch.dtype, optional
        Dtype (default float64).

    Returns
    -------
    BornMachine
        The model.
    """
    cls = tnborn.get_geometry(name)
    kwargs: dict[str, Any] = {}
    if name == "peps" and n in IMAGE_SHAPES:
        kwargs["image_shape"] = IMAGE_SHAPES[n]
    return cls.random(n, bond_dim=bond_dim, seed=seed, dtype=dtype, **kwargs)


def _assert_logp_close(lp: torch.Tensor, exact: torch.Tensor, eps: float, what: str) -> None:
    """``|lp - exact| <= eps`` (both finite), with the offending entry in the message."""
    lp = lp.detach().to(torch.float64)
    exact = exact.to(torch.float64)
    assert lp.shape == exact.shape, f"{what}: shape {tuple(lp.shape)} != {tuple(exact.shape)}"
    assert bool(torch.isfinite(lp).all()), f"{what}: non-finite log-probabilities"
    err = (lp - exact).abs()
    k = int(err.argmax())
    assert float(err[k]) <= eps, f"{what}: |error| {float(err[k]):.3g} > {eps:g} at entry {k}"


# --------------------------------------------------------------------------- #
# probabilities
# --------------------------------------------------------------------------- #
def check_log_prob(model: tnborn.BornMachine) -> None:
    """``log_prob`` of all ``d^N`` configurations equals brute-force enumeration."""
    n = model.num_variables
    x = all_configs(n, model.phys_dim)
    exact = exact_log_probs(model)
    lp = model.log_prob(x)
    assert lp.dtype in (torch.float64, torch.float32)
    _assert_logp_close(lp, exact, tol(model.dtype, "exact"), "log_prob vs brute force")
    # a shuffled sub-batch gives the same numbers (no cross-talk between rows)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:37]
    _assert_logp_close(model.log_prob(x[perm]), exact[perm], tol(model.dtype, "exact"), "sub-batch log_prob")
    # log_amplitude: |psi| up to the normalisation, and the phase/sign
    psi = dense_psi(model).detach().to(torch.complex128 if model.dtype.is_complex else torch.float64)
    log_abs, phase = model.log_amplitude(x)
    ref = psi / psi.abs().max()
    got = phase.to(ref.dtype) * torch.exp(log_abs.to(torch.float64) - float(log_abs.max())).to(ref.dtype)
    # the global factor (and phase) of psi is a convention: align on the largest amplitude
    k = int(psi.abs().argmax())
    got = got * (ref[k] / got[k])
    assert float((got - ref).abs().max()) <= 1e3 * tol(model.dtype, "exact"), "amplitudes differ from dense psi"


def check_normalisation(model: tnborn.BornMachine) -> None:
    """``logsumexp(log_prob(all)) = 0`` and ``log_norm`` equals the dense ``log Z``."""
    x = all_configs(model.num_variables, model.phys_dim)
    total = float(torch.logsumexp(model.log_prob(x).to(torch.float64), dim=0))
    assert abs(total) <= tol(model.dtype, "norm"), f"probabilities sum to exp({total:.3g})"
    psi = dense_psi(model).detach()
    log_z = float(torch.log((psi.abs() ** 2).sum().to(torch.float64)))
    assert abs(float(model.log_norm()) - log_z) <= tol(model.dtype, "exact"), "log_norm differs from dense log Z"
    assert abs(model.nll(x[:5]) + float(exact_log_probs(model)[:5].mean())) <= tol(model.dtype, "exact")


def check_gradient(model: tnborn.BornMachine, data: torch.Tensor) -> None:
    """Autograd gradient of the trainers' batch NLL equals autograd through the dense vector.

    The model's arrays are replaced by leaf copies for the duration of the
    check and restored (detached) afterwards.
    """
    center = model.center
    originals = [model.node_tensor(nd).data for nd in model.nodes()]
    leaves = []
    for nd, a in zip(model.nodes(), originals):
        p = a.detach().clone().requires_grad_(True)
        model.node_tensor(nd).modify(data=p)
        leaves.append(p)
    # the leaves are copies of the same arrays: the canonical form is unchanged, but the
    # model noticed the swap (it dropped the centre), so declare it again
    model.set_center(center)
    try:
        loss = batch_nll(model, data)
        assert model.center == center, "batch_nll must not change the canonical centre"
        grads = torch.autograd.grad(loss, leaves)
        psi = dense_psi(model)
        logw = torch.log(psi.abs() ** 2)
        dense_loss = torch.logsumexp(logw, dim=0) - logw[config_index(data, model.phys_dim)].mean()
        assert abs(float(loss.detach()) - float(dense_loss.detach())) <= tol(model.dtype, "exact"), "batch NLL value differs"
        ref = torch.autograd.grad(dense_loss, leaves)
        scale = max(float(r.abs().max()) for r in ref)
        assert scale > 0
        for k, (g, r) in enumerate(zip(grads, ref)):
            err = float((g - r).abs().max())
            assert err <= tol(model.dtype, "gradient") * max(1.0, scale), f"node {k}: gradient error {err:.3g}"
    finally:
        for nd, a in zip(model.nodes(), originals):
            model.node_tensor(nd).modify(data=a)
        model.set_center(center)


# --------------------------------------------------------------------------- #
# sampling
# --------------------------------------------------------------------------- #
def check_sampler(model: tnborn.BornMachine, num_samples: int = 20_000, seed: int = 123) -> None:
    """Exact sampler: chi-square against the exact distribution, exact returned log-probabilities."""
    n = model.num_variables
    exact = exact_log_probs(model)
    samples, lp = model.sample(num_samples, seed=seed)
    assert samples.shape == (num_samples, n) and samples.dtype == torch.int64
    _assert_logp_close(lp, exact[config_index(samples, model.phys_dim)], 1e-8, "sample log_prob")
    assert_samples_match(samples, torch.arange(model.phys_dim**n), exact)
    again, _ = model.sample(num_samples, seed=seed)
    assert torch.equal(again, samples), "sampling is not reproducible for a fixed seed"


def check_conditional_sampler(model: tnborn.BornMachine, num_samples: int = 4000, seed: int = 9) -> None:
    """Conditional sampler against the exact conditionals for several masks."""
    n = model.num_variables
    exact = exact_log_probs(model)
    # known values drawn from the model itself, so that they have a sizeable probability
    x, _ = model.sample(4, seed=seed + 1)
    half = n // 2
    masks = torch.zeros((4, n), dtype=torch.bool)
    masks[0, :half] = True                   # first variables known
    masks[1, n - half:] = True               # last variables known
    masks[2, ::3] = True                     # scattered
    masks[3, :] = True
    masks[3, n // 2] = False                 # all but one known
    samples, lp = model.sample_conditional(x, masks, num_samples=num_samples, seed=seed)
    assert samples.shape == (4, num_samples, n) and lp.shape == (4, num_samples)
    for r in range(4):
        s, m = samples[r], masks[r]
        assert torch.equal(s[:, m], x[r, m].expand(num_samples, -1)), f"mask {r}: known variables changed"
        idx, cond = exact_conditional(exact, x[r], m)
        full = torch.full((model.phys_dim**n,), -math.inf, dtype=torch.float64)
        full[idx] = cond
        _assert_logp_close(lp[r], full[config_index(s, model.phys_dim)], 1e-8, f"mask {r}: conditional log_prob")
        assert_samples_match(s, idx, cond)


# --------------------------------------------------------------------------- #
# persistence, dtype, repr
# --------------------------------------------------------------------------- #
def check_checkpoint_roundtrip(model: tnborn.BornMachine, path: Any) -> None:
    """``tnborn.save`` then ``tnborn.load`` rebuilds the same geometry with the same log_prob."""
    x = all_configs(model.num_variables, model.phys_dim)
    written = tnborn.save(path, model)
    loaded = tnborn.load(written)
    assert type(loaded) is type(model) and loaded.geometry == model.geometry
    assert loaded.config() == model.config()
    assert loaded.bond_dims() == model.bond_dims() and loaded.center == model.center
    assert loaded.dtype == model.dtype
    assert torch.allclose(loaded.log_prob(x), model.log_prob(x), rtol=0, atol=tol(model.dtype, "exact"))
    info = tnborn.checkpoint_info(written)
    assert info["geometry"] == model.geometry


def check_float32(model: tnborn.BornMachine) -> None:
    """``to(dtype=float32)`` keeps the log-probabilities within float32 precision."""
    x = all_configs(model.num_variables, model.phys_dim)
    ref = model.log_prob(x)
    m32 = model.copy().to(dtype=torch.float32)
    assert m32.dtype == torch.float32 and model.dtype == torch.float64
    lp = m32.log_prob(x)
    assert lp.dtype == torch.float32
    eps = tol(torch.float32, "exact") * max(1.0, float(ref.abs().max()))
    _assert_logp_close(lp, ref, eps, "float32 log_prob")


def check_repr(model: tnborn.BornMachine) -> None:
    """``repr`` names the class and the geometry."""
    text = repr(model)
    assert type(model).__name__ in text and repr(model.geometry) in text
    assert f"num_variables={model.num_variables}" in text


# --------------------------------------------------------------------------- #
# tree geometries: canonical form and merge/split
# --------------------------------------------------------------------------- #
def check_move_center(model: tnborn.BornMachine) -> None:
    """Moving the centre to every node leaves ``P`` unchanged and ``log_norm`` exact."""
    x = all_configs(model.num_variables, model.phys_dim)
    exact = exact_log_probs(model)
    eps = tol(model.dtype, "gauge")
    for node in model.nodes():
        model.move_center(node)
        assert model.center == node
        _assert_logp_close(model.log_prob(x), exact, eps, f"after move_center({node!r})")
        psi = dense_psi(model).detach()
        log_z = float(torch.log((psi.abs() ** 2).sum().to(torch.float64)))
        assert abs(float(model.log_norm()) - log_z) <= eps, f"log_norm wrong with centre {node!r}"


def check_merge_split(model: tnborn.BornMachine) -> None:
    """Merging two neighbours and splitting them back without truncation keeps ``P``, and ``Z = 1``."""
    x = all_configs(model.num_variables, model.phys_dim)
    exact = exact_log_probs(model)
    eps = tol(model.dtype, "gauge")
    for u, v in model.edges()[:4]:
        model.move_center(u)
        block = model.merge(u, v)
        assert set(block.nodes) == {u, v}
        info = model.split(block, target=v, cutoff=0.0)
        assert info.max_discarded == 0.0 and model.center == v
        _assert_logp_close(model.log_prob(x), exact, eps, f"merge/split of {(u, v)!r}")
        psi = dense_psi(model).detach()
        assert abs(float((psi.abs() ** 2).sum()) - 1.0) <= eps, "split must leave Z = 1"
        assert abs(float(model.log_norm())) <= eps


def random_data(n: int, count: int, seed: int = 0, phys_dim: int = 2) -> torch.Tensor:
    """``count`` random configurations (int64) for gradient checks."""
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.integers(0, phys_dim, size=(count, n)), dtype=torch.int64)
