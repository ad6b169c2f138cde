"""Compile a matrix product state Born machine into a quantum circuit.

A Born machine ``P(x) = |psi(x)|^2`` on binary variables is a state of ``N``
qubits; measuring a circuit that prepares ``|psi>`` from ``|0...0>`` samples
``P``. This module builds such circuits from two-qubit gates on neighbouring
qubits (variable ``k`` is qubit ``k``).

Bond dimension 2 is exact (Schoen et al., PRL 95, 110503; Ran, PRA 101,
032310): in right-canonical form every site tensor ``A_k[l, s, r]`` is an
isometry ``|l> -> sum A_k[l, s, r] |s>|r>`` from the bond qubit into (site
qubit, next bond qubit); completing its columns with an orthonormal
complement gives a 4x4 unitary on qubits ``(k, k+1)``, and the staircase of
these unitaries applied in order ``(0,1), (1,2), ..., (N-2,N-1)`` to
``|0...0>`` prepares ``|psi>`` (the last site's 2x2 unitary is merged into the
last gate). Larger bond dimensions are approximated by layers (Ran's
algorithm): truncate ``|psi>`` to its best bond-2 approximation (SVD), compile
that into a staircase ``U_1``, replace the target by ``U_1^dagger |psi>``
(simulated as an MPS), and repeat; ``|psi> ~ U_1 U_2 ... U_K |0>``, so the
circuit runs the layers in reverse order of compilation.

Each 4x4 gate is decomposed exactly into ``u3`` and ``cx`` gates (a KAK
decomposition through the magic basis and the three-CNOT circuit of Vatan and
Williams for ``exp(i(a XX + b YY + c ZZ))``) when written as OpenQASM; the
decomposition is exact up to a global phase per gate (OpenQASM 3 output
records that phase with ``gphase``).

All numerics here are host-side numpy complex128: a compiled circuit is a
small object whatever device the model lives on.
"""

from __future__ import annotations

import os

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backend import to_numpy
from .errors import ConfigError, DataError, NumericalError

__all__ = [
    "CompiledCircuit",
    "compile_mps",
    "to_qasm",
    "parse_qasm",
    "simulate_circuit",
    "circuit_fidelity",
    "circuit_nll",
    "decompose_two_qubit",
    "gates_from_ops",
    "compile_checkpoint",
    "optimize_circuit",
    "gate_environment",
    "grow_circuit",
    "truncation_fidelity",
    "schmidt_bound",
    "staircase_bond",
]

Gate = tuple[tuple[int, int], np.ndarray]
_DENSE_MAX_QUBITS = 24


@dataclass
class CompiledCircuit:
    """A circuit of two-qubit unitaries that prepares a state from ``|0...0>``.

    Attributes
    ----------
    num_qubits : int
        Number of qubits ``N`` (one per variable).
    gates : list of ((int, int), numpy.ndarray)
        Gates in the order they are applied: qubit pair ``(i, j)`` and a 4x4
        unitary in the basis ``|x_i x_j>`` (``x_i`` the more significant bit).
    fidelities : list of float
        ``fidelities[k-1] = |<psi|C_k|0>|^2`` for the circuit ``C_k`` made of
        the first ``k`` compiled layers (empty when unknown, e.g. after parsing).
    gates_per_layer : int
        Gates in each layer (``N - 1`` for a staircase; 0 if not layered).
    """

    num_qubits: int
    gates: list[Gate]
    fidelities: list[float] = field(default_factory=list)
    gates_per_layer: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.num_qubits, (int, np.integer)) and self.num_qubits >= 1):
            raise ConfigError(f"num_qubits must be an integer >= 1, got {self.num_qubits!r}")
        for k, gate in enumerate(self.gates):
            try:
                (i, j), u = gate
            except (TypeError, ValueError):
                raise ConfigError(f"gate {k} must be ((i, j), 4x4 array), got {gate!r}") from None
            if not (0 <= int(i) < self.num_qubits and 0 <= int(j) < self.num_qubits and i != j):
                raise ConfigError(f"gate {k} acts on qubits {(i, j)}: expected two different qubits "
                                  f"in [0, {self.num_qubits})")
            if np.shape(u) != (4, 4):
                raise ConfigError(f"gate {k} must be a 4x4 matrix, got shape {np.shape(u)}")

    @property
    def num_layers(self) -> int:
        """Number of staircase layers (0 if the circuit is not layered)."""
        if self.gates_per_layer <= 0:
            return 0
        return len(self.gates) // self.gates_per_layer

    def with_layers(self, k: int) -> "CompiledCircuit":
        """The circuit made of the first ``k`` compiled layers.

        Layer 1 is applied last, so this is the tail of :attr:`gates`.

        Parameters
        ----------
        k : int
            Number of layers, ``1 <= k <= num_layers``.

        Returns
        -------
        CompiledCircuit
            A new circuit sharing the gate arrays.
        """
        if not (isinstance(k, int) and 1 <= k <= self.num_layers):
            raise ConfigError(f"k must be an integer in [1, {self.num_layers}], got {k!r}")
        gates = self.gates[len(self.gates) - k * self.gates_per_layer:]
        return CompiledCircuit(self.num_qubits, list(gates), list(self.fidelities[:k]), self.gates_per_layer)


# --------------------------------------------------------------------------- #
# numpy MPS helpers: arrays (D_left, 2, D_right), complex128
# --------------------------------------------------------------------------- #
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


def _staircase(arrays: list[np.ndarray]) -> list[Gate]:
    """Gates preparing a right-canonical bond-<=2 MPS from ``|0...0>``."""
    n = len(arrays)
    gates: list[Gate] = []
    for k in range(n - 1):
        a = arrays[k]
        dl, d, dr = a.shape
        if dl > 2 or dr > 2:
            raise RuntimeError(f"site {k} has bonds ({dl}, {dr}) > 2 after truncation")
        padded = np.zeros((dl, 2, 2), dtype=np.complex128)
        padded[:, :, :dr] = a
        u = _complete(padded.reshape(dl, 4).T, [2 * l for l in range(dl)], 4)
        if k == n - 2:
            last = arrays[n - 1]
            w = _complete(last[:, :, 0].T, list(range(last.shape[0])), 2)
            u = np.kron(np.eye(2), w) @ u
        gates.append(((k, k + 1), u))
    return gates


def _dagger_layer(layer: list[Gate]) -> list[Gate]:
    """Gates of the inverse of a layer, in application order."""
    return [(w, u.conj().T) for w, u in reversed(layer)]


