"""Fast batched chain kernels of the matrix product state Born machine.

Every function here is an exact reformulation of a generic operation for the
special case of an open chain, written to keep the number of small torch
operations per site low (a 784-site chain runs each kernel 784 times, so
per-call overhead matters as much as flops) and to halve the flops of the
``vector @ A[:, x, :]`` products by grouping configurations by the value
``x`` of the site instead of contracting every value and discarding all but
one. calls them; its test suite
checks them against brute-force enumeration and the generic paths.
"""

from __future__ import annotations

import math

import torch

from ...errors import NumericalError

__all__: list[str] = []  # internal kernels of the geometry, no public API

#: Work (``rows * D_left * D_right``) above which :func:`contract_select`
#: sorts rows by the value of the physical index and contracts each group with
#: its own matrix instead of contracting all values and picking one (measured
#: on a 2-core x86 CPU: below it the sort and the two copies cost more than
#: the saved flops).
GROUP_MIN_WORK = 5_000_000
#: The same threshold for :func:`log_amplitude_chain`, whose permutations are
#: computed once for all sites, leaving one row gather per site.
CHAIN_GROUP_MIN_WORK = 100_000


def site_lpr(data: torch.Tensor, inds: tuple[str, ...], left: str | None, phys: str,
             right: str | None) -> torch.Tensor:
    """View of a site array as ``(D_left, d, D_right)`` (absent bonds as size-1 axes).

    Parameters
    ----------
    data : torch.Tensor
        The site tensor's array.
    inds : tuple of str
        Its index names.
    left, phys, right : str or None
        Names of the left bond, the physical index and the right bond.

    Returns
    -------
    torch.Tensor
        A (possibly non-contiguous) view.
    """
    order = ([inds.index(left)] if left is not None else []) + [inds.index(phys)]
    if right is not None:
        order.append(inds.index(right))
    a = data if order == list(range(len(order))) else data.permute(*order)
    if left is None:
        a = a.unsqueeze(0)
    if right is None:
        a = a.unsqueeze(-1)
    return a


