"""Exact, log-stable, batched contraction of tensor networks.

A Born machine over hundreds of variables has amplitudes far below the
smallest floating-point number (``psi ~ e^-430`` for an untrained MNIST MPS),
so contracting its network in one go underflows. :func:`contract_log_scaled`
contracts any set of arrays pairwise along a path found by cotengra (cached
per structure and shape) and, after every pairwise step, divides the
intermediate by its largest absolute value, separately for every entry of an
optional *batch* index, accumulating the logarithm of the divisors. The batch
index is an ordinary hyper-index shared by several tensors (for instance the
one-hot selections of a batch of configurations), so one call evaluates a
whole batch of amplitudes or marginals exactly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from .errors import ConfigError

__all__ = ["contract_log_scaled", "contraction_path", "onehot", "MAX_INTERMEDIATE_ENTRIES"]

#: Largest intermediate (entries) an exact contraction may form: 2^28 entries
#: (2 GiB of float64). A network whose path needs more is refused before any work.
MAX_INTERMEDIATE_ENTRIES = 2**28

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@functools.lru_cache(maxsize=512)
def _cached_path(
    inputs: tuple[tuple[str, ...], ...],
    output: tuple[str, ...],
    sizes: tuple[tuple[str, int], ...],
    optimize: str,
) -> tuple[tuple[int, int], ...]:
    import cotengra as ctg

    size_dict = dict(sizes)
    if len(inputs) == 1:
        return ()
    tree = ctg.array_contract_tree(list(inputs), output, size_dict, optimize=optimize)
    return tuple(tuple(p) for p in tree.get_path())


@functools.lru_cache(maxsize=512)
def _largest_intermediate(
    inputs: tuple[tuple[str, ...], ...],
    output: tuple[str, ...],
    sizes: tuple[tuple[str, int], ...],
    path: tuple[tuple[int, int], ...],
) -> int:
    """Entries of the largest tensor formed along ``path`` (index bookkeeping only)."""
    size_dict = dict(sizes)
    stack = [tuple(term) for term in inputs]
    largest = max(math.prod(size_dict[ix] for ix in term) for term in stack)
    for i, j in path:
        a, b = sorted((i, j))
        tb, ta = stack.pop(b), stack.pop(a)
        remaining = {ix for term in stack for ix in term} | set(output)
        new = tuple(dict.fromkeys(ix for ix in ta + tb if ix in remaining))
        largest = max(largest, math.prod(size_dict[ix] for ix in new))
        stack.append(new)
    return largest


def contraction_path(
    inputs: Sequence[Sequence[str]],
    output: Sequence[str],
    size_dict: dict[str, int],
    optimize: str = "greedy",
) -> tuple[tuple[int, int], ...]:
    """Return a pairwise contraction path (opt_einsum's linear format), cached.

    Parameters
    ----------
    inputs : sequence of sequence of str
        The indices of each tensor.
    output : sequence of str
        The indices of the result (hyper-indices allowed).
    size_dict : dict
        Size of every index.
    optimize : str
        A cotengra optimiser name (``"greedy"``, ``"auto"``, ``"auto-hq"`` ...).

    Returns
    -------
    tuple of (int, int)
        Pairs of positions to contract; the result is appended at the end.
    """
    key_inputs = tuple(tuple(ix) for ix in inputs)
    used = {ix for term in key_inputs for ix in term}
    sizes = tuple(sorted((ix, int(size_dict[ix])) for ix in used))
    return _cached_path(key_inputs, tuple(output), sizes, optimize)


def _equation(
    terms: Sequence[Sequence[str]], out: Sequence[str]
) -> str:
    letters: dict[str, str] = {}
    for term in list(terms) + [out]:
        for ix in term:
            if ix not in letters:
                letters[ix] = _LETTERS[len(letters)]
    lhs = ",".join("".join(letters[ix] for ix in term) for term in terms)
    return lhs + "->" + "".join(letters[ix] for ix in out)


def _rescale(
    array: torch.Tensor, inds: Sequence[str], batch_ind: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide ``array`` by its max-abs (per batch entry); return it and the log."""
    if array.numel() == 0:
        return array, torch.zeros((), dtype=array.real.dtype, device=array.device)
    mag = array.abs()
    if batch_ind is not None and batch_ind in inds:
        axis = list(inds).index(batch_ind)
        moved = mag.movedim(axis, 0).reshape(mag.shape[axis], -1)
        scale = moved.amax(dim=1)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        shape = [1] * array.ndim
        shape[axis] = -1
        log = torch.where(scale > 0, torch.log(safe), torch.full_like(safe, -torch.inf))
        return array / safe.reshape(shape).to(array.dtype), log
    scale = mag.amax()
    if scale > 0:
        return array / scale.to(array.dtype), torch.log(scale)
    return array, torch.full_like(scale, -torch.inf)


def contract_log_scaled(
    arrays: Sequence[torch.Tensor],
    inputs: Sequence[Sequence[str]],
    output: Sequence[str],
    batch_ind: str | None = None,
    optimize: str = "greedy",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contract a network exactly, returning a mantissa and a log-scale.

    Parameters
    ----------
    arrays : sequence of torch.Tensor
        The tensors.
    inputs : sequence of sequence of str
        The index names of each tensor (an index may appear in more than two
        tensors: a hyper-index).
    output : sequence of str
        Indices of the result, in order.
    batch_ind : str, optional
        A hyper-index that is kept to the end (it must be in ``output``) and
        along which every intermediate is rescaled separately.
    optimize : str
        The cotengra path optimiser.

    Returns
    -------
    mantissa : torch.Tensor
        Tensor with indices ``output``.
    log_scale : torch.Tensor
        Real tensor of shape ``(size of batch_ind,)`` when a batch index is
        given, else a scalar, such that the exact result is
        ``mantissa * exp(log_scale)`` (broadcast along the batch index).
    """
    inputs = [tuple(ix) for ix in inputs]
    output = tuple(output)
    if batch_ind is not None and batch_ind not in output:
        raise ValueError(f"batch index {batch_ind!r} must be among the output indices {output}")
    size_dict: dict[str, int] = {}
    for arr, term in zip(arrays, inputs):
        if arr.ndim != len(term):
            raise ValueError(f"array of shape {tuple(arr.shape)} given indices {term}")
        for ix, d in zip(term, arr.shape):
            size_dict[ix] = int(d)
    key_inputs = tuple(inputs)
    sizes = tuple(sorted(size_dict.items()))
    path = _cached_path(key_inputs, output, sizes, optimize)
    largest = _largest_intermediate(key_inputs, output, sizes, path)
    if largest > MAX_INTERMEDIATE_ENTRIES:
        raise ConfigError(
            f"exact contraction of this network needs an intermediate of {largest:.3g} entries "
            f"(2^{math.log2(largest):.1f}; the limit is 2^{math.log2(MAX_INTERMEDIATE_ENTRIES):.0f}, "
            "tnborn.contraction.MAX_INTERMEDIATE_ENTRIES): the network is too large to contract "
            "exactly (a smaller bond dimension or grid, or a network without loops)"
        )

    real = arrays[0].real.dtype if arrays[0].is_complex() else arrays[0].dtype
    device = arrays[0].device
    zero = torch.zeros((), dtype=real, device=device)
    stack: list[tuple[torch.Tensor, tuple[str, ...], torch.Tensor]] = []
    for arr, term in zip(arrays, inputs):
        stack.append((arr, term, zero))

    for i, j in path:
        a, b = sorted((i, j))
        tb = stack.pop(b)
        ta = stack.pop(a)
        remaining = {ix for _, term, _ in stack for ix in term} | set(output)
        new_inds = tuple(
            dict.fromkeys(ix for ix in ta[1] + tb[1] if ix in remaining)
        )
        res = torch.einsum(_equation([ta[1], tb[1]], new_inds), ta[0], tb[0])
        res, log = _rescale(res, new_inds, batch_ind)
        stack.append((res, new_inds, ta[2] + tb[2] + log))

    if len(stack) != 1:
        raise RuntimeError("contraction path did not reduce the network to one tensor")
    res, inds, log = stack[0]
    # indices that are in the result but not requested are summed; ordering fixed
    if tuple(inds) != output:
        res = torch.einsum(_equation([inds], output), res)
        res, extra = _rescale(res, output, batch_ind)
        log = log + extra
    if batch_ind is not None:
        nb = size_dict[batch_ind]
        log = log.expand(nb) if log.ndim == 0 else log
    return res, log


def onehot(values: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Return the one-hot encoding ``(batch, dim)`` of integer ``values``.

    Parameters
    ----------
    values : torch.Tensor
        Integer tensor of shape ``(batch,)``.
    dim : int
        Number of values each entry can take.
    dtype : torch.dtype
        Dtype of the result.

    Returns
    -------
    torch.Tensor
        The encoding.
    """
    return torch.nn.functional.one_hot(values.long(), dim).to(dtype)
