"""Trainers: the two-site sweep (tree geometries), gradient training (any geometry), callbacks and :func:`fit`."""

from .base import BatchStream, Trainer, fit
from .callbacks import Callback, EarlyStopping, LoggingCallback, PeriodicCheckpoint, ProgressBar
from .gradient import GradientSettings, GradientTrainer
from .local_update import StepStats, block_gradient_steps
from .sweep import SweepSettings, SweepTrainer

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
