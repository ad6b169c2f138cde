"""numba kernels of the MPS two-site update (private; compiled on first use).

Every function here computes exactly what the plain torch path computes, with
the same operations in a different grouping:

- :func:`block_steps` takes the gradient steps of
  :func:`tnborn.training.sweep.block_gradient_steps` on a two-site block
  ``M[a, s, t, c]`` of shape ``(Dl, d, d, Dr)``. The plain path writes the
  design matrix ``F(v) = onehot(v_k, v_k+1) (x) L(v)`` and multiplies it with
  ``M`` (``d**2 - 1`` of every ``d**2`` entries of ``F`` are zeros); here each
  sample touches only the slice ``M[:, v_k, v_k+1, :]``:
  ``psi = sum_c (sum_a L_a M[a, s, t, c]) R_c`` and
  ``G[a, s, t, :] += L_a * (R / psi)``, then ``M <- (1 - 2 lr) M + (2 lr / B) G``
  and ``M <- M / ||M||`` (the plain path's formula, term by term).
- :func:`site_message` is the environment update of one site,
  ``y[b] = vec[b] @ A[:, x_b, :]`` followed by the per-row rescaling of
  :func:`tnborn.geometries.mps.chain.normalise_rows`.

The inner loops run over the last (contiguous) axis as ``y += a * x`` updates,
which the compiler vectorises without reassociating sums (no ``fastmath``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__: list[str] = []  # private module


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gather(src, idx):  # pragma: no cover - compiled
    out = np.empty((idx.shape[0], src.shape[1]), dtype=src.dtype)
    for j in range(idx.shape[0]):
        out[j] = src[idx[j]]
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def block_steps(m0, left, right, x, col, rows, starts, stops, lr):  # pragma: no cover - compiled
    """Normalise ``m0`` and take one gradient step per ``rows[starts[i]:stops[i]]``.

    The rows of each step are grouped by their pixel pair ``(s, t)`` once (the
    groups do not depend on ``M``); a step is then, per pair, the products
    ``T = L_g @ M[:, s, t, :]``, ``psi = rowsum(T * R_g)`` and
    ``G[:, s, t, :] = L_g^T @ (R_g / psi)`` (BLAS), and the update.

    Parameters
    ----------
    m0 : ndarray
        ``(Dl, d, d, Dr)`` block (not modified).
    left, right : ndarray
        ``(n, Dl)`` and ``(n, Dr)`` environment vectors of all cached samples.
    x : ndarray
        ``(n, N)`` int64 configurations.
    col : int
        The block's first variable (``k``; the second is ``k + 1``).
    rows : ndarray
        int64 sample indices of all steps, concatenated.
    starts, stops : ndarray
        int64 bounds of each step's rows in ``rows``.
    lr : float
        Learning rate.

    Returns
    -------
    ndarray
        The new normalised block (a zero or non-finite result is the caller's to detect).
    """
    dl, d1, d2, dr = m0.shape
    npair = d1 * d2
    # internal layout (s, t, Dl, Dr): every M[:, s, t, :] is a contiguous matrix
    m = np.empty((d1, d2, dl, dr), dtype=m0.dtype)
    nrm2 = 0.0
    for a in range(dl):
        for s in range(d1):
            for t in range(d2):
                for c in range(dr):
                    v = m0[a, s, t, c]
                    m[s, t, a, c] = v
                    nrm2 += v * v
    m /= math.sqrt(nrm2)
    nsteps = starts.shape[0]
    # groups: for each step and pair, the rows (gathered environments are built per use)
    pair_of = np.empty(rows.shape[0], dtype=np.int64)
    for i in range(rows.shape[0]):
        b = rows[i]
        pair_of[i] = x[b, col] * d2 + x[b, col + 1]
    g = np.empty_like(m)
    beta = 1.0 - 2.0 * lr
    lgs = []
    rgs = []
    for step in range(nsteps):
        seg = pair_of[starts[step]:stops[step]]
        rs = rows[starts[step]:stops[step]]
        for p in range(npair):
            idx = rs[seg == p]
            lgs.append(_gather(left, idx))
            rgs.append(_gather(right, idx))
    for step in range(nsteps):
        for p in range(npair):
            lg = lgs[step * npair + p]
            rg = rgs[step * npair + p]
            if lg.shape[0] == 0:
                g[p // d2, p % d2] = 0.0
                continue
            s = p // d2
            t = p % d2
            tm = lg @ m[s, t]
            w = np.empty_like(rg)
            for j in range(rg.shape[0]):
                psi = 0.0
                for c in range(dr):
                    psi += tm[j, c] * rg[j, c]
                for c in range(dr):
                    w[j, c] = rg[j, c] / psi
            g[s, t] = lg.T @ w
        alpha = 2.0 * lr / (stops[step] - starts[step])
        mf = m.reshape(-1)
        gf = g.reshape(-1)
        nrm2 = 0.0
        for i in range(mf.shape[0]):
            v = beta * mf[i] + alpha * gf[i]
            mf[i] = v
            nrm2 += v * v
        nrm = math.sqrt(nrm2)
        for i in range(mf.shape[0]):
            mf[i] /= nrm
    out = np.empty_like(m0)
    for a in range(dl):
        for s in range(d1):
            for t in range(d2):
                for c in range(dr):
                    out[a, s, t, c] = m[s, t, a, c]
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def site_message(vec, log, a, x, col):  # pragma: no cover - compiled
    """``y[b] = vec[b] @ a[:, x[b, col], :]``, rows rescaled to unit max-norm.

    Rows are grouped by the value ``x[b, col]``: one gather, one BLAS product
    with ``a[:, s, :]`` and one scatter per value.

    Parameters
    ----------
    vec : ndarray
        ``(n, Din)`` incoming vectors.
    log : ndarray
        ``(n,)`` incoming log-scales.
    a : ndarray
        ``(Din, d, Dout)`` site array (C-contiguous).
    x : ndarray
        ``(n, N)`` int64 configurations.
    col : int
        The site's variable.

    Returns
    -------
    y, log_out : ndarray
        ``(n, Dout)`` rescaled vectors and ``(n,)`` log-scales (``-inf`` for a zero row).
    """
    n = vec.shape[0]
    d = a.shape[1]
    dout = a.shape[2]
    y = np.empty((n, dout), dtype=a.dtype)
    vals = x[:, col]
    for s in range(d):
        idx = np.nonzero(vals == s)[0]
        if idx.shape[0] == 0:
            continue
        r = _gather(vec, idx) @ np.ascontiguousarray(a[:, s, :])
        for j in range(idx.shape[0]):
            y[idx[j]] = r[j]
    lo = np.empty(n, dtype=log.dtype)
    for b in range(n):
        scale = 0.0
        for c in range(dout):
            av = abs(y[b, c])
            if av > scale or av != av:  # NaN propagates like torch's amax
                scale = av
        if scale > 0:  # (inf included: like torch, inf / inf gives NaN)
            lo[b] = log[b] + np.log(scale)
            for c in range(dout):
                y[b, c] /= scale
        elif scale == 0:
            lo[b] = log[b] - np.inf
        else:
            lo[b] = np.nan
    return y, lo


@numba.njit(cache=True, nogil=True, error_model="numpy")
def split_block(a, cutoff, max_bond, min_bond, s_left, stats):  # pragma: no cover - compiled
    """Truncated SVD split of a ``(m, n)`` block, the rule of ``interface.truncation_rank``.

    Parameters
    ----------
    a : ndarray
        ``(m, n)`` block (C-contiguous).
    cutoff : float
        Keep ``s_i >= cutoff * s_0`` (``cutoff = 0``: keep ``s_i > 0``).
    max_bond : int
        Upper bound (``<= 0``: none).
    min_bond : int
        Lower bound (capped by the number of singular values).
    s_left : bool
        The kept singular values (unit 2-norm) go to the left half, else to the right.
    stats : ndarray
        ``(2,)`` float64, filled with the largest discarded singular value over
        the largest and the discarded weight (those of ``truncation_rank``).

    Returns
    -------
    status : int
        0 done; 1 non-finite singular values; 2 zero block; 3 non-finite halves.
    left, right : ndarray
        ``(m, keep)`` and ``(keep, n)``.
    s : ndarray
        All singular values.
    keep : int
        Number kept.
    """
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    n = s.shape[0]
    empty = np.empty((0, 0), dtype=a.dtype)
    for i in range(n):
        if not np.isfinite(s[i]):
            return 1, empty, empty, s, 0
    if n == 0 or s[0] <= 0:
        return 2, empty, empty, s, 0
    keep = 0
    for i in range(n):
        if (cutoff > 0 and s[i] >= cutoff * s[0]) or (cutoff <= 0 and s[i] > 0):
            keep += 1
    if max_bond > 0:
        keep = min(keep, max_bond)
    keep = max(keep, min(min_bond, n), 1)
    keep = min(keep, n)
    nrm2 = 0.0
    for i in range(keep):
        nrm2 += s[i] * s[i]
    disc2 = 0.0
    for i in range(keep, n):
        disc2 += s[i] * s[i]
    total = nrm2 + disc2
    stats[0] = s[keep] / s[0] if keep < n else 0.0  # largest discarded, relative
    stats[1] = disc2 / total if total > 0 else 0.0  # discarded weight
    nrm = math.sqrt(nrm2)
    left = np.ascontiguousarray(u[:, :keep])
    right = np.ascontiguousarray(vt[:keep])
    if s_left:
        for i in range(left.shape[0]):
            for j in range(keep):
                left[i, j] *= s[j] / nrm
    else:
        for j in range(keep):
            f = s[j] / nrm
            for i in range(right.shape[1]):
                right[j, i] *= f
    if not (np.isfinite(left).all() and np.isfinite(right).all()):
        return 3, empty, empty, s, keep
    return 0, left, right, s, keep
