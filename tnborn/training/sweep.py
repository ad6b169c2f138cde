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

The gradient steps are :func:`~tnborn.training.local_update.block_gradient_steps`,
the one local update of every sweep (single-process and data-parallel, any rule,
with the step guard that makes the update stable).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from .. import kernels
from ..distributed import Communicator, check_agreement, reduce_mean, shard_batches
from ..environments import EnvironmentCache
from ..errors import ConfigError, NumericalError, PrecisionWarning
from ..interface import BornMachine, TwoSiteBlock
from .base import Trainer
from .callbacks import Callback
from .compiled import compiled_updates
from .local_update import StepStats, block_gradient_steps, rescaled_gradient_steps
from .settings import SweepSettings

__all__ = ["SweepSettings", "SweepTrainer", "block_gradient_steps", "rescaled_gradient_steps"]

logger = logging.getLogger("tnborn")

#: Learning-rate halvings tried when a two-site update meets a non-finite value or psi = 0.
MAX_LR_HALVINGS = 3

def _is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` reports an exhausted device or host memory."""
    return isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


class _UpdateFailed(Exception):
    """Internal: one attempt of a two-site update failed in ``phase`` ("gradient" or "svd")."""

    def __init__(self, phase: str, cause: BaseException):
        super().__init__(f"{phase}: {cause}")
        self.phase, self.cause = phase, cause


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



class SweepTrainer(Trainer):
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

    settings_class = SweepSettings
    unit = "loops"

    def __init__(
        self,
        model: BornMachine,
        settings: SweepSettings | None = None,
        callbacks: Sequence[Callback] | None = None,
        progress: bool | None = None,
        communicator: Communicator | None = None,
        **overrides: Any,
    ):
        super().__init__(model, settings, callbacks, progress, communicator, overrides)
        if not getattr(model, "is_tree", False):
            raise ConfigError(
                f"geometry {model.geometry!r} is not a tree: the two-site sweep needs an exact "
                "canonical form; use GradientTrainer"
            )
        self.half_sweeps_done = 0
        self._cache: EnvironmentCache | None = None
        self._data_key: Any = None
        self._num_rows = 0  # global number of training rows (all ranks)
        self._shard = (0, 0)  # this rank's rows
        #: Number of two-site updates retried with a fallback (other SVD, float64 SVD, lr / 2).
        self.fallbacks = 0
        #: Counts of the step guard over the whole run (see :class:`SweepSettings` ``max_nll_rise``).
        self.step_stats = StepStats()
        self._precision_warned: Any = None
        self._active = self.settings.at(0)
        self._warn_precision()

    @property
    def active_settings(self) -> SweepSettings:
        """The settings of the current loop (schedules resolved).

        Returns
        -------
        SweepSettings
            Without per-loop lists.
        """
        return self._active

    def _activate(self, per_loop: int | None = None) -> None:
        """Resolve the schedules for the loop the next half-sweep belongs to."""
        per_loop = per_loop or len(self.model.sweep_schedule())
        self._active = self.settings.at(self.half_sweeps_done // per_loop)
        self._warn_precision()

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
            ``bond_dim``, ``max_discarded``, ``discarded_weight`` of the split,
            ``fallbacks`` (retries this update needed) and ``steps`` (the
            :class:`~tnborn.training.local_update.StepStats` of its gradient steps).

        Raises
        ------
        NumericalError
            When every fallback failed; the model and the trainer are then
            exactly as before the call.
        """
        model, s = self.model, self._active
        snapshot = self._snapshot(source, target)
        lr, halvings, fallbacks = s.lr, 0, 0
        other = "svd:eig" if s.svd_method == "svd" else "svd"
        plans = [(s.svd_method, None), (other, None)]
        wide = {torch.float32: torch.float64, torch.complex64: torch.complex128}.get(model.dtype)
        if wide is not None:
            plans.append((s.svd_method, wide))
        plan = 0
        while True:
            stats = StepStats()
            try:
                info = self._update_bond_once(cache, source, target, lr, *plans[plan], stats)
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
                    hint = ""
                    if fail.phase == "gradient" and s.max_nll_rise is None:
                        hint = ("; if the run diverged (small batches, e.g. a tree at the authors' batch "
                                "of 50), pass max_nll_rise=0 (the step guard keeps every gradient step "
                                "from raising the NLL of the rows drawn for its bond) and pass "
                                "max_sample_change=1 (no sample's own term may more than double its "
                                "amplitude): examples/stability_batch50.py trains that way")
                    raise NumericalError(
                        f"the two-site update of bond ({source!r}, {target!r}) failed: {fail.cause} "
                        f"({tried}); the model and the trainer are unchanged by this update{hint}"
                    ) from fail.cause
                fallbacks += 1
                logger.warning("bond (%r, %r): %s; %s", source, target, fail.cause, action)
                continue
            except BaseException:
                self._restore(snapshot, cache, source, target)
                raise
            self.fallbacks += fallbacks
            self.step_stats.add(stats)
            info["fallbacks"] = fallbacks
            info["steps"] = stats
            return info

    def _batches(self, n: int, device: Any) -> tuple[torch.Tensor | None, list[slice], list[int]]:
        """Rows of this bond's mini-batches (this rank's), one slice and the global size per step."""
        s, comm = self._active, self.communicator
        if s.batch_size is None or s.batch_size >= n:
            return None, [slice(None)] * s.descent_steps, [n] * s.descent_steps
        rows = self.stream.take(n, s.batch_size * s.descent_steps)
        batches = [slice(i * s.batch_size, (i + 1) * s.batch_size) for i in range(s.descent_steps)]
        if comm.world_size > 1:  # this rank's rows of the global batches
            rows, batches = shard_batches(rows, s.batch_size, s.descent_steps, self._shard)
        return rows.to(device), batches, [s.batch_size] * s.descent_steps

    def _update_bond_once(self, cache, source, target, lr, method, split_dtype, stats) -> dict[str, Any]:
        """One attempt of :meth:`update_bond`; a failure is raised as ``_UpdateFailed``."""
        model, s = self.model, self._active
        if model.center not in (source, target):
            model.move_center(source)
            cache.clear()
        block = model.merge(source, target)
        envs = cache.block_environments(block)
        n = cache.x.shape[0] if self.communicator.world_size == 1 else self._num_rows
        rows, batches, sizes = self._batches(n, cache.x.device)
        # compiled kernel (tnborn.kernels) where it applies: the plain rule, one process, no
        # step guard, no per-sample cap; else None and the generic local update below
        new = None
        if (self.communicator.world_size == 1 and s.gradient_rescale == "none" and s.max_nll_rise is None
                and s.max_sample_change is None):
            new = kernels.two_site_steps(block, envs, cache.x, rows, batches, lr)
            if new is not None:
                stats.steps += len(batches)
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
                matrix = block_gradient_steps(matrix, feats, last, batches, lr, rule=s.gradient_rescale,
                                              sizes=sizes, communicator=self.communicator,
                                              max_nll_rise=s.max_nll_rise, max_shrinks=s.guard_shrinks,
                                              guard_scope=s.guard_scope,
                                              max_sample_change=s.max_sample_change, stats=stats)
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
            model.set_center(target)  # the cast is ours: the network is still canonical about target
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
            "stream": self.stream.snapshot(),
        }

    def _restore(self, snap: dict[str, Any], cache: EnvironmentCache, source: Any, target: Any) -> None:
        """Put the model and the batch stream back as they were before the update."""
        model = self.model
        for node, data, inds in snap["tensors"]:
            model.node_tensor(node).modify(data=data, inds=inds)
        model.set_center(snap["center"])
        self.stream.restore(snap["stream"])
        if snap["all"]:
            cache.clear()
        else:
            cache.invalidate(source)
            cache.invalidate(target)

    def _warn_precision(self) -> None:
        """Warn (once per cutoff and dtype) when the cutoff is below what the dtype resolves."""
        dtype, cutoff = self.model.dtype, self._active.cutoff
        floor = 10 * torch.finfo(dtype).eps
        if 0 < cutoff < floor and self._precision_warned != (cutoff, dtype):
            self._precision_warned = (cutoff, dtype)
            warnings.warn(
                f"cutoff={cutoff:g} is below what {str(dtype).replace('torch.', '')} resolves: singular values "
                f"below ~{floor:.2g} * s_0 are rounding noise, so the truncation keeps noise directions; "
                f"use cutoff >= {floor:.2g} or a float64 model",
                PrecisionWarning, stacklevel=4,
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
        centre carry over); keyword arguments change settings from now on.
        A setting given as a list is a per-loop schedule over the whole run,
        e.g. the authors' ``cutoff=[0.3, 5e-5]`` (first loop, then all others).

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
            ``max_bond``, ``max_discarded``, ``fallbacks``, ``steps``,
            ``steps_shrunk``, ``steps_rejected``, ``seconds``, ``settings``
            (those of the loop).
        """
        return self._fit(data, loops, test_data, overrides)

    def _train(self, x: torch.Tensor, test: torch.Tensor | None, loops: int) -> None:
        model = self.model
        self._activate()
        schedule = model.sweep_schedule()
        # continue the schedule where the run stopped (a resumed or early-stopped run may
        # end in the middle of a loop), so that a resumed run is the same run
        start = self.half_sweeps_done % len(schedule)
        schedule = schedule[start:] + schedule[:start]
        if model.center is None:
            model.move_center(schedule[0][0][0])
        if x.shape[0] < self.communicator.world_size:
            raise ConfigError(f"{x.shape[0]} training rows cannot be shared by "
                              f"{self.communicator.world_size} processes")
        self._num_rows = x.shape[0]
        start, stop = self._shard = self.communicator.shard(x.shape[0])
        key = (x.data_ptr(), tuple(x.shape))
        rows = x[start:stop]
        same_data = (self._cache is not None and self._cache.x.shape == rows.shape
                     and self._cache.x.device == rows.device and torch.equal(self._cache.x, rows))
        if not same_data:  # the same rows again (even as a new array) keep the cache
            self._cache = EnvironmentCache(model, rows)  # this rank's rows only
        if not same_data or self._data_key != key:
            self._data_key = key
            self._sync_data(x)
        cache = self._cache
        model.check_network()
        # messages of the last fit stay unless their tensors changed outside the trainer since
        cache.forget_changed()
        total = loops * sum(len(h) for h in schedule)
        halves = [half for _ in range(loops) for half in schedule]
        self._run(total, halves, lambda half: self._half_sweep(cache, half, len(schedule), test))
        cache.mark_tensors()

    def _half_sweep(self, cache, half, per_loop, test) -> dict[str, Any]:
        self._activate(per_loop)
        t0 = time.perf_counter()
        max_disc, fallbacks, stats = 0.0, 0, StepStats()
        loop = (self.half_sweeps_done + 1) / per_loop
        model = self.model
        # callbacks that act after every step may edit model.tn: check the network after them
        edits_possible = any(type(cb).on_step_end is not Callback.on_step_end
                             and not (getattr(cb, "reads_only", False) or getattr(cb, "info_only", False))
                             for cb in self.callbacks)
        with model.trusting_network():  # checked once here, not at every read of the centre
            i = 0
            while i < len(half):
                # a run of chain updates in one compiled call where that applies (compiled.py),
                # else (and for an update the kernel leaves) the plain transactional update
                infos = compiled_updates(self, cache, half, i) or [self.update_bond(cache, *half[i])]
                for info in infos:
                    max_disc = max(max_disc, info["max_discarded"])
                    fallbacks += info["fallbacks"]
                    stats.add(info["steps"])
                    info.update(loop=loop, step_in_half_sweep=i)
                    self._step_done(info)
                    i += 1
                if edits_possible:
                    model.check_network()
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
            "steps": stats.steps,
            "steps_shrunk": stats.shrunk,
            "steps_rejected": stats.rejected,
            "seconds": seconds,
        }
        return self._record(record, self._active)

    # ----------------------------------------------------------------- state
    def _own_state(self) -> dict[str, Any]:
        return {"half_sweeps_done": self.half_sweeps_done, "fallbacks": self.fallbacks,
                "step_stats": asdict(self.step_stats)}

    def _parse_own_state(self, state: dict[str, Any], settings: Any) -> Any:
        stats = state.get("step_stats") or {}
        return (int(state["half_sweeps_done"]), int(state.get("fallbacks", 0)),
                StepStats(**{k: int(v) for k, v in stats.items()}))

    def _load_own_state(self, own: Any) -> None:
        self.half_sweeps_done, self.fallbacks, self.step_stats = own
        self._activate()
