"""Data-parallel training on :mod:`torch.distributed` (gloo on CPU, NCCL on CUDA).

Every process (*rank*) holds the whole model and a contiguous shard of the
training rows (:meth:`Communicator.shard`); the memory-heavy per-sample
environments of the two-site sweep exist only for the rank's own rows. The
mini-batch stream is the single-process one (the same seeded permutation over
*global* row indices), and each rank uses the rows of every global batch that
fall in its shard. Per gradient step the ranks all-reduce (sum) the merged
tensor's gradient contribution ``G = F^T (R / psi)`` and divide by the
*global* batch size, so every rank applies the same update (the communicator is
the reduce hook of the one local update,
:func:`tnborn.training.local_update.block_gradient_steps`, so every rule and
the step guard work data-parallel); the updated block is broadcast from rank 0 before the SVD, every rank truncates it identically,
and a checksum of all tensors is compared across ranks after every half-sweep
(or epoch). The trained model equals the single-process one up to the
rounding of the summation order.

:class:`LocalCommunicator` (the default of the trainers) does nothing;
:class:`TorchDistributedCommunicator` wraps an initialised process group;
:func:`init_from_env` creates one from the variables that ``torchrun`` sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
:func:`spawn` starts ``N`` local processes (``tnborn train --nproc N``).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .errors import ConfigError, DeviceError, NumericalError, TnbornError

__all__ = [
    "Communicator",
    "LocalCommunicator",
    "TorchDistributedCommunicator",
    "init_from_env",
    "free_port",
    "spawn",
    "shard_batches",
    "reduce_mean",
    "sharded_nll",
    "data_parallel_loss_and_grads",
    "model_checksum",
    "check_agreement",
    "AGREEMENT_RTOL",
]

#: Largest relative difference of the model checksums of two ranks accepted by :func:`check_agreement`.
AGREEMENT_RTOL = 1e-9


class Communicator:
    """Collective operations of a group of training processes (base class: one process).

    Attributes
    ----------
    comm_seconds : float
        Wall time spent inside collective calls (all-reduce, broadcast,
        barrier) since construction or :meth:`reset_timing`; it includes the
        time a rank waits for slower ranks.
    comm_calls : int
        Number of collective calls counted in ``comm_seconds``.
    """

    def __init__(self) -> None:
        self.comm_seconds = 0.0
        self.comm_calls = 0

    @property
    def rank(self) -> int:
        """Index of this process, ``0 <= rank < world_size``."""
        return 0

    @property
    def world_size(self) -> int:
        """Number of processes."""
        return 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that prints and writes files)."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all ranks, in place.

        Parameters
        ----------
        tensor : torch.Tensor
            Same shape and dtype on every rank.

        Returns
        -------
        torch.Tensor
            ``tensor``, now holding the sum.
        """
        return tensor

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Overwrite ``tensor`` on every rank with rank ``src``'s values, in place.

        Parameters
        ----------
        tensor : torch.Tensor
            Same shape and dtype on every rank.
        src : int
            The rank whose values are kept.

        Returns
        -------
        torch.Tensor
            ``tensor``.
        """
        return tensor

    def barrier(self) -> None:
        """Wait until every rank has reached this call."""

    def shard(self, n_rows: int) -> tuple[int, int]:
        """This rank's contiguous block of ``n_rows`` rows (sizes differ by at most one).

        Parameters
        ----------
        n_rows : int
            Global number of rows.

        Returns
        -------
        tuple of int
            ``(start, stop)``.
        """
        p, r = self.world_size, self.rank
        return r * n_rows // p, (r + 1) * n_rows // p

    def reset_timing(self) -> None:
        """Set :attr:`comm_seconds` and :attr:`comm_calls` to zero."""
        self.comm_seconds, self.comm_calls = 0.0, 0

    def close(self) -> None:
        """Release the process group if this communicator created it (no-op otherwise)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


class LocalCommunicator(Communicator):
    """The single-process communicator: every collective is a no-op, the shard is everything.

    Examples
    --------
    >>> LocalCommunicator().shard(10)
    (0, 10)
    """


