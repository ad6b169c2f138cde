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

The package follows the pipeline: :mod:`~tnborn.circuit.states` (numpy MPS
arithmetic), :mod:`~tnborn.circuit.gates` (the compiled circuit),
:mod:`~tnborn.circuit.analytical` (Ran's layers), :mod:`~tnborn.circuit.optimize`
(polar sweeps over all gates), :mod:`~tnborn.circuit.growth` (adding layers up
to a target), :mod:`~tnborn.circuit.bounds` (what a state of bounded bond
dimension can reach), :mod:`~tnborn.circuit.decompose` and
:mod:`~tnborn.circuit.qasm` (exact ``u3`` + ``cx`` export and parse),
:mod:`~tnborn.circuit.simulate` (independent checks) and
:mod:`~tnborn.circuit.pipeline` (the job of ``tnborn circuit``). Every public
name is importable from ``tnborn.circuit``.
"""

from .analytical import compile_mps
from .bounds import schmidt_bound, staircase_bond, truncation_fidelity
from .decompose import decompose_two_qubit, gates_from_ops
from .gates import CompiledCircuit
from .growth import grow_circuit
from .optimize import gate_environment, optimize_circuit
from .pipeline import compile_checkpoint
from .qasm import parse_qasm, to_qasm
from .simulate import circuit_fidelity, circuit_nll, simulate_circuit

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
