"""The compiled fast path of the two-site sweep: a run of chain updates in one call.

:class:`~tnborn.training.sweep.SweepTrainer` asks :func:`compiled_updates`
before each two-site update of a half-sweep. Where it applies, a whole run of
consecutive updates along a chain (the rest of the half-sweep, in chunks of
:data:`CHUNK_BONDS`) is done by :func:`tnborn.kernels.chain_updates` in one
compiled call, and quimb, the environment cache, the batch stream and the
callbacks are brought up to date once per chunk, as if the updates had run
one by one (same rows, same writes, same messages, same step records).

It applies when the update is the plain one (one process, the ``"none"``
rule, no step guard, no per-sample cap, ``svd_method="svd"``), the geometry
supplies the chain hooks (``site_array`` and ``replace_site_arrays``: the
MPS), the arrays are
real float64/float32 on the CPU, the kernels are enabled
(:func:`tnborn.kernels.set_kernels`) and every callback that acts after each
update only reads its record (``Callback.info_only``). Otherwise, and for an
update the kernel does not complete (a zero or non-finite value, a failed
SVD, work above the kernel's limits), the trainer's plain, transactional
:meth:`~tnborn.training.sweep.SweepTrainer.update_bond` runs, with its
fallbacks and precise errors. The kernel writes nothing in place, so an update
it did not complete leaves the model, the cache and the stream as they were.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import kernels
from ..environments import EnvironmentCache
from .callbacks import Callback
from .local_update import StepStats

__all__ = ["CHUNK_BONDS", "compiled_updates"]

#: Largest number of updates per compiled call: the trainer reports steps to the
#: callbacks (the progress bar) once per call.
CHUNK_BONDS = 256


def _is_chain_step(src: Any, tgt: Any) -> bool:
    """Whether ``(src, tgt)`` is a step between neighbouring sites of a chain."""
    return isinstance(src, int) and isinstance(tgt, int) and abs(src - tgt) == 1


def _run_of_bonds(half: list, start: int) -> tuple[bool, int, int] | None:
    """``(leftward, first bond, length)`` of the chain run starting at ``half[start]``, or None."""
    src, tgt = half[start]
    if not _is_chain_step(src, tgt):
        return None
    leftward = tgt < src
    step = -1 if leftward else 1
    length = 1
    while start + length < len(half) and length < CHUNK_BONDS:
        s2, t2 = half[start + length]
        if (s2, t2) != (src + step * length, tgt + step * length):
            break
        length += 1
    return leftward, min(src, tgt), length


def _applies(trainer: Any) -> bool:
    model, s = trainer.model, trainer.active_settings
    if trainer.communicator.world_size != 1 or s.gradient_rescale != "none" or s.max_nll_rise is not None \
            or s.max_sample_change is not None or s.svd_method != "svd":
        return False
    if not (hasattr(model, "replace_site_arrays") and hasattr(model, "site_array")):
        return False
    if model.dtype not in (torch.float64, torch.float32) or model.device.type != "cpu":
        return False
    return all(type(cb).on_step_end is Callback.on_step_end or getattr(cb, "info_only", False)
               for cb in trainer.callbacks)


def _ones(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones((n, 1), dtype=dtype), torch.zeros(n, dtype=dtype)


def compiled_updates(trainer: Any, cache: EnvironmentCache, half: list, start: int) -> list[dict[str, Any]]:
    """Run the updates ``half[start:]`` (a chunk of them) in one compiled call, where that applies.

    Parameters
    ----------
    trainer : SweepTrainer
        The trainer (its model, active settings, batch stream, callbacks).
    cache : EnvironmentCache
        The environments of the training rows.
    half : list of (int, int)
        The half-sweep's ``(source, target)`` steps.
    start : int
        The first step to run.

    Returns
    -------
    list of dict
        One record per completed update (as :meth:`SweepTrainer.update_bond`
        returns); empty when the fast path does not apply or its first update
        is left to the plain path.
    """
    if start >= len(half) or not _applies(trainer):
        return []
    model, s = trainer.model, trainer.active_settings
    src, tgt = half[start]
    if model.center not in (src, tgt) or not _is_chain_step(src, tgt):
        return []
    n = cache.x.shape[0]
    full_batch = s.batch_size is None or s.batch_size >= n
    batch = n if full_batch else s.batch_size
    first = min(src, tgt)
    dl = model.site_array(first).shape[0]
    dr = model.site_array(first + 1).shape[2]
    if not kernels.chain_update_fits(batch, dl, dr, model.phys_dim):  # cheap checks before the run's
        return []
    leftward, first, length = _run_of_bonds(half, start)
    num = model.num_variables
    dtype = model.dtype
    bonds = [first - i for i in range(length)] if leftward else [first + i for i in range(length)]

    def message(src: int, dst: int) -> tuple[torch.Tensor, torch.Tensor]:
        return cache.message(src, dst) if 0 <= src < num else _ones(n, dtype)

    if leftward:
        statics = [message(k - 1, k) for k in bonds]
        moving = message(first + 2, first + 1)
    else:
        statics = [message(k + 2, k + 1) for k in bonds]
        moving = message(first - 1, first)
    if any(v.dtype != dtype or v.device.type != "cpu" for v, _ in statics + [moving]):
        return []
    lo, hi = (bonds[-1], first + 1) if leftward else (first, bonds[-1] + 1)
    sites = {k: model.site_array(k) for k in range(lo, hi + 1)}
    snapshot = trainer.stream.snapshot()
    per_update = batch * s.descent_steps
    rows = None if full_batch else trainer.stream.take(n, per_update * length)
    center, writing = model.center, False
    try:
        result = kernels.chain_updates(sites, statics, moving, cache.x_columns, first, leftward, rows, batch,
                                       s.descent_steps, s.lr, s.cutoff, s.max_bond, s.min_bond)
        done = result.done
        if done < length and not full_batch:  # the stream stands after the completed updates' rows
            trainer.stream.restore(snapshot)
            if done:
                trainer.stream.take(n, per_update * done)
        if not done:
            return []
        last = bonds[done - 1]
        writing = True
        model.replace_site_arrays(result.sites, last if leftward else last + 1)
        for k in result.sites:  # the messages of every site written (each update's two), then the new ones
            cache.invalidate(k)
        records = []
        for i, (keep, max_disc, weight) in enumerate(result.info.tolist()):
            k = bonds[i]
            bond = (k + 1, k) if leftward else (k, k + 1)
            cache.put(*bond, result.messages[i])
            records.append({"bond": bond, "bond_dim": int(keep), "max_discarded": max_disc,
                            "discarded_weight": weight, "fallbacks": 0,
                            "steps": StepStats(steps=s.descent_steps)})
    except BaseException:  # (an interrupt, say) nothing of the run stays: sites, centre, cache, stream
        if writing:
            model.replace_site_arrays(sites, center)
            for k in sites:
                cache.invalidate(k)
        trainer.stream.restore(snapshot)
        raise
    return records
