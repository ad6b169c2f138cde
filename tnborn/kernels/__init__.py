"""Compiled kernels of the two-site update (numba), with the plain torch path as reference.

The sweep trainer and the MPS environment cache ask this module first; where a
kernel applies it returns the result, otherwise ``None`` and the caller runs
its plain torch code, which stays the reference and the fallback (CUDA,
complex dtypes, geometries other than the MPS, data-parallel training, the
``norm0.25`` rule, numba missing, or work large enough for BLAS to win).

Two granularities: one piece of one update (:func:`two_site_steps`,
:func:`mps_site_message`, :func:`split_matrix`), used by the trainer's
one-update-at-a-time path, and a whole run of consecutive chain updates in
one call (:func:`chain_updates`, driven by :mod:`tnborn.training.compiled`),
which removes the Python between the pieces. Outside training,
:func:`chain_log_amplitude` computes a chain's log-amplitudes (the MPS's
``log_prob``) and :func:`zipper_binary` draws its samples, each in one call.

Selection: :func:`set_kernels` or the ``TNBORN_KERNELS`` environment variable,

- ``"auto"`` (default): numba where it applies and the work per step is at
  most :data:`NUMBA_MAX_WORK` (for log-amplitudes and sampling: :data:`LOG_AMPLITUDE_MAX_WORK`);
- ``"numba"``: numba wherever it applies;
- ``"torch"``: never (the plain path everywhere).

The kernels do the same arithmetic as the plain path (the same formulas,
summed in another order), so results agree to rounding; the tests check it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["KERNEL_CHOICES", "NUMBA_MAX_WORK", "available", "get_kernels", "set_kernels",
           "LOG_AMPLITUDE_MAX_WORK", "two_site_steps", "mps_site_message", "chain_log_amplitude",
           "zipper_binary", "split_matrix", "ChainRun", "chain_updates",
           "chain_update_fits"]

#: Accepted values of :func:`set_kernels` / ``TNBORN_KERNELS``.
KERNEL_CHOICES = ("auto", "numba", "torch")

#: Largest ``rows * D_left * D_right`` of one gradient step (or one message) that
#: ``"auto"`` gives to numba; above it the plain path's BLAS products win
#: (numba's loops skip the design matrix's zeros but run at a fraction of the
#: GEMM rate). See ``benchmarks/bench_kernels.py``.
NUMBA_MAX_WORK = 3_000_000

#: Largest ``Dl * Dr`` of a chain's sites for which :func:`chain_log_amplitude` and
#: :func:`zipper_binary` run in ``"auto"`` mode: measured faster than the plain torch path
#: at every bond up to 200 (2-core AMD EPYC, 1 and 2 threads, ``bench_mps.py --only
#: chain_eval``; benchmarks/README.md), unmeasured beyond.
LOG_AMPLITUDE_MAX_WORK = 200 * 200

_choice: str | None = None
_numba: Any = None  # the compiled module, or False when numba cannot be imported


def set_kernels(choice: str | None) -> str:
    """Choose where the two-site update runs (``None``: back to ``TNBORN_KERNELS`` / ``"auto"``).

    Parameters
    ----------
    choice : str or None
        ``"auto"``, ``"numba"`` or ``"torch"``.

    Returns
    -------
    str
        The choice now in force.

    Raises
    ------
    ConfigError
        For any other value.
    """
    global _choice
    if choice is not None and choice not in KERNEL_CHOICES:
        raise ConfigError(f"kernels must be one of {list(KERNEL_CHOICES)}, got {choice!r}")
    _choice = choice
    return get_kernels()


def get_kernels() -> str:
    """The kernel choice in force (:func:`set_kernels`, else ``TNBORN_KERNELS``, else ``"auto"``).

    Returns
    -------
    str
        ``"auto"``, ``"numba"`` or ``"torch"``.

    Raises
    ------
    ConfigError
        If ``TNBORN_KERNELS`` holds another value.
    """
    if _choice is not None:
        return _choice
    env = os.environ.get("TNBORN_KERNELS", "").strip().lower() or "auto"
    if env not in KERNEL_CHOICES:
        raise ConfigError(f"TNBORN_KERNELS must be one of {list(KERNEL_CHOICES)}, got {env!r}")
    return env


def available() -> bool:
    """Whether numba can be imported (the kernels compile on first use).

    Returns
    -------
    bool
        True when the numba kernels can run.
    """
    return _kernels() is not None


def _kernels():
    global _numba
    if _numba is None:
        try:
            from . import _numba_mps
        except ImportError:  # numba missing or broken: the plain path runs
            _numba = False
        else:
            _numba = _numba_mps if _compiles(_numba_mps) else False
    return _numba or None


def _compiles(module: Any) -> bool:
    """Whether the kernels' explicit LLVM loops compile and compute right here (float64 and float32).

    Their intrinsic names depend on the LLVM version behind numba; a numba that
    cannot lower them gets a warning once and the plain torch path, never a
    failure in the middle of training.
    """
    try:
        for dtype in (np.float64, np.float32):
            got = tuple(module.probe(np.arange(1.0, 11.0, dtype=dtype)))
            if got != (385.0, 10.0, True, 385.0):
                raise ArithmeticError(f"probe gave {got}, expected (385.0, 10.0, True, 385.0)")
    except Exception as exc:  # noqa: BLE001 - any failure means: do not use the kernels
        warnings.warn(f"tnborn's numba kernels do not work with this numba/llvmlite ({type(exc).__name__}: "
                      f"{exc}); the plain torch path runs instead", RuntimeWarning, stacklevel=3)
        return False
    return True


def _use(work: int, tensors: tuple[torch.Tensor, ...], limit: int | None = None):
    """The numba module if the choice, the device, the dtypes and the work allow it, else None."""
    choice = get_kernels()
    if choice == "torch":
        return None
    t0 = tensors[0]
    if t0.device.type != "cpu" or t0.dtype not in (torch.float64, torch.float32):
        return None
    if any(t.dtype != t0.dtype or t.device.type != "cpu" or t.requires_grad for t in tensors):
        return None
    if choice == "auto" and work > (NUMBA_MAX_WORK if limit is None else limit):
        return None
    return _kernels()


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _contiguous(t: torch.Tensor) -> np.ndarray:
    """A C-contiguous numpy view (a copy only if ``t`` is not contiguous)."""
    return t.numpy() if t.is_contiguous() and not t.requires_grad else np.ascontiguousarray(_array(t))


def _address_table(tensors: list[torch.Tensor], ndim: int,
                   dtype: torch.dtype) -> tuple[list[torch.Tensor], np.ndarray]:
    """C-contiguous CPU tensors (copies only where needed) and their table of address and shape.

    The table's rows are ``(address, *shape)`` (int64); the returned tensors
    must stay alive while anything reads the table's addresses. The kernel reads
    the memory as ``dtype``: every tensor must be a CPU tensor of that dtype
    with ``ndim`` dimensions (``ValueError`` otherwise).
    """
    for t in tensors:
        if t.dtype != dtype or t.device.type != "cpu" or t.dim() != ndim:
            raise ValueError(f"chain kernel input: expected {ndim}-D {dtype} CPU tensors, got {t.dim()}-D "
                             f"{t.dtype} on {t.device}")
    held = [t if t.is_contiguous() and not t.requires_grad else t.detach().contiguous() for t in tensors]
    table = np.array([(t.data_ptr(), *t.shape) for t in held], dtype=np.int64).reshape(-1, 1 + ndim)
    return held, table


def two_site_steps(block: Any, envs: dict, x: torch.Tensor, rows: torch.Tensor | None,
                   batches: list[slice], lr: float) -> torch.Tensor | None:
    """The normalised gradient steps of one chain-shaped two-site block, compiled; ``None`` if not applicable.

    The kernel applies to any geometry's block of the chain shape: index
    order (at most one virtual index, physical index of variable ``c``,
    physical index of variable ``c + 1``, at most one virtual index), float64,
    and the environments of exactly those virtual indices. Applicability is
    read off the block, never off the geometry's name.

    Same result as normalising the block and calling
    :func:`tnborn.training.sweep.block_gradient_steps` on the design matrix
    of :func:`tnborn.training.sweep._design` (to rounding).

    Parameters
    ----------
    block : TwoSiteBlock
        From ``model.merge``.
    envs : dict
        Virtual index -> message, from ``EnvironmentCache.block_environments``.
    x : torch.Tensor
        ``(n, N)`` int64 configurations of the cache.
    rows : torch.Tensor or None
        The steps' sample rows, concatenated (``None``: every step uses all ``n``).
    batches : list of slice
        Each step's range in ``rows`` (or in ``range(n)``).
    lr : float
        Learning rate.

    Returns
    -------
    torch.Tensor or None
        The new block, same shape and index order as ``block.data``; ``None``
        when the kernel does not apply or the result is zero or non-finite
        (the plain path then runs and raises its precise error).
    """
    if not batches:
        return None
    inds = list(block.inds)
    phys = [i for i, ix in enumerate(inds) if ix in block.physical]
    if len(phys) != 2 or phys[1] != phys[0] + 1:
        return None
    col = block.physical[inds[phys[0]]]
    if block.physical[inds[phys[1]]] != col + 1:
        return None
    before, after = inds[: phys[0]], inds[phys[1] + 1:]
    if len(before) > 1 or len(after) > 1 or set(before + after) != set(envs):
        return None
    data = block.data
    d = data.shape[phys[0]]
    n = x.shape[0]
    left = envs[before[0]][0] if before else None
    right = envs[after[0]][0] if after else None
    dl = left.shape[1] if left is not None else 1
    dr = right.shape[1] if right is not None else 1
    total = n if rows is None else rows.shape[0]
    bounds = [sl.indices(total) for sl in batches]
    if any(step != 1 for _, _, step in bounds):
        return None
    work = max(stop - start for start, stop, _ in bounds) * dl * dr
    tensors = (data,) + tuple(t for t in (left, right) if t is not None)
    kern = _use(work, tensors)
    if kern is None:
        return None
    ones = None
    if left is None or right is None:
        ones = torch.ones((n, 1), dtype=data.dtype)
    lv = _array(left if left is not None else ones)
    rv = _array(right if right is not None else ones)
    r = np.arange(n, dtype=np.int64) if rows is None else _array(rows.to(torch.int64))
    starts = np.array([b[0] for b in bounds], dtype=np.int64)
    stops = np.array([b[1] for b in bounds], dtype=np.int64)
    m0 = np.ascontiguousarray(_array(data).reshape(dl, d, d, dr))
    out = kern.block_steps(m0, np.ascontiguousarray(lv), np.ascontiguousarray(rv), _array(x).T, col,
                           np.ascontiguousarray(r), starts, stops, float(lr))
    if not (np.isfinite(out).all() and out.any()):
        return None
    return torch.from_numpy(out.reshape(data.shape))


def mps_site_message(a: torch.Tensor, vec: torch.Tensor, log: torch.Tensor, x: torch.Tensor,
                     col: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """One chain site's environment message, compiled; ``None`` if not applicable.

    Same result as ``normalise_rows(contract_select(vec, a, x[:, col]), log)``
    of :mod:`tnborn.geometries.mps.chain` (to rounding).

    Parameters
    ----------
    a : torch.Tensor
        ``(D_in, d, D_out)`` site array (any strides).
    vec, log : torch.Tensor
        ``(n, D_in)`` incoming vectors and ``(n,)`` log-scales.
    x : torch.Tensor
        ``(n, N)`` int64 configurations.
    col : int
        The site's variable.

    Returns
    -------
    (torch.Tensor, torch.Tensor) or None
        Rescaled vectors and log-scales, or ``None``.

    Raises
    ------
    ValueError
        Where it applies, for shapes that do not fit, a column outside ``x``
        or a value outside ``[0, d)`` (the kernel reads by address).
    """
    work = vec.shape[0] * a.shape[0] * a.shape[2]
    kern = _use(work, (a, vec))
    if kern is None or x.device.type != "cpu" or log.device.type != "cpu":
        return None
    n = vec.shape[0]
    if (a.dim() != 3 or vec.dim() != 2 or vec.shape[1] != a.shape[0] or tuple(log.shape) != (n,)
            or x.dim() != 2 or x.shape[0] != n or not 0 <= int(col) < x.shape[1]):  # (values: in the kernel)
        raise ValueError(f"chain kernel input: expected a (Din, d, Dout) site, (n, Din) vectors, (n,) log-scales "
                         f"and (n, N) values in [0, d) with 0 <= col < N; got {tuple(a.shape)}, {tuple(vec.shape)}, "
                         f"{tuple(log.shape)}, {tuple(x.shape)}, col={col}")
    y, lo = kern.site_message(np.ascontiguousarray(_array(vec)), _array(log),
                              np.ascontiguousarray(_array(a)), _array(x), int(col))
    return torch.from_numpy(y), torch.from_numpy(lo)


def _check_chain(sites: list[torch.Tensor], first: int, last: int | None = None) -> None:
    """Refuse site arrays that do not form a chain (``ValueError``): the kernels read them by address.

    Every site is ``(Dl, d, Dr)`` with the same ``d``, ``Dr`` of a site is ``Dl`` of the next, the
    first site's ``Dl`` is ``first`` and (unless None) the last site's ``Dr`` is ``last``.
    """
    shapes = [tuple(a.shape) for a in sites]
    ok = all(len(sh) == 3 for sh in shapes) and shapes[0][0] == first and last in (None, shapes[-1][2])
    ok = ok and all(sh[1] == shapes[0][1] for sh in shapes) and all(
        a[2] == b[0] for a, b in zip(shapes[:-1], shapes[1:]))
    if not ok:
        got = shapes if len(shapes) <= 6 else shapes[:3] + ["..."] + shapes[-2:]
        raise ValueError(f"chain kernel input: expected (Dl, d, Dr) sites with matching bonds, Dl = {first} "
                         f"at the first site" + ("" if last is None else f" and Dr = {last} at the last")
                         + f", got shapes {got}")


def chain_log_amplitude(sites: list[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``log|psi(x)|`` and the sign of a chain's batch in one compiled call; ``None`` if not applicable.

    The same result as :func:`tnborn.geometries.mps.chain.log_amplitude_chain`
    to rounding (the log-scales are summed in float64, then cast to the sites'
    dtype). It applies to real float64/float32 CPU sites without gradients,
    up to :data:`LOG_AMPLITUDE_MAX_WORK` ``Dl x Dr`` at the largest site in
    ``"auto"`` mode (the per-row cost; rows add linearly on both paths).

    Parameters
    ----------
    sites : list of torch.Tensor
        ``(D_left, d, D_right)`` site arrays, ``D_left = 1`` at the first site
        and ``D_right = 1`` at the last.
    x : torch.Tensor
        ``(B, N)`` int64 configurations, values in ``[0, d)``.

    Returns
    -------
    (torch.Tensor, torch.Tensor) or None
        ``log|psi|`` (``-inf`` where ``psi = 0``) and the sign (``0`` there), or ``None``.

    Raises
    ------
    ValueError
        Where it applies, for sites that do not form a chain or values the
        kernel would read out of bounds (it reads by address).
    """
    if not sites or x.device.type != "cpu" or x.dtype != torch.int64 or x.shape[0] == 0:
        return None
    kern = _use(max(a.shape[0] * a.shape[2] for a in sites), tuple(sites), LOG_AMPLITUDE_MAX_WORK)
    if kern is None:
        return None
    _check_chain(sites, 1, 1)
    if x.dim() != 2 or x.shape[1] != len(sites) or bool(((x < 0) | (x >= sites[0].shape[1])).any()):
        raise ValueError(f"chain kernel input: expected ({x.shape[0]}, {len(sites)}) values in "
                         f"[0, {sites[0].shape[1]}), got shape {tuple(x.shape)}")
    held, table = _address_table(sites, 3, sites[0].dtype)
    mant, log = kern.chain_log_amplitude(table, np.ascontiguousarray(x.numpy().T), _array(held[0]))
    mant, log = torch.from_numpy(mant), torch.from_numpy(log)
    dead = torch.isneginf(log) | torch.isnan(mant) | (mant == 0)
    log_abs = torch.where(dead, -np.inf, log + torch.log(mant.abs()))
    sign = torch.where(dead, torch.zeros_like(mant), torch.sign(mant))
    return log_abs.to(sites[0].dtype), sign


