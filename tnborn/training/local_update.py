"""The local update of the two-site sweep: gradient steps on one merged block.

Every two-site update, single-process or data-parallel, plain or with the
authors' ``norm0.25`` rule, runs :func:`block_gradient_steps`. One step on a
batch ``b`` of a normalised block ``M`` (``K x D``, ``psi_b = F_b M R_b``):

1. ``G = sum_b conj(F_b)^T conj(R_b / psi_b)`` over this process's rows,
   summed over the processes by the communicator (a no-op for one process);
   with a *per-sample cap* ``max_sample_change = c``, the term of row ``b`` is
   first scaled by ``min(1, c / rho_b)``, where
   ``rho_b = 2 lr |F_b|^2 |R_b|^2 / (B |psi_b|^2)``;
2. a *rule* (:data:`RULES`) turns ``M``, ``G``, the global batch size ``B``
   and the learning rate into the unnormalised new block: ``"none"`` is the
   plain step ``M - 2 lr (M - G / B)``, ``"norm0.25"`` the authors' rescaling
   of small directions;
3. ``M <- M / ||M||``;
4. with a bound ``max_nll_rise`` (the *step guard*), the step is accepted only
   if the NLL ``-(1/N) sum_n log |psi_n|^2`` (``Z = ||M||^2 = 1`` in the
   canonical form) of the guard's rows rises by at most that bound; otherwise
   the step is rejected (``M`` kept), or, with ``max_shrinks > 0``, first
   retried with its learning rate halved up to that many times. The guard's
   rows (``guard_scope``, :data:`GUARD_SCOPES`) are the step's own batch
   (``"batch"``) or every row of the call (``"bond"``: in the sweep, all the
   rows drawn for this bond, the union of its batches). Every process sees the
   same all-reduced NLLs, so all take the same decisions.

Without the step guard the steps never wait for the device: the norm of
``M``, the rule's rescaling and the finiteness checks stay tensors, and one
check after the last step reads a value back (on a GPU, one synchronisation
per call, not per step). The guard decides on the host, once per step.

A step is never half-applied: the block a step starts from is kept until the
new one is accepted. ``psi`` of the new block on the guard's rows is one more
``F M R`` product per step, the price of the guard (with ``"bond"`` it is
reused: the batch's ``psi`` of the next step is read from it).

Why ``"bond"``: a gradient step on a batch of ``B`` rows lowers that batch's
NLL unless it overshoots, so a guard on the batch only catches overshoots; a
step that fits its ``B`` rows at the expense of the others passes it. Judged
on all the rows of the bond, a step is accepted only if it does not raise the
NLL of the rows the whole update draws from, so no update raises it (on MNIST
at batches of 50, ``examples/stability_batch50.py``, the tree then trains
better than at batches of 200 without a guard).

Why the per-sample cap: the plain step's term of row ``b`` alone changes
``psi_b`` by ``rho_b psi_b`` (the term ``G_b`` of row ``b`` gives
``F_b G_b R_b = |F_b|^2 |R_b|^2 / conj(psi_b)``: the change has the phase of
``psi_b``).
The gradient is the first-order model of ``-log |psi_b|^2``, which holds only
while the step changes ``psi_b`` by less than ``|psi_b|``; a row almost
orthogonal to the block (a tiny ``psi_b``) has ``rho_b`` of thousands and its
term alone would nearly replace ``M`` by that row's direction. With ``c = 1``
no row's own term more than doubles its amplitude; the terms of all other rows
are exact. The cap needs each row's own numbers only, no communication.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import NumericalError
from .settings import GUARD_SCOPES as _SCOPES
from .settings import GUARD_SHRINKS_DEFAULT

__all__ = ["block_gradient_steps", "rescaled_gradient_steps", "StepStats", "RULES",
           "GUARD_SCOPES", "MAX_STEP_SHRINKS", "NUMPY_STEP_MAX_WORK"]

#: The rows the step guard may judge a step on (the values of :attr:`SweepSettings.guard_scope
#: <tnborn.training.settings.SweepSettings>`): ``"batch"``, the step's own batch; ``"bond"``,
#: every row of the call (in the sweep, all the rows drawn for the bond).
GUARD_SCOPES = _SCOPES

#: Default halvings of a step's learning rate tried by the step guard before the step
#: is rejected (the default of :attr:`SweepSettings.guard_shrinks
#: <tnborn.training.settings.SweepSettings>`).
MAX_STEP_SHRINKS = GUARD_SHRINKS_DEFAULT

#: Largest ``rows * K * D`` of one step done with numpy instead of torch: for such
#: small products torch's per-call overhead (several microseconds) dominates,
#: numpy's is a fraction of it, and its BLAS stays single-threaded. Measured on
#: the 2-core development CPU: max-bond-30 MNIST steps 1.6x faster.
NUMPY_STEP_MAX_WORK = 200_000


@dataclass
class StepStats:
    """Counts of what the step guard did (added to by :func:`block_gradient_steps`).

    Attributes
    ----------
    steps : int
        Gradient steps attempted.
    shrunk : int
        Steps accepted with a reduced learning rate.
    rejected : int
        Steps rejected (the block kept).
    """

    steps: int = 0
    shrunk: int = 0
    rejected: int = 0

    def add(self, other: "StepStats") -> None:
        """Add ``other``'s counts to these, in place.

        Parameters
        ----------
        other : StepStats
            Counts to add.
        """
        self.steps += other.steps
        self.shrunk += other.shrunk
        self.rejected += other.rejected


# --------------------------------------------------------------------------- #
# array operations: torch tensors, or numpy arrays for small real CPU blocks
# --------------------------------------------------------------------------- #
class _TorchOps:
    def psi(self, f, m, r):
        return (f @ m * r).sum(dim=1)

    def weighted(self, f, r, psi):
        g = f.transpose(0, 1) @ (r / psi.unsqueeze(1))
        return g.conj() if g.is_complex() else g

    def own_change(self, f, r, psi, coef: float):
        """``coef |F_b|^2 |R_b|^2 / |psi_b|^2`` per row: the relative change of ``psi_b`` by its own term."""
        sq = lambda a: (a.abs() ** 2).sum(dim=1) if a.is_complex() else (a * a).sum(dim=1)  # noqa: E731
        return coef * sq(f) * sq(r) / (psi.abs() ** 2)

    def capped(self, psi, change, cap: float):
        """``psi / min(1, cap / change)``: each row's weight ``1 / psi`` scaled down to the cap."""
        return psi / torch.clamp(cap / change, max=1.0)

    def norm(self, m) -> float:
        return float(torch.linalg.vector_norm(m))

    def normalised(self, m):
        """``m / ||m||`` with the norm left on the device (no host synchronisation)."""
        return m / torch.linalg.vector_norm(m)

    def shrink_below(self, d, bound: float):
        """``d / r`` where ``0 < r = ||d|| / bound < 1``, else ``d``: decided on the device."""
        ratio = torch.linalg.vector_norm(d) / bound
        return d / torch.where((ratio > 0) & (ratio < 1), ratio, torch.ones_like(ratio))

    def log_abs_sum(self, psi):
        return torch.log(psi.abs()).sum().reshape(1).to(torch.float64)

    def all_nonzero(self, psi) -> bool:
        return bool(torch.all(psi != 0))

    def finite_nonzero(self, m) -> bool:
        if m.device.type == "cpu" and not m.is_complex():
            a = m.numpy()
            return bool(np.isfinite(a).all() and a.any())
        return bool(torch.isfinite(m).all() & (m != 0).any())