class TorchDistributedCommunicator(Communicator):
    """Collectives of an initialised :mod:`torch.distributed` process group.

    Parameters
    ----------
    group : ProcessGroup, optional
        The group (default: the default group, which must be initialised).
    owns_group : bool
        Destroy the default process group in :meth:`close`.

    Raises
    ------
    ConfigError
        If torch.distributed is unavailable or no process group is initialised.
    """

    def __init__(self, group: Any = None, owns_group: bool = False):
        super().__init__()
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise ConfigError(
                "TorchDistributedCommunicator needs an initialised torch.distributed process group "
                "(torch.distributed.init_process_group, or tnborn.distributed.init_from_env under torchrun)"
            )
        self._dist = dist
        self.group = group
        self.owns_group = owns_group
        self._rank = dist.get_rank(group)
        self._world = dist.get_world_size(group)
        self.backend = str(dist.get_backend(group))

    @property
    def rank(self) -> int:
        """Index of this process in the group."""
        return self._rank

    @property
    def world_size(self) -> int:
        """Number of processes in the group."""
        return self._world

    def _wire(self, tensor: torch.Tensor) -> torch.Tensor:
        """A contiguous real view of ``tensor`` suitable for the backend."""
        if not tensor.is_contiguous():
            raise ConfigError("collectives need contiguous tensors")
        return torch.view_as_real(tensor) if tensor.is_complex() else tensor

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all ranks, in place (see :meth:`Communicator.all_reduce_sum`).

        Parameters
        ----------
        tensor : torch.Tensor
            Same shape and dtype on every rank (on the GPU for NCCL).

        Returns
        -------
        torch.Tensor
            ``tensor``.
        """
        t0 = time.perf_counter()
        self._dist.all_reduce(self._wire(tensor), op=self._dist.ReduceOp.SUM, group=self.group)
        self.comm_seconds += time.perf_counter() - t0
        self.comm_calls += 1
        return tensor

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Overwrite ``tensor`` with rank ``src``'s values, in place.

        Parameters
        ----------
        tensor : torch.Tensor
            Same shape and dtype on every rank.
        src : int
            Source rank.

        Returns
        -------
        torch.Tensor
            ``tensor``.
        """
        t0 = time.perf_counter()
        self._dist.broadcast(self._wire(tensor), src=src, group=self.group)
        self.comm_seconds += time.perf_counter() - t0
        self.comm_calls += 1
        return tensor

    def barrier(self) -> None:
        """Wait for every rank."""
        t0 = time.perf_counter()
        self._dist.barrier(group=self.group)
        self.comm_seconds += time.perf_counter() - t0
        self.comm_calls += 1

    def close(self) -> None:
        """Destroy the default process group if :func:`init_from_env` created it."""
        if self.owns_group and self._dist.is_initialized():
            # all ranks leave together: a rank tearing down gloo while a peer still
            # talks to it (or to the store rank 0 hosts) aborts that peer
            self._dist.barrier()
            self._dist.destroy_process_group()
            self.owns_group = False