def _analytical_layer(target: list[np.ndarray], cutoff: float) -> tuple[list[Gate], float]:
    """Staircase preparing the best bond-2 (SVD) approximation of a left-canonical, normalised MPS.

    Returns the gates and ``|<target|layer|0>|^2``.
    """
    # U |0> = approx exactly, so <0|U^dagger|target> = <approx|target>
    approx = _right_truncate(target, 2, cutoff)
    return _staircase(approx), float(abs(_overlap(approx, target)) ** 2)


# --------------------------------------------------------------------------- #
# compilation
# --------------------------------------------------------------------------- #
def compile_mps(
    model: Any,
    layers: int = 1,
    max_bond_sim: int | None = None,
    cutoff_sim: float = 1e-12,
) -> CompiledCircuit:
    """Compile an MPS Born machine into layers of neighbouring two-qubit unitaries.

    Layer ``k`` is a staircase of ``N - 1`` gates on ``(0,1), ..., (N-2,N-1)``
    preparing the best bond-2 (SVD) approximation of the residual state
    ``U_{k-1}^dagger ... U_1^dagger |psi>``; the returned circuit applies
    ``U_K`` first and ``U_1`` last. For bond dimension <= 2, one layer is exact.

    Parameters
    ----------
    model : MPSBornMachine or list of numpy.ndarray
        Real or complex, any bond dimension, ``phys_dim = 2`` (site arrays
        ``(D_l, 2, D_r)`` accepted too).
    layers : int
        Number of layers ``K >= 1``.
    max_bond_sim : int, optional
        Largest bond dimension of the simulated residual state (``None``:
        unbounded, so the residuals and reported fidelities are exact up to
        ``cutoff_sim``).
    cutoff_sim : float
        Relative singular-value cutoff of the residual simulation, in ``[0, 1)``.

    Returns
    -------
    CompiledCircuit
        The gates, and ``fidelities[k-1] = |<psi|U_1 ... U_k|0>|^2`` for
        ``k = 1..K``, computed as the overlap of the residual
        ``U_{k-1}^dagger ... U_1^dagger|psi>`` with its bond-2 approximation
        ``U_k|0>`` (exact for ``k = 1``, and for every ``k`` when
        ``max_bond_sim`` is None; an estimate otherwise, see :func:`circuit_fidelity`).

    Raises
    ------
    ConfigError
        On a non-MPS model, ``phys_dim != 2`` or bad parameters.
    """
    if not (isinstance(layers, int) and not isinstance(layers, bool) and layers >= 1):
        raise ConfigError(f"layers must be an integer >= 1, got {layers!r}")
    if max_bond_sim is not None and not (isinstance(max_bond_sim, int) and max_bond_sim >= 2):
        raise ConfigError(f"max_bond_sim must be an integer >= 2 or None, got {max_bond_sim!r}")
    if not (isinstance(cutoff_sim, (int, float)) and 0.0 <= cutoff_sim < 1.0):
        raise ConfigError(f"cutoff_sim must be in [0, 1), got {cutoff_sim!r}")
    target = _target_arrays(model)
    n = len(target)
    compiled: list[list[Gate]] = []
    fidelities: list[float] = []
    for _ in range(layers):
        layer, fid = _analytical_layer(target, cutoff_sim)
        fidelities.append(fid)
        compiled.append(layer)
        target, _ = _apply_gates(target, _dagger_layer(layer), n - 1, max_bond_sim, cutoff_sim)
        target = _left_canonical(target)
    gates = [g for layer in reversed(compiled) for g in layer]
    return CompiledCircuit(num_qubits=n, gates=gates, fidelities=fidelities, gates_per_layer=n - 1)


# --------------------------------------------------------------------------- #
# exact two-qubit decomposition into u3 and cx
# --------------------------------------------------------------------------- #
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


# --------------------------------------------------------------------------- #
# OpenQASM
# --------------------------------------------------------------------------- #
def to_qasm(circuit: CompiledCircuit, version: int = 2, measure: bool = False) -> str:
    """Write a circuit as OpenQASM with only ``u3`` and ``cx`` gates.

    Every 4x4 gate is decomposed exactly (:func:`decompose_two_qubit`) and
    preceded by a comment ``// tnborn gate <k> on q[i],q[j]`` that
    :func:`parse_qasm` uses to regroup the operations. OpenQASM 2 has no
    global phase, so each gate is reproduced up to a phase (no observable
    effect); OpenQASM 3 output adds ``gphase`` and is exact. Angles are
    written with ``repr`` (round-trip exact).

    Parameters
    ----------
    circuit : CompiledCircuit
        The circuit; qubit ``k`` is ``q[k]`` (variable ``k``).
    version : int
        2 (``qelib1.inc``) or 3 (``stdgates.inc``).
    measure : bool
        Append a measurement of every qubit into a classical register ``c``.

    Returns
    -------
    str
        The program.
    """
    if version not in (2, 3):
        raise ConfigError(f"version must be 2 or 3, got {version!r}")
    n = circuit.num_qubits
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";'] if version == 2 else ["OPENQASM 3.0;", 'include "stdgates.inc";']
    lines.append(f"// tnborn circuit: {n} qubits, {len(circuit.gates)} two-qubit gates, "
                 f"gates_per_layer {circuit.gates_per_layer}")
    if circuit.fidelities:
        lines.append("// tnborn fidelities: " + " ".join(repr(float(f)) for f in circuit.fidelities))
    lines.append(f"qreg q[{n}];" if version == 2 else f"qubit[{n}] q;")
    if measure:
        lines.append(f"creg c[{n}];" if version == 2 else f"bit[{n}] c;")
    for k, ((i, j), u) in enumerate(circuit.gates):
        ops, phase = decompose_two_qubit(u)
        lines.append(f"// tnborn gate {k} on q[{i}],q[{j}]")
        if version == 3:
            lines.append(f"gphase({phase!r});")
        pair = (i, j)
        for name, qubits, params in ops:
            args = ",".join(f"q[{pair[q]}]" for q in qubits)
            if name == "u3":
                lines.append(f"u3({params[0]!r},{params[1]!r},{params[2]!r}) {args};")
            else:
                lines.append(f"cx {args};")
    if measure:
        lines.append("measure q -> c;" if version == 2 else "c = measure q;")
    return "\n".join(lines) + "\n"


_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RE_GATE = re.compile(r"^//\s*tnborn gate\s+\d+\s+on\s+q\[(\d+)\]\s*,\s*q\[(\d+)\]")
_RE_U3 = re.compile(rf"^u3\(\s*({_FLOAT})\s*,\s*({_FLOAT})\s*,\s*({_FLOAT})\s*\)\s*q\[(\d+)\]\s*;$")
_RE_CX = re.compile(r"^cx\s+q\[(\d+)\]\s*,\s*q\[(\d+)\]\s*;$")
_RE_GPHASE = re.compile(rf"^gphase\(\s*({_FLOAT})\s*\)\s*;$")
_RE_QREG = re.compile(r"^(?:qreg\s+q\[(\d+)\]|qubit\[(\d+)\]\s+q)\s*;$")