class _NumpyOps(_TorchOps):
    def psi(self, f, m, r):
        return (f @ m * r).sum(axis=1)

    def weighted(self, f, r, psi):
        return f.T @ (r / psi[:, None])

    def own_change(self, f, r, psi, coef: float):
        return coef * np.einsum("bk,bk->b", f, f) * np.einsum("bd,bd->b", r, r) / (psi * psi)

    def capped(self, psi, change, cap: float):
        return psi / np.minimum(cap / change, 1.0)

    def norm(self, m) -> float:
        return float(np.sqrt(np.vdot(m, m)))

    def normalised(self, m):
        return m / self.norm(m)

    def shrink_below(self, d, bound: float):
        ratio = self.norm(d) / bound
        return d / ratio if 0.0 < ratio < 1.0 else d

    def log_abs_sum(self, psi):
        return torch.tensor([np.log(np.abs(psi)).sum()], dtype=torch.float64)

    def all_nonzero(self, psi) -> bool:
        return bool(np.all(psi != 0))


_TORCH, _NUMPY = _TorchOps(), _NumpyOps()


# --------------------------------------------------------------------------- #
# rules: (M, G, B, lr) -> unnormalised new block
# --------------------------------------------------------------------------- #
def _plain_step(m: Any, g: Any, size: int, lr: float, ops: Any) -> Any:
    """``M - 2 lr (M - G / B)``."""
    return (1.0 - 2.0 * lr) * m + (2.0 * lr / size) * g


