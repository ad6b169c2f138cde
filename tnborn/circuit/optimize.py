"""Optimised layers: Evenbly-Vidal polar updates of every gate, warm-started from the analytical ones."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import ConfigError
from .analytical import _dagger_layer
from .decompose import _SWAP
from .gates import CompiledCircuit, Gate
from .states import _apply_gates, _log_overlap, _orient, _svd, _target_arrays, _transfer_left, _transfer_right, _zero_state

__all__ = ["gate_environment", "optimize_circuit"]


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
