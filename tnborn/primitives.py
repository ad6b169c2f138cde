"""Numerical primitives shared by the geometries: truncation, categorical draws, checks.

These small functions are used by :meth:`tnborn.interface.BornMachine.split`
and by the geometries' fast paths; they know nothing about networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .backend import to_numpy
from .errors import NumericalError

__all__ = ["SplitInfo", "check_split_finite", "descending_order", "draw_categorical", "truncate_spectrum",
           "truncation_rank"]


@dataclass
class SplitInfo:
    """What a truncated SVD split did.

    Attributes
    ----------
    bond_dim : int
        Bond dimension kept.
    max_discarded : float
        Largest discarded singular value divided by the largest one (0 if
        nothing was discarded).
    discarded_weight : float
        Sum of squared discarded singular values over the total.
    singular_values : torch.Tensor
        The kept singular values, normalised to unit 2-norm.
    """

    bond_dim: int
    max_discarded: float
    discarded_weight: float
    singular_values: torch.Tensor = field(repr=False)



def check_split_finite(left: torch.Tensor, right: torch.Tensor, nodes: tuple) -> None:
    """Raise :class:`~tnborn.errors.NumericalError` unless both halves of a split are finite.

    Called by every ``split`` before it writes the halves into the network, so
    that a failed decomposition never leaves NaN or inf in a model.

    Parameters
    ----------
    left, right : torch.Tensor
        The two new node arrays.
    nodes : tuple
        The two nodes (for the message).

    Returns
    -------
    None
    """
    if not bool(torch.isfinite(left).all() & torch.isfinite(right).all()):
        raise NumericalError(
            f"the SVD split of nodes {nodes} produced non-finite values; the network was not modified"
        )


def draw_categorical(
    weights: torch.Tensor, active: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one value per row from unnormalised non-negative ``weights``.

    Parameters
    ----------
    weights : torch.Tensor
        ``(batch, d)`` non-negative weights.
    active : torch.Tensor
        Boolean ``(batch,)``: rows that are actually sampled; the others get
        value 0 and log-probability 0.
    gen : torch.Generator
        Source of randomness.

    Returns
    -------
    values : torch.Tensor
        ``(batch,)`` int64 draws.
    log_prob : torch.Tensor
        ``(batch,)`` float64 log of the normalised probability of each draw.
    """
    weights = weights.to(torch.float64)
    total = weights.sum(dim=1, keepdim=True)
    bad = active & ~(total.squeeze(1) > 0)
    if bool(bad.any()):
        raise NumericalError(
            "the known variables have probability zero under the model for some "
            "configuration, so their conditional distribution is undefined"
        )
    probs = weights / torch.where(total > 0, total, torch.ones_like(total))
    probs = torch.where(active[:, None], probs, torch.full_like(probs, 1.0 / probs.shape[1]))
    # inverse-CDF draw: one uniform per row, reproducible for a seeded generator
    u = torch.rand(probs.shape[0], 1, dtype=torch.float64, device=probs.device, generator=gen)
    cdf = probs.cumsum(dim=1)
    values = (u * cdf[:, -1:] >= cdf).sum(dim=1).clamp_max(probs.shape[1] - 1)
    chosen = probs.gather(1, values[:, None]).squeeze(1)
    values = torch.where(active, values, torch.zeros_like(values))
    logp = torch.where(active, torch.log(chosen), torch.zeros_like(chosen))
    return values, logp


def descending_order(s: torch.Tensor) -> torch.Tensor | None:
    """The permutation that sorts singular values in descending order, or None if they already are.

    quimb's split drivers do not all return descending values: ``"svd:eig"``
    with ``cutoff=0`` and ``absorb=None`` (how tnborn calls it, truncating
    itself) returns the eigenvalue order of the Gram matrix, ascending.
    :func:`truncation_rank` needs them descending.

    Parameters
    ----------
    s : torch.Tensor
        Real singular values.

    Returns
    -------
    torch.Tensor or None
        int64 indices, or None when no reordering is needed.
    """
    if s.shape[0] < 2 or bool(torch.all(s[:-1] >= s[1:])):
        return None
    return torch.argsort(s, descending=True, stable=True)


