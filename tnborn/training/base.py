"""What every trainer shares: settings, the mini-batch stream, state, checkpoints, callbacks.

:class:`Trainer` is the base of :class:`~tnborn.training.sweep.SweepTrainer`
and :class:`~tnborn.training.gradient.GradientTrainer`. A subclass names its
settings dataclass (``settings_class``), its unit of work (``unit``: loops or
epochs) and implements ``_train(x, test, count)`` plus its own state entries;
the base checks the model, the communicator and the settings, runs the
callbacks around a fit, keeps the history and the seeded batch stream
(:class:`BatchStream`), and writes checkpoints.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from ..backend import to_numpy
from ..distributed import Communicator
from ..errors import ConfigError, DataError
from ._setup import setup_trainer
from .callbacks import Callback

__all__ = ["BatchStream", "Trainer", "data_fingerprint", "fit"]


def data_fingerprint(x: torch.Tensor) -> str:
    """SHA-1 of the shape and values of the training data (to recognise the same data set).

    Parameters
    ----------
    x : torch.Tensor
        Configurations.

    Returns
    -------
    str
        Hex digest.
    """
    h = hashlib.sha1(repr(tuple(x.shape)).encode())
    h.update(to_numpy(x).tobytes())
    return h.hexdigest()


class BatchStream:
    """A seeded stream of training-row indices: a fresh permutation every epoch.

    Parameters
    ----------
    seed : int
        Seed of the CPU generator drawing the permutations.
    """

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.perm: torch.Tensor | None = None
        self.pointer = 0

    def reseed(self, seed: int) -> None:
        """Seed the generator anew and start a new epoch.

        Parameters
        ----------
        seed : int
            The seed.
        """
        self.generator.manual_seed(seed)
        self.restart()

    def restart(self) -> None:
        """Forget the current permutation: the next rows start a new epoch."""
        self.perm, self.pointer = None, 0

    def _refill(self, n: int) -> None:
        if self.perm is None or self.pointer >= self.perm.shape[0]:
            self.perm = torch.randperm(n, generator=self.generator)
            self.pointer = 0

    def take(self, n: int, count: int) -> torch.Tensor:
        """The next ``count`` rows of ``n``, continuing into new epochs as needed.

        Parameters
        ----------
        n : int
            Number of training rows.
        count : int
            Rows wanted.

        Returns
        -------
        torch.Tensor
            ``(count,)`` int64 row indices.
        """
        out = []
        if count > 0 and self.perm is not None and self.pointer < self.perm.shape[0]:  # the epoch under way
            k = min(count, self.perm.shape[0] - self.pointer)
            out.append(self.perm[self.pointer : self.pointer + k])
            self.pointer += k
            count -= k
        if count > 0:  # whole new epochs, drawn one after another as _refill draws them
            epochs = -(-count // n)
            done = out[0].shape[0] if out else 0
            rows = torch.empty(done + count, dtype=torch.int64)
            if out:
                rows[:done] = out[0]
            for i in range(epochs - 1):  # drawn in place: the values randperm's own tensors would hold
                torch.randperm(n, generator=self.generator, out=rows[done + i * n : done + (i + 1) * n])
            self.perm, self.pointer = torch.randperm(n, generator=self.generator), count - n * (epochs - 1)
            rows[done + n * (epochs - 1) :] = self.perm[: self.pointer]
            return rows
        return out[0] if out else torch.empty(0, dtype=torch.int64)

    def next_batch(self, n: int, batch_size: int | None) -> torch.Tensor:
        """Rows of the next mini-batch of an epoch (the last one of an epoch may be smaller).

        Parameters
        ----------
        n : int
            Number of training rows.
        batch_size : int or None
            ``None`` (or ``>= n``): all rows, in order.

        Returns
        -------
        torch.Tensor
            Row indices; the epoch is over when :meth:`epoch_done` says so.
        """
        if batch_size is None or batch_size >= n:
            self.pointer = n
            return torch.arange(n)
        self._refill(n)
        return self.take(n, min(batch_size, self.perm.shape[0] - self.pointer))

    def epoch_done(self, n: int) -> bool:
        """Whether the rows of the current epoch are used up.

        Parameters
        ----------
        n : int
            Number of training rows.

        Returns
        -------
        bool
            True after the last batch of an epoch.
        """
        return self.pointer >= n

    def snapshot(self) -> tuple:
        """Everything :meth:`restore` needs to rewind the stream exactly.

        Returns
        -------
        tuple
            Opaque state.
        """
        return self.perm, self.pointer, self.generator.get_state()

    def restore(self, snap: tuple) -> None:
        """Rewind to a :meth:`snapshot`.

        Parameters
        ----------
        snap : tuple
            What :meth:`snapshot` returned.
        """
        self.perm, self.pointer = snap[0], snap[1]
        self.generator.set_state(snap[2])

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: ``pointer``, ``perm``, ``generator_state``.

        Returns
        -------
        dict
            The state.
        """
        return {
            "pointer": self.pointer,
            "perm": None if self.perm is None else to_numpy(self.perm).tolist(),
            "generator_state": to_numpy(self.generator.get_state()).tolist(),
        }

    @staticmethod
    def parse_state(state: dict[str, Any]) -> tuple:
        """Check a stored state and turn it into a :meth:`snapshot` (raises on bad values).

        Parameters
        ----------
        state : dict
            Holds ``pointer``, ``generator_state`` and optionally ``perm``.

        Returns
        -------
        tuple
            For :meth:`restore`.
        """
        pointer = int(state["pointer"])
        perm = state.get("perm")
        perm = None if perm is None else torch.as_tensor(perm, dtype=torch.int64)
        generator = torch.Generator(device="cpu")
        generator.set_state(torch.as_tensor(state["generator_state"], dtype=torch.uint8))
        return perm, pointer, generator.get_state()


