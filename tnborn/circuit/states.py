"""Numpy MPS states of the compiler: site arrays ``(D_left, 2, D_right)``, complex128.

Canonical forms, truncation, application of two-qubit gates and overlaps:
the arithmetic that the analytical compiler, the optimiser, the simulation
checks and the reference lines share. Host-side numpy whatever device the
model lives on (a compiled circuit is a small object).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import to_numpy
from ..errors import ConfigError, NumericalError
from .gates import Gate

__all__: list[str] = []


def _model_arrays(model: Any) -> list[np.ndarray]:
    """Site arrays ``(D_l, 2, D_r)`` of an MPS Born machine as complex128 numpy."""
    if not callable(getattr(model, "site_arrays", None)):  # a capability, not a geometry name
        raise ConfigError(
            f"compile_mps needs a chain-shaped Born machine whose site_arrays() gives one "
            f"(D_left, 2, D_right) array per variable, such as MPSBornMachine; got {type(model).__name__} "
            f"(geometry {getattr(model, 'geometry', None)!r})"
        )
    if model.phys_dim != 2:
        raise ConfigError(f"a qubit circuit needs binary variables (phys_dim 2), got phys_dim {model.phys_dim}")
    return [to_numpy(a).astype(np.complex128) for a in model.site_arrays()]


def _left_canonical(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Left-canonical copy with a unit-norm centre on the last site (normalised state)."""
    out, carry = [], None
    n = len(arrays)
    for k, a in enumerate(arrays):
        if carry is not None:
            a = np.tensordot(carry, a, axes=([1], [0]))
        if k == n - 1:
            nrm = np.linalg.norm(a)
            if not np.isfinite(nrm) or nrm == 0:
                raise NumericalError("the MPS has zero or non-finite norm")
            out.append(a / nrm)
            break
        dl, d, dr = a.shape
        q, r = np.linalg.qr(a.reshape(dl * d, dr))
        out.append(q.reshape(dl, d, q.shape[1]))
        nrm = np.linalg.norm(r)
        if not np.isfinite(nrm) or nrm == 0:
            raise NumericalError("the MPS has zero or non-finite norm")
        carry = r / nrm
    return out


def _right_truncate(arrays: list[np.ndarray], max_bond: int | None, cutoff: float) -> list[np.ndarray]:
    """Right-canonical, normalised SVD truncation of a left-canonical MPS.

    Sweeping right to left, singular values ``s_i <= cutoff * s_0`` and those
    beyond ``max_bond`` are dropped: the usual quasi-optimal compression.
    """
    out = list(arrays)
    for k in range(len(out) - 1, 0, -1):
        a = out[k]
        dl, d, dr = a.shape
        u, s, vh = _svd(a.reshape(dl, d * dr))
        keep = int(np.count_nonzero(s > cutoff * s[0])) if s[0] > 0 else 1
        if max_bond is not None:
            keep = min(keep, int(max_bond))
        keep = max(keep, 1)
        out[k] = vh[:keep].reshape(keep, d, dr)
        out[k - 1] = np.tensordot(out[k - 1], u[:, :keep] * s[:keep], axes=([2], [0]))
    out[0] = out[0] / np.linalg.norm(out[0])
    return out