def parse_qasm(text: str) -> CompiledCircuit:
    """Read a program written by :func:`to_qasm` back into 4x4 unitaries.

    Operations are regrouped by the ``// tnborn gate`` comments and multiplied
    out; with OpenQASM 2 each unitary equals the original up to a global
    phase, with OpenQASM 3 (``gphase``) exactly.

    Parameters
    ----------
    text : str
        The program.

    Returns
    -------
    CompiledCircuit
        Gates, fidelities and layering as recorded in the comments.

    Raises
    ------
    DataError
        On a statement this reader does not understand, an operation outside
        a ``// tnborn gate`` group or on qubits other than the group's.
    """
    n = None
    fidelities: list[float] = []
    per_layer = 0
    groups: list[tuple[tuple[int, int], list, float]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        m = _RE_GATE.match(line)
        if m:
            groups.append(((int(m.group(1)), int(m.group(2))), [], 0.0))
            continue
        if line.startswith("//"):
            if line.startswith("// tnborn fidelities:"):
                fidelities = [float(v) for v in line.split(":", 1)[1].split()]
            mm = re.search(r"gates_per_layer (\d+)", line)
            if line.startswith("// tnborn circuit:") and mm:
                per_layer = int(mm.group(1))
            continue
        if line.startswith(("OPENQASM", "include", "creg", "bit[", "measure", "c = measure")):
            continue
        m = _RE_QREG.match(line)
        if m:
            n = int(m.group(1) or m.group(2))
            continue
        m_u3, m_cx, m_ph = _RE_U3.match(line), _RE_CX.match(line), _RE_GPHASE.match(line)
        if not (m_u3 or m_cx or m_ph):
            raise DataError(f"line {lineno}: unsupported statement {line!r} (expected u3, cx or gphase)")
        if not groups:
            raise DataError(f"line {lineno}: operation before any '// tnborn gate' comment")
        pair, ops, phase = groups[-1]
        if m_ph:
            groups[-1] = (pair, ops, phase + float(m_ph.group(1)))
        elif m_u3:
            ops.append(("u3", (int(m_u3.group(4)),), tuple(float(m_u3.group(i)) for i in (1, 2, 3))))
        else:
            ops.append(("cx", (int(m_cx.group(1)), int(m_cx.group(2))), ()))
    if n is None:
        raise DataError("no qubit register (qreg q[N]; or qubit[N] q;) found")
    gates = []
    for pair, ops, phase in groups:
        if max(pair) >= n or pair[0] == pair[1]:
            raise DataError(f"gate on qubits {pair} does not fit a register of {n} qubits")
        gates.append((pair, np.exp(1j * phase) * _ops_unitary(ops, pair)))
    return CompiledCircuit(num_qubits=n, gates=gates, fidelities=fidelities, gates_per_layer=per_layer)


# --------------------------------------------------------------------------- #
# simulation and scores
# --------------------------------------------------------------------------- #
def simulate_circuit(
    circuit: CompiledCircuit, method: str = "dense", max_bond: int | None = None, cutoff: float = 1e-12
) -> Any:
    """Run a circuit on ``|0...0>`` with quimb's circuit simulators.

    Parameters
    ----------
    circuit : CompiledCircuit
        The circuit.
    method : str
        ``"dense"``: :class:`quimb.tensor.Circuit`, contracted to the full
        state vector (``N <= 24``); ``"mps"``: :class:`quimb.tensor.CircuitMPS`.
    max_bond : int, optional
        Bond limit of the ``"mps"`` simulation (``None``: exact).
    cutoff : float
        Singular-value cutoff of the ``"mps"`` simulation.

    Returns
    -------
    numpy.ndarray or quimb.tensor.MatrixProductState
        ``"dense"``: the ``2^N`` amplitudes, qubit 0 the most significant bit;
        ``"mps"``: the simulated state.
    """
    import quimb.tensor as qtn

    n = circuit.num_qubits
    if method == "dense":
        if n > _DENSE_MAX_QUBITS:
            raise ConfigError(f"dense simulation of {n} qubits is too large (max {_DENSE_MAX_QUBITS}); use method='mps'")
        # keep every gate whole: quimb's default ("auto-split-gate") splits gates by an SVD
        # with its default cutoff, a truncation whose effect depends on rounding
        circ = qtn.Circuit(n, gate_contract=False)
    elif method == "mps":
        circ = qtn.CircuitMPS(n, max_bond=max_bond, cutoff=cutoff)
    else:
        raise ConfigError(f"method must be 'dense' or 'mps', got {method!r}")
    for (i, j), u in circuit.gates:
        circ.apply_gate_raw(np.asarray(u, dtype=np.complex128), (int(i), int(j)))
    if method == "mps":
        return circ.psi
    inds = [f"k{q}" for q in range(n)]
    t = circ.psi.contract(all, output_inds=inds, preserve_tensor=True)
    return np.asarray(t.transpose(*inds).data).reshape(-1)


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


def _circuit_arrays(circuit: CompiledCircuit) -> list[np.ndarray]:
    """Exact MPS of the circuit's state (neighbouring gates; quimb otherwise)."""
    n = circuit.num_qubits
    zero = np.zeros((1, 2, 1), dtype=np.complex128)
    zero[0, 0, 0] = 1
    try:
        arrays, _ = _apply_gates([zero.copy() for _ in range(n)], circuit.gates, 0, None, 1e-14)
        return arrays
    except ConfigError:
        return _quimb_mps_arrays(simulate_circuit(circuit, method="mps", max_bond=None, cutoff=0.0))


def circuit_fidelity(model: Any, circuit: CompiledCircuit) -> float:
    """``|<psi|C|0>|^2`` between a model's normalised state and a circuit's state.

    Both are held as exact MPS (the circuit's bond dimension is at most
    ``2^layers``), so this works for any ``N``.

    Parameters
    ----------
    model : MPSBornMachine
        The target.
    circuit : CompiledCircuit
        A circuit on ``model.num_variables`` qubits.

    Returns
    -------
    float
        The fidelity in ``[0, 1]``.
    """
    psi = _left_canonical(_model_arrays(model))
    if circuit.num_qubits != len(psi):
        raise ConfigError(f"circuit has {circuit.num_qubits} qubits but the model {len(psi)} variables")
    return float(abs(_overlap(psi, _circuit_arrays(circuit))) ** 2)


def circuit_nll(circuit: CompiledCircuit, data: Any, method: str = "auto") -> float:
    """Mean negative log-likelihood of data under ``P(x) = |<x|C|0>|^2``.

    Parameters
    ----------
    circuit : CompiledCircuit
        The circuit.
    data : array_like
        ``(samples, N)`` binary configurations.
    method : str
        ``"dense"`` (full state vector, ``N <= 24``), ``"mps"`` (exact MPS of
        the circuit evaluated by :class:`~tnborn.MPSBornMachine`, log-scaled,
        any ``N``) or ``"auto"`` (dense up to 20 qubits).

    Returns
    -------
    float
        The NLL in nats (``inf`` if some configuration has amplitude zero).
    """
    from .data import validate_binary

    n = circuit.num_qubits
    x = validate_binary(data, n_vars=n, phys_dim=2, name="data")
    if method == "auto":
        method = "dense" if n <= 20 else "mps"
    if method == "dense":
        psi = simulate_circuit(circuit, method="dense")
        idx = x @ (1 << np.arange(n - 1, -1, -1, dtype=np.int64))
        with np.errstate(divide="ignore"):
            return float(-np.mean(np.log(np.abs(psi[idx]) ** 2)))
    if method == "mps":
        import torch

        from .geometries.mps import MPSBornMachine

        arrays = [torch.from_numpy(a) for a in _circuit_arrays(circuit)]
        return MPSBornMachine(arrays).nll(x)
    raise ConfigError(f"method must be 'auto', 'dense' or 'mps', got {method!r}")


def compile_checkpoint(
    checkpoint: Any,
    layers: int | str = 1,
    out: Any = None,
    version: int = 2,
    max_bond_sim: int | None = None,
    measure: bool = True,
    optimize: bool = False,
    sweeps: int = 20,
    tol: float = 1e-6,
    target_fidelity: float | None = None,
    max_layers: int = 8,
    data: Any = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Compile a saved MPS Born machine and write the circuit as OpenQASM (the CLI's ``circuit``).

    Parameters
    ----------
    checkpoint : str or Path
        A checkpoint of an MPS model (:func:`tnborn.save`).
    layers : int or "auto"
        Number of staircase layers, or ``"auto"``: grow optimised layers
        (:func:`grow_circuit`) until ``target_fidelity`` or ``max_layers``.
    out : str or Path, optional
        Where to write the program (nothing written if None).
    version : int
        OpenQASM version, 2 or 3.
    max_bond_sim : int, optional
        Bond limit of the simulations (see :func:`compile_mps` and :func:`optimize_circuit`).
    measure : bool
        End the program with a measurement of every qubit.
    optimize : bool
        Optimise all gates of the ``layers``-layer analytical circuit
        (:func:`optimize_circuit`); implied by ``layers="auto"``.
    sweeps, tol : int, float
        Limits of the optimisation.
    target_fidelity : float, optional
        Required with ``layers="auto"``, in ``(0, 1]``.
    max_layers : int
        Largest number of layers with ``layers="auto"``.
    data : array_like, optional
        ``(samples, N)`` binary data: their NLL under each circuit's
        measurement distribution is reported.
    progress : callable, optional
        Called with each row of the table as it is made.

    Returns
    -------
    dict
        ``num_qubits``, ``mode`` (``"analytical"``, ``"optimized"`` or
        ``"auto"``), ``layers``, ``two_qubit_gates``, ``cx_gates``,
        ``fidelity``, ``log_fidelity`` and ``fidelity_per_qubit`` of the
        written circuit, ``fidelities`` (the ``fidelity`` column), ``table``
        (one row per layer count: ``layers``, ``gates``,
        ``fidelity_analytical``, ``truncation_fidelity`` and ``schmidt_bound``
        at bond ``2^layers``, ``fidelity`` of the circuit of that many layers,
        and for optimised rows ``fidelity_before``, ``log_fidelity``,
        ``fidelity_per_qubit``, ``sweeps``, ``seconds``; ``nll`` with data),
        ``target_fidelity``, ``reached``, ``nll`` and ``model_nll`` (None
        without data), ``seconds`` and ``qasm`` (the path or None).
    """
    import time
    from pathlib import Path

    from .checkpoint import load
    from .io import atomic_write_text, check_not_input, check_output_path

    auto = isinstance(layers, str)
    if auto and layers != "auto":
        raise ConfigError(f"layers must be an integer >= 1 or 'auto', got {layers!r}")
    if not auto and not (isinstance(layers, int) and not isinstance(layers, bool) and layers >= 1):
        raise ConfigError(f"layers must be an integer >= 1 or 'auto', got {layers!r}")
    if auto and target_fidelity is None:
        raise ConfigError("layers='auto' needs a target fidelity in (0, 1]")
    if not auto and target_fidelity is not None:
        raise ConfigError("a target fidelity applies to layers='auto' only")
    if target_fidelity is not None and not (
        isinstance(target_fidelity, (int, float)) and not isinstance(target_fidelity, bool)
        and 0.0 < target_fidelity <= 1.0
    ):
        raise ConfigError(f"target_fidelity must be a number in (0, 1], got {target_fidelity!r}")
    _check_sweep_options(sweeps, tol)
    if not (isinstance(max_layers, int) and not isinstance(max_layers, bool) and max_layers >= 1):
        raise ConfigError(f"max_layers must be an integer >= 1, got {max_layers!r}")
    if out is not None:  # before any work: never write onto the input or a device
        check_not_input(out, [checkpoint], what=f"the output {os.fspath(out)!r}")
        check_output_path(out)
    t0 = time.perf_counter()
    model = load(checkpoint)
    target = _target_arrays(model)
    n = len(target)
    if data is not None:
        from .data import validate_binary

        data = validate_binary(data, n_vars=n, phys_dim=2, name="data")

    def score(row: dict[str, Any], circuit: CompiledCircuit | None) -> dict[str, Any]:
        if data is not None and circuit is not None:
            row["nll"] = circuit_nll(circuit, data)
        return row

    def report(row: dict[str, Any]) -> None:
        if progress is not None:
            progress(row)

    table: list[dict[str, Any]] = []
    if auto:
        def on_layer(row: dict[str, Any], sub: CompiledCircuit) -> None:
            row = dict(row)
            row["fidelity_before"] = row.pop("fidelity_start")
            table.append(score(row, sub))
            report(row)

        circuit, _ = grow_circuit(target, target_fidelity=target_fidelity, max_layers=max_layers,
                                  sweeps=sweeps, tol=tol, max_bond_sim=max_bond_sim, progress=on_layer)
    else:
        circuit = compile_mps(target, layers=layers, max_bond_sim=max_bond_sim)
        spectra = _schmidt_spectra(target)
        for k in range(1, layers + 1):
            chi = staircase_bond(k)
            sub = circuit.with_layers(k)
            log_f = _circuit_log_fidelity(target, sub.gates, 1e-14)
            row = {"layers": k, "gates": len(sub.gates), "fidelity_analytical": circuit.fidelities[k - 1],
                   "truncation_fidelity": truncation_fidelity(target, chi),
                   "schmidt_bound": _bound_from_spectra(spectra, chi), "fidelity": math.exp(log_f),
                   "log_fidelity": log_f, "fidelity_per_qubit": math.exp(log_f / n)}
            if k < layers or not optimize:
                table.append(score(row, sub))
                report(row)
        if optimize:
            circuit, info = optimize_circuit(target, circuit, sweeps=sweeps, tol=tol, max_bond_sim=max_bond_sim)
            row.update(fidelity_before=info["fidelity_before"], fidelity=info["fidelity"],
                       log_fidelity=info["log_fidelity"], fidelity_per_qubit=math.exp(info["log_fidelity"] / n),
                       sweeps=info["sweeps"], history=info["history"], seconds=info["seconds"])
            table.append(score(row, circuit))
            report(row)
    text = to_qasm(circuit, version=version, measure=measure)
    path = None
    if out is not None:
        path = Path(out)
        atomic_write_text(path, text)
    last = table[-1]
    return {
        "num_qubits": n,
        "mode": "auto" if auto else ("optimized" if optimize else "analytical"),
        "layers": circuit.num_layers,
        "two_qubit_gates": len(circuit.gates),
        "cx_gates": sum(1 for line in text.splitlines() if line.startswith("cx ")),
        "fidelity": last["fidelity"],
        "log_fidelity": last["log_fidelity"],
        "fidelity_per_qubit": last["fidelity_per_qubit"],
        "fidelities": [row["fidelity"] for row in table],
        "table": table,
        "target_fidelity": target_fidelity,
        "reached": None if target_fidelity is None else bool(last["fidelity"] >= target_fidelity),
        "nll": last.get("nll"),
        "model_nll": None if data is None else float(model.nll(data)),
        "seconds": time.perf_counter() - t0,
        "qasm": None if path is None else str(path),
    }


# --------------------------------------------------------------------------- #
# optimised layers (Evenbly-Vidal polar updates)
# --------------------------------------------------------------------------- #
def _transfer_left(env: np.ndarray, top: np.ndarray, bot: np.ndarray) -> np.ndarray:
    return np.einsum("ij,isk,jsl->kl", env, top.conj(), bot, optimize=True)


def _transfer_right(env: np.ndarray, top: np.ndarray, bot: np.ndarray) -> np.ndarray:
    return np.einsum("kl,isk,jsl->ij", env, top.conj(), bot, optimize=True)


def gate_environment(top: list[np.ndarray], bottom: list[np.ndarray], k: int) -> np.ndarray:
    """Environment ``E`` of a gate on ``(k, k+1)`` between two MPS.

    ``<top| G |bottom> = sum_{ab,cd} G[ab, cd] E[ab, cd]`` for every 4x4 ``G``
    acting on qubits ``(k, k+1)`` (``a, c`` on qubit ``k``).

    Parameters
    ----------
    top, bottom : list of numpy.ndarray
        Site arrays ``(D_l, 2, D_r)`` of the two states.
    k : int
        Left qubit of the gate, ``0 <= k < N - 1``.

    Returns
    -------
    numpy.ndarray
        The 4x4 environment.
    """
    n = len(top)
    left = np.ones((1, 1), dtype=np.complex128)
    for s in range(k):
        left = _transfer_left(left, top[s], bottom[s])
    right = np.ones((1, 1), dtype=np.complex128)
    for s in range(n - 1, k + 1, -1):
        right = _transfer_right(right, top[s], bottom[s])
    return _two_site_environment(left, top[k], top[k + 1], bottom[k], bottom[k + 1], right)


def _two_site_environment(left: np.ndarray, t0: np.ndarray, t1: np.ndarray, b0: np.ndarray,
                          b1: np.ndarray, right: np.ndarray) -> np.ndarray:
    env = np.einsum("ij,iam,mbr,jcn,ndq,rq->abcd", left, t0.conj(), t1.conj(), b0, b1, right, optimize=True)
    return env.reshape(4, 4)


def _polar(m: np.ndarray) -> tuple[np.ndarray, float]:
    """Unitary ``W`` maximising ``|Tr(M^dagger W)|`` (polar factor) and that maximum."""
    u, s, vh = _svd(m)
    return u @ vh, float(np.sum(s))


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


class _Environments:
    """The two MPS of a sweep and their cached partial contractions.

    ``top = C_after^dagger |psi>`` and ``bottom = C_before |0>`` change only
    at the sites a gate or a move of the canonical centre touches; ``left[j]``
    contracts sites ``< j`` and ``right[j]`` sites ``>= j`` of
    ``<top|bottom>``. A change at sites ``lo..hi`` invalidates ``left[j]`` for
    ``j > lo`` and ``right[j]`` for ``j <= hi``, so a staircase layer costs
    ``O(N)`` transfer steps instead of ``O(N^2)``.
    """

    def __init__(self, top: list[np.ndarray], ctop: int, bottom: list[np.ndarray], cbot: int,
                 max_bond: int | None, cutoff: float):
        self.top, self.ctop, self.bottom, self.cbot = top, ctop, bottom, cbot
        self.max_bond, self.cutoff = max_bond, cutoff
        n = len(top)
        ones = np.ones((1, 1), dtype=np.complex128)
        # left[j] valid for j < len(self.left), right[j] for j >= rlow; each rescaled to
        # max |entry| = 1 with the log of the scale kept beside it (no underflow at large N)
        self.left, self.left_log = [ones], [0.0]
        self.right, self.right_log = [ones] * (n + 1), [0.0] * (n + 1)
        self.rlow = n

    def _touched(self, lo: int, hi: int) -> None:
        del self.left[lo + 1:], self.left_log[lo + 1:]
        self.rlow = max(self.rlow, hi + 1)

    def apply(self, which: str, gate: Gate, max_bond: int | None) -> None:
        k, _ = _orient(*gate)
        centre = self.ctop if which == "top" else self.cbot
        lo, hi = min(centre, k), max(centre, k + 1)
        state = self.top if which == "top" else self.bottom
        state, centre = _apply_gates(state, [gate], centre, max_bond, self.cutoff)
        if which == "top":
            self.top, self.ctop = state, centre
        else:
            self.bottom, self.cbot = state, centre
        self._touched(lo, hi)

    def environment(self, k: int) -> tuple[np.ndarray, float]:
        """The 4x4 environment of a gate on ``(k, k+1)`` divided by ``exp(log_scale)``, and ``log_scale``."""
        while len(self.left) <= k:
            j = len(self.left) - 1
            env, log = _rescaled(_transfer_left(self.left[j], self.top[j], self.bottom[j]))
            self.left.append(env)
            self.left_log.append(self.left_log[j] + log)
        while self.rlow > k + 2:
            j = self.rlow - 1
            env, log = _rescaled(_transfer_right(self.right[j + 1], self.top[j], self.bottom[j]))
            self.right[j], self.right_log[j] = env, self.right_log[j + 1] + log
            self.rlow = j
        env = _two_site_environment(self.left[k], self.top[k], self.top[k + 1], self.bottom[k],
                                    self.bottom[k + 1], self.right[k + 2])
        return env, self.left_log[k] + self.right_log[k + 2]


def _rescaled(env: np.ndarray) -> tuple[np.ndarray, float]:
    scale = float(np.max(np.abs(env)))
    if scale == 0.0 or not math.isfinite(scale):
        return env, 0.0
    return env / scale, math.log(scale)


def _sweep(target: list[np.ndarray], gates: list[Gate], max_bond: int | None, cutoff: float) -> tuple[list[Gate], float]:
    """One sweep of polar updates of every gate, in application order; returns the new gates and log-fidelity.

    ``max_bond`` limits the bond dimension of ``C_after^dagger|psi>`` only;
    ``C_before|0>`` is simulated exactly (its bond dimension is at most
    ``2^layers`` for staircases).
    """
    n = len(target)
    gates = list(gates)
    top, ctop = _apply_gates(target, _dagger_layer(gates[1:]), n - 1, max_bond, cutoff)
    envs = _Environments(top, ctop, _zero_state(n), 0, max_bond, cutoff)
    log_overlap = -math.inf
    for m in range(len(gates)):
        where, u = gates[m]
        k, _ = _orient(where, u)
        env, log_scale = envs.environment(k)
        w, overlap = _polar(env.conj())  # sum G*E = Tr(M^dagger G) with M = conj(E)
        log_overlap = math.log(overlap) + log_scale if overlap > 0 else -math.inf
        if where[0] > where[1]:
            w = _SWAP @ w @ _SWAP
        gates[m] = (where, w)
        envs.apply("bottom", gates[m], None)
        if m + 1 < len(gates):
            envs.apply("top", gates[m + 1], max_bond)
    return gates, 2.0 * log_overlap


def _check_sweep_options(sweeps: Any, tol: Any) -> None:
    if not (isinstance(sweeps, int) and not isinstance(sweeps, bool) and sweeps >= 1):
        raise ConfigError(f"sweeps must be an integer >= 1, got {sweeps!r}")
    if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and tol >= 0 and math.isfinite(tol)):
        raise ConfigError(f"tol must be a finite number >= 0, got {tol!r}")


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


def _circuit_log_fidelity(target: list[np.ndarray], gates: list[Gate], cutoff: float) -> float:
    """``log |<target|C|0>|^2`` with ``C|0>`` simulated exactly (up to ``cutoff``)."""
    state, _ = _apply_gates(_zero_state(len(target)), gates, 0, None, cutoff)
    return 2.0 * _log_overlap(target, state)


def _optimize(target: list[np.ndarray], gates: list[Gate], sweeps: int, tol: float,
              max_bond_sim: int | None, cutoff_sim: float, log_before: float) -> tuple[list[Gate], list[float]]:
    """Sweeps until the log-fidelity gains less than ``tol``; returns the gates and the log-fidelity history."""
    gates = [(w, np.asarray(u, dtype=np.complex128)) for w, u in gates]
    history: list[float] = []
    prev = log_before
    for _ in range(sweeps):
        gates, log_fid = _sweep(target, gates, max_bond_sim, cutoff_sim)
        history.append(log_fid)
        if not log_fid - prev >= tol:  # also stops on NaN
            break
        prev = log_fid
    return gates, history


def optimize_circuit(
    model: Any,
    circuit: CompiledCircuit,
    sweeps: int = 20,
    tol: float = 1e-6,
    max_bond_sim: int | None = None,
    cutoff_sim: float = 1e-14,
) -> tuple[CompiledCircuit, dict[str, Any]]:
    """Optimise every two-qubit gate of a circuit against a model's state.

    Each gate in turn is replaced by the polar factor of its environment
    (Evenbly and Vidal, PRB 79, 144108): with the rest of the circuit fixed,
    that unitary maximises ``|<psi|C|0>|``, so with exact simulation the
    fidelity never decreases from one update to the next. Sweeps stop when a
    sweep raises the log-fidelity by less than ``tol`` (the fidelity by a
    factor below ``1 + tol``, about ``tol`` in absolute terms near fidelity 1),
    or after ``sweeps`` sweeps.
    The environments come from two MPS, ``C_{before}|0>`` and
    ``C_{after}^dagger|psi>``, updated one gate at a time, with their partial
    contractions cached, so a sweep costs ``O(N)`` MPS steps per layer and no
    state vector is formed.

    Parameters
    ----------
    model : MPSBornMachine or list of numpy.ndarray
        The target (site arrays ``(D_l, 2, D_r)`` accepted too).
    circuit : CompiledCircuit
        Warm start, e.g. from :func:`compile_mps`; gates on neighbouring qubits.
    sweeps : int
        Maximum number of sweeps, ``>= 1``.
    tol : float
        Stop when a sweep gains less log-fidelity than this (``>= 0``).
    max_bond_sim : int, optional
        Bond limit of the simulated ``C_{after}^dagger|psi>`` (``None``:
        exact, monotone sweeps); ``C_{before}|0>`` is always exact.
    cutoff_sim : float
        Relative singular-value cutoff of those simulations.

    Returns
    -------
    CompiledCircuit
        The optimised circuit (same layout; when layered, ``fidelities[k-1]``
        is the exact fidelity of its first ``k`` layers, see
        :meth:`CompiledCircuit.with_layers`).
    dict
        ``fidelity_before``, ``fidelity`` (after, computed exactly from the
        circuit's MPS), ``log_fidelity`` (its natural log, finite where the
        fidelity underflows), ``sweeps``, ``history`` (the fidelity each sweep
        reports, exact when ``max_bond_sim`` is None), ``seconds``.
    """
    import time

    _check_sweep_options(sweeps, tol)
    if max_bond_sim is not None and not (isinstance(max_bond_sim, int) and max_bond_sim >= 2):
        raise ConfigError(f"max_bond_sim must be an integer >= 2 or None, got {max_bond_sim!r}")
    target = _target_arrays(model)
    if circuit.num_qubits != len(target):
        raise ConfigError(f"circuit has {circuit.num_qubits} qubits but the target {len(target)} variables")
    if not circuit.gates:
        raise ConfigError("the circuit has no gates to optimise")
    t0 = time.perf_counter()
    log_before = _circuit_log_fidelity(target, circuit.gates, cutoff_sim)
    gates, log_history = _optimize(target, circuit.gates, sweeps, tol, max_bond_sim, cutoff_sim, log_before)
    history = [math.exp(v) for v in log_history]
    before = math.exp(log_before)
    log_fid = _circuit_log_fidelity(target, gates, cutoff_sim)
    out = CompiledCircuit(circuit.num_qubits, gates, [], circuit.gates_per_layer)
    if out.num_layers and out.num_layers * out.gates_per_layer == len(gates):
        out.fidelities = _tail_fidelities(target, out, cutoff_sim)
    return out, {"fidelity_before": before, "fidelity": math.exp(log_fid), "log_fidelity": log_fid,
                 "sweeps": len(history), "history": history, "seconds": time.perf_counter() - t0}


def _tail_fidelities(target: list[np.ndarray], circuit: CompiledCircuit, cutoff: float) -> list[float]:
    """Exact fidelity of the first ``k`` layers (the last ``k`` in application order), ``k = 1..K``."""
    out = []
    for k in range(1, circuit.num_layers + 1):
        out.append(math.exp(_circuit_log_fidelity(target, circuit.with_layers(k).gates, cutoff)))
    return out


# --------------------------------------------------------------------------- #
# reference lines: what any state of bounded bond dimension can reach
# --------------------------------------------------------------------------- #
def staircase_bond(layers: int) -> int:
    """Largest bond dimension of the state of ``layers`` staircase layers on ``|0...0>``.

    Across the cut between qubits ``k`` and ``k + 1`` a staircase
    ``(0,1), (1,2), ...`` factors as ``U_right G_(k,k+1) U_left``; ``U_left``
    leaves the cut's Schmidt rank alone and ``G`` at most doubles the rank of
    the cut ``k+1 | k+2`` that ``U_left`` did not change, so each layer at most
    doubles the bond dimension: ``2^layers``.

    Parameters
    ----------
    layers : int
        Number of layers ``>= 1``.

    Returns
    -------
    int
        ``2 ** layers``.
    """
    if not (isinstance(layers, int) and not isinstance(layers, bool) and layers >= 1):
        raise ConfigError(f"layers must be an integer >= 1, got {layers!r}")
    return 2 ** layers


def _schmidt_spectra(target: list[np.ndarray]) -> list[np.ndarray]:
    """Squared Schmidt values of every bond ``(k-1, k)``, ``k = 1..N-1``, of a left-canonical normalised MPS."""
    out = list(target)
    spectra: list[np.ndarray] = []
    for k in range(len(out) - 1, 0, -1):
        a = out[k]
        dl, d, dr = a.shape
        u, s, vh = _svd(a.reshape(dl, d * dr))
        spectra.append(s ** 2 / np.sum(s ** 2))
        out[k] = vh.reshape(-1, d, dr)
        out[k - 1] = np.tensordot(out[k - 1], u * s, axes=([2], [0]))
    return spectra[::-1]


def _check_bond(max_bond: Any) -> None:
    if not (isinstance(max_bond, (int, np.integer)) and not isinstance(max_bond, bool) and max_bond >= 1):
        raise ConfigError(f"max_bond must be an integer >= 1, got {max_bond!r}")


def schmidt_bound(model: Any, max_bond: int) -> float:
    """Upper bound on ``|<psi|phi>|^2`` over all normalised MPS ``phi`` of bond dimension ``<= max_bond``.

    At every bond the overlap is at most the weight of the ``max_bond``
    largest squared Schmidt values of ``psi`` (Eckart-Young); the bound is the
    smallest of these over the bonds. A circuit of ``L`` staircase layers
    cannot exceed ``schmidt_bound(model, staircase_bond(L))``.

    Parameters
    ----------
    model : MPSBornMachine or list of numpy.ndarray
        The state (site arrays ``(D_l, 2, D_r)`` accepted too).
    max_bond : int
        Bond dimension ``>= 1``.

    Returns
    -------
    float
        The bound in ``[0, 1]`` (1 when ``max_bond`` holds every bond).
    """
    _check_bond(max_bond)
    return _bound_from_spectra(_schmidt_spectra(_target_arrays(model)), max_bond)


def _bound_from_spectra(spectra: list[np.ndarray], max_bond: int) -> float:
    return float(min([1.0] + [min(1.0, float(np.sum(np.sort(p)[::-1][:max_bond])))
                              for p in spectra if len(p) > max_bond]))


def truncation_fidelity(model: Any, max_bond: int, log: bool = False) -> float:
    """Fidelity of the canonical SVD truncation of a model's state to bond dimension ``max_bond``.

    The state is compressed with quimb (:meth:`quimb.tensor.MatrixProductState.compress`,
    left-canonical then a right-to-left truncating sweep with ``cutoff = 0``)
    and ``|<psi|psi_chi>|^2 / (<psi|psi> <psi_chi|psi_chi>)`` is returned: what a
    circuit whose state has that bond dimension can nearly reach (the best
    state of that bond dimension lies between this and :func:`schmidt_bound`).

    Parameters
    ----------
    model : MPSBornMachine or list of numpy.ndarray
        The state.
    max_bond : int
        Bond dimension ``>= 1``.
    log : bool
        Return the natural log of the fidelity (finite for many qubits).

    Returns
    -------
    float
        The fidelity (or its log).
    """
    import quimb.tensor as qtn

    _check_bond(max_bond)
    target = _target_arrays(model)
    n = len(target)
    if n == 1:
        return 0.0 if log else 1.0
    arrays = [target[0][0]] + target[1:-1] + [target[-1][..., 0]]
    psi = qtn.MatrixProductState(arrays, shape="lpr")
    psi.compress(form="right", max_bond=int(max_bond), cutoff=0.0, cutoff_mode="rel", absorb="left")
    approx = _quimb_mps_arrays(psi)
    norm = _log_overlap(approx, approx) / 2  # target is normalised
    value = 2.0 * (_log_overlap(target, approx) - norm)
    return value if log else math.exp(value)


# --------------------------------------------------------------------------- #
# layer growth
# --------------------------------------------------------------------------- #
def _identity_layer(n: int) -> list[Gate]:
    return [((k, k + 1), np.eye(4, dtype=np.complex128)) for k in range(n - 1)]


def grow_circuit(
    model: Any,
    target_fidelity: float | None = None,
    max_layers: int = 8,
    sweeps: int = 20,
    tol: float = 1e-6,
    max_bond_sim: int | None = None,
    cutoff_sim: float = 1e-14,
    progress: Any = None,
) -> tuple[CompiledCircuit, list[dict[str, Any]]]:
    """Add optimised staircase layers until a target fidelity or a maximum depth.

    Layer 1 is the analytical staircase (:func:`compile_mps`), optimised by
    :func:`optimize_circuit`. To go from ``L`` to ``L + 1`` layers, a new
    layer ``V`` preparing the best bond-2 approximation of the residual
    ``C_L^dagger|psi>`` is put in front of the optimised ``C_L`` (``V`` runs
    first), and all gates are optimised together. If that start is worse than
    ``C_L`` itself, the new layer starts as the identity instead, so with
    exact simulation the fidelity never decreases from one layer count to the
    next; a result below the previous optimum (possible only with a truncated
    simulation) is replaced by ``C_L`` with an identity layer.

    Parameters
    ----------
    model : MPSBornMachine or list of numpy.ndarray
        The target state, ``phys_dim = 2``.
    target_fidelity : float, optional
        Stop at the first layer count whose fidelity reaches this, in ``(0, 1]``
        (``None``: always ``max_layers`` layers).
    max_layers : int
        Largest number of layers, ``>= 1``.
    sweeps, tol, max_bond_sim, cutoff_sim
        Passed to the optimisation of each layer count (see :func:`optimize_circuit`).
    progress : callable, optional
        Called as ``progress(row, circuit)`` with each row of the table and
        the optimised circuit of that many layers, as they are made.

    Returns
    -------
    CompiledCircuit
        The deepest circuit made (``fidelities[k-1]`` is the exact fidelity of
        its first ``k`` layers, which differ from the ``k``-layer optimum).
    list of dict
        One row per layer count ``L``: ``layers``, ``gates``,
        ``fidelity_analytical`` (Ran's ``L`` analytical layers),
        ``fidelity_start`` (the warm start), ``start`` (``"analytical"`` or
        ``"identity"`` for the new layer), ``fidelity`` (optimised, exact),
        ``log_fidelity``, ``fidelity_per_qubit`` (``fidelity^(1/N)``),
        ``truncation_fidelity`` and ``schmidt_bound`` at bond
        ``staircase_bond(L)``, ``sweeps``, ``history``, ``seconds``.
    """
    import time

    _check_sweep_options(sweeps, tol)
    if not (isinstance(max_layers, int) and not isinstance(max_layers, bool) and max_layers >= 1):
        raise ConfigError(f"max_layers must be an integer >= 1, got {max_layers!r}")
    if target_fidelity is not None and not (
        isinstance(target_fidelity, (int, float)) and not isinstance(target_fidelity, bool)
        and 0.0 < target_fidelity <= 1.0
    ):
        raise ConfigError(f"target_fidelity must be a number in (0, 1], got {target_fidelity!r}")
    if max_bond_sim is not None and not (isinstance(max_bond_sim, int) and max_bond_sim >= 2):
        raise ConfigError(f"max_bond_sim must be an integer >= 2 or None, got {max_bond_sim!r}")
    target = _target_arrays(model)
    n = len(target)
    if n < 2:
        raise ConfigError("a circuit of two-qubit gates needs at least 2 qubits")
    spectra = _schmidt_spectra(target)
    residual = target  # Ran's analytical residual, for the reference column
    gates: list[Gate] = []
    log_prev = -math.inf
    rows: list[dict[str, Any]] = []
    for layers in range(1, max_layers + 1):
        t0 = time.perf_counter()
        ana_layer, _ = _analytical_layer(residual, cutoff_sim)
        residual = _left_canonical(_apply_gates(residual, _dagger_layer(ana_layer), n - 1, max_bond_sim,
                                                cutoff_sim)[0])
        ana_gates = [g for g in _analytical_gates_so_far(rows, ana_layer)]
        fid_ana = math.exp(_circuit_log_fidelity(target, ana_gates, cutoff_sim))
        if gates:
            res, _ = _apply_gates(target, _dagger_layer(gates), n - 1, max_bond_sim, cutoff_sim)
            new_layer, _ = _analytical_layer(_left_canonical(res), cutoff_sim)
        else:
            new_layer = ana_layer
        start = "analytical"
        candidate = new_layer + gates
        log_start = _circuit_log_fidelity(target, candidate, cutoff_sim)
        if log_start < log_prev:
            start, candidate, log_start = "identity", _identity_layer(n) + gates, log_prev
        opt, log_history = _optimize(target, candidate, sweeps, tol, max_bond_sim, cutoff_sim, log_start)
        history = [math.exp(v) for v in log_history]
        log_fid = _circuit_log_fidelity(target, opt, cutoff_sim)
        if log_fid < log_prev:  # only with a truncated simulation
            opt, log_fid = _identity_layer(n) + gates, _circuit_log_fidelity(target, _identity_layer(n) + gates,
                                                                              cutoff_sim)
        gates, log_prev = opt, log_fid
        chi = staircase_bond(layers)
        row = {
            "layers": layers,
            "gates": len(gates),
            "fidelity_analytical": fid_ana,
            "fidelity_start": math.exp(log_start),
            "start": start,
            "fidelity": math.exp(log_fid),
            "log_fidelity": log_fid,
            "fidelity_per_qubit": math.exp(log_fid / n),
            "truncation_fidelity": truncation_fidelity(target, chi),
            "schmidt_bound": _bound_from_spectra(spectra, chi),
            "sweeps": len(history),
            "history": history,
            "seconds": time.perf_counter() - t0,
            "_analytical_layer": ana_layer,
        }
        rows.append(row)
        if progress is not None:
            progress({k: v for k, v in row.items() if not k.startswith("_")},
                     CompiledCircuit(n, list(gates), [], n - 1))
        if target_fidelity is not None and row["fidelity"] >= target_fidelity:
            break
    for row in rows:
        del row["_analytical_layer"]
    circuit = CompiledCircuit(n, gates, [], n - 1)
    circuit.fidelities = _tail_fidelities(target, circuit, cutoff_sim)
    return circuit, rows


def _analytical_gates_so_far(rows: list[dict[str, Any]], layer: list[Gate]) -> list[Gate]:
    """Gates of Ran's analytical circuit: the newest layer first, layer 1 last."""
    out = list(layer)
    for row in reversed(rows):
        out += row["_analytical_layer"]
    return out
