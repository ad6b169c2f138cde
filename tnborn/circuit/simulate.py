"""Independent checks of a circuit: quimb's circuit simulators, fidelity and the NLL of data."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from .gates import CompiledCircuit
from .states import _apply_gates, _left_canonical, _model_arrays, _overlap, _quimb_mps_arrays

__all__ = ["simulate_circuit", "circuit_fidelity", "circuit_nll"]

#: Most qubits of a dense state-vector simulation.
_DENSE_MAX_QUBITS = 24


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
    from ..data import validate_binary

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

        from ..geometries.mps import MPSBornMachine

        arrays = [torch.from_numpy(a) for a in _circuit_arrays(circuit)]
        return MPSBornMachine(arrays).nll(x)
    raise ConfigError(f"method must be 'auto', 'dense' or 'mps', got {method!r}")
