"""Trainers: the two-site sweep (tree geometries), gradient training (any geometry), callbacks and :func:`fit`.

The settings dataclasses live in :mod:`tnborn.training.settings`, which
imports neither torch nor quimb; the other names are imported on first access
(PEP 562), so that ``from tnborn.training.settings import SweepSettings``
(the command line's option table) stays light.
"""

from typing import TYPE_CHECKING

from .settings import GradientSettings, SweepSettings

_LAZY = {
    "BatchStream": "base",
    "Trainer": "base",
    "fit": "base",
    "Callback": "callbacks",
    "EarlyStopping": "callbacks",
    "LoggingCallback": "callbacks",
    "PeriodicCheckpoint": "callbacks",
    "ProgressBar": "callbacks",
    "GradientTrainer": "gradient",
    "StepStats": "local_update",
    "block_gradient_steps": "local_update",
    "SweepTrainer": "sweep",
}

__all__ = [
    "BatchStream",
    "StepStats",
    "Trainer",
    "block_gradient_steps",
    "fit",
    "Callback",
    "EarlyStopping",
    "GradientSettings",
    "GradientTrainer",
    "LoggingCallback",
    "PeriodicCheckpoint",
    "ProgressBar",
    "SweepSettings",
    "SweepTrainer",
]


def __getattr__(name: str):
    """Import a trainer, callback or helper on first access."""
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """Names of the package, including those not imported yet."""
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from .base import BatchStream, Trainer, fit
    from .callbacks import Callback, EarlyStopping, LoggingCallback, PeriodicCheckpoint, ProgressBar
    from .gradient import GradientTrainer
    from .local_update import StepStats, block_gradient_steps
    from .sweep import SweepTrainer
