"""Layer growth: add a layer (analytical start, then optimise all) until a target fidelity."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import ConfigError
from .analytical import _analytical_layer, _dagger_layer
from .bounds import _bound_from_spectra, _schmidt_spectra, staircase_bond, truncation_fidelity
from .gates import CompiledCircuit, Gate
from .optimize import _check_sweep_options, _circuit_log_fidelity, _optimize, _tail_fidelities
from .states import _apply_gates, _left_canonical, _target_arrays

__all__ = ["grow_circuit"]


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
