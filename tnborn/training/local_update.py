"""The local update of the two-site sweep: gradient steps on one merged block.

Every two-site update, single-process or data-parallel, plain or with the
authors' ``norm0.25`` rule, runs :func:`block_gradient_steps`. One step on a
batch ``b`` of a normalised block ``M`` (``K x D``, ``psi_b = F_b M R_b``):

1. ``G = sum_b conj(F_b)^T conj(R_b / psi_b)`` over this process's rows,
   summed over the processes by the communicator (a no-op for one process);
2. a *rule* (:data:`RULES`) turns ``M``, ``G``, the global batch size ``B``
   and the learning rate into the unnormalised new block: ``"none"`` is the
   plain step ``M - 2 lr (M - G / B)``, ``"norm0.25"`` the authors' rescaling
   of small directions;
3. ``M <- M / ||M||``;
4. with a bound ``max_nll_rise`` (the *step guard*), the step is accepted only
   if the batch NLL ``-(1/B) sum_b log |psi_b|^2`` (``Z = ||M||^2 = 1`` in the
   canonical form) rises by at most that bound; otherwise the step is rejected
   (``M`` kept), or, with ``max_shrinks > 0``, first retried with its learning
   rate halved up to that many times. Every process sees the same all-reduced
   NLLs, so all take the same decisions.

A step is never half-applied: the block a step starts from is kept until the
new one is accepted. ``psi`` of the new block on the same batch is one more
``F M R`` product per step, the price of the guard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import NumericalError
from .settings import GUARD_SHRINKS_DEFAULT

__all__ = ["block_gradient_steps", "rescaled_gradient_steps", "StepStats", "RULES",
           "MAX_STEP_SHRINKS", "NUMPY_STEP_MAX_WORK"]

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

    def norm(self, m) -> float:
        return float(torch.linalg.vector_norm(m))

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

    def norm(self, m) -> float:
        return float(np.sqrt(np.vdot(m, m)))

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
    ratio = ops.norm(d) / float(m.size if isinstance(m, np.ndarray) else m.numel()) ** 0.25
    if 0.0 < ratio < 1.0:
        d = d / ratio
    return m + (2.0 * lr) * d


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
        Sums ``G`` and the batch NLL over the processes and broadcasts the
        result from rank 0; default: one process.
    max_nll_rise : float or None
        Step guard bound in nats per sample; ``None``: no guard.
    max_shrinks : int
        Learning-rate halvings the step guard tries on a step that raised its
        batch NLL too much before it rejects the step (default
        :data:`MAX_STEP_SHRINKS`: reject at once).
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
    comm = communicator if communicator is not None else _Local()
    sizes = [_rows(feats, sl) for sl in batches] if sizes is None else list(sizes)
    local = comm.world_size == 1
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
        m = _steps(m0, *args, batches, sizes, lr, RULES[rule], comm, (max_nll_rise, max_shrinks), counts,
                   _NUMPY if numpy else _TORCH, checked=False)
    m = torch.from_numpy(m) if numpy else m
    m = comm.broadcast_(m.contiguous())
    if not _TORCH.finite_nonzero(m):
        if local:
            _steps(matrix, feats, last, batches, sizes, lr, RULES[rule], comm, (max_nll_rise, max_shrinks), StepStats(),
                   _TORCH, checked=True)
        raise NumericalError(
            "the merged tensor became zero or non-finite in a gradient step (psi(x) = 0 for some "
            "training sample" + ("" if local else " on some rank") + ", or an overflow)")
    if stats is not None:
        stats.add(counts)
    return m


def _steps(m, feats, last, batches, sizes, lr, step, comm, guard, counts, ops, checked):
    """The loop of :func:`block_gradient_steps`; ``guard``: ``(max_nll_rise, max_shrinks)``;
    ``checked``: raise at the first bad value."""
    max_rise, max_shrinks = guard
    for sl, size in zip(batches, sizes):
        f, r = feats[sl], last[sl]
        psi = ops.psi(f, m, r)
        if checked and not ops.all_nonzero(psi):
            raise NumericalError(
                "psi(x) = 0 for a training sample: its probability is zero and the NLL is infinite"
            )
        g = _to_ops(comm.all_reduce_sum(_from_ops(ops.weighted(f, r, psi))), ops)
        counts.steps += 1
        rate, before = lr, None
        if max_rise is not None:
            before = _batch_nll(psi, size, comm, ops)
            if not math.isfinite(before):  # every process sees the same reduced value
                raise NumericalError(
                    f"the batch NLL before a gradient step is {before}: psi(x) = 0 for a training sample, "
                    "or a zero or non-finite value in the merged tensor or its environments")
        for shrink in range(max_shrinks + 1):
            new = step(m, g, size, rate, ops)
            nrm = ops.norm(new)
            if checked and not (np.isfinite(nrm) and nrm > 0.0):
                raise NumericalError("the merged tensor became zero or non-finite in a gradient step")
            new = new / nrm
            if max_rise is None:
                m = new
                break
            after = _batch_nll(ops.psi(f, new, r), size, comm, ops)
            if after <= before + max_rise:  # False for NaN: a non-finite step is never accepted
                m = new
                counts.shrunk += shrink > 0
                break
            rate = rate / 2
        else:
            counts.rejected += 1
    return m


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