def _svd(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD; LAPACK's gesdd, and gesvd where gesdd does not converge (it can on
    ill-conditioned matrices that gesvd handles)."""
    try:
        return np.linalg.svd(m, full_matrices=False)
    except np.linalg.LinAlgError:
        import scipy.linalg

        if not np.all(np.isfinite(m)):
            raise NumericalError("SVD of a matrix with non-finite entries") from None
        try:
            return scipy.linalg.svd(m, full_matrices=False, lapack_driver="gesvd")
        except np.linalg.LinAlgError as exc:
            raise NumericalError(f"SVD did not converge with gesdd or gesvd ({m.shape[0]}x{m.shape[1]})") from exc


def _orient(where: tuple[int, int], u: np.ndarray) -> tuple[int, np.ndarray]:
    """Left site ``k`` and the gate acting on ``(k, k+1)`` for an adjacent pair."""
    i, j = where
    if j == i + 1:
        return i, u
    if i == j + 1:
        sw = np.eye(4)[[0, 2, 1, 3]]
        return j, sw @ u @ sw
    raise ConfigError(f"gate on qubits {where} is not on neighbouring qubits")


def _apply_gates(
    arrays: list[np.ndarray], gates: list[Gate], center: int, max_bond: int | None, cutoff: float
) -> tuple[list[np.ndarray], int]:
    """Apply neighbouring two-qubit gates to an MPS with a tracked centre.

    Each gate merges its two sites (after moving the canonical centre into
    them), applies the unitary and splits by SVD, dropping singular values
    ``<= cutoff * s_0`` and beyond ``max_bond``, renormalising, and leaving
    the centre on the side of the next gate.
    """
    out = list(arrays)
    for g, (where, u) in enumerate(gates):
        k, u = _orient(where, np.asarray(u, dtype=np.complex128))
        while center < k:  # QR step to the right
            a = out[center]
            dl, d, dr = a.shape
            q, r = np.linalg.qr(a.reshape(dl * d, dr))
            out[center] = q.reshape(dl, d, q.shape[1])
            out[center + 1] = np.tensordot(r, out[center + 1], axes=([1], [0]))
            center += 1
        while center > k + 1:  # LQ step to the left
            a = out[center]
            dl, d, dr = a.shape
            q, r = np.linalg.qr(a.reshape(dl, d * dr).conj().T)
            out[center] = q.conj().T.reshape(q.shape[1], d, dr)
            out[center - 1] = np.tensordot(out[center - 1], r.conj().T, axes=([2], [0]))
            center -= 1
        a, b = out[k], out[k + 1]
        dl, dr = a.shape[0], b.shape[2]
        block = np.einsum("lsm,mtr->lstr", a, b)
        block = np.einsum("abst,lstr->labr", u.reshape(2, 2, 2, 2), block)
        uu, s, vh = _svd(block.reshape(dl * 2, 2 * dr))
        keep = int(np.count_nonzero(s > cutoff * s[0])) if s[0] > 0 else 1
        if max_bond is not None:
            keep = min(keep, int(max_bond))
        keep = max(keep, 1)
        s = s[:keep] / np.linalg.norm(s[:keep])
        go_left = g + 1 < len(gates) and _orient(*gates[g + 1])[0] < k
        if go_left:
            out[k] = (uu[:, :keep] * s).reshape(dl, 2, keep)
            out[k + 1] = vh[:keep].reshape(keep, 2, dr)
            center = k
        else:
            out[k] = uu[:, :keep].reshape(dl, 2, keep)
            out[k + 1] = (s[:, None] * vh[:keep]).reshape(keep, 2, dr)
            center = k + 1
    return out, center


def _overlap(bra: list[np.ndarray], ket: list[np.ndarray]) -> complex:
    """``<bra|ket>`` of two MPS on the same sites (transfer matrices)."""
    env = np.ones((1, 1), dtype=np.complex128)
    for a, b in zip(bra, ket):
        env = np.einsum("ij,isk,jsl->kl", env, a.conj(), b)
    return complex(env[0, 0])


def _complete(cols: np.ndarray, positions: list[int], dim: int) -> np.ndarray:
    """A ``dim x dim`` unitary whose columns at ``positions`` are ``cols`` (orthonormalised)."""
    u, _, vh = _svd(cols)
    cols = u @ vh  # nearest isometry: exact columns up to rounding for a canonical MPS
    q, _ = np.linalg.qr(cols, mode="complete")
    out = np.zeros((dim, dim), dtype=np.complex128)
    out[:, positions] = cols
    others = [p for p in range(dim) if p not in positions]
    out[:, others] = q[:, cols.shape[1]:]
    return out


def _zero_state(n: int) -> list[np.ndarray]:
    zero = np.zeros((1, 2, 1), dtype=np.complex128)
    zero[0, 0, 0] = 1
    return [zero.copy() for _ in range(n)]


def _log_overlap(bra: list[np.ndarray], ket: list[np.ndarray]) -> float:
    """``log |<bra|ket>|`` through rescaled transfer matrices (no underflow for large ``N``)."""
    env = np.ones((1, 1), dtype=np.complex128)
    log = 0.0
    for a, b in zip(bra, ket):
        env = _transfer_left(env, a, b)
        scale = float(np.max(np.abs(env)))
        if scale == 0.0 or not math.isfinite(scale):
            return -math.inf if scale == 0.0 else math.nan
        env = env / scale
        log += math.log(scale)
    return log + math.log(abs(complex(env[0, 0]))) if env[0, 0] != 0 else -math.inf


def _target_arrays(model: Any) -> list[np.ndarray]:
    if isinstance(model, list):
        arrays = [np.asarray(a, dtype=np.complex128) for a in model]
        if not arrays or any(a.ndim != 3 or a.shape[1] != 2 for a in arrays) or any(
                a.shape[2] != b.shape[0] for a, b in zip(arrays, arrays[1:])) or arrays[0].shape[0] != 1 \
                or arrays[-1].shape[2] != 1:
            raise ConfigError("site arrays must be a chain of (D_left, 2, D_right) arrays with end bonds 1, "
                              f"got shapes {[a.shape for a in arrays]}")
        return _left_canonical(arrays)
    return _left_canonical(_model_arrays(model))


def _quimb_mps_arrays(psi: Any) -> list[np.ndarray]:
    """Site arrays ``(D_l, 2, D_r)`` of a quimb MPS."""
    n = psi.L
    out = []
    for k in range(n):
        t = psi[psi.site_tag(k)]
        order = ([psi.bond(k - 1, k)] if k > 0 else []) + [psi.site_ind(k)] + ([psi.bond(k, k + 1)] if k < n - 1 else [])
        a = np.asarray(t.transpose(*order).data, dtype=np.complex128)
        if k == 0:
            a = a[None]
        if k == n - 1:
            a = a[..., None]
        out.append(a)
    return out


def _transfer_left(env: np.ndarray, top: np.ndarray, bot: np.ndarray) -> np.ndarray:
    return np.einsum("ij,isk,jsl->kl", env, top.conj(), bot, optimize=True)


def _transfer_right(env: np.ndarray, top: np.ndarray, bot: np.ndarray) -> np.ndarray:
    return np.einsum("kl,isk,jsl->ij", env, top.conj(), bot, optimize=True)