def zipper_binary(sites: list[torch.Tensor], m: torch.Tensor, xk: torch.Tensor, free: torch.Tensor | None,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`tnborn.geometries.mps.chain.zipper_binary` in one compiled call; ``None`` if not applicable.

    The uniforms are drawn from ``gen`` up front, one ``(B,)`` row per site:
    the numbers the plain path draws one site at a time (the CPU generator's
    stream is the same). The draws agree with the plain path's except where a
    uniform falls within rounding of a decision boundary. Where the kernel
    meets a zero or non-finite weight, ``gen`` is put back and ``None``
    returned, so that the plain path raises its precise error. Applies to
    real float64/float32 CPU sites up to :data:`LOG_AMPLITUDE_MAX_WORK`
    ``Dl x Dr`` (``"auto"``) and a CPU generator.

    Parameters
    ----------
    sites : list of torch.Tensor
        ``(D_left, 2, D_right)`` arrays of the sites to sample, in order.
    m : torch.Tensor
        ``(B, D_left)`` contraction of the part before them.
    xk : torch.Tensor
        ``(B, len(sites))`` int64 values used where ``free`` is False.
    free : torch.Tensor or None
        ``(B, len(sites))`` bool rows to draw per site; ``None``: all.
    gen : torch.Generator
        Source of the uniforms.

    Returns
    -------
    (torch.Tensor, torch.Tensor) or None
        ``(B, len(sites))`` int64 values and ``(B,)`` float64 log-probabilities, or ``None``.

    Raises
    ------
    ValueError
        Where it applies, for sites that do not form a chain from ``m``, a
        mask of another shape, or known values outside ``{0, 1}``.
    """
    if not sites or m.shape[0] == 0 or gen.device.type != "cpu" or any(a.shape[1] != 2 for a in sites):
        return None
    kern = _use(max(a.shape[0] * a.shape[2] for a in sites), (*sites, m), LOG_AMPLITUDE_MAX_WORK)
    if kern is None or xk.device.type != "cpu":
        return None
    _check_chain(sites, m.shape[1])
    if free is not None and (free.shape != xk.shape or free.dtype != torch.bool):
        raise ValueError(f"chain kernel input: expected a bool mask of shape {tuple(xk.shape)}, got "
                         f"{free.dtype} {tuple(free.shape)}")
    fixed = xk if free is None else xk[~free]
    if xk.shape != (m.shape[0], len(sites)) or (free is not None and bool(((fixed < 0) | (fixed > 1)).any())):
        raise ValueError(f"chain kernel input: expected ({m.shape[0]}, {len(sites)}) known values in [0, 2), "
                         f"got shape {tuple(xk.shape)}")
    held, table = _address_table(sites, 3, m.dtype)
    state = gen.get_state()
    uniforms = torch.rand(len(sites), m.shape[0], dtype=torch.float64, generator=gen)
    flags = np.zeros((0, 0), dtype=np.bool_) if free is None else np.ascontiguousarray(free.numpy())
    tiny = float(np.sqrt(torch.finfo(m.dtype).tiny))
    values, logp, status = kern.zipper_binary(table, np.ascontiguousarray(_array(m)),
                                              np.ascontiguousarray(xk.to(torch.int64).numpy()), flags,
                                              free is not None, uniforms.numpy(), tiny)
    if status:
        gen.set_state(state)
        return None
    return torch.from_numpy(values), torch.from_numpy(logp)


#: Largest ``rows * cols`` of a block that :func:`split_matrix` decomposes in
#: ``"auto"`` mode: the saving is the per-call overhead, which matters for small
#: blocks; for large ones torch's LAPACK (MKL in the CPU wheels) may be faster than
#: the one numba links (measured: 200 x 200 blocks of the full-batch bond-100 loop
#: 7 % slower through numba, benchmarks/results/kernels_fullbatch.json).
SPLIT_MAX_SIZE = 128 * 128


def split_matrix(a: torch.Tensor, cutoff: float, max_bond: int | None, min_bond: int, s_left: bool,
                 method: str):
    """Truncated SVD split of a real CPU block in one compiled call; ``None`` if not applicable.

    The decomposition of LAPACK's ``gesdd`` (its steps ``gebrd`` and
    ``bdsdc`` called directly, then only the kept singular vectors transformed
    back, by the kernel's own reflector loops in place of ``ormbr``; the sign
    of a singular pair may differ from torch's), truncation rule
    (:func:`tnborn.primitives.truncation_rank`) and absorption of the kept
    singular values (unit 2-norm) as ``MPSBornMachine.split``'s plain path,
    which runs instead (and raises the precise errors) whenever this returns
    ``None``: ``method`` other than ``"svd"``, complex, CUDA, a failed or
    non-finite decomposition.

    Parameters
    ----------
    a : torch.Tensor
        ``(m, n)`` block.
    cutoff, max_bond, min_bond
        As in :func:`tnborn.primitives.truncation_rank`.
    s_left : bool
        Whether the singular values go to the left half.
    method : str
        The split method asked for.

    Returns
    -------
    tuple or None
        ``(left (m, keep), right (keep, n), s (all singular values), keep,
        max_discarded, discarded_weight)``: tensors, an int and the two floats
        of :func:`tnborn.primitives.truncation_rank`'s record.
    """
    if method != "svd":
        return None
    kern = _use(a.shape[0] * a.shape[1], (a,), limit=SPLIT_MAX_SIZE)
    if kern is None:
        return None
    stats = np.zeros(2)
    status, left, right, s, keep = kern.split_block(
        np.ascontiguousarray(_array(a)), float(cutoff), int(max_bond or 0), int(min_bond), bool(s_left), stats)
    if status != 0:  # (non-finite, zero, badly scaled, or LAPACK did not converge)
        return None
    return (torch.from_numpy(left), torch.from_numpy(right), torch.from_numpy(s), int(keep),
            float(stats[0]), float(stats[1]))


@dataclass
class ChainRun:
    """What :func:`chain_updates` did: the updates completed, their results, why it stopped.

    Attributes
    ----------
    done : int
        Number of updates completed (each one whole).
    status : str
        ``"ok"`` (all done), ``"gradient"`` (the steps of update ``done`` gave a
        zero or non-finite block), ``"svd"`` (its split failed), or ``"limit"``
        (its work is above the kernel's limits). The update at ``done`` changed
        nothing: the caller runs it on its plain path.
    sites : dict
        Site -> new ``(D_l, d, D_r)`` array, for the sites the completed updates wrote.
    messages : list of (torch.Tensor, torch.Tensor)
        The outgoing message of each completed update (vectors, log-scales).
    info : numpy.ndarray
        ``(done, 3)``: kept dimension, largest discarded singular value over the
        largest, discarded weight.
    """

    done: int
    status: str
    sites: dict
    messages: list
    info: np.ndarray


_STATUS = {0: "ok", 1: "gradient", 2: "svd", 3: "svd", 4: "limit"}


def chain_update_fits(batch: int, dl: int, dr: int, phys_dim: int) -> bool:
    """Whether one update of :func:`chain_updates` is within the kernel's limits under the current choice.

    Parameters
    ----------
    batch : int
        Rows of one gradient step.
    dl, dr : int
        Outer bond dimensions of the two-site block.
    phys_dim : int
        Physical dimension.

    Returns
    -------
    bool
        False in ``"torch"`` mode, without numba, or (``"auto"``) above
        :data:`NUMBA_MAX_WORK` or :data:`SPLIT_MAX_SIZE`.
    """
    choice = get_kernels()
    if choice == "torch" or _kernels() is None:
        return False
    if choice == "auto":
        return batch * dl * dr <= NUMBA_MAX_WORK and dl * phys_dim * phys_dim * dr <= SPLIT_MAX_SIZE
    return True


def chain_updates(sites: dict[int, torch.Tensor], statics: list, moving: tuple[torch.Tensor, torch.Tensor],
                  x_columns: torch.Tensor, first_bond: int, leftward: bool, rows: torch.Tensor | None, batch: int,
                  steps: int, lr: float, cutoff: float, max_bond: int | None, min_bond: int) -> ChainRun:
    """Consecutive two-site updates along a chain in one compiled call (plain rule, SVD split).

    Update ``i`` is on bond ``k = first_bond -+ i`` (sites ``k``, ``k + 1``;
    ``leftward``: the centre, which starts on one of the first bond's sites,
    moves to ``k``; else to ``k + 1``). Each is the sweep trainer's update, the
    compiled equivalent of merge, :func:`two_site_steps`, :func:`split_matrix`
    (singular values to the new centre) and :func:`mps_site_message` for the
    site left behind; results agree with the plain path to rounding.

    Parameters
    ----------
    sites : dict
        Site -> ``(D_l, d, D_r)`` CPU array, for every site the updates touch
        (not modified).
    statics : list of (torch.Tensor, torch.Tensor)
        Per update, the environment of the side that does not move: into site
        ``k`` from the left (``leftward``) or into ``k + 1`` from the right.
        Only the vectors are used.
    moving : (torch.Tensor, torch.Tensor)
        Vectors and log-scales of the environment into the first bond from the side the centre comes from.
    x_columns : torch.Tensor
        ``(N, n)`` int64 configurations, one contiguous row per variable
        (:attr:`EnvironmentCache.x_columns <tnborn.environments.EnvironmentCache.x_columns>`).
    first_bond : int
        Bond of the first update.
    leftward : bool
        Direction.
    rows : torch.Tensor or None
        ``None``: every step uses all ``n`` rows (``batch == n``); else update
        ``i``'s step ``j`` uses ``rows[(i * steps + j) * batch:][:batch]``.
    batch, steps : int
        Rows per step and steps per update.
    lr, cutoff, max_bond, min_bond
        As in :class:`~tnborn.training.settings.SweepSettings`.

    Returns
    -------
    ChainRun
        The completed updates.
    """
    from numba import typed, types

    kern = _kernels()
    nbonds = len(statics)
    lo = min(sites)
    hi = max(sites)
    real = types.float64 if sites[lo].dtype == torch.float64 else types.float32
    # the inputs go by address (the kernel views them): these keep them alive and C-contiguous
    site_arrays, site_table = _address_table([sites[k] for k in range(lo, hi + 1)], 3, sites[lo].dtype)
    static_arrays, static_table = _address_table([vec for vec, _ in statics], 2, sites[lo].dtype)
    site_list = typed.List.empty_list(types.Array(real, 3, "C"))
    out_vecs = typed.List.empty_list(types.Array(real, 2, "C"))
    n = x_columns.shape[1]
    same = rows is None
    r = np.arange(n, dtype=np.int64) if same else np.ascontiguousarray(_array(rows.to(torch.int64)))
    info = np.zeros((nbonds, 4))
    scales = np.empty((nbonds, n))
    progress = np.zeros(1, dtype=np.int64)
    choice = get_kernels()
    max_work = NUMBA_MAX_WORK if choice == "auto" else np.iinfo(np.int64).max
    max_split = SPLIT_MAX_SIZE if choice == "auto" else np.iinfo(np.int64).max
    mvec, mlog = moving
    _address_table([mvec], 2, sites[lo].dtype)  # (the kernel reads every input as the moving vectors' dtype)
    code = kern.chain_sweep(site_table, lo, static_table, np.ascontiguousarray(_array(mvec)),
                            np.ascontiguousarray(_array(x_columns)),
                            int(first_bond), nbonds, bool(leftward), r, same, int(batch), int(steps),
                            float(lr), float(cutoff), int(max_bond or 0), int(min_bond), int(max_work),
                            int(max_split), site_list, out_vecs, scales, info, progress)
    del site_arrays, static_arrays  # (alive until here)
    done = int(progress[0])
    touched = range(first_bond - done + 1, first_bond + 2) if leftward else range(first_bond, first_bond + done + 1)
    new_sites = {k: torch.from_numpy(a) for k, a in
                 zip(touched, kern.python_list(site_list, touched[0] - lo, touched[-1] + 1 - lo))} if done else {}
    # each message's log-scales: the incoming ones plus the log of each scale, summed
    # in the order of the per-update path (log_k = log_{k-1} + log(scale_k))
    logs = torch.empty((done + 1, n), dtype=mlog.dtype)
    logs[0] = mlog.reshape(-1).cpu()
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf and NaN stay, as in torch
        np.log(scales[:done], out=logs[1:].numpy(), casting="same_kind")  # (numpy's log: the faster one here)
    logs = logs.cumsum_(0)[1:].unbind(0)
    messages = [(torch.from_numpy(v), logs[i]) for i, v in enumerate(kern.python_list(out_vecs, 0, done))] if done \
        else []
    return ChainRun(done, _STATUS[int(code)], new_sites, messages, info[:done, :3])
