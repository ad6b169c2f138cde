"""A plain-numpy two-site MPS sweep, written like the authors' code, as a timing baseline.

This is an independent, deliberately straightforward implementation of the
algorithm in Han et al., PRX 8, 031012 (2018), in the style of the authors'
numpy code (per-sample cumulants as ``(samples, D)`` arrays, ``einsum`` over
the selected physical slices, one ``numpy.linalg.svd`` per bond). It exists
only so that ``bench_mps.py`` can time a baseline on the *same machine in the
same run* and report tnborn's times as ratios to it. It is not part of the
library and is not tested beyond a sanity check of its NLL in the benchmark.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NumpyMPSReference"]


class NumpyMPSReference:
    """Mixed-canonical MPS with per-sample environments, updated bond by bond.

    Parameters
    ----------
    sites : list of numpy.ndarray
        ``(D_left, 2, D_right)`` site arrays, mixed-canonical around ``center``.
    x : numpy.ndarray
        ``(samples, N)`` int data.
    center : int
        The orthogonality centre.
    """

    def __init__(self, sites, x, center):
        self.sites = [np.array(a, dtype=np.float64) for a in sites]
        self.x = np.asarray(x, dtype=np.int64)
        self.n = len(self.sites)
        self.center = center
        b = self.x.shape[0]
        # left[k]: sites < k contracted (B, D_{k-1}); right[k]: sites > k contracted
        self.left = [None] * self.n
        self.right = [None] * self.n
        self.left[0] = np.ones((b, 1))
        self.right[self.n - 1] = np.ones((b, 1))

    @staticmethod
    def _normalise(m):
        return m / np.abs(m).max(axis=1, keepdims=True)

    def _left(self, k):
        if self.left[k] is None:
            prev = self._left(k - 1)
            a = self.sites[k - 1][:, self.x[:, k - 1], :]  # (Dl, B, Dr)
            self.left[k] = self._normalise(np.einsum("bl,lbr->br", prev, a))
        return self.left[k]

    def _right(self, k):
        if self.right[k] is None:
            nxt = self._right(k + 1)
            a = self.sites[k + 1][:, self.x[:, k + 1], :]
            self.right[k] = self._normalise(np.einsum("lbr,br->bl", a, nxt))
        return self.right[k]

    def update_bond(self, k, to_left, lr, cutoff, max_bond, batches):
        """Merge sites ``k, k+1``, take gradient steps on ``batches`` of rows, split.

        Parameters
        ----------
        k : int
            Left site of the bond.
        to_left : bool
            Whether the centre moves to ``k`` (leftward sweep) or ``k+1``.
        lr, cutoff : float
            Learning rate and relative singular-value cutoff.
        max_bond : int
            Largest bond dimension.
        batches : list of numpy.ndarray
            Row indices of successive steps.

        Returns
        -------
        int
            The new bond dimension.
        """
        a = np.tensordot(self.sites[k], self.sites[k + 1], axes=(2, 0))  # (Dl, 2, 2, Dr)
        a /= np.linalg.norm(a)
        left, right = self._left(k), self._right(k + 1)
        for rows in batches:
            v1, v2 = self.x[rows, k], self.x[rows, k + 1]
            lb, rb = left[rows], right[rows]
            psi = np.einsum("bl,lbr,br->b", lb, a[:, v1, v2, :], rb)
            grad = np.zeros_like(a)
            for s in range(2):
                for t in range(2):
                    sel = (v1 == s) & (v2 == t)
                    if sel.any():
                        grad[:, s, t, :] = np.einsum("bl,br->lr", lb[sel] / psi[sel, None], rb[sel])
            a = a - lr * (2.0 * a - 2.0 * grad / len(rows))
            a /= np.linalg.norm(a)
        dl, dr = a.shape[0], a.shape[3]
        u, s, vh = np.linalg.svd(a.reshape(dl * 2, 2 * dr), full_matrices=False)
        keep = max(1, min(int(np.count_nonzero(s >= cutoff * s[0])), max_bond))
        u, s, vh = u[:, :keep], s[:keep] / np.linalg.norm(s[:keep]), vh[:keep]
        if to_left:
            self.sites[k] = (u * s).reshape(dl, 2, keep)
            self.sites[k + 1] = vh.reshape(keep, 2, dr)
            self.center = k
        else:
            self.sites[k] = u.reshape(dl, 2, keep)
            self.sites[k + 1] = (s[:, None] * vh).reshape(keep, 2, dr)
            self.center = k + 1
        # the environments that contained the old tensors are stale
        for j in range(k + 1, self.n):
            self.left[j] = None
        for j in range(0, k + 1):
            self.right[j] = None
        return keep

    def nll(self):
        """Training NLL from the environments at the centre (``Z = 1``).

        Returns
        -------
        float
            ``-mean log P`` in nats (environments are rescaled, so the scales
            are tracked here by recomputing with logs).
        """
        b = self.x.shape[0]
        log = np.zeros(b)
        m = np.ones((b, 1))
        for k in range(self.n):
            m = np.einsum("bl,lbr->br", m, self.sites[k][:, self.x[:, k], :])
            scale = np.abs(m).max(axis=1, keepdims=True)
            log += np.log(scale[:, 0])
            m = m / scale
        return float(-2.0 * np.mean(log + np.log(np.abs(m[:, 0]))))