def contract_select(m: torch.Tensor, a: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """Row-wise ``m[b] @ a[:, vals[b], :]`` for a batch.

    Parameters
    ----------
    m : torch.Tensor
        ``(B, D_left)`` vectors.
    a : torch.Tensor
        ``(D_left, d, D_right)`` site array.
    vals : torch.Tensor
        ``(B,)`` int64 physical values.

    Returns
    -------
    torch.Tensor
        ``(B, D_right)``.
    """
    b = m.shape[0]
    dl, d, dr = a.shape
    if b * dl * dr < GROUP_MIN_WORK or m.device.type != "cpu":
        y = (m @ a.reshape(dl, d * dr)).view(b, d, dr)
        return y[torch.arange(b, device=m.device), vals]  # (faster than where / gather)
    # group rows by value: one sort, one gather, d products, one scatter
    order = torch.argsort(vals, stable=True)
    counts = torch.bincount(vals, minlength=d).tolist()
    ms = m.index_select(0, order)
    ys = torch.empty((b, dr), dtype=torch.promote_types(m.dtype, a.dtype), device=m.device)
    start = 0
    for s, c in enumerate(counts):
        if c:
            torch.mm(ms[start : start + c], a[:, s, :], out=ys[start : start + c])
        start += c
    out = torch.empty_like(ys)
    out.index_copy_(0, order, ys)
    return out


def normalise_rows(vec: torch.Tensor, log: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide each row by its largest magnitude and add the log of it to ``log``.

    Rows of zeros stay zero and get ``log = -inf``.

    Parameters
    ----------
    vec : torch.Tensor
        ``(B, D)`` vectors.
    log : torch.Tensor
        ``(B,)`` accumulated log-scales.

    Returns
    -------
    vec, log : torch.Tensor
        Normalised vectors and updated log-scales.
    """
    scale = vec.abs().amax(dim=1)  # (much faster than vector_norm(ord=inf) on CPU)
    log = log + torch.log(scale)  # log(0) = -inf
    safe = torch.where(scale > 0, scale, 1.0)
    return vec / safe.unsqueeze(1).to(vec.dtype), log


def log_amplitude_chain(sites: list[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log|psi(x)|`` and the phase of a batch, left to right with per-row rescaling.

    Rows are kept sorted by the value of the current site, so that each site
    costs ``d`` dense products of the rows with that value (half the flops of
    contracting both values for ``d = 2``) plus one gather; all permutations
    are computed up front in a few batched operations.

    Parameters
    ----------
    sites : list of torch.Tensor
        ``(D_left, d, D_right)`` site arrays.
    x : torch.Tensor
        ``(B, N)`` int64 configurations.

    Returns
    -------
    log_abs, phase : torch.Tensor
        ``(B,)`` each; ``-inf`` and ``0`` where ``psi(x) = 0``.
    """
    b, n = x.shape
    dev = x.device
    d = sites[0].shape[1]
    real = sites[0].real.dtype if sites[0].is_complex() else sites[0].dtype
    grouped = dev.type == "cpu" and b * max(a.shape[0] * a.shape[2] for a in sites) >= CHAIN_GROUP_MIN_WORK
    # the grouped path writes with out=, which autograd refuses (GradientTrainer differentiates this)
    grouped = grouped and not (torch.is_grad_enabled() and any(a.requires_grad for a in sites))
    if not grouped:
        rows = torch.arange(b, device=dev)
        m = sites[0][0].index_select(0, x[:, 0])
        log = torch.zeros(b, dtype=real, device=dev)
        for k in range(1, n):
            m, log = normalise_rows(m, log)
            a = sites[k]
            dl, _, dr = a.shape
            m = (m @ a.reshape(dl, d * dr)).view(b, d, dr)[rows, x[:, k]]
        return _finish(m[:, 0], log)
    # perm[:, k]: rows in order of x[:, k] (stable); gather[k]: from order k-1 to order k
    perm = torch.sort(x, dim=0, stable=True).indices
    inv = torch.empty_like(perm)
    inv.scatter_(0, perm, torch.arange(b, device=dev).unsqueeze(1).expand(b, n))
    gather = torch.gather(inv[:, :-1], 0, perm[:, 1:]).t().contiguous()  # (N-1, B)
    counts = torch.stack([(x == s).sum(dim=0) for s in range(d)]).t().tolist()  # (N, d)
    scales = torch.empty((n - 1, b), dtype=real, device=dev)
    m = sites[0][0].index_select(0, x.gather(0, perm[:, :1]).squeeze(1))  # rows in order 0
    for k in range(1, n):
        # rows are rescaled by their 2-norm (cheaper than the max-abs; any scale works here);
        # a zero row gets 0 * inf = NaN, which stays in that row and marks it dead
        sc = torch.linalg.vector_norm(m, dim=1, out=scales[k - 1])
        g = gather[k - 1]
        ms = m.index_select(0, g)
        ms.mul_(sc.reciprocal().index_select(0, g).unsqueeze(1))
        a = sites[k]
        y = torch.empty((b, a.shape[2]), dtype=ms.dtype, device=dev)
        start = 0
        for s, c in enumerate(counts[k]):
            if c:
                torch.mm(ms[start : start + c], a[:, s, :], out=y[start : start + c])
            start += c
        m = y
    # back to the original row order: scales[k-1] is in order k-1
    orig = torch.empty_like(scales)
    orig.scatter_(1, perm[:, :-1].t(), scales)
    out = torch.empty_like(m)
    out.index_copy_(0, perm[:, -1], m)
    return _finish(out[:, 0], torch.log(orig).sum(dim=0))


def _finish(m: torch.Tensor, log: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-magnitude and phase from a final mantissa and log-scale (NaN rows: zero amplitude)."""
    mag = m.abs()
    dead = torch.isneginf(log) | torch.isnan(mag)
    log_abs = torch.where(dead, -math.inf, log + torch.log(mag))
    phase = m / torch.where(mag > 0, mag, 1.0).to(m.dtype)
    phase = torch.where(dead | (mag == 0), torch.zeros_like(phase), phase)
    return log_abs, phase


def zipper_binary(
    sites: list[torch.Tensor],
    m: torch.Tensor,
    xk: torch.Tensor,
    free: torch.Tensor | None,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact zipper sampling of consecutive ``d = 2`` sites with a right-canonical remainder.

    With everything right of site ``j`` right-canonical, the weight of value
    ``s`` is ``w_s = ||m A_s||^2`` and ``w_0 + w_1 = ||m||^2``, which is the
    weight of the value chosen at the previous site: only ``m A_0`` is needed
    for the draw, and ``m A_1`` only for the rows that take the value 1. Rows
    are rescaled only when their squared norm falls below
    ``sqrt(tiny)`` of the dtype (the norm never grows), not at every site.

    Parameters
    ----------
    sites : list of torch.Tensor
        ``(D_left, 2, D_right)`` arrays of the sites to sample, in order.
    m : torch.Tensor
        ``(B, D_left)`` contraction of the part before them (any row scale).
    xk : torch.Tensor
        ``(B, len(sites))`` values used where ``free`` is False.
    free : torch.Tensor or None
        ``(B, len(sites))`` bool, rows to draw per site; ``None``: all.
    gen : torch.Generator
        Source of randomness: one ``(B, 1)`` float64 uniform draw per site,
        as :func:`~tnborn.primitives.draw_categorical` makes.

    Returns
    -------
    values : torch.Tensor
        ``(B, len(sites))`` int64.
    logp : torch.Tensor
        ``(B,)`` float64 sum of the log-probabilities of the drawn values.

    Raises
    ------
    NumericalError
        If a free row has zero weight at the first site, or a row reaches
        amplitude zero.
    """
    b = m.shape[0]
    f64 = torch.float64
    real = m.real.dtype if m.is_complex() else m.dtype
    tiny = math.sqrt(torch.finfo(real).tiny)
    tot = torch.linalg.vector_norm(m, dim=1).to(f64).square()
    first_free = torch.ones(b, dtype=torch.bool, device=m.device) if free is None else free[:, 0]
    if bool((first_free & ~(tot > 0)).any()):
        raise NumericalError(
            "the known variables have probability zero under the model for some "
            "configuration, so their conditional distribution is undefined"
        )
    logp = torch.zeros(b, dtype=f64, device=m.device)
    out = []
    for j, a in enumerate(sites):
        u = torch.rand(b, 1, dtype=f64, device=m.device, generator=gen)
        y = m @ a[:, 0, :]
        w = torch.linalg.vector_norm(y, dim=1).to(f64).square()
        # inverse-CDF draw as in draw_categorical: value 1 iff u * (w0 + w1) >= w0
        v = (u.squeeze(1) * tot >= w).long()
        if free is not None:
            v = torch.where(free[:, j], v, xk[:, j])
        idx = torch.nonzero(v).squeeze(1)
        if idx.numel():
            y1 = m.index_select(0, idx) @ a[:, 1, :]
            y.index_copy_(0, idx, y1)
            w = w.index_copy(0, idx, torch.linalg.vector_norm(y1, dim=1).to(f64).square())
        lp = torch.log(w / tot)
        logp = logp + (lp if free is None else torch.where(free[:, j], lp, 0.0))
        out.append(v)
        m, tot = y, w
        low = float(w.min())
        if low == 0.0:
            raise NumericalError("a configuration reached zero amplitude during sampling")
        if low < tiny:
            norm = w.sqrt()
            m = y / norm.to(real).unsqueeze(1)
            tot = torch.ones_like(w)
    return torch.stack(out, dim=1), logp
