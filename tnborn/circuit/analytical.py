"""Ran's analytical layers: the staircase of a bond-2 MPS, repeated on the residual state."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from .gates import CompiledCircuit, Gate
from .states import _apply_gates, _complete, _left_canonical, _overlap, _right_truncate, _target_arrays

__all__ = ["compile_mps"]


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
