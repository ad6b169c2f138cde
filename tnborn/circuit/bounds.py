"""Reference lines: what any state of bounded bond dimension can reach."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigError
from .states import _log_overlap, _quimb_mps_arrays, _svd, _target_arrays

__all__ = ["staircase_bond", "schmidt_bound", "truncation_fidelity"]


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
