"""``tnborn circuit``: compile an MPS checkpoint into an OpenQASM circuit.

Imported by :mod:`tnborn.cli` only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from ..errors import ConfigError

__all__ = ["circuit_command", "check_circuit_options"]

DEFAULT_SWEEPS = 20
DEFAULT_TOL = 1e-6
DEFAULT_MAX_LAYERS = 8
_DATA_FLAGS = ("data", "key", "threshold", "dataset", "rows", "cols", "dataset_size")


def check_circuit_options(args: argparse.Namespace) -> dict[str, Any]:
    """Check how the options of ``tnborn circuit`` combine, before any work.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed ``tnborn circuit`` arguments.

    Returns
    -------
    dict
        Keyword arguments of :func:`tnborn.circuit.compile_checkpoint`
        (without ``data``).

    Raises
    ------
    ConfigError
        If an option is given that the chosen mode does not use, or
        ``--layers auto`` comes without ``--target-fidelity``.
    """
    auto = args.layers == "auto"
    optimize = bool(args.optimize) or auto
    if auto and args.target_fidelity is None:
        raise ConfigError("--layers auto needs --target-fidelity F, a number in (0, 1] "
                          "(and optionally --max-layers M)")
    if not auto:
        for flag, value in (("--target-fidelity", args.target_fidelity), ("--max-layers", args.max_layers)):
            if value is not None:
                raise ConfigError(f"{flag} applies to --layers auto only; got --layers {args.layers}")
    if not optimize:
        for flag, value in (("--sweeps", args.sweeps), ("--tol", args.tol)):
            if value is not None:
                raise ConfigError(f"{flag} applies with --optimize or --layers auto only")
    return {
        "layers": args.layers,
        "optimize": optimize,
        "sweeps": DEFAULT_SWEEPS if args.sweeps is None else args.sweeps,
        "tol": DEFAULT_TOL if args.tol is None else args.tol,
        "target_fidelity": args.target_fidelity,
        "max_layers": DEFAULT_MAX_LAYERS if args.max_layers is None else args.max_layers,
        "max_bond_sim": args.max_bond_sim,
        "version": args.qasm_version,
    }


def _format_row(row: dict[str, Any]) -> str:
    def f(key: str) -> str:
        value = row.get(key)
        return f"{value:10.6f}" if isinstance(value, float) else f"{'-':>10}"

    log_f = row.get("log_fidelity")
    extra = f"  log-fidelity {log_f:.4g}" if isinstance(log_f, float) and row["fidelity"] < 1e-3 else ""
    sweeps = row.get("sweeps")
    timing = f"  {sweeps} sweeps, {row['seconds']:.1f} s" if sweeps is not None else ""
    nll = f"  NLL {row['nll']:.4f}" if isinstance(row.get("nll"), float) else ""
    return (f"{row['layers']:>6} {f('fidelity_analytical')} {f('fidelity_before')} {f('fidelity')} "
            f"{f('truncation_fidelity')} {f('schmidt_bound')}{nll}{extra}{timing}")


def circuit_command(args: argparse.Namespace) -> int:
    """Run ``tnborn circuit``: compile, optionally optimise, write OpenQASM, report.

    Parameters
    ----------
    args : argparse.Namespace
        ``checkpoint``, ``layers`` (int or ``"auto"``), ``optimize``,
        ``sweeps``, ``tol``, ``target_fidelity``, ``max_layers``, ``out``,
        ``qasm_version``, ``max_bond_sim``, the data options and ``json``.

    Returns
    -------
    int
        Exit status (0).
    """
    from ..circuit import compile_checkpoint

    options = check_circuit_options(args)
    data, description = None, None
    if any(getattr(args, k, None) is not None for k in _DATA_FLAGS):
        from .tools import _data_from_args, _load_model

        model, extra = _load_model(args.checkpoint, "cpu")
        loaded = _data_from_args(args, model, extra)
        data, description = loaded.x, loaded.description
        del model

    header = (f"{'layers':>6} {'analytic':>10} {'before':>10} {'after':>10} {'trunc 2^L':>10} "
              f"{'bound':>10}")
    printed = [False]

    def progress(row: dict[str, Any]) -> None:
        if args.json:
            return
        if not printed[0]:
            print(header, flush=True)
            printed[0] = True
        print(_format_row(row), flush=True)

    summary = compile_checkpoint(args.checkpoint, out=args.out, data=data, progress=progress, **options)
    summary = {"checkpoint": str(args.checkpoint), **summary, "data": description}
    if args.json:
        for row in summary["table"]:  # JSON has no inf: an excluded pattern gives NLL inf
            for key, value in list(row.items()):
                if isinstance(value, float) and not math.isfinite(value):
                    row[key] = str(value)
        for key in ("nll", "log_fidelity"):
            if isinstance(summary.get(key), float) and not math.isfinite(summary[key]):
                summary[key] = str(summary[key])
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{summary['num_qubits']} qubits, {summary['layers']} layers, {summary['two_qubit_gates']} "
          f"two-qubit gates ({summary['cx_gates']} cx), written to {summary['qasm']}")
    print(f"fidelity {summary['fidelity']:.6f} (log {summary['log_fidelity']:.6g}, per qubit "
          f"{summary['fidelity_per_qubit']:.6f})")
    if summary["target_fidelity"] is not None:
        verdict = "reached" if summary["reached"] else "not reached"
        print(f"target fidelity {summary['target_fidelity']:g} {verdict} with {summary['layers']} layers")
    if data is not None:
        print(f"NLL of {description} under the circuit: {summary['nll']:.4f} nats "
              f"(the model: {summary['model_nll']:.4f})")
    return 0
