"""Exact decomposition of a two-qubit unitary into ``u3`` and ``cx`` gates.

A KAK decomposition through the magic basis and the three-CNOT circuit of
Vatan and Williams for ``exp(i(a XX + b YY + c ZZ))``; exact up to a global
phase per gate.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError, DataError, NumericalError
from .states import _svd

__all__ = ["decompose_two_qubit", "gates_from_ops"]


_MAGIC = np.array(
    [[1, 0, 0, 1j], [0, 1j, 1, 0], [0, 1j, -1, 0], [1, 0, 0, -1j]], dtype=np.complex128
) / math.sqrt(2)
_PAULI = {
    "X": np.array([[0, 1], [1, 0]], dtype=np.complex128),
    "Y": np.array([[0, -1j], [1j, 0]], dtype=np.complex128),
    "Z": np.array([[1, 0], [0, -1]], dtype=np.complex128),
}
_CX01 = np.eye(4, dtype=np.complex128)[[0, 1, 3, 2]]  # control qubit 0 (first), target 1
_SWAP = np.eye(4, dtype=np.complex128)[[0, 2, 1, 3]]
_CX10 = _SWAP @ _CX01 @ _SWAP


def _rz(t: float) -> np.ndarray:
    return np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)])


def _ry(t: float) -> np.ndarray:
    c, s = math.cos(t / 2), math.sin(t / 2)
    return np.array([[c, -s], [s, c]], dtype=np.complex128)


def _u3_matrix(theta: float, phi: float, lam: float) -> np.ndarray:
    """The OpenQASM ``u3(theta, phi, lambda)`` gate as a 2x2 matrix."""
    c, s = math.cos(theta / 2), math.sin(theta / 2)
    return np.array(
        [[c, -np.exp(1j * lam) * s], [np.exp(1j * phi) * s, np.exp(1j * (phi + lam)) * c]],
        dtype=np.complex128,
    )


def _u3_angles(v: np.ndarray) -> tuple[float, float, float]:
    """Angles with ``v = e^{i g} u3(theta, phi, lambda)`` for a 2x2 unitary ``v``."""
    v = v / np.sqrt(np.linalg.det(v))  # SU(2): [[a, -conj(b)], [b, conj(a)]]
    a, b = v[0, 0], v[1, 0]
    theta = 2.0 * math.atan2(abs(b), abs(a))
    tot = -2.0 * np.angle(a) if abs(a) > 1e-15 else 0.0  # phi + lambda
    dif = 2.0 * np.angle(b) if abs(b) > 1e-15 else 0.0  # phi - lambda
    return float(theta), float((tot + dif) / 2), float((tot - dif) / 2)


def _local_factors(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a, b`` with ``k = kron(a, b)`` for a 4x4 product unitary (rank-1 SVD)."""
    r = k.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(4, 4)
    u, s, vh = _svd(r)
    if s[1] > 1e-6 * s[0]:
        raise NumericalError(f"local part of a KAK decomposition is not a product (s1/s0 = {s[1] / s[0]:.2g})")
    a = math.sqrt(s[0]) * u[:, 0].reshape(2, 2)
    b = math.sqrt(s[0]) * vh[0].reshape(2, 2)
    return a, b


def _kak(u: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float], complex]:
    """``u = phase * kron(a0, a1) @ exp(i(a XX + b YY + c ZZ)) @ kron(b0, b1)``."""
    det = np.linalg.det(u)
    if not np.isclose(abs(det), 1.0, atol=1e-8) or not np.allclose(u.conj().T @ u, np.eye(4), atol=1e-8):
        raise NumericalError("decompose_two_qubit needs a 4x4 unitary")
    root = det ** 0.25
    su = u / root
    ub = _MAGIC.conj().T @ su @ _MAGIC
    m2 = ub.T @ ub  # symmetric unitary: real and imaginary parts commute
    rng = np.random.default_rng(seed)
    for _ in range(20):
        t = rng.uniform(0, math.pi)
        _, p = np.linalg.eigh(math.cos(t) * m2.real + math.sin(t) * m2.imag)
        dmat = p.T @ m2 @ p
        if np.abs(dmat - np.diag(np.diag(dmat))).max() < 1e-10:
            break
    else:  # pragma: no cover - a random combination separates the eigenspaces
        raise NumericalError("could not diagonalise the KAK matrix")
    if np.linalg.det(p) < 0:
        p[:, 0] = -p[:, 0]
    half = np.sqrt(np.diag(dmat))
    k1 = ub @ p @ np.diag(1.0 / half)
    if np.linalg.det(k1).real < 0:
        half[0] = -half[0]
        k1 = ub @ p @ np.diag(1.0 / half)
    if np.abs(k1.imag).max() > 1e-8:
        raise NumericalError("KAK decomposition failed (left factor is not real orthogonal)")
    k1 = k1.real
    a0, a1 = _local_factors(_MAGIC @ k1 @ _MAGIC.conj().T)
    b0, b1 = _local_factors(_MAGIC @ p.T @ _MAGIC.conj().T)
    # exp(i(phi + a x_j + b y_j + c z_j)) = half_j on magic basis vector j
    signs = np.array([
        [1.0] + [float(np.real(_MAGIC[:, j].conj() @ np.kron(_PAULI[P], _PAULI[P]) @ _MAGIC[:, j]))
                 for P in "XYZ"]
        for j in range(4)
    ])
    phi, ca, cb, cc = np.linalg.solve(signs, np.angle(half))
    return a0, a1, b0, b1, (float(ca), float(cb), float(cc)), root * np.exp(1j * phi)


