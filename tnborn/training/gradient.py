"""Gradient training of every tensor at once, for any geometry.

:class:`GradientTrainer` minimises the mini-batch negative log-likelihood

``NLL_B = log Z - (1/B) sum_b log |psi(x_b)|^2``

with a :mod:`torch.optim` optimiser (Adam or SGD) over all node tensors of a
:class:`~tnborn.interface.BornMachine`, using the geometry's exact,
differentiable ``log_amplitude`` and ``log_norm`` (autograd through the
log-scaled contraction: the rescaling by a running maximum is part of the
computed function, and because ``log |psi| = log |mantissa| + log scale`` is
invariant under the choice of scale, the gradient is exact). It needs no
canonical form, so it trains geometries with loops such as the PEPS, and it
never changes bond dimensions (no SVD).

Before every gradient evaluation the canonical centre is forgotten
(:meth:`~tnborn.BornMachine.drop_center`): a centre lets a geometry read ``log Z`` off one
tensor, which is correct only while the other tensors are isometries, and a
gradient step on all tensors breaks that. After every epoch all tensors are
multiplied by one common factor so that ``Z = 1`` (no gauge change, bond
dimensions kept); after training the centre stays unknown.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..backend import dtype_name
from ..distributed import Communicator, check_agreement, data_parallel_loss_and_grads, sharded_nll
from ..errors import ConfigError, DataError, NumericalError
from ..interface import BornMachine
from .base import Trainer
from .callbacks import Callback
from .settings import GradientSettings

__all__ = ["GradientSettings", "GradientTrainer", "batch_nll", "rescale_to_unit_norm"]

logger = logging.getLogger("tnborn")

def batch_nll(model: BornMachine, x: torch.Tensor) -> torch.Tensor:
    """Differentiable NLL of a batch: ``log Z - (2/B) sum_b log|psi(x_b)|``.

    ``log Z`` is computed without the canonical-centre shortcut (the centre is
    hidden for the duration of the call), so the gradient is that of the true
    NLL with respect to every tensor, whatever the gauge.

    Parameters
    ----------
    model : BornMachine
        The model; tensors that require grad receive gradients.
    x : torch.Tensor
        ``(batch, N)`` int64 configurations.

    Returns
    -------
    torch.Tensor
        Real scalar (``inf`` if some ``psi(x_b) = 0``).
    """
    with model.ignoring_center():
        log_abs, _ = model.log_amplitude(x)
        return model.log_norm() - 2.0 * log_abs.mean()


@torch.no_grad()
def rescale_to_unit_norm(model: BornMachine) -> float:
    """Multiply every node tensor by one common factor so that ``Z = 1``, in place.

    No gauge change and no change of bond dimensions; the canonical centre is
    set to unknown.

    Parameters
    ----------
    model : BornMachine
        The model.

    Returns
    -------
    float
        ``log Z`` before the rescaling.
    """
    model.drop_center()
    log_z = float(model.log_norm())
    if not math.isfinite(log_z):
        raise NumericalError(f"cannot normalise the model: log Z = {log_z}")
    nodes = model.nodes()
    factor = math.exp(-log_z / (2 * len(nodes)))
    for n in nodes:
        t = model.node_tensor(n)
        if t.data.requires_grad:
            t.data.mul_(factor)  # keep the leaf (and the optimiser's reference) alive
        else:
            t.modify(data=t.data * factor)
    return log_z


# --------------------------------------------------------------------------- #
# JSON encoding of optimiser state (tensors -> nested lists)
# --------------------------------------------------------------------------- #
def _encode(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        cplx = t.is_complex()
        data = torch.view_as_real(t.resolve_conj()).tolist() if cplx else t.tolist()
        return {"__tensor__": data, "dtype": dtype_name(t.dtype), "shape": list(t.shape)}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ConfigError(f"cannot store optimiser state entry of type {type(obj).__name__}")


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            dt = getattr(torch, obj["dtype"])
            shape = tuple(obj["shape"])
            if dt.is_complex:
                real = torch.tensor(obj["__tensor__"], dtype=dt.to_real()).reshape(*shape, 2)
                return torch.view_as_complex(real.contiguous())
            return torch.tensor(obj["__tensor__"], dtype=dt).reshape(shape)
        if "__dict__" in obj:
            return {_decode(k): _decode(v) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v) for v in obj["__tuple__"])
        raise DataError(f"unknown entry in stored optimiser state: keys {sorted(obj)}")
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


class GradientTrainer(Trainer):
    """Train all tensors of any Born machine by a torch optimiser on the exact NLL.

    Parameters
    ----------
    model : BornMachine
        Any geometry (MPS, tree, PEPS ...); its current tensors are the
        starting point (no re-initialisation).
    settings : GradientSettings, optional
        Hyper-parameters; keyword arguments override individual fields.
    callbacks : sequence of Callback, optional
        Observers (:mod:`tnborn.training.callbacks`); ``on_half_sweep_end`` is
        called once per epoch. A :class:`~tnborn.training.callbacks.ProgressBar`
        is added unless ``progress=False`` or one is given. Callbacks must not
        replace the model's tensors during a fit.
    progress : bool or None
        ``None``: progress bar only on a terminal (never on ranks other than 0).
    communicator : Communicator, optional
        Data-parallel process group (:mod:`tnborn.distributed`): every rank
        evaluates its shard of each mini-batch and the gradients are summed
        before the optimiser step (like DDP). Default: one process.
    **overrides
        Fields of :class:`GradientSettings`.

    Examples
    --------
    >>> import tnborn
    >>> data = tnborn.bars_and_stripes(3)
    >>> model = tnborn.MPSBornMachine.random(9, bond_dim=16, seed=0)
    >>> trainer = tnborn.GradientTrainer(model, lr=0.1, progress=False)
    >>> history = trainer.fit(data, epochs=150)
    >>> round(history[-1]["train_nll"], 2)  # ln 14 = 2.64
    2.65
    """

    settings_class = GradientSettings
    unit = "epochs"
    _state_name = "gradient-trainer"

    def __init__(
        self,
        model: BornMachine,
        settings: GradientSettings | None = None,
        callbacks: Sequence[Callback] | None = None,
        progress: bool | None = None,
        communicator: Communicator | None = None,
        **overrides: Any,
    ):
        super().__init__(model, settings, callbacks, progress, communicator, overrides)
        self.epochs_done = 0
        self.steps_done = 0
        self._optimizer: torch.optim.Optimizer | None = None
        self._optimizer_kind: str | None = None
        self._pending_state: dict[str, Any] | None = None
        self._params: list[torch.Tensor] = []
        self._active = self.settings.at(0)

    @property
    def active_settings(self) -> GradientSettings:
        """The settings of the current epoch (schedules resolved).

        Returns
        -------
        GradientSettings
            Without per-epoch lists.
        """
        return self._active

    def _stream_restarts(self, old: Any, new: Any) -> bool:
        return new.batch_size != old.batch_size

    # ----------------------------------------------------------------- parameters
    def _make_optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        s = self._active
        if s.optimizer == "adam":
            return torch.optim.Adam(params, lr=s.lr)
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum)

    def _set_hyper(self) -> None:
        """Give the optimiser this epoch's learning rate and momentum."""
        for group in self._optimizer.param_groups:
            group["lr"] = self._active.lr
            if "momentum" in group:
                group["momentum"] = self._active.momentum

    def _attach(self) -> None:
        """Make every node tensor a leaf that requires grad; (re)build the optimiser."""
        params = []
        for n in self.model.nodes():
            t = self.model.node_tensor(n)
            p = t.data.detach().clone().requires_grad_(True)
            t.modify(data=p)
            params.append(p)
        old = self._pending_state
        if old is None and self._optimizer is not None and self._optimizer_kind == self.settings.optimizer:
            old = self._optimizer.state_dict()
        self._pending_state = None
        self._params = params
        self._optimizer = self._make_optimizer(params)
        self._optimizer_kind = self.settings.optimizer
        if old is not None:
            if _state_fits(old, params):
                self._optimizer.load_state_dict(old)
                self._set_hyper()
            else:
                logger.warning("optimiser state does not fit the model's tensors; starting it afresh")

    def _detach(self) -> None:
        for n, p in zip(self.model.nodes(), self._params):
            t = self.model.node_tensor(n)
            if t.data is p:
                t.modify(data=p.detach())
        self._params = []

    # ----------------------------------------------------------------- fit
    def fit(
        self,
        data: Any,
        epochs: int = 10,
        test_data: Any = None,
        **overrides: Any,
    ) -> list[dict[str, Any]]:
        """Train for ``epochs`` passes over the data.

        Calling ``fit`` again continues the run (history, optimiser state and
        batch stream carry over); keyword arguments change settings from now on.
        A setting given as a list is a per-epoch schedule over the whole run.

        Parameters
        ----------
        data : array_like
            ``(samples, N)`` training configurations.
        epochs : int
            Number of epochs.
        test_data : array_like, optional
            Held-out configurations; their NLL is recorded after every epoch.
        **overrides
            Fields of :class:`GradientSettings`.

        Returns
        -------
        list of dict
            The whole history, one record per epoch: ``epoch``, ``loop``
            (= epoch), ``step``, ``train_nll`` (exact, whole training set, after
            the epoch), ``batch_nll`` (mean of the epoch's mini-batch losses),
            ``test_nll``, ``max_bond``, ``bond_dims``, ``grad_norm`` (of the last
            step, before clipping), ``seconds``, ``settings`` (those of the epoch).
        """
        return self._fit(data, epochs, test_data, overrides)

    def _train(self, x: torch.Tensor, test: torch.Tensor | None, epochs: int) -> None:
        n = x.shape[0]
        self._sync_data(x)
        self._active = self.settings.at(self.epochs_done)
        b = self._active.batch_size
        steps_per_epoch = 1 if b is None else -(-n // b)
        self.model.drop_center()
        self._attach()
        self._run(epochs * steps_per_epoch, range(epochs), lambda _: self._epoch(x, test))

    def _after_fit(self) -> None:
        self._detach()
        self.model.drop_center()

    def _step(self, x: torch.Tensor, rows: torch.Tensor) -> tuple[float, float]:
        opt = self._optimizer
        opt.zero_grad(set_to_none=True)
        # this rank's rows; gradients summed over the ranks (one process: plain backward)
        loss = data_parallel_loss_and_grads(self.model, x, rows, self._params, self.communicator)
        grads = [p.grad for p in self._params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if not bool(torch.isfinite(norm)):
            raise NumericalError("the gradient of the NLL is not finite")
        clip = self._active.grad_clip
        if clip is not None and float(norm) > clip:
            for g in grads:
                g.mul_(clip / float(norm))
        opt.step()
        return loss, float(norm)

    def _epoch(self, x: torch.Tensor, test: torch.Tensor | None) -> dict[str, Any]:
        n = x.shape[0]
        previous = self._active.batch_size
        self._active = self.settings.at(self.epochs_done)
        if self._active.batch_size != previous:
            self.stream.restart()
        self._set_hyper()
        t0 = time.perf_counter()
        losses, grad_norm, i = [], float("nan"), 0
        while True:
            rows = self.stream.next_batch(n, self._active.batch_size)
            loss, grad_norm = self._step(x, rows)
            losses.append(loss)
            self.steps_done += 1
            self._step_done({
                "step": self.steps_done,
                "epoch": self.epochs_done + 1,
                "loop": self.epochs_done + min(self.stream.pointer, n) / n,
                "step_in_half_sweep": i,
                "batch_nll": loss,
                "grad_norm": grad_norm,
                "bond": None,
                "bond_dim": self.model.max_bond,
            })
            i += 1
            if self.stream.epoch_done(n):
                break
        rescale_to_unit_norm(self.model)
        seconds = time.perf_counter() - t0
        self.epochs_done += 1
        check_agreement(self.communicator, self.model, f"after epoch {self.epochs_done}")
        with torch.no_grad():
            train_nll = sharded_nll(self.model, x, self.communicator)
            test_nll = self.model.nll(test) if test is not None else None
        dims = self.model.bond_dims()
        record = {
            "epoch": self.epochs_done,
            "loop": float(self.epochs_done),
            "step": self.steps_done,
            "train_nll": train_nll,
            "batch_nll": sum(losses) / len(losses),
            "test_nll": test_nll,
            "max_bond": max(dims) if dims else 1,
            "bond_dims": dims,
            "grad_norm": grad_norm,
            "seconds": seconds,
        }
        return self._record(record, self._active)

    # ----------------------------------------------------------------- state
    def _own_state(self) -> dict[str, Any]:
        """Counters and the optimiser (tensors stored as nested lists, exact for float64)."""
        if self._pending_state is not None:
            opt_state = self._pending_state
        elif self._optimizer is not None:
            opt_state = self._optimizer.state_dict()
        else:
            opt_state = None
        return {
            "epochs_done": self.epochs_done,
            "steps_done": self.steps_done,
            "optimizer_kind": self._optimizer_kind if self._pending_state is None else self.settings.optimizer,
            "optimizer_state": None if opt_state is None else _encode(opt_state),
        }

    def _parse_own_state(self, state: dict[str, Any], settings: Any) -> Any:
        opt = state.get("optimizer_state")
        opt = None if opt is None else _decode(opt)
        if opt is not None and state.get("optimizer_kind", settings.optimizer) != settings.optimizer:
            opt = None
        return int(state["epochs_done"]), int(state["steps_done"]), opt

    def _load_own_state(self, own: Any) -> None:
        """The optimiser state applies at the next fit."""
        self.epochs_done, self.steps_done, self._pending_state = own
        self._optimizer = None
        self._optimizer_kind = None
        self._active = self.settings.at(self.epochs_done)


def _state_fits(state: dict[str, Any], params: list[torch.Tensor]) -> bool:
    """Whether a torch optimiser ``state_dict`` matches ``params`` (count and shapes)."""
    try:
        groups = state["param_groups"]
        ids = [i for g in groups for i in g["params"]]
        if len(ids) != len(params):
            return False
        pos = {pid: k for k, pid in enumerate(ids)}
        for pid, entry in state["state"].items():
            p = params[pos[pid]]
            for v in entry.values():
                if isinstance(v, torch.Tensor) and v.ndim > 0 and tuple(v.shape) != tuple(p.shape):
                    return False
        return True
    except (KeyError, TypeError, IndexError):
        return False
