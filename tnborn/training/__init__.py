"""Trainers: the two-site sweep (tree geometries) and callbacks."""

from .callbacks import Callback, EarlyStopping, LoggingCallback, PeriodicCheckpoint, ProgressBar
from .sweep import SweepSettings, SweepTrainer

__all__ = [
    "Callback",
    "EarlyStopping",
    "LoggingCallback",
    "PeriodicCheckpoint",
    "ProgressBar",
    "SweepSettings",
    "SweepTrainer",
]
