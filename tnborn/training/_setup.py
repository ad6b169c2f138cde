"""Construction steps shared by the trainers (model check, communicator, progress bar)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..distributed import Communicator, LocalCommunicator
from ..errors import ConfigError
from ..interface import BornMachine
from .callbacks import Callback, ProgressBar


def setup_trainer(
    model: Any,
    communicator: Communicator | None,
    callbacks: Sequence[Callback] | None,
    progress: bool | None,
) -> tuple[Communicator, list[Callback]]:
    """Check ``model`` and ``communicator``; return the communicator and the callbacks.

    A :class:`ProgressBar` is appended unless ``progress`` is False, one is
    already given, or this process is not the main rank.
    """
    if not isinstance(model, BornMachine):
        raise ConfigError(f"model must be a tnborn BornMachine, got {type(model).__name__}")
    if communicator is not None and not isinstance(communicator, Communicator):
        raise ConfigError(f"communicator must be a tnborn Communicator, got {type(communicator).__name__}")
    communicator = communicator or LocalCommunicator()
    callbacks = list(callbacks or [])
    if not communicator.is_main:
        progress = False
    if progress is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(ProgressBar(enabled=progress))
    return communicator, callbacks
