"""One table of numerical tolerances shared by every test (float32 looser than float64).

Tests import :data:`TOL` (or call :func:`tol`) instead of writing literals, so
that a change of precision policy is made in one place.

``exact``      agreement of two exact evaluations of the same quantity (brute
               force vs fast path, generic vs geometry-specific) in nats.
``norm``       how close a sum of probabilities is to one.
``gauge``      invariance under exact gauge moves (moving the canonical centre).
``gradient``   closed-form gradient vs autograd of the enumerated loss.
``logp_drift`` float32 vs float64 log-probability of a long chain (N = 784), nats.
"""

from __future__ import annotations

import torch

__all__ = ["TOL", "tol"]

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