# --------------------------------------------------------------------------- #
# process setup
# --------------------------------------------------------------------------- #
def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_from_env(device: str | torch.device | None = "cpu") -> tuple[Communicator, torch.device]:
    """Join the process group described by torchrun's environment variables, if any.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised
    and a :class:`LocalCommunicator` is returned. Otherwise the default process
    group is initialised with ``init_method="env://"`` (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): backend NCCL when
    ``device`` is CUDA, whose index becomes ``LOCAL_RANK``, else gloo. An
    already initialised default group is reused (and not destroyed by
    :meth:`Communicator.close`).

    Parameters
    ----------
    device : str, torch.device or None
        The requested device (``"cpu"``, ``"cuda"``, ``"auto"`` ...).

    Returns
    -------
    communicator : Communicator
        The communicator (call its ``close()`` at the end).
    device : torch.device
        The device this rank should use.

    Raises
    ------
    ConfigError
        If the variables are inconsistent or torch.distributed is unavailable.
    DeviceError
        If CUDA is asked for but this rank's GPU does not exist.
    """
    from .backend import resolve_device

    dev = resolve_device(device)
    world = _env_int("WORLD_SIZE")
    if world is None or world == 1:
        return LocalCommunicator(), dev
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if rank is None or not 0 <= rank < world:
        raise ConfigError(f"RANK must be set to an integer in [0, {world}) when WORLD_SIZE={world}")
    if local_rank is None:
        local_rank = rank
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; data-parallel training is unavailable")
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} GPU(s)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if dist.is_initialized():
        return TorchDistributedCommunicator(owns_group=False), dev
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ConfigError(f"{name} must be set for data-parallel training (torchrun sets it)")
    kwargs = {"device_id": dev} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world, **kwargs)
    return TorchDistributedCommunicator(owns_group=True), dev


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0).

    Returns
    -------
    int
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_entry(local_rank: int, fn: Callable[..., Any], nproc: int, port: int, args: tuple) -> None:
    os.environ.update({
        "RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(nproc),
        "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    })
    try:
        code = fn(*args)
    except (TnbornError, OSError) as exc:
        prefix = "" if local_rank == 0 else f"[rank {local_rank}] "
        print(f"tnborn: error: {prefix}{exc}", file=sys.stderr)
        sys.exit(2)
    if code:
        sys.exit(int(code))


def spawn(fn: Callable[..., Any], nproc: int, args: Sequence[Any] = ()) -> int:
    """Run ``fn(*args)`` in ``nproc`` fresh local processes forming one process group.

    Each child gets ``RANK = LOCAL_RANK``, ``WORLD_SIZE = nproc`` and a free
    loopback ``MASTER_ADDR``/``MASTER_PORT``, so that :func:`init_from_env`
    inside ``fn`` joins the group. ``fn`` and ``args`` must be picklable
    (``fn`` a module-level function). When a child fails the others are
    terminated.

    Parameters
    ----------
    fn : callable
        Module-level function; its return value is the child's exit status.
    nproc : int
        Number of processes (>= 1).
    args : sequence
        Positional arguments of ``fn``.

    Returns
    -------
    int
        0 if every child succeeded, else the exit status of a failed child.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc must be an integer >= 1, got {nproc!r}")
    import torch.multiprocessing as mp

    try:
        mp.spawn(_spawn_entry, args=(fn, nproc, free_port(), tuple(args)), nprocs=nproc, join=True)
    except mp.ProcessExitedException as exc:
        return int(exc.exit_code) if exc.exit_code and exc.exit_code > 0 else 1
    except mp.ProcessRaisedException as exc:
        print(f"tnborn: error: a training process failed:\n{exc}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- #
# data-parallel pieces of the trainers
# --------------------------------------------------------------------------- #
def shard_batches(
    rows: torch.Tensor, batch_size: int, steps: int, shard: tuple[int, int]
) -> tuple[torch.Tensor, list[slice]]:
    """This rank's rows of consecutive global mini-batches, and one slice per batch.

    Parameters
    ----------
    rows : torch.Tensor
        ``steps * batch_size`` global row indices (the global batch stream).
    batch_size : int
        Global batch size.
    steps : int
        Number of batches.
    shard : tuple of int
        ``(start, stop)`` of this rank's rows.

    Returns
    -------
    local_rows : torch.Tensor
        Indices into the shard (global index minus ``start``), batch by batch.
    batches : list of slice
        ``local_rows[batches[k]]`` are the local rows of batch ``k`` (possibly empty).
    """
    start, stop = shard
    mine = (rows >= start) & (rows < stop)
    counts = mine.reshape(steps, batch_size).sum(dim=1).tolist()
    bounds = [0]
    for c in counts:
        bounds.append(bounds[-1] + int(c))
    return rows[mine] - start, [slice(bounds[k], bounds[k + 1]) for k in range(steps)]


def reduce_mean(values: torch.Tensor, comm: Communicator) -> torch.Tensor:
    """Mean of ``values`` over the rows of all ranks (a plain mean for one process).

    Parameters
    ----------
    values : torch.Tensor
        ``(local rows,)`` real values.
    comm : Communicator
        The process group.

    Returns
    -------
    torch.Tensor
        0-d tensor, the global mean.
    """
    if comm.world_size == 1:
        return values.mean()
    acc = torch.stack([values.sum().to(torch.float64),
                       torch.tensor(float(values.shape[0]), dtype=torch.float64, device=values.device)])
    comm.all_reduce_sum(acc)
    return acc[0] / acc[1]


def sharded_nll(model: Any, x: torch.Tensor, comm: Communicator, batch_size: int = 4096) -> float:
    """Mean NLL of ``x`` computed on this rank's shard of the rows and summed over the ranks.

    Parameters
    ----------
    model : BornMachine
        The model (identical on every rank).
    x : torch.Tensor
        The global ``(samples, N)`` configurations.
    comm : Communicator
        The process group (a :class:`LocalCommunicator` gives ``model.nll(x)``).
    batch_size : int
        Configurations evaluated at once.

    Returns
    -------
    float
        The NLL over all rows.
    """
    if comm.world_size == 1:
        return model.nll(x, batch_size=batch_size)
    start, stop = comm.shard(x.shape[0])
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for a in range(start, stop, batch_size):
        total = total + model.log_prob(x[a : min(stop, a + batch_size)]).sum().to(torch.float64)
    total = comm.all_reduce_sum(total.reshape(1))
    return -float(total[0]) / x.shape[0]


def data_parallel_loss_and_grads(
    model: Any, x: torch.Tensor, rows: torch.Tensor, params: Sequence[torch.Tensor], comm: Communicator
) -> float:
    """Global mini-batch NLL and its gradient, each rank computing its rows only (also for one process).

    Rank ``r`` forms ``L_r = [r = 0] log Z - (2/B) sum_{b in batch and shard r} log|psi_b|``
    (``B`` the global batch size), back-propagates it and the gradients of
    ``params`` are summed over the ranks, so every rank holds the gradient of
    ``log Z - (2/B) sum_b log|psi_b|`` (the equivalent of DDP).

    Parameters
    ----------
    model : BornMachine
        The model; ``params`` are its node tensors (leaves requiring grad).
    x : torch.Tensor
        Global configurations.
    rows : torch.Tensor
        Global row indices of the batch.
    params : sequence of torch.Tensor
        Parameters whose ``.grad`` receive the summed gradient.
    comm : Communicator
        The process group.

    Returns
    -------
    float
        The global batch NLL.

    Raises
    ------
    NumericalError
        If the global NLL is not finite (every rank raises).
    """
    start, stop = comm.shard(x.shape[0])
    local = rows[(rows >= start) & (rows < stop)].to(x.device)
    with model.ignoring_center():  # log Z without the canonical shortcut (see gradient.batch_nll)
        loss = torch.zeros((), dtype=torch.float64, device=x.device)
        if comm.is_main:
            loss = loss + model.log_norm()
        if local.shape[0]:
            log_abs, _ = model.log_amplitude(x[local])
            loss = loss - (2.0 / rows.shape[0]) * log_abs.sum()
    value = comm.all_reduce_sum(loss.detach().clone().reshape(1))
    if not bool(torch.isfinite(value).all()):
        raise NumericalError(
            f"the mini-batch NLL is {float(value[0])}: some training sample has psi(x) = 0 "
            "(probability zero) or the contraction overflowed"
        )
    if loss.requires_grad:
        loss.backward()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if comm.world_size == 1:
        return float(value[0])
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    comm.all_reduce_sum(flat)
    offset = 0
    for p in params:
        k = p.numel()
        p.grad.copy_(flat[offset : offset + k].view_as(p))
        offset += k
    return float(value[0])


def model_checksum(model: Any) -> torch.Tensor:
    """A short float64 fingerprint of all node tensors (sums, weighted sums, shapes).

    Parameters
    ----------
    model : BornMachine
        The model.

    Returns
    -------
    torch.Tensor
        ``(4 * nodes,)`` float64 values on the model's device.
    """
    parts = []
    for n in model.nodes():
        t = model.node_tensor(n).data.detach().reshape(-1)
        t = torch.view_as_real(t).reshape(-1) if t.is_complex() else t
        t = t.to(torch.float64)
        w = torch.linspace(1.0, 2.0, t.numel(), dtype=torch.float64, device=t.device)
        parts.append(torch.stack([t.sum(), (t * w).sum(), (t * t).sum(),
                                  torch.tensor(float(t.numel()), dtype=torch.float64, device=t.device)]))
    return torch.cat(parts)


def check_agreement(comm: Communicator, model: Any, where: str = "", rtol: float = AGREEMENT_RTOL) -> float:
    """Raise :class:`~tnborn.errors.NumericalError` on every rank if the ranks' models differ.

    Rank 0's :func:`model_checksum` is broadcast and the largest deviation
    is summed over the ranks (two collectives of ``4 * nodes`` numbers).

    Parameters
    ----------
    comm : Communicator
        The process group.
    model : BornMachine
        The model.
    where : str
        Context for the message (e.g. ``"after half-sweep 3"``).
    rtol : float
        Accepted relative deviation (rounding of a different LAPACK on another machine).

    Returns
    -------
    float
        The summed relative deviation (0.0 for one process).
    """
    if comm.world_size == 1:
        return 0.0
    mine = model_checksum(model)
    ref = comm.broadcast_(mine.clone())
    dev = ((mine - ref).abs() / (1.0 + ref.abs())).max().reshape(1)
    comm.all_reduce_sum(dev)
    value = float(dev[0])
    if not value <= rtol:
        raise NumericalError(
            f"the data-parallel ranks hold different models {where} (relative checksum deviation "
            f"{value:.3g} > {rtol:g}): the ranks must run the same tnborn/torch build, dtype and "
            "thread settings so that the SVD is deterministic"
        )
    return value
