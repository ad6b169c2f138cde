"""Shared test configuration and exact (brute-force) references for the tnborn core tests.

The helpers here are deliberately independent of tnborn's own contraction
code: the dense reference goes through quimb's contraction of ``model.tn``
(or plain torch products), never through :mod:`tnborn.contraction`.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# the machine is shared: keep every test single-threaded
torch.set_num_threads(1)

SHARED_DATA = Path(
    os.environ.get("TNBORN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def pytest_configure(config):
    """Register the markers used by these tests."""
    config.addinivalue_line("markers", "slow: a test that takes more than ~20 s (deselect with -m 'not slow')")


@pytest.fixture(params=["numpy", "torch"])
def step_ops(request, monkeypatch):
    """Run a test of the gradient steps on the numpy fast path and on the torch path."""
    if request.param == "torch":
        import tnborn.training.local_update as lu

        monkeypatch.setattr(lu, "NUMPY_STEP_MAX_WORK", -1)
    return request.param


@pytest.fixture(params=["numba", "torch"])
def chain_kernels(request):
    """Run a test with the compiled kernels (tnborn.kernels, where they apply) and with the plain torch path."""
    from tnborn import kernels

    if request.param == "numba" and not kernels.available():
        pytest.skip("numba is not installed")
    kernels.set_kernels(request.param)
    yield request.param
    kernels.set_kernels(None)


class HostReads(torch.overrides.TorchFunctionMode):
    """Count what reads a tensor's values back to Python (each one a host synchronisation on a GPU).

    ``float(t)``, ``bool(t)``, ``int(t)``, ``t.item()``, ``t.tolist()``,
    ``t.numpy()`` and an ``if t:`` all pass through ``__torch_function__``; on
    the CPU they cost nothing, on CUDA each one waits for the device. A code
    path whose count does not grow with the number of gradient steps has no
    synchronisation per step, which a CPU test can check this way.
    """

    READS = frozenset({"__float__", "__bool__", "__int__", "__index__", "__complex__", "item", "tolist",
                       "numpy"})

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


# --------------------------------------------------------------------------- #
# exact references
# --------------------------------------------------------------------------- #
def all_configs(n: int, d: int = 2) -> torch.Tensor:
    """Every configuration of ``n`` variables, ``(d**n, n)`` int64, lexicographic (variable 0 slowest)."""
    return torch.tensor(list(itertools.product(range(d), repeat=n)), dtype=torch.int64)


def config_index(x: torch.Tensor, d: int = 2) -> torch.Tensor:
    """Row index of each configuration in :func:`all_configs` order."""
    n = x.shape[-1]
    weights = torch.tensor([d ** (n - 1 - k) for k in range(n)], dtype=torch.int64)
    return (x.long() * weights).sum(dim=-1)


def dense_psi(model) -> torch.Tensor:
    """All ``d**N`` amplitudes by quimb's full contraction of ``model.tn`` (flat, all_configs order)."""
    n = model.num_variables
    out = [model.variable_index(v) for v in range(n)]
    t = model.tn.contract(all, output_inds=out, preserve_tensor=True)
    t = t.transpose(*out)
    return torch.as_tensor(t.data).reshape(-1)


def exact_log_probs(model) -> torch.Tensor:
    """``log P(x)`` of every configuration, by brute-force enumeration (float64/complex128)."""
    psi = dense_psi(model).to(torch.complex128 if model.dtype.is_complex else torch.float64)
    w = psi.abs() ** 2
    return torch.log(w) - torch.log(w.sum())


def amplitude_condition(model) -> torch.Tensor:
    """Condition number ``kappa(x) = sum over paths |product| / |psi(x)|`` of every amplitude.

    The numerator is the full contraction of the network with every entry
    replaced by its absolute value: any summation order computes ``psi(x)``
    with an error at most ``gamma_n * numerator`` (``n`` the rounded steps
    along a path), so ``log P(x)`` has an error up to ``~2 gamma_n kappa(x)``.
    Large where the amplitude is a near-cancellation (a tiny ``P``), ``inf``
    where ``psi(x) = 0``.
    """
    absolute = model.copy()
    for node in absolute.nodes():
        t = absolute.node_tensor(node)
        t.modify(data=t.data.abs())
    return dense_psi(absolute).abs().to(torch.float64) / dense_psi(model).abs().to(torch.float64)


