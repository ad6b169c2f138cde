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
    amplitude_condition,
    amplitude_operations,
    assert_samples_match,
    config_index,
    contraction_operations,
    dense_psi,
    exact_conditional,
    exact_log_probs,
    network_sizes,
    norm_condition,
    norm_operations,
)
from tolerances import rounding_bound

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


def _assert_logp_close(lp: torch.Tensor, exact: torch.Tensor, eps: Any, what: str) -> None:
    """``|lp - exact| <= eps`` (both finite; ``eps`` a number or one bound per entry), with the
    offending entry in the message."""
    lp = lp.detach().to(torch.float64)
    exact = exact.to(torch.float64)
    assert lp.shape == exact.shape, f"{what}: shape {tuple(lp.shape)} != {tuple(exact.shape)}"
    assert bool(torch.isfinite(lp).all()), f"{what}: non-finite log-probabilities"
    eps = torch.as_tensor(eps, dtype=torch.float64).expand_as(lp)
    excess = (lp - exact).abs() - eps
    k = int(excess.argmax())
    err = float((lp - exact).abs()[k])
    assert float(excess[k]) <= 0, f"{what}: |error| {err:.3g} > {float(eps[k]):.3g} at entry {k}"


def _operations(model: tnborn.BornMachine) -> tuple[int, int]:
    """Rounded steps per product term of tnborn's evaluation and of the dense reference.

    tnborn: its generic path for ``log |psi(x)|`` or the doubled network of ``log Z``
    (``conftest.amplitude_operations`` / ``norm_operations``), or a chain/tree fast path
    that sums each bond once (``sum(D) + N``), whichever is larger. The reference (quimb's
    contraction of the whole network with every variable open): in a tree two
    contracted pieces share one bond, so ``sum(D) + N`` in any order; with loops a step
    may sum several bonds at once, ``prod(D) + N`` in the worst case.
    """
    dims, n = model.bond_dims(), model.num_variables
    own = max(amplitude_operations(model, model.phys_dim**n), norm_operations(model), sum(dims) + n)
    ref = (sum(dims) if model.is_tree else math.prod(dims)) + n
    return own, ref


def log_prob_bound(model: tnborn.BornMachine, extra_operations: float = 0, reference: bool = True) -> torch.Tensor:
    """Per-configuration bound (``all_configs`` order) on ``|log P(x) - log P_exact(x)|``.

    ``2 log |psi(x)|`` errs by up to ``2 gamma kappa(x)`` (``kappa`` the amplitude's
    condition number, ``conftest.amplitude_condition``) and ``log Z`` by ``gamma Z_abs / Z``
    (``conftest.norm_condition``; the dense reference's ``sum |psi|^2`` errs by
    ``gamma sqrt(Z_abs / Z)`` at most, Cauchy-Schwarz), ``gamma`` the rounding of the
    steps of :func:`_operations` (the reference's only with ``reference``), plus
    ``extra_operations`` (gauge moves, splits: backward-stable changes of the tensors,
    amplified by the same condition numbers).
    """
    own, ref = _operations(model)
    ops = own + extra_operations + (ref if reference else 0)
    return rounding_bound(model.dtype, ops) * (2.0 * amplitude_condition(model) + norm_condition(model))


def _node_sizes(model: tnborn.BornMachine) -> int:
    """Total number of entries of the node tensors (the rounded steps of one QR sweep, per term)."""
    return sum(model.node_tensor(v).data.numel() for v in model.nodes())


def _marginal_bound(model: tnborn.BornMachine, cond: torch.Tensor) -> torch.Tensor:
    """Bound on the error of a sampler's ``sum_i log(marginal ratio)`` along ``N`` variables.

    Each marginal passes ``T`` rounded steps per product: ``N x`` the node sizes for a
    tree's environments (one product through each node); for the base class's doubled
    network the steps along tnborn's contraction path of that network (largest over the
    variables, ``conftest.contraction_operations``). ``cond`` bounds ``sum psi_abs^2 / sum
    psi^2`` of the numerators and denominators (the squared amplitude conditioning; one
    for the canonical quadratic forms of an unconditioned tree sampler).
    """
    n = model.num_variables
    terms = n * _node_sizes(model) if model.is_tree else _marginal_operations(model)
    return 2 * n * rounding_bound(model.dtype, terms + 4 * n) * cond