def _norm025_step(m: Any, g: Any, size: int, lr: float, ops: Any) -> Any:
    """The authors' rule: ``d = G/B - M`` with ``||d|| < numel(M)**0.25`` rescaled to that norm."""
    d = g / size - m
    bound = float(m.size if isinstance(m, np.ndarray) else m.numel()) ** 0.25
    return m + (2.0 * lr) * ops.shrink_below(d, bound)


#: The direction rules a :class:`~tnborn.training.settings.SweepSettings` ``gradient_rescale`` may name
#: (their names are :data:`tnborn.training.settings.GRADIENT_RESCALE_RULES`).
RULES = {"none": _plain_step, "norm0.25": _norm025_step}


class _Local:
    """The communicator of one process (no collective does anything)."""

    world_size = 1

    def all_reduce_sum(self, t):
        return t

    def broadcast_(self, t, src=0):
        return t


def _rows(feats: Any, sl: slice) -> int:
    return len(range(*sl.indices(feats.shape[0])))


def block_gradient_steps(
    matrix: torch.Tensor,
    feats: torch.Tensor,
    last: torch.Tensor,
    batches: Sequence[slice],
    lr: float,
    *,
    rule: str = "none",
    sizes: Sequence[int] | None = None,
    communicator: Any = None,
    max_nll_rise: float | None = None,
    max_shrinks: int = MAX_STEP_SHRINKS,
    guard_scope: str = "batch",
    max_sample_change: float | None = None,
    stats: StepStats | None = None,
) -> torch.Tensor:
    """Gradient steps on a normalised block ``M`` (``K x D``): the one local update of the sweep.

    For a batch ``b``, ``psi_b = F_b M R_b`` and
    ``dNLL/dM* = M - (1/B) sum_b conj(F_b)^T conj(R_b / psi_b)`` (Wirtinger; the
    real case is half the usual derivative), so a plain step is
    ``M <- M - lr * 2 * (M - G / B)`` followed by ``M <- M / ||M||`` (see the
    module docstring for the rules and the step guard).

    Parameters
    ----------
    matrix : torch.Tensor
        ``(K, D)`` block with unit Frobenius norm (identical on every process).
    feats, last : torch.Tensor
        ``(rows, K)`` and ``(rows, D)`` from the environments (this process's rows).
    batches : sequence of slice
        Row ranges of ``feats``/``last`` used by successive steps (may be empty
        on some processes).
    lr : float
        Learning rate.
    rule : str
        A key of :data:`RULES`.
    sizes : sequence of int, optional
        Global batch size of each step (default: the rows of each slice).
    communicator : Communicator, optional
        Sums ``G`` and the NLLs over the processes and broadcasts the
        result from rank 0; default: one process.
    max_nll_rise : float or None
        Step guard bound in nats per sample; ``None``: no guard.
    max_shrinks : int
        Learning-rate halvings the step guard tries on a step that raised the
        NLL too much before it rejects the step (default
        :data:`MAX_STEP_SHRINKS`: reject at once).
    guard_scope : str
        The rows the step guard judges a step on, a name of
        :data:`GUARD_SCOPES`: ``"batch"``, the step's own batch; ``"bond"``,
        every row of ``feats`` (all processes' rows together).
    max_sample_change : float or None
        Per-sample trust region: the term ``conj(F_b)^T conj(R_b / psi_b)`` of
        each row of a step's batch is scaled by ``min(1, c / rho_b)``, where
        ``rho_b = 2 lr |F_b|^2 |R_b|^2 / (B |psi_b|^2)`` is the relative change
        of ``psi_b`` that the plain step's term of that row alone makes; with
        ``c = 1`` no row's own term more than doubles its amplitude. ``None``:
        the exact gradient.
    stats : StepStats, optional
        Receives the counts of attempted, shrunk and rejected steps.

    Returns
    -------
    torch.Tensor
        The updated, normalised block.

    Raises
    ------
    NumericalError
        If some ``psi_b`` is zero or a value becomes non-finite.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {list(RULES)}")
    if guard_scope not in GUARD_SCOPES:
        raise ValueError(f"unknown guard_scope {guard_scope!r}; expected one of {list(GUARD_SCOPES)}")
    if max_sample_change is not None and not (math.isfinite(max_sample_change) and max_sample_change > 0):
        raise ValueError(f"max_sample_change must be a positive finite number or None, got {max_sample_change!r}")
    comm = communicator if communicator is not None else _Local()
    sizes = [_rows(feats, sl) for sl in batches] if sizes is None else list(sizes)
    local = comm.world_size == 1
    guard = _Guard(max_nll_rise, max_shrinks, max_nll_rise is not None and guard_scope == "bond",
                   max_sample_change)
    if guard.on_all_rows:  # the global number of rows the guard averages over
        count = torch.tensor([float(feats.shape[0])], dtype=torch.float64, device=feats.device)
        guard.rows = int(comm.all_reduce_sum(count)[0])
    # Fast path: no host synchronisation inside the loop (each check would stall
    # a GPU and costs a few microseconds per step on a CPU). A zero psi or a
    # zero / non-finite norm always leaves NaN (or, at the last step, zeros) in
    # the result, so one check at the end detects it; the steps are then
    # replayed with a check after every operation to raise the precise error.
    numpy = (local and not matrix.is_complex() and matrix.device.type == "cpu" and batches
             and _rows(feats, batches[0]) * matrix.shape[0] * matrix.shape[1] <= NUMPY_STEP_MAX_WORK)
    args = (feats.numpy(), last.numpy()) if numpy else (feats, last)
    m0 = matrix.numpy().copy() if numpy else matrix
    counts = StepStats()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m = _steps(m0, *args, batches, sizes, lr, RULES[rule], comm, guard, counts,
                   _NUMPY if numpy else _TORCH, checked=False)
    m = torch.from_numpy(m) if numpy else m
    m = comm.broadcast_(m.contiguous())
    if not _TORCH.finite_nonzero(m):
        if local:
            _steps(matrix, feats, last, batches, sizes, lr, RULES[rule], comm, guard, StepStats(),
                   _TORCH, checked=True)
        raise NumericalError(
            "the merged tensor became zero or non-finite in a gradient step (psi(x) = 0 for some "
            "training sample" + ("" if local else " on some rank") + ", or an overflow)")
    if stats is not None:
        stats.add(counts)
    return m


@dataclass
class _Guard:
    """The safeguards of one call: the step guard (bound, None: off; halvings; whether it
    judges all rows) and the per-sample cap (None: off)."""

    max_rise: float | None
    max_shrinks: int
    on_all_rows: bool
    max_sample_change: float | None = None
    rows: int = 0  # global number of rows when ``on_all_rows``


def _steps(m, feats, last, batches, sizes, lr, step, comm, guard, counts, ops, checked):
    """The loop of :func:`block_gradient_steps`; ``guard``: a :class:`_Guard`;
    ``checked``: raise at the first bad value."""
    max_rise = guard.max_rise
    psi_all = before = None
    if guard.on_all_rows:  # psi on every row, kept up to date with the accepted block
        psi_all = ops.psi(feats, m, last)
        before = _guard_nll(psi_all, guard.rows, comm, ops, "before the gradient steps")
    for sl, size in zip(batches, sizes):
        f, r = feats[sl], last[sl]
        psi = ops.psi(f, m, r) if psi_all is None else psi_all[sl]
        if checked and not ops.all_nonzero(psi):
            raise NumericalError(
                "psi(x) = 0 for a training sample: its probability is zero and the NLL is infinite"
            )
        weights_psi = psi
        if guard.max_sample_change is not None:
            change = ops.own_change(f, r, psi, 2.0 * lr / size)
            weights_psi = ops.capped(psi, change, guard.max_sample_change)
        g = _to_ops(comm.all_reduce_sum(_from_ops(ops.weighted(f, r, weights_psi))), ops)
        counts.steps += 1
        rate = lr
        if max_rise is not None and not guard.on_all_rows:
            before = _guard_nll(psi, size, comm, ops, "before a gradient step")
        for shrink in range(guard.max_shrinks + 1):
            new = step(m, g, size, rate, ops)
            if checked:
                nrm = ops.norm(new)
                if not (np.isfinite(nrm) and nrm > 0.0):
                    raise NumericalError("the merged tensor became zero or non-finite in a gradient step")
                new = new / nrm
            else:  # the norm stays on the device: no host synchronisation per step
                new = ops.normalised(new)
            if max_rise is None:
                m = new
                break
            if guard.on_all_rows:
                psi_new = ops.psi(feats, new, last)
                after = _batch_nll(psi_new, guard.rows, comm, ops)
            else:
                after = _batch_nll(ops.psi(f, new, r), size, comm, ops)
            if after <= before + max_rise:  # False for NaN: a non-finite step is never accepted
                m = new
                if guard.on_all_rows:
                    psi_all, before = psi_new, after
                counts.shrunk += shrink > 0
                break
            rate = rate / 2
        else:
            counts.rejected += 1
    return m


def _guard_nll(psi, size, comm, ops, when: str) -> float:
    """:func:`_batch_nll` of the block a step starts from, which must be finite."""
    value = _batch_nll(psi, size, comm, ops)
    if not math.isfinite(value):  # every process sees the same reduced value
        raise NumericalError(
            f"the NLL {when} is {value}: psi(x) = 0 for a training sample, "
            "or a zero or non-finite value in the merged tensor or its environments")
    return value


def _batch_nll(psi, size, comm, ops) -> float:
    """``-(1/B) sum_b log |psi_b|^2`` over all processes' rows of the batch."""
    return -2.0 * float(comm.all_reduce_sum(ops.log_abs_sum(psi))[0]) / size


def _from_ops(g):
    return torch.from_numpy(g) if isinstance(g, np.ndarray) else g.contiguous()


def _to_ops(g, ops):
    return g.numpy() if ops is _NUMPY else g


def rescaled_gradient_steps(
    matrix: torch.Tensor,
    feats: torch.Tensor,
    last: torch.Tensor,
    batches: Sequence[slice],
    lr: float,
    **kwargs: Any,
) -> torch.Tensor:
    """:func:`block_gradient_steps` with the authors' ``norm0.25`` rule.

    With ``d = G/B - M`` (half the negative gradient), a direction with
    ``||d|| < numel(M)**0.25`` is rescaled to that norm; then
    ``M <- (M + 2 lr d) / ||M + 2 lr d||``.

    Parameters
    ----------
    matrix, feats, last, batches, lr
        As for :func:`block_gradient_steps`.
    **kwargs
        Further keywords of :func:`block_gradient_steps`.

    Returns
    -------
    torch.Tensor
        The updated, normalised block.
    """
    return block_gradient_steps(matrix, feats, last, batches, lr, rule="norm0.25", **kwargs)
