"""Callbacks observing a training run: progress bar, early stopping, checkpoints.

A callback is any object with some of the methods of :class:`Callback`; the
trainer calls them at the start and end of a fit, after every local update
(``on_step_end``) and after every half-sweep or epoch
(``on_half_sweep_end``). Setting ``trainer.stop_training = True`` ends the
fit after the current half-sweep.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["Callback", "ProgressBar", "EarlyStopping", "PeriodicCheckpoint", "LoggingCallback"]

logger = logging.getLogger("tnborn")


class Callback:
    """Base class: every hook does nothing.

    Attributes
    ----------
    reads_only : bool
        Set True in a subclass whose :meth:`on_step_end` never edits
        ``trainer.model.tn``: the sweep then skips the network check after it
        (:meth:`~tnborn.BornMachine.trusting_network`).
    info_only : bool
        Set True in a subclass whose :meth:`on_step_end` reads nothing but its
        ``info`` record (not the model): the sweep may then run several updates
        in one compiled call and report them afterwards, in order
        (:mod:`tnborn.training.compiled`). Implies ``reads_only``.
    """

    reads_only: bool = False
    info_only: bool = False

    def on_fit_start(self, trainer: Any, total_steps: int) -> None:
        """Called once before training; ``total_steps`` local updates are planned.

        Parameters
        ----------
        trainer : SweepTrainer or GradientTrainer
            The trainer running the fit.
        total_steps : int
            Number of local updates (or optimiser steps) the fit plans to make.
        """

    def on_step_end(self, trainer: Any, info: dict[str, Any]) -> None:
        """Called after every local update with its ``info`` (bond, bond_dim ...).

        Parameters
        ----------
        trainer : SweepTrainer or GradientTrainer
            The trainer running the fit.
        info : dict
            What the update did (``loop``, ``bond``, ``bond_dim``, ``step_in_half_sweep`` ...).
        """

    def on_half_sweep_end(self, trainer: Any, record: dict[str, Any]) -> None:
        """Called after every half-sweep (or epoch) with its history record.

        Parameters
        ----------
        trainer : SweepTrainer or GradientTrainer
            The trainer running the fit.
        record : dict
            The record just appended to ``trainer.history`` (``loop``, ``train_nll``, ``max_bond`` ...).
        """

    def on_fit_end(self, trainer: Any) -> None:
        """Called once after training (also after an early stop).

        Parameters
        ----------
        trainer : SweepTrainer or GradientTrainer
            The trainer running the fit.
        """


class ProgressBar(Callback):
    """A tqdm progress bar over local updates showing loop, NLL and max bond.

    Parameters
    ----------
    enabled : bool or None
        ``None`` (default): only when standard error is a terminal.
    """

    reads_only = True
    info_only = True

    def __init__(self, enabled: bool | None = None):
        self.enabled = enabled
        self._bar = None
        self._last = None

    def on_fit_start(self, trainer: Any, total_steps: int) -> None:
        enabled = sys.stderr.isatty() if self.enabled is None else self.enabled
        if not enabled:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total_steps, unit="bond", dynamic_ncols=True, leave=True)

    def on_step_end(self, trainer: Any, info: dict[str, Any]) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        if info.get("step_in_half_sweep", 0) % 16 == 0:
            post = {"loop": f"{info.get('loop', 0):.1f}", "bond": str(info.get("bond")),
                    "D": info.get("bond_dim")}
            if self._last is not None:
                post["nll"] = f"{self._last:.4f}"
            self._bar.set_postfix(post, refresh=False)

    def on_half_sweep_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self._last = record.get("train_nll")
        if self._bar is not None:
            self._bar.set_postfix({"loop": f"{record.get('loop', 0):.1f}",
                                   "nll": f"{self._last:.4f}", "maxD": record.get("max_bond")})

    def on_fit_end(self, trainer: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EarlyStopping(Callback):
    """Stop when the training NLL changes by less than ``min_delta`` between records.

    Parameters
    ----------
    min_delta : float
        Smallest change (nats) counted as progress.
    patience : int
        Number of consecutive records without progress before stopping.
    monitor : str
        History key to watch (``"train_nll"`` or ``"test_nll"``).
    every : int
        Compare records this many apart (2: one full loop of an MPS sweep).
    """

    def __init__(self, min_delta: float = 2e-3, patience: int = 1, monitor: str = "train_nll", every: int = 2):
        self.min_delta = float(min_delta)
        self.patience = int(patience)
        self.monitor = monitor
        self.every = max(1, int(every))
        self._values: list[float] = []
        self._bad = 0

    def on_fit_start(self, trainer: Any, total_steps: int) -> None:
        self._values, self._bad = [], 0

    def on_half_sweep_end(self, trainer: Any, record: dict[str, Any]) -> None:
        value = record.get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        self._values.append(float(value))
        if len(self._values) <= self.every:
            return
        if abs(self._values[-1 - self.every] - self._values[-1]) < self.min_delta:
            self._bad += 1
        else:
            self._bad = 0
        if self._bad >= self.patience:
            trainer.stop_training = True
            logger.info("early stopping: %s changed by < %g", self.monitor, self.min_delta)


class PeriodicCheckpoint(Callback):
    """Save a resumable checkpoint every ``every`` half-sweeps (atomically).

    Parameters
    ----------
    path : str or Path
        Checkpoint file, overwritten each time.
    every : int
        Half-sweeps (or epochs) between saves.
    """

    def __init__(self, path: str | Path, every: int = 2):
        self.path = Path(path)
        self.every = max(1, int(every))
        self._count = 0

    def on_half_sweep_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self._count += 1
        if self._count % self.every == 0:
            trainer.save_checkpoint(self.path)

    def on_fit_end(self, trainer: Any) -> None:
        if self._count % self.every != 0:
            trainer.save_checkpoint(self.path)


class LoggingCallback(Callback):
    """Log every history record at INFO level on the ``tnborn`` logger."""

    def on_half_sweep_end(self, trainer: Any, record: dict[str, Any]) -> None:
        logger.info(
            "loop %.1f: train NLL %.5f%s, max bond %s, %.2fs",
            record.get("loop", 0.0),
            record.get("train_nll", float("nan")),
            f", test NLL {record['test_nll']:.5f}" if record.get("test_nll") is not None else "",
            record.get("max_bond"),
            record.get("seconds", 0.0),
        )