def chain_log_prob_bound(model, extra_operations: float = 0) -> torch.Tensor:
    """Per-configuration bound on ``|log P - log P_exact|`` for a chain (MPS), from the conditioning.

    Along a chain every bond is summed once, in whatever order the
    contraction runs: ``sum_k D_k + N`` rounded steps per amplitude. Two
    computations of ``psi`` (the tested one and the dense reference) each
    contribute ``2 gamma kappa(x)`` to ``log |psi|^2`` and ``gamma`` to
    ``log Z`` (a sum of squares: condition number one).
    """
    from tolerances import rounding_bound

    ops = sum(model.bond_dims()) + model.num_variables + extra_operations
    return rounding_bound(model.dtype, ops) * (4.0 * amplitude_condition(model) + 2.0)


def contraction_operations(inputs, sizes, output=()) -> int:
    """Rounded steps each product term passes through along tnborn's contraction path.

    The path is the one ``contract_log_scaled`` takes (cotengra greedy, cached). A
    pairwise step that sums ``K`` index values adds ``K`` rounded operations to every
    term (one product, ``K - 1`` additions, one rescaling), so the sum of ``K`` over
    the steps plus one multiplication per tensor bounds the error of the result
    relative to the same contraction of absolute values (first order).
    """
    from tnborn.contraction import _cached_path

    inputs = tuple(tuple(t) for t in inputs)
    path = _cached_path(inputs, tuple(output), tuple(sorted(sizes.items())), "greedy")
    stack, ops = list(inputs), len(inputs)
    for i, j in path:
        a, b = sorted((i, j))
        tb, ta = stack.pop(b), stack.pop(a)
        remaining = {ix for term in stack for ix in term} | set(output)
        ops += math.prod(sizes[ix] for ix in set(ta) | set(tb) if ix not in remaining) + 1
        stack.append(tuple(dict.fromkeys(ix for ix in ta + tb if ix in remaining)))
    return ops


def network_sizes(model) -> dict:
    """Size of every index of the network, its primed (bra) copy and the batch index."""
    from tnborn.interface.probability import BATCH_INDEX

    sizes = {BATCH_INDEX: 1}
    for node in model.nodes():
        t = model.node_tensor(node)
        sizes.update({ix: int(d) for ix, d in zip(t.inds, t.data.shape)})
        sizes.update({ix + "'": int(d) for ix, d in zip(t.inds, t.data.shape)})
    return sizes


def norm_operations(model) -> int:
    """Rounded steps of ``log Z`` (the doubled network ``<psi|psi>``, contracted in one pass)."""
    _, inputs = model._doubled_network(frozenset())
    return contraction_operations(inputs, network_sizes(model)) + 2  # + the log and its scale


def amplitude_operations(model, batch: int) -> int:
    """Rounded steps of ``log |psi(x)|`` for a batch of ``batch`` (the network with one-hot vectors)."""
    from tnborn.interface.probability import BATCH_INDEX

    inputs = [tuple(model.node_tensor(n).inds) for n in model.nodes()]
    inputs += [(BATCH_INDEX, model.variable_index(v)) for v in range(model.num_variables)]
    return contraction_operations(inputs, dict(network_sizes(model), **{BATCH_INDEX: int(batch)}), (BATCH_INDEX,)) + 2


def norm_condition(model) -> float:
    """``Z_abs / Z``: the doubled network of absolute values over ``Z`` (1 without cancellation).

    ``log Z`` carries a rounding error up to ``gamma_ops * Z_abs / Z`` whatever the
    order of the contraction; ``Z_abs`` has no cancellation, so its own log is exact
    to ``gamma_ops``.
    """
    absolute = model.copy()
    for node in absolute.nodes():
        t = absolute.node_tensor(node)
        t.modify(data=t.data.abs())
    return math.exp(float(absolute.log_norm()) - float(model.log_norm()))


def generic_log_prob_bound(model, reference_operations: float = 0) -> torch.Tensor:
    """Per-configuration bound on ``|log P(x) - log P_exact(x)|`` of tnborn's generic contraction
    (every configuration, ``all_configs`` order; loopy networks such as the PEPS).

    ``2 log |psi(x)|`` errs by up to ``2 gamma kappa(x)`` (``kappa`` from
    ``conftest.amplitude_condition``) and ``log Z`` by ``gamma Z_abs / Z``; a
    reference computed with ``reference_operations`` steps adds its own
    ``2 gamma_ref kappa(x) + gamma_ref Z_abs / Z``.
    """
    from tolerances import rounding_bound

    kappa = amplitude_condition(model)
    cond_z = norm_condition(model)
    own = rounding_bound(model.dtype, amplitude_operations(model, kappa.shape[0])) * 2.0 * kappa
    own = own + rounding_bound(model.dtype, norm_operations(model)) * cond_z
    if reference_operations:
        own = own + rounding_bound(model.dtype, reference_operations) * (2.0 * kappa + cond_z)
    return own