class Trainer:
    """Base of the trainers (see the module docstring).

    Parameters
    ----------
    model : BornMachine
        The model trained in place.
    settings : dataclass instance, optional
        An instance of ``settings_class``; keyword arguments override fields.
    callbacks : sequence of Callback, optional
        Observers (:mod:`tnborn.training.callbacks`).
    progress : bool or None
        Progress bar: ``None`` only on a terminal (never on ranks other than 0).
    communicator : Communicator, optional
        Data-parallel process group; default one process.
    overrides : dict
        Fields of ``settings_class``.
    """

    #: The settings dataclass (with ``validate`` and ``keys``).
    settings_class: Any = None
    #: Name of the ``fit`` count (``"loops"`` or ``"epochs"``).
    unit = "loops"

    def __init__(
        self,
        model: Any,
        settings: Any,
        callbacks: Sequence[Callback] | None,
        progress: bool | None,
        communicator: Communicator | None,
        overrides: dict[str, Any],
    ):
        cls = self.settings_class
        self.communicator, self.callbacks = setup_trainer(model, communicator, callbacks, progress)
        if settings is not None and not isinstance(settings, cls):
            raise ConfigError(f"settings must be a {cls.__name__}, got {type(settings).__name__}")
        self._check_keys(overrides)
        self.model = model
        self.settings = replace(settings or cls(), **overrides).validate()
        self.history: list[dict[str, Any]] = []
        self.stop_training = False
        self.stream = BatchStream(self.settings.seed)
        self._data_fingerprint: str | None = None

    # ----------------------------------------------------------------- settings
    def _check_keys(self, overrides: dict[str, Any]) -> None:
        keys = self.settings_class.keys()
        unknown = set(overrides) - set(keys)
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}; valid settings: {keys}")

    def _apply_overrides(self, overrides: dict[str, Any], num_rows: int) -> None:
        """Validate ``overrides`` against the data, then make them the settings."""
        if overrides:
            self._check_keys(overrides)
            new = replace(self.settings, **overrides).validate(num_rows)
            if new.seed != self.settings.seed:
                self.stream.reseed(new.seed)
            if self._stream_restarts(self.settings, new):
                self.stream.restart()
            self.settings = new
        self.settings.validate(num_rows)

    def _stream_restarts(self, old: Any, new: Any) -> bool:
        """Whether changing the settings from ``old`` to ``new`` starts a new epoch."""
        return False

    def _sync_data(self, x: torch.Tensor) -> None:
        """Continue the batch stream for the same data (also after a resume), restart it for other data."""
        fingerprint = data_fingerprint(x)
        perm = self.stream.perm
        same = fingerprint == self._data_fingerprint or (
            self._data_fingerprint is None and (perm is None or perm.shape[0] == x.shape[0]))
        if not same:
            self.stream.restart()
        self._data_fingerprint = fingerprint

    # ----------------------------------------------------------------- fit
    def _fit(self, data: Any, count: int, test_data: Any, overrides: dict[str, Any]) -> list[dict[str, Any]]:
        """Train for ``count`` loops (sweep) or epochs (gradient): the body of the subclasses' ``fit``.

        Parameters
        ----------
        data : array_like
            ``(samples, N)`` training configurations.
        count : int
            Loops or epochs.
        test_data : array_like, optional
            Held-out configurations, scored after every half-sweep or epoch.
        overrides : dict
            Settings changed from now on.

        Returns
        -------
        list of dict
            The whole history.
        """
        model = self.model
        x = model.as_configurations(data, name="training data")
        test = model.as_configurations(test_data, name="test data") if test_data is not None else None
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(f"{self.unit} must be a non-negative integer, got {count!r}")
        self._apply_overrides(overrides, x.shape[0])
        self.stop_training = False
        self._train(x, test, count)
        return self.history

    def _train(self, x: torch.Tensor, test: torch.Tensor | None, count: int) -> None:
        raise NotImplementedError

    def _run(self, total_steps: int, units: Any, body: Any) -> None:
        """Call the callbacks around ``body(unit)`` for every unit until a callback stops the fit."""
        try:
            for cb in self.callbacks:
                cb.on_fit_start(self, total_steps)
            for unit in units:
                body(unit)
                if self.stop_training:
                    break
        finally:
            self._after_fit()
            for cb in self.callbacks:
                cb.on_fit_end(self)

    def _after_fit(self) -> None:
        """Clean-up after a fit, before ``on_fit_end`` (subclass hook)."""

    def _step_done(self, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_step_end(self, info)

    def _record(self, record: dict[str, Any], settings: Any = None) -> dict[str, Any]:
        """Append ``record`` (with ``settings``, default the trainer's) to the history and tell the callbacks."""
        record["settings"] = asdict(self.settings if settings is None else settings)
        self.history.append(record)
        for cb in self.callbacks:
            cb.on_half_sweep_end(self, record)
        return record

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable trainer state: settings, batch stream, history and the subclass's counters.

        Returns
        -------
        dict
            State for :meth:`load_state_dict`.
        """
        return {"settings": asdict(self.settings), **self.stream.state_dict(), "history": self.history,
                "data_fingerprint": self._data_fingerprint, **self._own_state()}

    def _own_state(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; a bad state leaves the trainer as it was.

        Parameters
        ----------
        state : dict
            A trainer state.

        Raises
        ------
        DataError
            If the state is malformed.
        """
        try:  # parse everything first
            settings = self.settings_class(**state["settings"]).validate()
            stream = BatchStream.parse_state(state)
            history = list(state.get("history", []))
            fingerprint = state.get("data_fingerprint")
            own = self._parse_own_state(state, settings)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, ConfigError) as exc:
            raise DataError(f"invalid {self._state_name} state: {exc}") from exc
        self.settings = settings
        self.stream.restore(stream)
        self.history, self._data_fingerprint = history, fingerprint
        self._load_own_state(own)

    _state_name = "trainer"

    def _parse_own_state(self, state: dict[str, Any], settings: Any) -> Any:
        return None

    def _load_own_state(self, own: Any) -> None:
        pass

    def save_checkpoint(self, path: Any) -> Path:
        """Save model and trainer state atomically (see :func:`tnborn.checkpoint.save`).

        Parameters
        ----------
        path : str or Path
            Destination file.

        Returns
        -------
        pathlib.Path
            The path written (data-parallel: by rank 0 only, the others wait for it).
        """
        from ..checkpoint import save

        if self.communicator.is_main:
            path = save(path, self.model, trainer=self)
        self.communicator.barrier()
        return Path(path)


