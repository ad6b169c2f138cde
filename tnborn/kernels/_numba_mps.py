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
  :func:`tnborn.geometries._mps_kernels.normalise_rows`.

The inner loops run over the last (contiguous) axis as ``y += a * x`` updates,
which the compiler vectorises without reassociating sums (no ``fastmath``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__: list[str] = []  # private module


@numba.njit(cache=True, nogil=True, error_model="numpy")
def block_steps(m0, left, right, x, col, rows, starts, stops, lr):  # pragma: no cover - compiled
    """Normalise ``m0`` and take one gradient step per ``rows[starts[i]:stops[i]]``.

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
    m = np.empty_like(m0)
    nrm2 = 0.0
    for a in range(dl):
        for s in range(d1):
            for t in range(d2):
                for c in range(dr):
                    v = m0[a, s, t, c]
                    nrm2 += v * v
    nrm = math.sqrt(nrm2)
    for a in range(dl):
        for s in range(d1):
            for t in range(d2):
                for c in range(dr):
                    m[a, s, t, c] = m0[a, s, t, c] / nrm
    g = np.empty_like(m)
    tmp = np.empty(dr, dtype=m.dtype)
    w = np.empty(dr, dtype=m.dtype)
    beta = 1.0 - 2.0 * lr
    for step in range(starts.shape[0]):
        g[:] = 0.0
        for i in range(starts[step], stops[step]):
            b = rows[i]
            s = x[b, col]
            t = x[b, col + 1]
            tmp[:] = 0.0
            for a in range(dl):
                la = left[b, a]
                for c in range(dr):
                    tmp[c] += la * m[a, s, t, c]
            psi = 0.0
            for c in range(dr):
                psi += tmp[c] * right[b, c]
            for c in range(dr):
                w[c] = right[b, c] / psi
            for a in range(dl):
                la = left[b, a]
                for c in range(dr):
                    g[a, s, t, c] += la * w[c]
        alpha = 2.0 * lr / (stops[step] - starts[step])
        nrm2 = 0.0
        for a in range(dl):
            for s in range(d1):
                for t in range(d2):
                    for c in range(dr):
                        v = beta * m[a, s, t, c] + alpha * g[a, s, t, c]
                        m[a, s, t, c] = v
                        nrm2 += v * v
        nrm = math.sqrt(nrm2)
        for a in range(dl):
            for s in range(d1):
                for t in range(d2):
                    for c in range(dr):
                        m[a, s, t, c] /= nrm
    return m


@numba.njit(cache=True, nogil=True, error_model="numpy")
def site_message(vec, log, a, x, col):  # pragma: no cover - compiled
    """``y[b] = vec[b] @ a[:, x[b, col], :]``, rows rescaled to unit max-norm.

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
    n, din = vec.shape
    dout = a.shape[2]
    y = np.zeros((n, dout), dtype=a.dtype)
    lo = np.empty(n, dtype=log.dtype)
    for b in range(n):
        s = x[b, col]
        for i in range(din):
            v = vec[b, i]
            for c in range(dout):
                y[b, c] += v * a[i, s, c]
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
