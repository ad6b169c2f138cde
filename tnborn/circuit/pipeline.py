"""Compile a saved MPS Born machine and write OpenQASM: the job behind ``tnborn circuit``."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any


from ..errors import ConfigError
from .analytical import compile_mps
from .bounds import _bound_from_spectra, _schmidt_spectra, staircase_bond, truncation_fidelity
from .gates import CompiledCircuit
from .growth import grow_circuit
from .optimize import _check_sweep_options, _circuit_log_fidelity
from .qasm import to_qasm
from .simulate import circuit_nll
from .states import _target_arrays

__all__ = ["compile_checkpoint"]


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
        Grow ``layers`` optimised layers (:func:`grow_circuit`): layer count
        ``k`` starts from the optimised ``k - 1`` layers with a new analytical
        layer in front (or an identity layer, if that start is worse), then
        every gate is optimised; each row of the table has the fidelity before
        and after, and the fidelity never decreases with ``k`` (exact
        simulation). Implied by ``layers="auto"``, which stops at
        ``target_fidelity`` instead.
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

    from ..checkpoint import load
    from ..io import atomic_write_text, check_not_input, check_output_path

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
        from ..data import validate_binary

        data = validate_binary(data, n_vars=n, phys_dim=2, name="data")

    def score(row: dict[str, Any], circuit: CompiledCircuit | None) -> dict[str, Any]:
        if data is not None and circuit is not None:
            row["nll"] = circuit_nll(circuit, data)
        return row

    def report(row: dict[str, Any]) -> None:
        if progress is not None:
            progress(row)

    table: list[dict[str, Any]] = []
    if auto or optimize:  # optimised layers are grown one at a time (grow_circuit)
        def on_layer(row: dict[str, Any], sub: CompiledCircuit) -> None:
            row = dict(row)
            row["fidelity_before"] = row.pop("fidelity_start")
            table.append(score(row, sub))
            report(row)

        circuit, _ = grow_circuit(target, target_fidelity=target_fidelity if auto else None,
                                  max_layers=max_layers if auto else layers, sweeps=sweeps, tol=tol,
                                  max_bond_sim=max_bond_sim, progress=on_layer)
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
            table.append(score(row, sub))
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
