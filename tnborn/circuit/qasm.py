"""OpenQASM 2 and 3 export of a compiled circuit, and its exact parse back."""

from __future__ import annotations

import re

import numpy as np

from ..errors import ConfigError, DataError
from .decompose import _ops_unitary, decompose_two_qubit
from .gates import CompiledCircuit

__all__ = ["to_qasm", "parse_qasm"]


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