def truncation_rank(
    s: torch.Tensor, cutoff: float, max_bond: int | None, min_bond: int
) -> tuple[int, SplitInfo]:
    """Number of singular values to keep and what is discarded.

    Parameters
    ----------
    s : torch.Tensor
        Singular values in descending order.
    cutoff : float
        Keep ``s_i >= cutoff * s_0``.
    max_bond : int or None
        Upper bound.
    min_bond : int
        Lower bound (capped by ``len(s)``).

    Returns
    -------
    keep : int
        Number kept.
    info : SplitInfo
        With ``bond_dim``, ``max_discarded`` and ``discarded_weight`` set.
    """
    keep, max_disc, weight = _rank_on_host(to_numpy(s).astype(np.float64), cutoff, max_bond, min_bond)
    return keep, SplitInfo(keep, max_disc, weight, s[:keep])


def _rank_on_host(s_host: np.ndarray, cutoff: float, max_bond: int | None, min_bond: int) -> tuple[int, float, float]:
    """:func:`truncation_rank`'s rule on float64 values in descending order: ``(keep, max_disc, weight)``."""
    n = s_host.shape[0]
    if n == 0 or not np.all(np.isfinite(s_host)):
        raise NumericalError("SVD produced non-finite singular values")
    s0 = s_host[0]
    if s0 <= 0:
        raise NumericalError("the merged tensor is zero: nothing to split")
    keep = int(np.count_nonzero(s_host >= cutoff * s0)) if cutoff > 0 else int(np.count_nonzero(s_host > 0))
    if max_bond is not None:
        keep = min(keep, int(max_bond))
    keep = max(keep, min(int(min_bond), n), 1)
    keep = min(keep, n)
    disc = s_host[keep:]
    max_disc = float(disc[0] / s0) if disc.size else 0.0
    total = float(np.sum(s_host**2))
    weight = float(np.sum(disc**2) / total) if total > 0 else 0.0
    return keep, max_disc, weight


def truncate_spectrum(
    s: torch.Tensor, cutoff: float, max_bond: int | None, min_bond: int
) -> tuple[torch.Tensor | None, int, SplitInfo]:
    """Order, truncation rule and kept values of a split's singular values, reading them to the host once.

    :func:`descending_order` and :func:`truncation_rank` in one step: the
    values are read back once (one synchronisation per split on a GPU), sorted
    there if they are not in descending order (stably, like
    :func:`descending_order`), and the rule applied to them.

    Parameters
    ----------
    s : torch.Tensor
        Real singular values in any order.
    cutoff, max_bond, min_bond
        As in :func:`truncation_rank`.

    Returns
    -------
    order : torch.Tensor or None
        int64 indices (on ``s``'s device) that sort ``s`` in descending order,
        or None when it already is.
    keep : int
        Number kept.
    info : SplitInfo
        With ``bond_dim``, ``max_discarded``, ``discarded_weight`` and the kept
        values, in descending order and normalised to unit 2-norm.

    Raises
    ------
    NumericalError
        If a value is not finite or the largest is not positive.
    """
    s_host = to_numpy(s).astype(np.float64)
    order = None
    if s_host.shape[0] > 1 and not np.all(s_host[:-1] >= s_host[1:]):
        idx = np.argsort(-s_host, kind="stable")
        s_host = s_host[idx]
        order = torch.as_tensor(idx, dtype=torch.int64).to(s.device)
        s = s.index_select(0, order)
    keep, max_disc, weight = _rank_on_host(s_host, cutoff, max_bond, min_bond)
    kept = s[:keep]
    return order, keep, SplitInfo(keep, max_disc, weight, kept / torch.linalg.vector_norm(kept))