def _marginal_operations(model: tnborn.BornMachine) -> int:
    """Rounded steps of ``BornMachine._marginal`` (the doubled network with the variable's
    delta and the other variables' per-row projectors), the largest over the variables."""
    from tnborn.interface.probability import BATCH_INDEX

    ket = [tuple(model.node_tensor(v).inds) for v in model.nodes()]
    base = ket + [tuple(ix + "'" for ix in t) for t in ket] + [(BATCH_INDEX,)]
    sizes = dict(network_sizes(model), __out__=model.phys_dim)
    worst = 0
    for var in range(model.num_variables):
        ixs = [model.variable_index(v) for v in range(model.num_variables)]
        extra = [(ix, ix + "'", "__out__") if v == var else (BATCH_INDEX, ix, ix + "'") for v, ix in enumerate(ixs)]
        worst = max(worst, contraction_operations(base + extra, sizes, (BATCH_INDEX, "__out__")))
    return worst


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
    bound = log_prob_bound(model)
    _assert_logp_close(lp, exact, bound, "log_prob vs brute force")
    # a shuffled sub-batch gives the same numbers (no cross-talk between rows)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:37]
    _assert_logp_close(model.log_prob(x[perm]), exact[perm], bound[perm], "sub-batch log_prob")
    # log_amplitude: |psi| up to the normalisation, and the phase/sign
    psi = dense_psi(model).detach().to(torch.complex128 if model.dtype.is_complex else torch.float64)
    log_abs, phase = model.log_amplitude(x)
    ref = psi / psi.abs().max()
    got = phase.to(ref.dtype) * torch.exp(log_abs.to(torch.float64) - float(log_abs.max())).to(ref.dtype)
    # the global factor (and phase) of psi is a convention: align on the largest amplitude
    k = int(psi.abs().argmax())
    got = got * (ref[k] / got[k])
    # each amplitude errs by gamma kappa(x) |psi(x)| in both computations, the alignment on
    # entry k by gamma kappa(k) (kappa |ref| = psi_abs / max |psi|, finite where psi = 0)
    own, ref_ops = _operations(model)
    kappa = amplitude_condition(model)
    scaled = kappa * ref.abs() + 2.0 * float(kappa[k]) * ref.abs()
    bound = rounding_bound(model.dtype, own + ref_ops) * scaled + rounding_bound(model.dtype, 4)
    assert bool(((got - ref).abs() <= bound).all()), "amplitudes differ from dense psi"


def check_normalisation(model: tnborn.BornMachine) -> None:
    """``logsumexp(log_prob(all)) = 0`` and ``log_norm`` equals the dense ``log Z``."""
    x = all_configs(model.num_variables, model.phys_dim)
    exact = exact_log_probs(model)
    own_bound = log_prob_bound(model, reference=False)
    total = float(torch.logsumexp(model.log_prob(x).to(torch.float64), dim=0))
    # the P-weighted mean of each log P's own error, plus the rounding of the d^N-term sum
    eps = float((torch.exp(exact) * own_bound).sum()) + rounding_bound(torch.float64, x.shape[0])
    assert abs(total) <= eps, f"probabilities sum to exp({total:.3g})"
    psi = dense_psi(model).detach()
    log_z = float(torch.log((psi.abs() ** 2).sum().to(torch.float64)))
    # log Z: the doubled network (or a fast path) and the dense sum of squares, both at Z_abs / Z
    own, ref = _operations(model)
    eps = rounding_bound(model.dtype, own + ref) * norm_condition(model)
    assert abs(float(model.log_norm()) - log_z) <= eps, "log_norm differs from dense log Z"
    eps = float(log_prob_bound(model)[:5].mean()) + rounding_bound(torch.float64, 5)
    assert abs(model.nll(x[:5]) + float(exact[:5].mean())) <= eps


