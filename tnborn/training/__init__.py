"""Trainers: the two-site sweep (tree geometries), gradient training (any geometry) and callbacks."""

from .callbacks import Callback, EarlyStopping, LoggingCallback, PeriodicCheckpoint, ProgressBar
from .gradient import GradientSettings, GradientTrainer
from .sweep import SweepSettings, SweepTrainer

__all__ = [
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