def block_nll(m: torch.Tensor, f: torch.Tensor, r: torch.Tensor) -> float:
    """NLL of a unit-norm block ``M`` on rows ``F, R`` written out: ``-(1/B) sum_b log psi_b^2``,
    ``psi_b = F_b M R_b`` (the reference of the local-update tests)."""
    psi = torch.einsum("bk,kd,bd->b", f, m, r)
    return float(-(torch.log(psi ** 2)).mean())


def plain_block_step(m: torch.Tensor, f: torch.Tensor, r: torch.Tensor, lr: float) -> torch.Tensor:
    """One plain gradient step of the sweep written out: ``M - 2 lr (M - G / B)``, normalised."""
    psi = torch.einsum("bk,kd,bd->b", f, m, r)
    g = torch.einsum("bk,bd->kd", f, r / psi[:, None]) / f.shape[0]
    new = m - 2 * lr * (m - g)
    return new / torch.linalg.vector_norm(new)


def exact_conditional(logp_all: torch.Tensor, x: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact conditional distribution over all configurations agreeing with ``x`` on ``known``.

    Parameters
    ----------
    logp_all : torch.Tensor
        ``(2**N,)`` exact log-probabilities.
    x : torch.Tensor
        ``(N,)`` configuration (only known entries matter).
    known : torch.Tensor
        ``(N,)`` boolean.

    Returns
    -------
    indices : torch.Tensor
        Indices (all_configs order) of the consistent configurations.
    log_cond : torch.Tensor
        Their exact ``log P(free | known)``.
    """
    n = x.shape[0]
    configs = all_configs(n)
    consistent = ((configs == x[None, :]) | ~known[None, :]).all(dim=1)
    idx = torch.nonzero(consistent).squeeze(1)
    lp = logp_all[idx]
    return idx, lp - torch.logsumexp(lp, dim=0)


def chi_square_pvalue(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Pearson chi-square goodness of fit, pooling cells with expected count < 5.

    Parameters
    ----------
    counts : numpy.ndarray
        Observed counts per cell.
    probs : numpy.ndarray
        Exact probabilities per cell (summing to one).

    Returns
    -------
    p_value : float
        ``P(chi2_dof >= statistic)``.
    dof : int
        Degrees of freedom after pooling.
    """
    from scipy.stats import chi2

    counts = np.asarray(counts, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    total = counts.sum()
    expected = probs * total
    big = expected >= 5
    obs = list(counts[big])
    exp = list(expected[big])
    if (~big).any():
        obs.append(counts[~big].sum())
        exp.append(expected[~big].sum())
    obs, exp = np.array(obs), np.array(exp)
    # a pooled tail with tiny expectation would dominate the statistic: merge it into the smallest cell
    if exp.size > 1 and exp[-1] < 5:
        j = int(np.argmin(exp[:-1]))
        obs[j] += obs[-1]
        exp[j] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    dof = exp.size - 1
    if dof < 1:
        return 1.0, 0
    stat = float(((obs - exp) ** 2 / exp).sum())
    return float(chi2.sf(stat, dof)), dof


#: p-value below which a sampler is declared wrong. With a fixed seed the test
#: is deterministic; a correct sampler falls below this with probability 1e-3
#: (for any sample size and number of cells, since the chi-square statistic's
#: distribution is asymptotically chi2(dof) once every expected count is >= 5).
P_VALUE_THRESHOLD = 1e-3


def assert_samples_match(samples: torch.Tensor, idx: torch.Tensor, log_probs: torch.Tensor) -> float:
    """Chi-square test of ``samples`` against exact ``log_probs`` over cells ``idx``; returns p."""
    codes = config_index(samples).numpy()
    pos = {int(c): i for i, c in enumerate(idx.tolist())}
    missing = [c for c in np.unique(codes) if int(c) not in pos]
    assert not missing, f"sampler produced configurations outside the support: {missing[:5]}"
    counts = np.zeros(len(pos))
    for c, k in zip(*np.unique(codes, return_counts=True)):
        counts[pos[int(c)]] = k
    p, dof = chi_square_pvalue(counts, torch.exp(log_probs).numpy())
    assert dof >= 1
    assert p > P_VALUE_THRESHOLD, f"chi-square p-value {p:.3g} (dof {dof}) below {P_VALUE_THRESHOLD}"
    return p


def canonical_arrays(model) -> list[torch.Tensor]:
    """Node arrays with their indices in a fixed order (bonds in neighbour order, then physical).

    The live index order of a node may differ between two equal models (an SVD
    split or a checkpoint round trip may permute it); this order does not.
    """
    out = []
    for node in model.nodes():
        t = model.node_tensor(node)
        order = [model.bond_index(node, nb) for nb in model.neighbours(node)]
        order += [model.variable_index(v) for v in model.node_variables(node)]
        assert sorted(order) == sorted(t.inds)
        out.append(t.transpose(*order).data)
    return out


def snapshot(model) -> list[torch.Tensor]:
    """Cloned node arrays (to check bit-identity before/after a call)."""
    return [a.detach().clone() for a in model.arrays()]


def assert_unchanged(model, before: list[torch.Tensor]) -> None:
    """Assert that the model's arrays are bit-identical to ``before``."""
    after = model.arrays()
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.equal(a, b)


def record_cutoff_margins(monkeypatch) -> list[float]:
    """Record :func:`tolerances.cutoff_margin` of every split decided by ``truncate_spectrum``.

    Patches the rule where the generic split (``interface.blocks``) and the
    MPS fast path (``geometries.mps.machine``) call it; the compiled kernel
    applies the same rule in numba and is not seen. Returns the list the
    margins are appended to.
    """
    import tnborn.geometries.mps.machine as mps_machine
    import tnborn.interface.blocks as blocks
    from tolerances import cutoff_margin

    margins: list[float] = []
    real = blocks.truncate_spectrum

    def spy(s, cutoff, max_bond, min_bond):
        margins.append(cutoff_margin(s.sort(descending=True).values, cutoff, max_bond, min_bond))
        return real(s, cutoff, max_bond, min_bond)

    monkeypatch.setattr(blocks, "truncate_spectrum", spy)
    monkeypatch.setattr(mps_machine, "truncate_spectrum", spy)
    return margins


def shared_file(name: str) -> Path:
    """Path of a shared data file, skipping the test when it is absent."""
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f"shared data file {p} not available")
    return p



def record_guard_margins(monkeypatch) -> list[tuple[float, float]]:
    """Record ``(margin, bound)`` of every accept/reject decision of the step guard.

    The guard accepts a step when ``after <= before + max_nll_rise``
    (``tnborn.training.local_update._steps``); ``margin = after - before -
    max_nll_rise``. ``bound`` is how far rounding can move that difference: each
    NLL is ``-(1/B) sum_b log |psi_b|^2`` with ``psi_b = F_b M R_b`` a sum over
    ``K x D`` products, so ``log |psi_b|^2`` carries ``2 rounding_bound(K + D + B)
    kappa_b`` (``kappa_b = (|F_b| |M| |R_b|) / |psi_b|``, its condition number;
    ``B`` the rows of the batch, the depth of the gradient sum that made ``M``),
    averaged over the rows, for ``after`` and ``before`` together. A decision
    with ``|margin| > bound`` is the same on any machine; a test whose
    decisions the reference or the counts pin down asserts that for each.
    """
    import tnborn.training.local_update as lu
    from tolerances import rounding_bound

    errors: dict[int, tuple[object, float]] = {}
    decisions: list[tuple[float, float]] = []

    class Tracked(float):
        def __new__(cls, value, err):
            obj = float.__new__(cls, value)
            obj.err = err
            return obj

        def __add__(self, other):
            return Tracked(float(self) + float(other), self.err + getattr(other, "err", 0.0))

        def __le__(self, other):
            decisions.append((float(self) - float(other), self.err + getattr(other, "err", 0.0)))
            return float(self) <= float(other)

    def wrap_psi(ops):
        real = ops.psi

        def psi(f, m, r):
            out = real(f, m, r)
            absf, absm, absr = (abs(a) for a in (f, m, r))
            mag = (absf @ absm * absr).sum(1)
            kappa = mag / abs(out)
            ops_count = f.shape[1] + r.shape[1] + f.shape[0]
            dtype = m.dtype if isinstance(m, torch.Tensor) else getattr(torch, str(m.dtype))
            err = 2.0 * rounding_bound(dtype, ops_count) * (kappa.mean() if kappa.shape[0] else 0.0)
            errors[id(out)] = (out, float(err))
            return out

        monkeypatch.setattr(ops, "psi", psi)

    wrap_psi(lu._TORCH)
    wrap_psi(lu._NUMPY)
    real_nll = lu._batch_nll

    def batch_nll(psi, size, comm, ops):
        value = real_nll(psi, size, comm, ops)
        _, err = errors.get(id(psi), (None, float("inf")))
        return Tracked(value, err)

    monkeypatch.setattr(lu, "_batch_nll", batch_nll)
    return decisions