def fit(model: Any, data: Any, loops: int = 2, test_data: Any = None, progress: bool | None = False,
        **settings: Any) -> list[dict[str, Any]]:
    """Train ``model`` in place with the default trainer of its geometry.

    Tree geometries (``model.is_tree``) use the two-site
    :class:`~tnborn.training.sweep.SweepTrainer` for ``loops`` loops; the
    others use :class:`~tnborn.training.gradient.GradientTrainer` for
    ``loops`` epochs. For resumable runs or callbacks build the trainer
    yourself. (This replaces ``BornMachine.fit``: the core does not import the trainers.)

    Parameters
    ----------
    model : BornMachine
        The model.
    data : array_like
        ``(samples, N)`` training configurations.
    loops : int
        Loops (sweep trainer) or epochs (gradient trainer).
    test_data : array_like, optional
        Held-out configurations, scored after every half-sweep or epoch.
    progress : bool or None
        Progress bar: ``False`` (default), ``True``, or ``None`` (on a terminal).
    **settings
        Fields of :class:`~tnborn.training.settings.SweepSettings` or
        :class:`~tnborn.training.settings.GradientSettings` (lists: per-loop schedules).

    Returns
    -------
    list of dict
        The training history.

    Examples
    --------
    >>> import tnborn
    >>> model = tnborn.MPSBornMachine.random(4, 2, seed=0)
    >>> history = tnborn.training.fit(model, tnborn.bars_and_stripes(2, 2), loops=2, lr=0.1)
    >>> round(history[-1]["train_nll"], 3)  # ln 6
    1.792
    """
    if getattr(model, "is_tree", False):
        from .sweep import SweepTrainer

        return SweepTrainer(model, progress=progress, **settings).fit(data, loops=loops, test_data=test_data)
    from .gradient import GradientTrainer

    return GradientTrainer(model, progress=progress, **settings).fit(data, epochs=loops, test_data=test_data)
