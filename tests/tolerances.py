"""One table of numerical tolerances shared by every test (float32 looser than float64).

Tests import :data:`TOL` (or call :func:`tol`) instead of writing literals, so
that a change of precision policy is made in one place.

``exact``      agreement of two exact evaluations of the same quantity (brute
               force vs fast path, generic vs geometry-specific) in nats.
``norm``       how close a sum of probabilities is to one.
``gauge``      invariance under exact gauge moves (moving the canonical centre).
``gradient``   closed-form gradient vs autograd of the enumerated loss.
``logp_drift`` float32 vs float64 log-probability of a long chain (N = 784), nats.

Where a comparison's accuracy depends on the size of the computation or on the
conditioning of what is compared, derive the bound with :func:`rounding_bound`
(unit roundoff times the number of rounded operations, times a safety factor)
instead of taking a literal from the table: a literal that one CPU happened to
meet can fail on another BLAS.
"""

from __future__ import annotations

import torch

__all__ = ["TOL", "cutoff_margin", "rounding_bound", "tol", "unit_roundoff"]

TOL: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {
        "exact": 1e-10,
        "norm": 1e-12,
        "gauge": 1e-10,
        "gradient": 1e-8,
        "logp_drift": 1e-6,
    },
    torch.complex128: {
        "exact": 1e-10,
        "norm": 1e-12,
        "gauge": 1e-10,
        "gradient": 1e-8,
        "logp_drift": 1e-6,
    },
    torch.float32: {
        "exact": 1e-4,
        "norm": 1e-5,
        "gauge": 1e-4,
        "gradient": 1e-3,
        "logp_drift": 5e-2,
    },
    torch.complex64: {
        "exact": 1e-4,
        "norm": 1e-5,
        "gauge": 1e-4,
        "gradient": 1e-3,
        "logp_drift": 5e-2,
    },
}


def tol(dtype: torch.dtype | str, kind: str = "exact") -> float:
    """Return the tolerance of ``kind`` for ``dtype``.

    Parameters
    ----------
    dtype : torch.dtype or str
        The dtype of the computation (``"float32"`` or ``torch.float32`` ...).
    kind : str
        One of the keys of the table (``"exact"``, ``"norm"``, ``"gauge"``,
        ``"gradient"``, ``"logp_drift"``).

    Returns
    -------
    float
        The absolute tolerance.
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return TOL[dtype][kind]



def unit_roundoff(dtype: torch.dtype | str) -> float:
    """Return the unit roundoff (machine epsilon / 2) of ``dtype``.

    Parameters
    ----------
    dtype : torch.dtype or str
        A floating or complex dtype.

    Returns
    -------
    float
        ``u`` such that a correctly rounded operation has relative error at most ``u``.
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    real = torch.empty((), dtype=dtype).real.dtype
    return torch.finfo(real).eps / 2


#: Safety factor on the first-order rounding bound: covers the constants of
#: blocked BLAS kernels (different summation orders on different CPUs).
ROUNDING_SAFETY = 64.0


def rounding_bound(dtype: torch.dtype | str, operations: float, scale: float = 1.0) -> float:
    """Absolute error bound for a quantity of size ``scale`` after ``operations`` rounded steps.

    The first-order bound ``operations * u * scale`` of backward-stable
    arithmetic (each step has relative error at most ``u``; ``u`` from
    :func:`unit_roundoff`), times :data:`ROUNDING_SAFETY`. It depends only on
    the size of the computation, never on what one machine produced.

    Parameters
    ----------
    dtype : torch.dtype or str
        The dtype of the computation.
    operations : float
        The number of rounded steps each result passes through (gates applied,
        sites contracted, terms summed ...).
    scale : float
        The magnitude the errors are relative to (for a normalised state: 1).

    Returns
    -------
    float
        The absolute tolerance.
    """
    return ROUNDING_SAFETY * float(operations) * unit_roundoff(dtype) * float(scale)



def cutoff_margin(s, cutoff: float, max_bond: int | None = None, min_bond: int = 1) -> float:
    """Distance of the singular values ``s`` from the truncation threshold, relative to ``s_0``.

    The truncation rule keeps ``s_i >= cutoff * s_0`` (``s_i > 0`` for
    ``cutoff = 0``). Two SVDs of the same block (two code paths, two BLAS)
    return singular values that differ by rounding, at most
    ``rounding_bound(...)`` relative to ``s_0`` (Weyl); they keep the same
    number of values whenever this margin exceeds that bound. A test that
    compares kept dimensions across code paths asserts it, so that the
    comparison holds on any machine and not only where no value happened to
    fall near the threshold.

    Parameters
    ----------
    s : torch.Tensor
        Singular values (any order, ``s.max() > 0``).
    cutoff : float
        The relative cutoff of the split.
    max_bond, min_bond : int
        The caps of the split: the ``i``-th largest value (0-based) changes the
        kept dimension only for ``min_bond <= i < max_bond``; the others are not
        counted.

    Returns
    -------
    float
        ``min_i |s_i - cutoff * s_0| / s_0`` over those values (``inf`` if none).
    """
    s = torch.sort(torch.as_tensor(s).detach().to(torch.float64).cpu(), descending=True).values
    s0 = float(s[0])
    hi = s.shape[0] if max_bond is None else min(int(max_bond), s.shape[0])
    relevant = s[max(int(min_bond), 0):hi]
    if relevant.numel() == 0:
        return float("inf")
    return float(((relevant - cutoff * s0).abs() / s0).min())
