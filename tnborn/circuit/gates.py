"""The compiled circuit: two-qubit unitaries in application order, grouped in layers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

__all__ = ["CompiledCircuit", "Gate"]


#: One gate: the qubit pair ``(i, j)`` and a 4x4 unitary in the basis ``|x_i x_j>``.
Gate = tuple[tuple[int, int], np.ndarray]


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
