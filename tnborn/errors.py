"""Exception and warning types raised by tnborn.

Every error raised on bad user input derives from :class:`TnbornError`, so a
caller can catch everything tnborn refuses with one ``except`` clause, while
the concrete classes also derive from the matching built-in (``ValueError``,
``FileNotFoundError`` ...) so that generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "TnbornError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "DeviceError",
    "NumericalError",
    "PrecisionWarning",
]


class TnbornError(Exception):
    """Base class of every error raised by tnborn."""


class DataError(TnbornError, ValueError):
    """Data (configurations, masks, data files) do not have the expected shape or values."""


class ConfigError(TnbornError, ValueError):
    """A hyper-parameter or option is outside its valid range or unknown."""


class CheckpointError(TnbornError, ValueError):
    """A checkpoint file is truncated, corrupt, foreign, or from a newer format."""


class DeviceError(TnbornError, ValueError):
    """A device or dtype was asked for that is unknown or not available."""


class NumericalError(TnbornError, ArithmeticError):
    """A numerical step failed (non-finite values, SVD failure, zero amplitude)."""


class PrecisionWarning(UserWarning):
    """The requested numerical setting is beyond what the dtype can resolve."""
