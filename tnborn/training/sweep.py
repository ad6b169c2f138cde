"""The two-site sweep trainer of Han et al. (PRX 8, 031012), for any tree geometry.

One *step* of the schedule names two neighbouring nodes ``(source, target)``:

1. merge them into one tensor ``A`` (the canonical centre, ``||A|| = 1``);
2. take ``descent_steps`` gradient steps on the NLL with respect to ``A``,
   cycling through mini-batches, with the closed-form gradient
   ``dNLL/dA = 2A - (2/B) sum_v Psi'(v) / psi(v)`` computed from the cached
   per-sample environments, then renormalise ``A``;
3. split ``A`` by a truncated SVD (:meth:`BornMachine.split`), the singular
   values going to ``target``, the new centre: bond dimensions adapt here;
4. invalidate the environments that depended on the two old tensors.

The trainer knows nothing about chains: the geometry supplies the schedule,
the merge/split and the graph; the environments are the generic messages of
:class:`~tnborn.environments.EnvironmentCache`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from .. import kernels
from ..backend import to_numpy
from ..distributed import (Communicator, check_agreement, distributed_gradient_steps,
                           reduce_mean, shard_batches)
from ..environments import EnvironmentCache
from ..errors import ConfigError, DataError, NumericalError, PrecisionWarning
from ..interface import BornMachine, TwoSiteBlock
from ._setup import setup_trainer
from .callbacks import Callback

__all__ = ["SweepSettings", "SweepTrainer", "block_gradient_steps", "rescaled_gradient_steps", "GRADIENT_RESCALE_RULES"]

logger = logging.getLogger("tnborn")

#: Accepted values of :attr:`SweepSettings.gradient_rescale`.
GRADIENT_RESCALE_RULES = ("none", "norm0.25")

#: Learning-rate halvings tried when a two-site update meets a non-finite value or psi = 0.
MAX_LR_HALVINGS = 3


@dataclass
class SweepSettings:
    """Hyper-parameters of the two-site sweep (defaults: the authors' bars-and-stripes run).

    Attributes
    ----------
    lr : float
        Learning rate of the gradient steps on the merged tensor.
    descent_steps : int
        Gradient steps per bond.
    batch_size : int or None
        Mini-batch size; ``None`` uses the whole training set every step.
    cutoff : float
        Relative singular-value cutoff in ``[0, 1)``: keep ``s_i >= cutoff * s_0``.
    max_bond : int or None
        Largest bond dimension (``None``: unbounded).
    min_bond : int
        Smallest bond dimension kept by a split.
    svd_method : str
        quimb split method, ``"svd"`` or ``"svd:eig"``.
    seed : int
        Seed of the mini-batch shuffling.
    gradient_rescale : str
        ``"none"`` (plain gradient steps, the default) or ``"norm0.25"``: the
        rule of the authors' capacity runs, which rescales a step direction
        ``g = G/B - M`` whose norm is below ``numel(M)**0.25`` up to that norm
        before the step (it speeds up training with one small step per bond).
    """

    lr: float = 0.1
    descent_steps: int = 10
    batch_size: int | None = None
    cutoff: float = 5e-5
    max_bond: int | None = None
    min_bond: int = 1
    svd_method: str = "svd"
    seed: int = 0
    gradient_rescale: str = "none"

    def validate(self, num_samples: int | None = None) -> "SweepSettings":
        """Check every value, raising :class:`~tnborn.errors.ConfigError` on the first bad one.

        Parameters
        ----------
        num_samples : int, optional
            Training-set size, to check ``batch_size`` against.

        Returns
        -------
        SweepSettings
            ``self``.
        """
        if not (_is_number(self.lr) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive finite number, got {self.lr!r}")
        if not (_is_int(self.descent_steps) and self.descent_steps >= 1):
            raise ConfigError(f"descent_steps must be an integer >= 1, got {self.descent_steps!r}")
        if not (_is_number(self.cutoff) and 0.0 <= self.cutoff < 1.0):
            raise ConfigError(f"cutoff must be in [0, 1), got {self.cutoff!r}")
        if not (_is_int(self.min_bond) and self.min_bond >= 1):
            raise ConfigError(f"min_bond must be an integer >= 1, got {self.min_bond!r}")
        if self.max_bond is not None:
            if not (_is_int(self.max_bond) and self.max_bond >= 1):
                raise ConfigError(f"max_bond must be an integer >= 1 or None, got {self.max_bond!r}")
            if self.max_bond < self.min_bond:
                raise ConfigError(f"max_bond ({self.max_bond}) must be >= min_bond ({self.min_bond})")
        if self.batch_size is not None:
            if not (_is_int(self.batch_size) and self.batch_size >= 1):
                raise ConfigError(f"batch_size must be an integer >= 1 or None, got {self.batch_size!r}")
            if num_samples is not None and self.batch_size > num_samples:
                raise ConfigError(
                    f"batch_size ({self.batch_size}) is larger than the training set ({num_samples})"
                )
        if self.svd_method not in ("svd", "svd:eig"):
            raise ConfigError(f"svd_method must be 'svd' or 'svd:eig', got {self.svd_method!r}")
        if not (_is_int(self.seed) and self.seed >= 0):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if self.gradient_rescale not in GRADIENT_RESCALE_RULES:
            raise ConfigError(
                f"gradient_rescale must be one of {list(GRADIENT_RESCALE_RULES)}, got {self.gradient_rescale!r}"
            )
        return self

    @classmethod
    def keys(cls) -> list[str]:
        """Names of all settings.

        Returns
        -------
        list of str
            The field names.
        """
        return [f.name for f in fields(cls)]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` reports an exhausted device or host memory."""
    return isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


class _UpdateFailed(Exception):
    """Internal: one attempt of a two-site update failed in ``phase`` ("gradient" or "svd")."""

    def __init__(self, phase: str, cause: BaseException):
        super().__init__(f"{phase}: {cause}")
        self.phase, self.cause = phase, cause


def _fingerprint(x: torch.Tensor) -> str:
    """SHA-1 of the shape and values of the training data (to recognise the same data set)."""
    h = hashlib.sha1(repr(tuple(x.shape)).encode())
    h.update(to_numpy(x).tobytes())
    return h.hexdigest()


def _design(block: TwoSiteBlock, envs: dict, x: torch.Tensor, rows: torch.Tensor | None, phys_dim: int):
    """Feature matrix ``F`` (rows, K), last environment ``R`` (rows, D) and layout.

    ``psi(v) = F(v) @ M @ R(v)`` where ``M`` is the block permuted to
    (physical..., virtual[:-1]..., virtual[-1]) and reshaped to ``(K, D)``.
    ``F`` is the one-hot code of the physical values times the outer product
    of the other environments, written with one indexed assignment.
    """
    phys = [ix for ix in block.inds if ix in block.physical]
    virt = [ix for ix in block.inds if ix in block.virtual]
    order = phys + virt
    dtype = block.data.dtype
    dev = x.device
    n = x.shape[0] if rows is None else rows.shape[0]
    vecs = [envs[ix][0] if rows is None else envs[ix][0].index_select(0, rows) for ix in virt]
    vecs = [v.to(dtype) for v in vecs]
    last = vecs.pop() if vecs else torch.ones((n, 1), dtype=dtype, device=dev)
    env = None
    for v in vecs:
        env = v if env is None else (env.unsqueeze(2) * v.unsqueeze(1)).reshape(n, -1)
    if not phys:
        return (env if env is not None else torch.ones((n, 1), dtype=dtype, device=dev)), last, order
    code = None
    for ix in phys:
        col = x[:, block.physical[ix]]
        col = col if rows is None else col.index_select(0, rows)
        code = col if code is None else code * phys_dim + col
    width = 1 if env is None else env.shape[1]
    feats = torch.zeros((n, phys_dim ** len(phys), width), dtype=dtype, device=dev)
    values = torch.ones((n, 1), dtype=dtype, device=dev) if env is None else env
    feats.index_put_((torch.arange(n, device=dev), code), values)
    return feats.reshape(n, -1), last, order


def block_gradient_steps(
    matrix: torch.Tensor,
    feats: torch.Tensor,
    last: torch.Tensor,
    batches: Sequence[slice],
    lr: float,
) -> torch.Tensor:
    """Gradient steps on a normalised block ``M`` (``K x D``), closed form.

    For a batch ``b``, ``psi_b = F_b M R_b`` and
    ``dNLL/dM* = M - (1/B) sum_b conj(F_b)^T conj(R_b / psi_b)`` (Wirtinger; the
    real case is half the usual derivative), so a step is
    ``M <- M - lr * 2 * (M - G / B)`` followed by ``M <- M / ||M||``.

    Parameters
    ----------
    matrix : torch.Tensor
        ``(K, D)`` block with unit Frobenius norm.
    feats, last : torch.Tensor
        ``(rows, K)`` and ``(rows, D)`` from the environments.
    batches : sequence of slice
        Row ranges of ``feats``/``last`` used by successive steps.
    lr : float
        Learning rate.

    Returns
    -------
    torch.Tensor
        The updated, normalised block.

    Raises
    ------
    NumericalError
        If some ``psi_b`` is zero or a value becomes non-finite.
    """
    # Fast path: no host synchronisation inside the loop (each check would stall
    # a GPU and costs a few microseconds per step on a CPU). A zero psi or a
    # zero / non-finite norm always leaves NaN (or, at the last step, zeros) in
    # the result, so one check at the end detects it; the steps are then
    # replayed with a check after every operation to raise the precise error.
    m = _gradient_steps(matrix, feats, last, batches, lr, checked=False)
    if not _finite_nonzero(m):
        _gradient_steps(matrix, feats, last, batches, lr, checked=True)
        raise NumericalError("the merged tensor became zero or non-finite in a gradient step")
    return m


#: Largest ``rows * K * D`` of one step done with numpy instead of torch: for such
#: small products torch's per-call overhead (several microseconds) dominates,
#: numpy's is a fraction of it, and its BLAS stays single-threaded. Measured on
#: the 2-core development CPU: max-bond-30 MNIST steps 1.6x faster.
NUMPY_STEP_MAX_WORK = 200_000


def _gradient_steps(matrix, feats, last, batches, lr, checked):
    """The steps of :func:`block_gradient_steps`; ``checked``: raise at the first bad value."""
    m = matrix
    complex_ = m.is_complex()
    if (not checked and not complex_ and m.device.type == "cpu" and batches
            and _rows(feats, batches[0]) * m.shape[0] * m.shape[1] <= NUMPY_STEP_MAX_WORK):
        return torch.from_numpy(_gradient_steps_numpy(m.numpy(), feats.numpy(), last.numpy(), batches, lr))
    for sl in batches:
        f, r = feats[sl], last[sl]
        fm = f @ m
        # real case: vecdot is one fused multiply-and-sum (it conjugates its first argument)
        psi = (fm * r).sum(dim=1) if complex_ else torch.linalg.vecdot(fm, r)
        if checked and not bool(torch.all(psi != 0)):
            raise NumericalError(
                "psi(x) = 0 for a training sample: its probability is zero and the NLL is infinite"
            )
        w = r / psi.unsqueeze(1)
        if complex_:
            g = (f.transpose(0, 1) @ w).conj()
            m = m - (2.0 * lr) * (m - g / f.shape[0])
        else:
            # m - 2 lr (m - g / B) in one fused call
            m = torch.addmm(m, f.transpose(0, 1), w, beta=1.0 - 2.0 * lr, alpha=2.0 * lr / f.shape[0])
        nrm = torch.linalg.vector_norm(m)
        if checked and (not bool(torch.isfinite(nrm)) or float(nrm) == 0.0):
            raise NumericalError("the merged tensor became zero or non-finite in a gradient step")
        m = m / nrm
    return m


def rescaled_gradient_steps(
    matrix: torch.Tensor,
    feats: torch.Tensor,
    last: torch.Tensor,
    batches: Sequence[slice],
    lr: float,
) -> torch.Tensor:
    """Gradient steps with the authors' ``norm0.25`` rescaling of small directions.

    With ``g = G/B - M`` (half the negative gradient, as in
    :func:`block_gradient_steps`), a direction with
    ``||g|| < numel(M)**0.25`` is rescaled to that norm; then
    ``M <- (M + 2 lr g) / ||M + 2 lr g||``.

    Parameters
    ----------
    matrix : torch.Tensor
        ``(K, D)`` block with unit Frobenius norm.
    feats, last : torch.Tensor
        ``(rows, K)`` and ``(rows, D)`` from the environments.
    batches : sequence of slice
        Row ranges used by successive steps.
    lr : float
        Learning rate.

    Returns
    -------
    torch.Tensor
        The updated, normalised block.

    Raises
    ------
    NumericalError
        If some ``psi_b`` is zero or a value becomes non-finite.
    """
    m = matrix
    scale = float(m.numel()) ** 0.25
    for sl in batches:
        f, r = feats[sl], last[sl]
        psi = ((f @ m) * r).sum(dim=1)
        if not bool(torch.all(psi != 0)):
            raise NumericalError(
                "psi(x) = 0 for a training sample: its probability is zero and the NLL is infinite"
            )
        g = f.transpose(0, 1) @ (r / psi[:, None])
        if g.is_complex():
            g = g.conj()
        g = g / f.shape[0] - m
        gnorm = float(torch.linalg.vector_norm(g)) / scale
        if 0.0 < gnorm < 1.0:
            g = g / gnorm
        m = m + (2.0 * lr) * g
        nrm = torch.linalg.vector_norm(m)
        if not bool(torch.isfinite(nrm)) or float(nrm) == 0.0:
            raise NumericalError("the merged tensor became zero or non-finite in a gradient step")
        m = m / nrm
    return m


def _rows(feats: torch.Tensor, sl: slice) -> int:
    return len(range(*sl.indices(feats.shape[0])))


def _gradient_steps_numpy(m, feats, last, batches, lr):
    """The unchecked real steps on numpy arrays (same arithmetic as the torch loop)."""
    m = m.copy()
    beta = 1.0 - 2.0 * lr
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for sl in batches:
            f, r = feats[sl], last[sl]
            psi = (f @ m * r).sum(axis=1)
            g = f.T @ (r / psi[:, None])
            m *= beta
            m += (2.0 * lr / f.shape[0]) * g
            m /= np.sqrt(np.vdot(m, m))
    return m


def _finite_nonzero(m: torch.Tensor) -> bool:
    """Whether every entry is finite and some entry is non-zero (one host sync)."""
    if m.device.type == "cpu" and not m.is_complex():
        a = m.numpy()
        return bool(np.isfinite(a).all() and a.any())
    return bool(torch.isfinite(m).all() & (m != 0).any())


class SweepTrainer:
    """Two-site DMRG-style trainer with adaptive bond dimensions.

    Parameters
    ----------
    model : BornMachine
        A tree geometry (``model.is_tree``), e.g. :class:`~tnborn.MPSBornMachine`.
    settings : SweepSettings, optional
        Hyper-parameters; keyword arguments override individual fields.
    callbacks : sequence of Callback, optional
        Observers; a :class:`~tnborn.training.callbacks.ProgressBar` is added
        unless ``progress=False`` or one is given.
    progress : bool or None
        ``None``: progress bar only on a terminal (never on ranks other than 0).
    communicator : Communicator, optional
        Data-parallel process group (:mod:`tnborn.distributed`); every rank
        passes the same data to :meth:`fit` and keeps the environments of its
        shard only. Default: one process.
    **overrides
        Fields of :class:`SweepSettings`.

    Examples
    --------
    >>> import tnborn
    >>> data = tnborn.bars_and_stripes(3)
    >>> model = tnborn.MPSBornMachine.random(9, bond_dim=2, seed=0)
    >>> trainer = tnborn.SweepTrainer(model, lr=0.1, descent_steps=10, cutoff=5e-5, progress=False)
    >>> history = trainer.fit(data, loops=2)
    >>> round(history[-1]["train_nll"], 2)  # ln 14 = 2.64
    2.64
    """

    def __init__(
        self,
        model: BornMachine,
        settings: SweepSettings | None = None,
        callbacks: Sequence[Callback] | None = None,
        progress: bool | None = None,
        communicator: Communicator | None = None,
        **overrides: Any,
    ):
        self.communicator, self.callbacks = setup_trainer(model, communicator, callbacks, progress)
        if settings is not None and not isinstance(settings, SweepSettings):
            raise ConfigError(f"settings must be a SweepSettings, got {type(settings).__name__}")
        if not getattr(model, "is_tree", False):
            raise ConfigError(
                f"geometry {model.geometry!r} is not a tree: the two-site sweep needs an exact "
                "canonical form; use GradientTrainer"
            )
        settings = settings or SweepSettings()
        unknown = set(overrides) - set(SweepSettings.keys())
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {sorted(unknown)}; valid settings: {SweepSettings.keys()}"
            )
        self.model = model
        self.settings = replace(settings, **overrides).validate()
        self.history: list[dict[str, Any]] = []
        self.half_sweeps_done = 0
        self.stop_training = False
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(self.settings.seed)
        self._perm: torch.Tensor | None = None
        self._pointer = 0
        self._cache: EnvironmentCache | None = None
        self._data_key: Any = None
        self._data_fingerprint: str | None = None
        self._num_rows = 0  # global number of training rows (all ranks)
        self._shard = (0, 0)  # this rank's rows
        #: Number of two-site updates retried with a fallback (other SVD, float64 SVD, lr / 2).
        self.fallbacks = 0
        self._precision_warned: Any = None
        self._warn_precision()

    # ----------------------------------------------------------------- batches
    def _next_rows(self, n: int, count: int) -> torch.Tensor:
        """Next ``count`` training rows of the shuffled stream (reshuffled each epoch)."""
        out = []
        need = count
        while need > 0:
            if self._perm is None or self._pointer >= self._perm.shape[0]:
                self._perm = torch.randperm(n, generator=self._generator)
                self._pointer = 0
            take = min(need, self._perm.shape[0] - self._pointer)
            out.append(self._perm[self._pointer : self._pointer + take])
            self._pointer += take
            need -= take
        return torch.cat(out)

    # ----------------------------------------------------------------- one step
    def update_bond(self, cache: EnvironmentCache, source: Any, target: Any) -> dict[str, Any]:
        """Merge, descend, split and refresh environments on one bond, transactionally.

        If an attempt fails, the two nodes' tensors (all tensors if the centre
        had to be moved first), the centre, the batch stream and the
        generator are restored exactly, and the update is retried with a
        fallback: an SVD that does not converge (or gives non-finite values)
        is retried with the other ``svd_method``, then, for float32/complex64
        models, with a float64 (complex128) SVD whose halves are cast back;
        a non-finite value or ``psi(x) = 0`` in the gradient steps is retried
        with the learning rate halved, up to :data:`MAX_LR_HALVINGS` times.
        Each fallback is logged at WARNING on the ``tnborn`` logger and
        counted in :attr:`fallbacks`. Out-of-memory errors are not retried.

        Parameters
        ----------
        cache : EnvironmentCache
            Environments of the training data.
        source, target : hashable
            Neighbouring nodes; the centre ends on ``target``.

        Returns
        -------
        dict
            ``bond_dim``, ``max_discarded``, ``discarded_weight`` of the split
            and ``fallbacks`` (retries this update needed).

        Raises
        ------
        NumericalError
            When every fallback failed; the model and the trainer are then
            exactly as before the call.
        """
        model, s = self.model, self.settings
        snapshot = self._snapshot(source, target)
        lr, halvings, fallbacks = s.lr, 0, 0
        other = "svd:eig" if s.svd_method == "svd" else "svd"
        plans = [(s.svd_method, None), (other, None)]
        wide = {torch.float32: torch.float64, torch.complex64: torch.complex128}.get(model.dtype)
        if wide is not None:
            plans.append((s.svd_method, wide))
        plan = 0
        while True:
            try:
                info = self._update_bond_once(cache, source, target, lr, *plans[plan])
            except _UpdateFailed as fail:
                self._restore(snapshot, cache, source, target)
                if fail.phase == "svd" and plan + 1 < len(plans):
                    plan += 1
                    method, dtype = plans[plan]
                    action = f"retrying with svd_method={method!r}" + (f" in {dtype}" if dtype else "")
                elif fail.phase == "gradient" and halvings < MAX_LR_HALVINGS:
                    halvings += 1
                    lr = lr / 2
                    action = f"retrying with lr halved to {lr:g}"
                else:
                    tried = (f"tried svd_method {[p[0] for p in plans]} (last in {plans[-1][1] or model.dtype})"
                             if fail.phase == "svd" else f"lr halved {halvings} times to {lr:g}")
                    raise NumericalError(
                        f"the two-site update of bond ({source!r}, {target!r}) failed: {fail.cause} "
                        f"({tried}); the model and the trainer are unchanged by this update"
                    ) from fail.cause
                fallbacks += 1
                logger.warning("bond (%r, %r): %s; %s", source, target, fail.cause, action)
                continue
            except BaseException:
                self._restore(snapshot, cache, source, target)
                raise
            self.fallbacks += fallbacks
            info["fallbacks"] = fallbacks
            return info

    def _update_bond_once(self, cache, source, target, lr, method, split_dtype) -> dict[str, Any]:
        """One attempt of :meth:`update_bond`; a failure is raised as ``_UpdateFailed``."""
        model, s = self.model, self.settings
        if model.center not in (source, target):
            model.move_center(source)
            cache.clear()
        block = model.merge(source, target)
        envs = cache.block_environments(block)
        comm = self.communicator
        n = cache.x.shape[0] if comm.world_size == 1 else self._num_rows
        if s.batch_size is None or s.batch_size >= n:
            rows = None
            batches = [slice(None)] * s.descent_steps
            sizes = [n] * s.descent_steps
        else:
            rows = self._next_rows(n, s.batch_size * s.descent_steps)
            batches = [slice(i * s.batch_size, (i + 1) * s.batch_size) for i in range(s.descent_steps)]
            sizes = [s.batch_size] * s.descent_steps
            if comm.world_size > 1:  # this rank's rows of the global batches
                rows, batches = shard_batches(rows, s.batch_size, s.descent_steps, self._shard)
            rows = rows.to(cache.x.device)
        # compiled kernel (tnborn.kernels) where it applies, else None and the plain path below
        new = (kernels.two_site_steps(model, block, envs, cache.x, rows, batches, lr)
               if comm.world_size == 1 and s.gradient_rescale == "none" else None)
        if new is None:
            feats, last, order = _design(block, envs, cache.x, rows, model.phys_dim)
            perm = [block.inds.index(ix) for ix in order] + [
                i for i, ix in enumerate(block.inds) if ix not in order
            ]
            data = block.data.permute(*perm)
            shape = data.shape
            matrix = data.reshape(feats.shape[1], -1)
            matrix = matrix / torch.linalg.vector_norm(matrix)
            try:
                if comm.world_size > 1:  # all-reduced steps, block broadcast from rank 0
                    matrix = distributed_gradient_steps(matrix, feats, last, batches, sizes, lr, comm)
                elif s.gradient_rescale == "norm0.25":
                    matrix = rescaled_gradient_steps(matrix, feats, last, batches, lr)
                else:
                    matrix = block_gradient_steps(matrix, feats, last, batches, lr)
            except NumericalError as exc:
                raise _UpdateFailed("gradient", exc) from exc
            new = matrix.reshape(shape).permute(*[perm.index(i) for i in range(len(perm))])
        dtype = model.dtype
        try:
            info = model.split(
                block, new if split_dtype is None else new.to(split_dtype), target=target, cutoff=s.cutoff,
                max_bond=s.max_bond, min_bond=s.min_bond, method=method,
            )
        except (NumericalError, RuntimeError) as exc:
            if _is_oom(exc):
                raise
            raise _UpdateFailed("svd", exc) from exc
        if split_dtype is not None:  # cast the two halves back to the model's dtype
            for node in (source, target):
                t = model.node_tensor(node)
                t.modify(data=t.data.to(dtype))
        cache.invalidate(source)
        cache.invalidate(target)
        return {"bond": (source, target), "bond_dim": info.bond_dim,
                "max_discarded": info.max_discarded, "discarded_weight": info.discarded_weight}

    def _snapshot(self, source: Any, target: Any) -> dict[str, Any]:
        """What :meth:`_restore` needs to undo one update (tensors are replaced, never mutated)."""
        model = self.model
        nodes = (source, target) if model.center in (source, target) else model.nodes()
        return {
            "tensors": [(n, model.node_tensor(n).data, tuple(model.node_tensor(n).inds)) for n in nodes],
            "center": model.center,
            "all": len(nodes) > 2,
            "perm": self._perm,
            "pointer": self._pointer,
            "generator": self._generator.get_state(),
        }

    def _restore(self, snap: dict[str, Any], cache: EnvironmentCache, source: Any, target: Any) -> None:
        """Put the model and the batch stream back as they were before the update."""
        model = self.model
        for node, data, inds in snap["tensors"]:
            model.node_tensor(node).modify(data=data, inds=inds)
        model.set_center(snap["center"])
        self._perm, self._pointer = snap["perm"], snap["pointer"]
        self._generator.set_state(snap["generator"])
        if snap["all"]:
            cache.clear()
        else:
            cache.invalidate(source)
            cache.invalidate(target)

    def _warn_precision(self) -> None:
        """Warn (once per cutoff and dtype) when the cutoff is below what the dtype resolves."""
        dtype, cutoff = self.model.dtype, self.settings.cutoff
        floor = 10 * torch.finfo(dtype).eps
        if 0 < cutoff < floor and self._precision_warned != (cutoff, dtype):
            self._precision_warned = (cutoff, dtype)
            warnings.warn(
                f"cutoff={cutoff:g} is below what {str(dtype).replace('torch.', '')} resolves: singular values "
                f"below ~{floor:.2g} * s_0 are rounding noise, so the truncation keeps noise directions; "
                f"use cutoff >= {floor:.2g} or a float64 model",
                PrecisionWarning, stacklevel=3,
            )

    # ----------------------------------------------------------------- fit
    def _train_nll(self, cache: EnvironmentCache) -> float:
        mant, log = cache.log_amplitudes_at(self.model.center)
        log_abs = torch.log(mant[:, 0].abs()) + log
        return float(self.model.log_norm() - 2.0 * reduce_mean(log_abs, self.communicator))

    def fit(
        self,
        data: Any,
        loops: int = 2,
        test_data: Any = None,
        **overrides: Any,
    ) -> list[dict[str, Any]]:
        """Train for ``loops`` full sweeps (each the geometry's half-sweeps in turn).

        Calling ``fit`` again continues the run (history, batch stream and
        centre carry over); keyword arguments change settings from now on,
        e.g. the authors' first loop at ``cutoff=0.3`` then ``cutoff=1e-7``.

        Parameters
        ----------
        data : array_like
            ``(samples, N)`` training configurations.
        loops : int
            Number of loops.
        test_data : array_like, optional
            Held-out configurations; their NLL is recorded after every half-sweep.
        **overrides
            Fields of :class:`SweepSettings`.

        Returns
        -------
        list of dict
            The whole history, one record per half-sweep: ``loop``,
            ``half_sweep``, ``train_nll``, ``test_nll``, ``bond_dims``,
            ``max_bond``, ``max_discarded``, ``seconds``.
        """
        model = self.model
        x = model.as_configurations(data, name="training data")
        test = model.as_configurations(test_data, name="test data") if test_data is not None else None
        if not (_is_int(loops) and loops >= 0):
            raise ConfigError(f"loops must be a non-negative integer, got {loops!r}")
        if overrides:
            unknown = set(overrides) - set(SweepSettings.keys())
            if unknown:
                raise ConfigError(f"unknown setting(s) {sorted(unknown)}; valid settings: {SweepSettings.keys()}")
            new = replace(self.settings, **overrides).validate(x.shape[0])
            if new.seed != self.settings.seed:
                self._generator.manual_seed(new.seed)
                self._perm, self._pointer = None, 0
            self.settings = new
        self.settings.validate(x.shape[0])
        self._warn_precision()
        schedule = model.sweep_schedule()
        # continue the schedule where the run stopped (a resumed or early-stopped run may
        # end in the middle of a loop), so that a resumed run is the same run
        start = self.half_sweeps_done % len(schedule)
        schedule = schedule[start:] + schedule[:start]
        if model.center is None:
            model.move_center(schedule[0][0][0])
        if self.communicator.world_size > 1 and self.settings.gradient_rescale != "none":
            raise ConfigError("gradient_rescale='norm0.25' is not supported in data-parallel training yet")
        if x.shape[0] < self.communicator.world_size:
            raise ConfigError(f"{x.shape[0]} training rows cannot be shared by "
                              f"{self.communicator.world_size} processes")
        self._num_rows = x.shape[0]
        start, stop = self._shard = self.communicator.shard(x.shape[0])
        key = (x.data_ptr(), tuple(x.shape))
        if self._cache is None or self._data_key != key or not torch.equal(self._cache.x, x[start:stop]):
            self._cache = EnvironmentCache(model, x[start:stop])  # this rank's rows only
            self._data_key = key
            # the batch stream goes on for the same data (also after load_state_dict) and
            # restarts for other data
            fingerprint = _fingerprint(x)
            same = fingerprint == self._data_fingerprint or (
                self._data_fingerprint is None and self._perm is not None and self._perm.shape[0] == x.shape[0])
            if not same:
                self._perm, self._pointer = None, 0
            self._data_fingerprint = fingerprint
        cache = self._cache
        cache.clear()  # tensors may have changed outside the trainer
        total = loops * sum(len(h) for h in schedule)
        self.stop_training = False
        for cb in self.callbacks:
            cb.on_fit_start(self, total)
        try:
            for _ in range(loops):
                for half in schedule:
                    self._half_sweep(cache, half, len(schedule), test)
                    if self.stop_training:
                        break
                if self.stop_training:
                    break
        finally:
            for cb in self.callbacks:
                cb.on_fit_end(self)
        return self.history

    def _half_sweep(self, cache, half, per_loop, test) -> dict[str, Any]:
        t0 = time.perf_counter()
        max_disc, fallbacks = 0.0, 0
        loop = (self.half_sweeps_done + 1) / per_loop
        for i, (source, target) in enumerate(half):
            info = self.update_bond(cache, source, target)
            max_disc = max(max_disc, info["max_discarded"])
            fallbacks += info["fallbacks"]
            info.update(loop=loop, step_in_half_sweep=i)
            for cb in self.callbacks:
                cb.on_step_end(self, info)
        seconds = time.perf_counter() - t0
        self.half_sweeps_done += 1
        check_agreement(self.communicator, self.model, f"after half-sweep {self.half_sweeps_done}")
        dims = self.model.bond_dims()
        record = {
            "half_sweep": self.half_sweeps_done,
            "loop": loop,
            "train_nll": self._train_nll(cache),
            "test_nll": self.model.nll(test) if test is not None else None,
            "max_bond": max(dims) if dims else 1,
            "bond_dims": dims,
            "max_discarded": max_disc,
            "fallbacks": fallbacks,
            "seconds": seconds,
            "settings": asdict(self.settings),
        }
        self.history.append(record)
        for cb in self.callbacks:
            cb.on_half_sweep_end(self, record)
        return record

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Trainer state needed to resume: settings, counters, RNG, batch stream, history.

        Returns
        -------
        dict
            JSON-serialisable state for :meth:`load_state_dict`.
        """
        return {
            "settings": asdict(self.settings),
            "half_sweeps_done": self.half_sweeps_done,
            "pointer": self._pointer,
            "perm": None if self._perm is None else to_numpy(self._perm).tolist(),
            "generator_state": to_numpy(self._generator.get_state()).tolist(),
            "history": self.history,
            "fallbacks": self.fallbacks,
            "data_fingerprint": self._data_fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Parameters
        ----------
        state : dict
            A trainer state.
        """
        try:  # parse everything first: a bad state leaves the trainer as it was
            settings = SweepSettings(**state["settings"]).validate()
            half_sweeps_done = int(state["half_sweeps_done"])
            pointer = int(state["pointer"])
            perm = state.get("perm")
            perm = None if perm is None else torch.as_tensor(perm, dtype=torch.int64)
            generator = torch.Generator(device="cpu")
            generator.set_state(torch.as_tensor(state["generator_state"], dtype=torch.uint8))
            history = list(state.get("history", []))
            fallbacks = int(state.get("fallbacks", 0))
            fingerprint = state.get("data_fingerprint")
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise DataError(f"invalid trainer state: {exc}") from exc
        self.settings, self.half_sweeps_done, self._pointer, self._perm = settings, half_sweeps_done, pointer, perm
        self._generator.set_state(generator.get_state())
        self.history, self.fallbacks, self._data_fingerprint = history, fallbacks, fingerprint
        self._warn_precision()

    def save_checkpoint(self, path: Any) -> Any:
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
        from pathlib import Path

        from ..checkpoint import save

        if self.communicator.is_main:
            path = save(path, self.model, trainer=self)
        self.communicator.barrier()
        return Path(path)