def check_gradient(model: tnborn.BornMachine, data: torch.Tensor) -> None:
    """Autograd gradient of the trainers' batch NLL equals autograd through the dense vector.

    The model's arrays are replaced by leaf copies for the duration of the
    check and restored (detached) afterwards.
    """
    center = model.center
    originals = [model.node_tensor(nd).data for nd in model.nodes()]
    scale = _gradient_scale(model, data)
    bound = log_prob_bound(model)  # before the swap: norm_condition reads the arrays
    own, ref_ops = _operations(model)
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
        rows = config_index(data, model.phys_dim)
        # mean of the rows' log P bounds (log Z's included) plus the rounding of the mean
        eps = float(bound[rows].mean()) + rounding_bound(torch.float64, data.shape[0])
        assert abs(float(loss.detach()) - float(dense_loss.detach())) <= eps, "batch NLL value differs"
        ref = torch.autograd.grad(dense_loss, leaves)
        assert max(float(r.abs().max()) for r in ref) > 0
        # forward and backward pass of tnborn's contraction plus the dense reference's
        gamma = rounding_bound(model.dtype, 2 * own + ref_ops)
        for k, (g, r) in enumerate(zip(grads, ref)):
            err = (g - r).abs()
            bound = gamma * scale[k]
            j = int((err - bound).argmax())
            assert bool((err <= bound).all()), f"node {k}: gradient error {float(err.flatten()[j]):.3g} > {float(bound.flatten()[j]):.3g}"
    finally:
        for nd, a in zip(model.nodes(), originals):
            model.node_tensor(nd).modify(data=a)
        model.set_center(center)


def _gradient_scale(model: tnborn.BornMachine, data: torch.Tensor) -> list[torch.Tensor]:
    """Per-entry scale of the rounding error of the NLL gradient (times ``gamma``).

    The gradient is ``sum_x w_x d log |psi(x)|^2`` with ``w`` the data frequencies (minus)
    and ``P(x)`` (the ``log Z`` term). ``d log |psi|^2 / dA = 2 E(x) / psi(x)`` (``E`` the
    environment of the entry) errs by ``gamma (E_abs + kappa |E|) / |psi|
    <= gamma kappa (1 + kappa) E_abs / psi_abs``, where ``E_abs / psi_abs = d log psi_abs / d|A|``
    in the network of absolute values. Summed with ``2 |w_x|`` by autograd of that network.
    """
    kappa = amplitude_condition(model)
    p = torch.exp(exact_log_probs(model))
    freq = torch.bincount(config_index(data, model.phys_dim), minlength=p.shape[0]).to(torch.float64) / data.shape[0]
    absolute = model.copy()
    leaves = []
    for nd in absolute.nodes():
        t = absolute.node_tensor(nd)
        leaf = t.data.detach().abs().to(torch.float64).clone().requires_grad_(True)
        t.modify(data=leaf)
        leaves.append(leaf)
    psi_abs = dense_psi(absolute)
    weights = 2.0 * (freq + p) * kappa * (1.0 + kappa)
    scale = torch.autograd.grad((weights * torch.log(psi_abs)).sum(), leaves)
    return [s.detach().to(torch.float64) for s in scale]


# --------------------------------------------------------------------------- #
# sampling
# --------------------------------------------------------------------------- #
def sample_log_prob_bound(model: tnborn.BornMachine, rows: torch.Tensor, generic: bool = False) -> torch.Tensor:
    """Bound on ``|log P_sampler(x) - log P_exact(x)|`` at the configurations ``rows`` (indices).

    A tree's own sampler (``generic=False``) sums ratios of PSD quadratic forms through
    canonical isometries (condition one); the canonicalisation (one QR per node) perturbs
    the tensors, amplified by ``kappa(x)``. The base-class sampler (``generic`` or loops)
    sums ratios of doubled-network marginals: ``sum psi_abs^2 / sum psi^2 <= max kappa^2``.
    """
    n = model.num_variables
    if model.is_tree and not generic:
        return _marginal_bound(model, torch.ones(())) + log_prob_bound(model, 2 * n * _node_sizes(model))[rows]
    # the ratio at variable i: sums of |psi|^2 over the configurations that agree with x on
    # the variables drawn so far, condition sum psi_abs^2 / sum |psi|^2 (per row and step;
    # psi_abs^2 = kappa^2 |psi|^2, and |psi|^2 is proportional to P)
    kappa2 = amplitude_condition(model) ** 2
    p = torch.exp(exact_log_probs(model))
    configs = all_configs(n, model.phys_dim)
    cond = torch.zeros(rows.shape[0], dtype=torch.float64)
    order = list(model.sampling_order())
    for i in range(n + 1):
        key = config_index(configs[:, order[:i]], model.phys_dim) if i else torch.zeros_like(p, dtype=torch.int64)
        size = int(key.max()) + 1
        group = torch.zeros(size, dtype=torch.float64).index_add(0, key, kappa2 * p) / torch.zeros(size, dtype=torch.float64).index_add(0, key, p)
        cond = cond + (2.0 if 0 < i < n else 1.0) * group[key[rows]]  # numerator of one ratio, denominator of the next
    steps = _marginal_operations(model) + 4 * n
    return rounding_bound(model.dtype, steps) * cond + log_prob_bound(model)[rows]