def decompose_two_qubit(u: np.ndarray) -> tuple[list[tuple[str, tuple[int, ...], tuple[float, ...]]], float]:
    """Exact decomposition of a 4x4 unitary into ``u3`` and (three) ``cx`` gates.

    KAK decomposition ``u = e^{ig} (A0 x A1) exp(i(a XX + b YY + c ZZ)) (B0 x B1)``
    through the magic basis, with the canonical gate built from three CNOTs
    (Vatan and Williams, PRA 69, 032315), neighbouring one-qubit gates merged.

    Parameters
    ----------
    u : numpy.ndarray
        4x4 unitary on qubits ``(0, 1)``, qubit 0 the more significant bit.

    Returns
    -------
    ops : list of (str, tuple of int, tuple of float)
        In application order: ``("u3", (q,), (theta, phi, lam))`` or
        ``("cx", (control, target), ())`` on local qubits 0 and 1.
    phase : float
        Global phase ``g`` with ``u = e^{ig} * product(ops)`` (see :func:`gates_from_ops`).
    """
    u = np.asarray(u, dtype=np.complex128)
    if u.shape != (4, 4):
        raise ConfigError(f"expected a 4x4 unitary, got shape {u.shape}")
    a0, a1, b0, b1, (ca, cb, cc), _ = _kak(u)
    ones = [
        (b0, (0,)),
        (_rz(math.pi / 2) @ b1, (1,)),
        (None, (1, 0)),
        (_rz(math.pi / 2 - 2 * cc), (0,)),
        (_ry(math.pi / 2 - 2 * ca), (1,)),
        (None, (0, 1)),
        (_ry(2 * cb - math.pi / 2), (1,)),
        (None, (1, 0)),
        (a0 @ _rz(-math.pi / 2), (0,)),
        (a1, (1,)),
    ]
    ops = []
    for mat, qubits in ones:
        if mat is None:
            ops.append(("cx", qubits, ()))
        else:
            ops.append(("u3", qubits, _u3_angles(mat)))
    v = _ops_unitary(ops, (0, 1))
    phase = float(np.angle(np.trace(v.conj().T @ u)))
    err = float(np.abs(np.exp(1j * phase) * v - u).max())
    if err > 1e-9:
        raise NumericalError(f"two-qubit decomposition is inexact (max error {err:.3g})")
    return ops, phase


def _ops_unitary(ops: list[tuple[str, tuple[int, ...], tuple[float, ...]]], pair: tuple[int, int]) -> np.ndarray:
    """4x4 unitary on ``pair`` of a sequence of ``u3``/``cx`` operations."""
    pos = {pair[0]: 0, pair[1]: 1}
    v = np.eye(4, dtype=np.complex128)
    for name, qubits, params in ops:
        try:
            local = tuple(pos[q] for q in qubits)
        except KeyError:
            raise DataError(f"operation {name} on qubits {qubits} is outside the gate's qubits {pair}") from None
        if name == "u3":
            m = _u3_matrix(*params)
            g = np.kron(m, np.eye(2)) if local == (0,) else np.kron(np.eye(2), m)
        elif name == "cx":
            g = _CX01 if local == (0, 1) else _CX10
        else:
            raise DataError(f"unsupported operation {name!r}")
        v = g @ v
    return v


def gates_from_ops(
    ops: list[tuple[str, tuple[int, ...], tuple[float, ...]]], phase: float = 0.0
) -> np.ndarray:
    """The 4x4 unitary ``e^{i phase} * product(ops)`` on local qubits ``(0, 1)``.

    Parameters
    ----------
    ops : list
        As returned by :func:`decompose_two_qubit`.
    phase : float
        Global phase.

    Returns
    -------
    numpy.ndarray
        The unitary.
    """
    return np.exp(1j * phase) * _ops_unitary(ops, (0, 1))