def conditional_log_prob_bound(model: tnborn.BornMachine, rows: torch.Tensor, consistent: torch.Tensor) -> torch.Tensor:
    """Bound on a conditional sampler's ``log P(free | known)`` at ``rows`` against the exact one.

    Known values enter the marginals (environments) unsquared: numerator ``kappa(x)^2``,
    denominator at most the largest ``kappa^2`` among the ``consistent`` configurations;
    the exact conditional carries the reference's bound at ``x`` and over the consistent set.
    """
    kappa, bound = amplitude_condition(model), log_prob_bound(model)
    cond = kappa[rows] ** 2 + float(kappa[consistent].max()) ** 2
    return _marginal_bound(model, cond) + 2 * bound[rows] + float(bound[consistent].max())


def check_sampler(model: tnborn.BornMachine, num_samples: int = 20_000, seed: int = 123) -> None:
    """Exact sampler: chi-square against the exact distribution, exact returned log-probabilities."""
    n = model.num_variables
    exact = exact_log_probs(model)
    samples, lp = model.sample(num_samples, seed=seed)
    assert samples.shape == (num_samples, n) and samples.dtype == torch.int64
    rows = config_index(samples, model.phys_dim)
    _assert_logp_close(lp, exact[rows], sample_log_prob_bound(model, rows), "sample log_prob")
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
        rows = config_index(s, model.phys_dim)
        eps = conditional_log_prob_bound(model, rows, idx)
        _assert_logp_close(lp[r], full[rows], eps, f"mask {r}: conditional log_prob")
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
    # the same arrays, possibly in another index order (another summation order): two own bounds
    _assert_logp_close(loaded.log_prob(x), model.log_prob(x), 2 * log_prob_bound(model, reference=False), "checkpoint")
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
    # float32 rounding of the cast model's evaluation (its own conditioning), plus float64's
    eps = log_prob_bound(m32, m32.num_variables, reference=False) + log_prob_bound(model, reference=False)
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
    nodes = model.nodes()
    own, ref = _operations(model)
    for k, node in enumerate(nodes):
        model.move_center(node)
        assert model.center == node
        # at most len(nodes) QR moves per call so far, each a backward-stable change of
        # a node (its size in rounded steps), amplified by the conditioning like any rounding
        moves = (k + 1) * len(nodes) * _node_sizes(model)
        eps = log_prob_bound(model, moves)
        _assert_logp_close(model.log_prob(x), exact, eps, f"after move_center({node!r})")
        psi = dense_psi(model).detach()
        log_z = float(torch.log((psi.abs() ** 2).sum().to(torch.float64)))
        eps_z = rounding_bound(model.dtype, own + ref + moves) * norm_condition(model)
        assert abs(float(model.log_norm()) - log_z) <= eps_z, f"log_norm wrong with centre {node!r}"


def check_merge_split(model: tnborn.BornMachine) -> None:
    """Merging two neighbours and splitting them back without truncation keeps ``P``, and ``Z = 1``."""
    x = all_configs(model.num_variables, model.phys_dim)
    exact = exact_log_probs(model)
    own, ref = _operations(model)
    for k, (u, v) in enumerate(model.edges()[:4]):
        # the moves and the merge/split so far, each a backward-stable change of the nodes
        steps = (k + 1) * (len(model.nodes()) + 2) * _node_sizes(model)
        model.move_center(u)
        block = model.merge(u, v)
        assert set(block.nodes) == {u, v}
        info = model.split(block, target=v, cutoff=0.0)
        assert info.max_discarded == 0.0 and model.center == v
        _assert_logp_close(model.log_prob(x), exact, log_prob_bound(model, steps), f"merge/split of {(u, v)!r}")
        psi = dense_psi(model).detach()
        # the split normalises the centre (a sum of squares, condition one); the dense sum
        # of squares of the reference amplitudes errs by gamma Z_abs / Z
        eps = rounding_bound(model.dtype, own + ref + steps) * norm_condition(model)
        assert abs(float((psi.abs() ** 2).sum()) - 1.0) <= eps, "split must leave Z = 1"
        assert abs(float(model.log_norm())) <= rounding_bound(model.dtype, steps)


def random_data(n: int, count: int, seed: int = 0, phys_dim: int = 2) -> torch.Tensor:
    """``count`` random configurations (int64) for gradient checks."""
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.integers(0, phys_dim, size=(count, n)), dtype=torch.int64)
