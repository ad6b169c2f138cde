"""numba kernels of the MPS two-site update (private; compiled on first use).

Every function here computes exactly what the plain torch path computes, with
the same operations in a different grouping:

- :func:`block_steps` takes the gradient steps of
  :func:`tnborn.training.sweep.block_gradient_steps` on a two-site block
  ``M[a, s, t, c]`` of shape ``(Dl, d, d, Dr)``. The plain path writes the
  design matrix ``F(v) = onehot(v_k, v_k+1) (x) L(v)`` and multiplies it with
  ``M`` (``d**2 - 1`` of every ``d**2`` entries of ``F`` are zeros); here each
  sample touches only the slice ``M[:, v_k, v_k+1, :]``:
  ``psi = sum_c (sum_a L_a M[a, s, t, c]) R_c`` and
  ``G[a, s, t, :] += L_a * (R / psi)``, then ``M <- (1 - 2 lr) M + (2 lr / B) G``
  and ``M <- M / ||M||`` (the plain path's formula, term by term).
- :func:`site_message` is the environment update of one site,
  ``y[b] = vec[b] @ A[:, x_b, :]`` followed by the per-row rescaling of
  :func:`tnborn.geometries.mps.chain.normalise_rows`.
- :func:`split_block` is the truncated SVD split: LAPACK's ``gesdd`` steps
  called directly (:func:`_bidiagonal_svd`, :func:`_kept_vectors`), only the
  kept vectors transformed back.
- :func:`chain_sweep` runs whole updates one after another (merge,
  :func:`block_steps`, :func:`split_block`, the message of the site left behind).
- :func:`chain_log_amplitude` is a chain's ``log|psi(x)|``: the messages of
  every site, left to right (those of the environments), in one call.
- :func:`zipper_binary` samples the sites of a chain with a right-canonical
  remainder, the draws of the plain path's zipper with its uniforms given.

All kernels live in this one module on purpose: numba's cache of a compiled
function is invalidated by edits to its own file, not to a callee's file (nor
to an intrinsic's, whose code is compiled into each caller); a callee moved to
another module was tested stale.

The inner loops run over the last (contiguous) axis. Dot products and row
maxima go through :func:`_dot` and :func:`_absmax_finite`, explicit eight-lane
vector loops emitted as LLVM IR (numba's scalar code for them did not
vectorise); a dot product's order is fixed by that code (term ``i`` to lane
``i % 8``, lanes added pairwise): it agrees with a left-to-right sum to
rounding, like any BLAS sum, and with itself bit for bit on every code path
and vector width. Rows are gathered and scattered with explicit loops (numba's
slice assignment costs several times more per row), divisions by a common
scale are multiplications by its reciprocal, and products write into buffers
allocated once per call. A message's rows are rescaled by the reciprocal of
their maximum too (a subnormal maximum divides); the one message the plain
path computes with torch's division, out of a chain's end site (``Din = 1``,
:func:`tnborn.geometries.mps.chain.normalise_rows`), is divided here as well,
so that every message is the same bits whichever path computed it (a resumed
run rebuilds its cache on the plain path and must continue exactly like the
run it resumes).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import get_cython_function_address, intrinsic

__all__: list[str] = []  # private module

#: Largest ``Din * Dout`` of a site whose message :func:`site_message` computes for
#: every physical value in one product (measured on the 2-core AMD EPYC: 1.3-1.7x
#: faster than grouping rows by value up to bond 13, 1.2x slower at bond 30).
SMALL_MESSAGE = 256


#: Floating-point flags of :func:`_sum`, whose result is only tested for
#: finiteness: reassociation only, no assumptions about NaN or infinity, so it vectorises.
_REDUCE = {"reassoc", "nsz"}


#: Lanes of the explicit vector loops (:func:`_lane_loop`).
_LANES = 8


def _contiguous_1d(*tys) -> bool:
    """Whether the numba types are C-contiguous 1-D arrays of one real dtype."""
    return all(isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C" for t in tys) and \
        all(t.dtype == tys[0].dtype for t in tys) and tys[0].dtype in (types.float64, types.float32)


def _lane_loop(builder, arrays, elt, body):
    """Emit ``body(vectors, put)`` over consecutive 8-element chunks of the 1-D arrays, in order.

    The last, partial chunk is loaded under a mask (no access past the end),
    its missing lanes zero. ``put(k, vector)`` writes a chunk back into
    ``arrays[k]`` (under the same mask).
    """
    n = builder.extract_value(arrays[0].shape, 0)
    vty = ir.VectorType(elt, _LANES)
    size = 4 if elt != ir.DoubleType() else 8
    i32 = ir.IntType(32)
    lanes = ir.Constant(n.type, _LANES)
    m = builder.sub(n, builder.srem(n, lanes))

    def chunk(a, i):
        return builder.bitcast(builder.gep(a.data, [i]), vty.as_pointer())

    with cgutils.for_range_slice(builder, ir.Constant(n.type, 0), m, lanes) as (i, _):
        body([builder.load(chunk(a, i), align=size) for a in arrays],
             lambda k, v, i=i: builder.store(v, chunk(arrays[k], i), align=size))
    rem = builder.sub(n, m)
    with builder.if_then(builder.icmp_signed(">", rem, ir.Constant(n.type, 0))):
        i1v = ir.VectorType(ir.IntType(1), _LANES)
        idx = ir.Constant(ir.VectorType(n.type, _LANES), list(range(_LANES)))
        mask = builder.icmp_signed("<", idx, _splat(builder, rem, ir.VectorType(n.type, _LANES)))
        sfx = "f32" if size == 4 else "f64"
        load = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty.as_pointer(), i32, i1v, vty]),
                                              f"llvm.masked.load.v8{sfx}.p0")
        store = cgutils.get_or_insert_function(builder.module,
                                               ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), i32, i1v]),
                                               f"llvm.masked.store.v8{sfx}.p0")
        zero = ir.Constant(vty, [0.0] * _LANES)
        body([builder.call(load, [chunk(a, m), ir.Constant(i32, size), mask, zero]) for a in arrays],
             lambda k, v: builder.call(store, [v, chunk(arrays[k], m), ir.Constant(i32, size), mask]))


def _splat(builder, value, vty):
    """A vector of ``vty`` with every lane ``value``."""
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), _LANES), [0] * _LANES))


def _pairwise_lanes(builder, vacc):
    """``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))`` of an eight-lane vector (its element type)."""
    s = [builder.extract_element(vacc, ir.Constant(ir.IntType(32), k)) for k in range(_LANES)]
    left = builder.fadd(builder.fadd(s[0], s[1]), builder.fadd(s[2], s[3]))
    right = builder.fadd(builder.fadd(s[4], s[5]), builder.fadd(s[6], s[7]))
    return builder.fadd(left, right)


@intrinsic
def _dot(typingctx, x, y):
    """``sum_i x[i] y[i]`` of two C-contiguous 1-D arrays, in eight lanes (float64 result).

    Term ``i`` goes to lane ``i % 8`` (each lane sums its terms in order;
    float32 products are summed in float64); the lanes are then added
    pairwise, ``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``. The order
    is that of the emitted vector code (a multiplication, then an addition: no
    fused multiply-add), not left to the compiler: the result is the same bits
    wherever it is inlined and on any vector width, so two code paths that call
    it agree exactly.
    """
    if not _contiguous_1d(x, y):
        return None

    def codegen(context, builder, signature, args):
        xt = signature.args[0]
        arrays = [context.make_array(t)(context, builder, v) for t, v in zip(signature.args, args)]
        elt = context.get_data_type(xt.dtype)
        dbl = ir.DoubleType()
        dty = ir.VectorType(dbl, _LANES)
        acc = cgutils.alloca_once_value(builder, ir.Constant(dty, [0.0] * _LANES))

        def body(v, put):
            prod = builder.fmul(v[0], v[1])
            if elt != dbl:
                prod = builder.fpext(prod, dty)
            builder.store(builder.fadd(builder.load(acc), prod), acc)

        _lane_loop(builder, arrays, elt, body)
        return _pairwise_lanes(builder, builder.load(acc))

    return types.float64(x, y), codegen



@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_REDUCE)
def _sum(x):  # pragma: no cover - compiled
    """``sum_i x[i]`` of a 1-D array, in any order (only tested for finiteness, or discarded)."""
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i]
    return s


@intrinsic
def _absmax_finite(typingctx, x):
    """``max_i |x[i]|`` of a C-contiguous 1-D array known to hold only finite values (0 if empty).

    Eight lanes at a time (a maximum of finite values does not depend on the order).
    """
    if not _contiguous_1d(x):
        return None

    def codegen(context, builder, signature, args):
        xt = signature.args[0]
        arrays = [context.make_array(xt)(context, builder, args[0])]
        elt = context.get_data_type(xt.dtype)
        sfx = "f32" if elt != ir.DoubleType() else "f64"
        vty = ir.VectorType(elt, _LANES)
        mod = builder.module
        vabs = cgutils.get_or_insert_function(mod, ir.FunctionType(vty, [vty]), f"llvm.fabs.v8{sfx}")
        vmax = cgutils.get_or_insert_function(mod, ir.FunctionType(vty, [vty, vty]), f"llvm.maxnum.v8{sfx}")
        acc = cgutils.alloca_once_value(builder, ir.Constant(vty, [0.0] * _LANES))

        def body(v, put):
            builder.store(builder.call(vmax, [builder.load(acc), builder.call(vabs, [v[0]])]), acc)

        _lane_loop(builder, arrays, elt, body)
        vacc = builder.load(acc)
        red = cgutils.get_or_insert_function(mod, ir.FunctionType(elt, [vty]), f"llvm.vector.reduce.fmax.v8{sfx}")
        out = builder.call(red, [vacc])
        return builder.fpext(out, ir.DoubleType()) if elt != ir.DoubleType() else out

    return types.float64(x), codegen


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _all_finite(a):  # pragma: no cover - compiled
    """Whether every entry of the C-contiguous ``a`` is finite (:func:`_differences_vanish`)."""
    return _differences_vanish(a.reshape(-1))


@intrinsic
def _differences_vanish(typingctx, x):
    """Whether ``sum_i (x[i] - x[i])`` is 0 for a C-contiguous 1-D real array: all entries finite.

    ``v - v`` is 0 for a finite ``v`` and NaN otherwise, so the sum is 0 exactly
    when every entry is finite; it cannot overflow. Emitted without fast-math
    flags, which would let the compiler fold ``v - v`` to 0.
    """
    if not _contiguous_1d(x):
        return None

    def codegen(context, builder, signature, args):
        xt = signature.args[0]
        elt = context.get_data_type(xt.dtype)
        vty = ir.VectorType(elt, _LANES)
        acc = cgutils.alloca_once_value(builder, ir.Constant(vty, [0.0] * _LANES))

        def body(v, put):
            builder.store(builder.fadd(builder.load(acc), builder.fsub(v[0], v[0])), acc)

        _lane_loop(builder, [context.make_array(xt)(context, builder, args[0])], elt, body)
        total = _pairwise_lanes(builder, builder.load(acc))
        return builder.fcmp_ordered("==", total, ir.Constant(elt, 0.0))

    return types.boolean(x), codegen


@intrinsic
def _update_sumsq(typingctx, m, g, beta, alpha):
    """``m <- beta m + alpha g`` in place (in float64, stored in ``m``'s dtype); returns ``_dot(m, m)``.

    One pass instead of two, with the same values and the same sum (lanes,
    order and float32 rounding as :func:`_dot` of the stored ``m``).
    """
    if not (_contiguous_1d(m, g) and isinstance(beta, types.Float) and isinstance(alpha, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        mt, gt, bt, at = signature.args
        arrays = [context.make_array(t)(context, builder, v) for t, v in zip((mt, gt), args[:2])]
        elt = context.get_data_type(mt.dtype)
        dbl = ir.DoubleType()
        single = elt != dbl
        dty = ir.VectorType(dbl, _LANES)
        vb = _splat(builder, context.cast(builder, args[2], bt, types.float64), dty)
        va = _splat(builder, context.cast(builder, args[3], at, types.float64), dty)
        acc = cgutils.alloca_once_value(builder, ir.Constant(dty, [0.0] * _LANES))

        def body(v, put):
            vm, vg = (builder.fpext(x, dty) for x in v) if single else v
            new = builder.fadd(builder.fmul(vb, vm), builder.fmul(va, vg))
            if single:
                new = builder.fptrunc(new, ir.VectorType(elt, _LANES))
            put(0, new)
            sq = builder.fmul(new, new)
            builder.store(builder.fadd(builder.load(acc), builder.fpext(sq, dty) if single else sq), acc)

        _lane_loop(builder, arrays, elt, body)
        return _pairwise_lanes(builder, builder.load(acc))

    return types.float64(m, g, beta, alpha), codegen


@numba.njit(cache=True, nogil=True, error_model="numpy")
def probe(x):  # pragma: no cover - compiled
    """Every explicit-IR loop of this module once, on ``x = 1, 2, ..., 10`` (1-D, C-contiguous).

    Returns ``(x . x, max|x|, all finite, |x|^2 after the fused update)``, i.e.
    ``(385, 10, True, 385)``. :func:`tnborn.kernels.available` runs it before any
    kernel is used: a numba whose LLVM cannot lower these loops (intrinsic names
    differ across LLVM versions) fails here, and the plain path runs instead.
    """
    y = x.copy()
    _prefetch_row(x.reshape(1, -1), 0)
    return _dot(x, y), _absmax_finite(x), _differences_vanish(x), _update_sumsq(y, x, 0.5, 0.5)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _step_normalised(mf, gf, beta, alpha):  # pragma: no cover - compiled
    """``M <- beta M + alpha G`` then ``M <- M / ||M||``, in place on the flat arrays."""
    inv = 1.0 / math.sqrt(_update_sumsq(mf, gf, beta, alpha))
    for i in range(mf.shape[0]):
        mf[i] *= inv


@numba.njit(cache=True, nogil=True, error_model="numpy")
def block_steps(m0, left, right, xt, col, rows, starts, stops, lr):  # pragma: no cover - compiled
    """Normalise ``m0`` and take one gradient step per ``rows[starts[i]:stops[i]]``.

    The rows of a step are grouped by their pixel pair ``(s, t)`` (the groups do
    not depend on ``M``; steps on the same rows group them once) and gathered into
    buffers ``L_g``, ``R_g``; a step is then, per pair, the products
    ``T = L_g @ M[:, s, t, :]``, ``psi = rowsum(T * R_g)`` and
    ``G[:, s, t, :] = L_g^T @ (R_g / psi)`` (BLAS), and the update
    ``M <- (1 - 2 lr) M + (2 lr / B) G``, ``M <- M / ||M||``.

    Parameters
    ----------
    m0 : ndarray
        ``(Dl, d, d, Dr)`` block (not modified).
    left, right : ndarray
        ``(n, Dl)`` and ``(n, Dr)`` environment vectors of all cached samples.
    xt : ndarray
        ``(N, n)`` int64 configurations, one row per variable (any strides).
    col : int
        The block's first variable (``k``; the second is ``k + 1``).
    rows : ndarray
        int64 sample indices of all steps, concatenated.
    starts, stops : ndarray
        int64 bounds of each step's rows in ``rows``.
    lr : float
        Learning rate.

    Returns
    -------
    ndarray
        The new normalised block (a zero or non-finite result is the caller's to detect).
    """
    dl, d1, d2, dr = m0.shape
    npair = d1 * d2
    # internal layout (pair, Dl, Dr): every M[:, s, t, :] is a contiguous matrix
    m = np.empty((npair, dl, dr), dtype=m0.dtype)
    for a in range(dl):
        for s in range(d1):
            for t in range(d2):
                for c in range(dr):
                    m[s * d2 + t, a, c] = m0[a, s, t, c]
    mf = m.reshape(-1)
    inv = 1.0 / math.sqrt(_dot(mf, mf))
    for i in range(mf.shape[0]):
        mf[i] *= inv
    g = np.empty_like(m)
    nsteps = starts.shape[0]
    batch = 0
    for step in range(nsteps):
        batch = max(batch, stops[step] - starts[step])
    lg = np.empty((batch, dl), dtype=m.dtype)
    rg = np.empty((batch, dr), dtype=m.dtype)
    tg = np.empty((batch, dr), dtype=m.dtype)
    members = np.empty((npair, batch), dtype=np.int64)
    count = np.zeros(npair, dtype=np.int64)
    beta = 1.0 - 2.0 * lr
    for step in range(nsteps):
        lo, hi = starts[step], stops[step]
        if step == 0 or lo != starts[step - 1] or hi != stops[step - 1]:
            count[:] = 0
            for j in range(lo, hi):
                b = rows[j]
                p = xt[col, b] * d2 + xt[col + 1, b]
                members[p, count[p]] = b
                count[p] += 1
        for p in range(npair):
            k = count[p]
            if k == 0:
                g[p] = 0.0
                continue
            for j in range(k):
                b = members[p, j]
                for c in range(dl):
                    lg[j, c] = left[b, c]
                for c in range(dr):
                    rg[j, c] = right[b, c]
            lk = lg[:k]
            rk = rg[:k]
            t = tg[:k]
            np.dot(lk, m[p], t)
            for j in range(k):
                inv = 1.0 / _dot(t[j], rk[j])
                for c in range(dr):
                    rk[j, c] *= inv
            np.dot(lk.T, rk, g[p])
        _step_normalised(mf, g.reshape(-1), beta, 2.0 * lr / (hi - lo))
    out = np.empty_like(m0)
    for a in range(dl):
        for s in range(d1):
            for t in range(d2):
                for c in range(dr):
                    out[a, s, t, c] = m[s * d2 + t, a, c]
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def site_message(vec, log, a, x, col):  # pragma: no cover - compiled
    """``y[b] = vec[b] @ a[:, x[b, col], :]``, rows rescaled to unit max-norm.

    Rows are grouped by the value ``x[b, col]``: one gather, one BLAS product
    with ``a[:, s, :]`` and one scatter per value.

    Parameters
    ----------
    vec : ndarray
        ``(n, Din)`` incoming vectors.
    log : ndarray
        ``(n,)`` incoming log-scales.
    a : ndarray
        ``(Din, d, Dout)`` site array (C-contiguous).
    x : ndarray
        ``(n, N)`` int64 configurations.
    col : int
        The site's variable.

    Returns
    -------
    y, log_out : ndarray
        ``(n, Dout)`` rescaled vectors and ``(n,)`` log-scales (``-inf`` for a zero row).

    Raises
    ------
    ValueError
        If a value ``x[b, col]`` is outside ``[0, d)``.
    """
    vals = x[:, col]
    for b in range(vals.shape[0]):
        if vals[b] < 0 or vals[b] >= a.shape[1]:
            raise ValueError("chain kernel input: a value outside [0, d)")
    return _message_vals(vec, log, a, vals)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _message_vals(vec, log, a, vals):  # pragma: no cover - compiled
    """:func:`site_message` with the site's values ``vals`` (``(n,)``) given directly."""
    y, scale = _message_scaled(vec, a, vals, vec, np.empty(0, dtype=np.int64))
    lo = np.empty(vec.shape[0], dtype=log.dtype)
    for b in range(vec.shape[0]):
        lo[b] = log[b] + np.log(scale[b])  # log(0) = -inf; NaN stays NaN
    return y, lo


@numba.njit(cache=True, nogil=True, error_model="numpy")
def chain_log_amplitude(site_table, xt, like):  # pragma: no cover - compiled
    """``psi(x)`` of a chain as a mantissa and a log-scale, left to right, one message per site.

    Parameters
    ----------
    site_table : ndarray
        ``(N, 4)`` int64 rows ``(address, Dl, d, Dr)`` of the C-contiguous site
        arrays (of ``like``'s dtype; ``Dl = 1`` at the first site, ``Dr = 1`` at the last).
    xt : ndarray
        ``(N, B)`` int64 configurations, one row per site.
    like : ndarray
        Any array of the sites' dtype.

    Returns
    -------
    mantissa : ndarray
        ``(B,)`` ``psi / exp(log)``: ``+-1``, ``0`` for ``psi = 0``, NaN where a value was NaN.
    log : ndarray
        ``(B,)`` float64 sum of the log-scales (``-inf`` for ``psi = 0``).
    """
    n = site_table.shape[0]
    b = xt.shape[1]
    sites = [_table_site(site_table, k, like) for k in range(n)]
    first = sites[0]
    vec = np.empty((b, first.shape[2]), dtype=like.dtype)
    for r in range(b):
        vec[r] = first[0, xt[0, r]]
    log = np.zeros(b)
    none = np.empty(0, dtype=np.int64)
    for k in range(1, n):
        vec, scale = _message_scaled(vec, sites[k], xt[k], vec, none)
        for r in range(b):
            log[r] += np.log(scale[r])  # log(0) = -inf; NaN stays NaN
    return vec[:, 0].copy(), log


@numba.njit(cache=True, nogil=True, error_model="numpy")
def zipper_binary(site_table, m0, xk, free, has_free, uniforms, tiny):  # pragma: no cover - compiled
    """Exact sampling of consecutive ``d = 2`` sites with a right-canonical remainder, in one call.

    The draws of :func:`tnborn.geometries.mps.chain.zipper_binary` with its
    uniforms given: at site ``j`` the weight of value 0 is ``w = ||m A_0||^2``
    of the total ``tot`` (the previous site's chosen weight), row ``b`` takes 1
    iff ``uniforms[j, b] * tot >= w``, and ``m A_1`` is computed only for the
    rows that take 1. Rows are rescaled when a weight falls below ``tiny``.

    Parameters
    ----------
    site_table : ndarray
        ``(n, 4)`` int64 rows ``(address, Dl, 2, Dr)`` of C-contiguous site arrays of ``m0``'s dtype.
    m0 : ndarray
        ``(B, D)`` contraction of the part before the first site.
    xk : ndarray
        ``(B, n)`` int64 values used where ``free`` is False.
    free : ndarray
        ``(B, n)`` bool, rows to draw per site (read only if ``has_free``).
    has_free : bool
        Whether ``free`` applies (else every row is drawn).
    uniforms : ndarray
        ``(n, B)`` float64 uniforms, one per site and row.
    tiny : float
        Rescale the rows when the smallest weight is below it.

    Returns
    -------
    values : ndarray
        ``(B, n)`` int64.
    logp : ndarray
        ``(B,)`` float64 sum of the log-probabilities of the drawn values.
    status : int
        0: done; 1: a free row has zero weight at the first site; 2: a row
        reached zero or non-finite weight (the caller runs the plain path,
        which raises the precise error).
    """
    n = site_table.shape[0]
    b = m0.shape[0]
    values = np.empty((b, n), dtype=np.int64)
    logp = np.zeros(b)
    tot = np.empty(b)
    for r in range(b):
        tot[r] = _dot(m0[r], m0[r])
        if not tot[r] > 0 and (not has_free or free[r, 0]):
            return values, logp, 1
    m = m0
    w = np.empty(b)
    ones = np.empty(b, dtype=np.int64)
    for j in range(n):
        a = _table_site(site_table, j, m0)
        dl = a.shape[0]
        dr = a.shape[2]
        y = np.dot(m, np.ascontiguousarray(a[:, 0, :]))
        cnt = 0
        for r in range(b):
            wr = _dot(y[r], y[r])
            v = np.int64(uniforms[j, r] * tot[r] >= wr)
            if has_free and not free[r, j]:
                v = xk[r, j]
            values[r, j] = v
            w[r] = wr
            ones[cnt] = r
            cnt += v  # (no branch: the draws are unpredictable)
        if cnt:
            buf = np.empty((cnt, dl), dtype=m.dtype)
            for i in range(cnt):  # (explicit loops: numba's row assignment costs more)
                src = m[ones[i]]
                for c in range(dl):
                    buf[i, c] = src[c]
            res = np.dot(buf, np.ascontiguousarray(a[:, 1, :]))
            for i in range(cnt):
                dst = y[ones[i]]
                for c in range(dr):
                    dst[c] = res[i, c]
                w[ones[i]] = _dot(res[i], res[i])
        low = np.inf
        for r in range(b):
            if not w[r] < np.inf:  # inf or NaN
                return values, logp, 2
            if not has_free or free[r, j]:
                logp[r] += np.log(w[r] / tot[r])
            low = min(low, w[r])
        if low == 0.0:
            return values, logp, 2
        if low < tiny:
            for r in range(b):
                inv = 1.0 / np.sqrt(w[r])
                for c in range(dr):
                    y[r, c] *= inv
                tot[r] = 1.0
        else:
            tot[:] = w
        m = y
    return values, logp, 0


#: Shortest message row whose maximum :func:`_message_scaled` takes with the vector
#: loop of :func:`_absmax_finite` (measured on the 2-core AMD EPYC: scalar code is as fast
#: up to rows of 30, the vector loop 1.2x faster at 64 and 100).
_VECTOR_ROW = 48

#: Smallest normal float64: a row maximum below it is divided by (its reciprocal may overflow).
_TINY = float(np.finfo(np.float64).tiny)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _message_scaled(vec, a, vals, ahead, ahead_rows):  # pragma: no cover - compiled
    """``y[b] = vec[b] @ a[:, vals[b], :]`` rescaled to unit max-norm, and each row's scale.

    While it rescales, it asks the CPU to fetch the rows ``ahead_rows`` of the
    2-D array ``ahead`` into cache (the chain sweep: the next update's rows of
    its static environment, which its gradient steps gather; no effect on any value).

    Small sites (``Din * Dout <= SMALL_MESSAGE``) take one product with every
    value, ``vec @ a.reshape(Din, d * Dout)``, and pick each row's block:
    ``d`` times the flops, but no gather or scatter, which cost more there.
    Larger ones gather the rows of each value, take one product per value, and
    rescale each row of the product into its place while it is in cache.

    Returns
    -------
    y : ndarray
        ``(n, Dout)`` rows rescaled by their largest magnitude (a zero or NaN row unchanged).
    scale : ndarray
        ``(n,)`` float64 largest magnitudes (``0`` for a zero row, NaN where a row has NaN).
    """
    n, din = vec.shape
    d = a.shape[1]
    dout = a.shape[2]
    y = np.empty((n, dout), dtype=a.dtype)
    scales = np.empty(n)
    # Each row is divided by its largest magnitude: a multiplication by the reciprocal (within
    # one rounding of the quotient; the quotient's values for an infinite maximum: zeros, and NaN
    # for an infinite entry), a division for a subnormal maximum (whose reciprocal may overflow) and
    # for a message out of a chain's end site (din = 1: the plain path's normalise_rows divides);
    # a zero or NaN row stays as it is. The code is inline, twice: a call per row with array
    # arguments costs more than a short row (numba's reference counting).
    divide = din == 1
    nahead = ahead_rows.shape[0]
    if din * dout <= SMALL_MESSAGE:
        every = vec @ np.ascontiguousarray(a).reshape(din, d * dout)
        for b in range(n):
            if b < nahead:
                _prefetch_row(ahead, ahead_rows[b])
            src = every[b, vals[b] * dout:(vals[b] + 1) * dout]
            dst = y[b]
            scale = 0.0
            for c in range(dout):  # (short rows: scalar code, the copy and the maximum in one loop)
                v = src[c]
                dst[c] = v
                av = abs(v)
                if av > scale or av != av:  # NaN propagates like torch's amax
                    scale = av
            scales[b] = scale
            if scale >= _TINY and not divide:
                inv = 1.0 / scale
                for c in range(dout):
                    dst[c] *= inv
            elif scale > 0:
                for c in range(dout):
                    dst[c] /= scale
        return y, scales
    # larger sites: the rows of each value gathered, one product per value, and each row of the
    # product rescaled into its place while it is in cache
    idx = np.empty(n, dtype=np.int64)
    buf = np.empty((n, din), dtype=a.dtype)
    res = np.empty((n, dout), dtype=a.dtype)
    done = 0
    for s in range(d):
        cnt = 0
        for b in range(n):  # (no branch: the values are unpredictable)
            idx[cnt] = b
            cnt += vals[b] == s
        if cnt == 0:
            continue
        for j in range(cnt):
            bj = idx[j]
            for c in range(din):
                buf[j, c] = vec[bj, c]
        r = res[:cnt]
        np.dot(buf[:cnt], np.ascontiguousarray(a[:, s, :]), r)
        vector = dout >= _VECTOR_ROW and _all_finite(r)
        for j in range(cnt):
            if done < nahead:
                _prefetch_row(ahead, ahead_rows[done])
            done += 1
            src = r[j]
            dst = y[idx[j]]
            if vector:
                scale = _absmax_finite(src)
            else:
                scale = 0.0
                for c in range(dout):
                    av = abs(src[c])
                    if av > scale or av != av:  # NaN propagates like torch's amax
                        scale = av
            scales[idx[j]] = scale
            if scale >= _TINY and not divide:
                inv = 1.0 / scale
                for c in range(dout):
                    dst[c] = src[c] * inv
            elif scale > 0:
                for c in range(dout):
                    dst[c] = src[c] / scale
            else:
                for c in range(dout):
                    dst[c] = src[c]
    return y, scales


# ------------------------------------------------------------------ LAPACK
# The SVD split calls LAPACK's steps of ``gesdd`` itself (``gebrd``, ``bdsdc``),
# then transforms only the kept singular vectors back (``gesdd``'s ``ormbr`` step,
# here :func:`_reflect_columns`). The routines are scipy's (the LAPACK numba's own
# ``np.linalg`` uses); each process registers their addresses under fixed symbol names, which compiled code calls by
# name, so the compiled functions stay cacheable.
_LAPACK = ("dgebrd", "sgebrd", "dbdsdc", "sbdsdc")
for _name in _LAPACK:
    llvm.add_symbol("tnborn_lapack_" + _name, get_cython_function_address("scipy.linalg.cython_lapack", _name))


def _lapack(name: str):
    """A compiled call of the LAPACK routine ``name`` with a tuple of arrays (by address, Fortran style)."""
    symbol = "tnborn_lapack_" + name

    @intrinsic
    def call(typingctx, args):
        if not isinstance(args, types.BaseTuple) or not all(isinstance(t, types.Array) for t in args):
            return None

        def codegen(context, builder, signature, llargs):
            i8p = ir.IntType(8).as_pointer()
            ptrs = []
            for i, aty in enumerate(signature.args[0]):
                arr = context.make_array(aty)(context, builder, builder.extract_value(llargs[0], i))
                ptrs.append(builder.bitcast(arr.data, i8p))
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p] * len(ptrs)),
                                                symbol)
            builder.call(fn, ptrs)
            return context.get_dummy_value()

        return types.void(args), codegen

    return call


_dgebrd, _sgebrd = _lapack("dgebrd"), _lapack("sgebrd")
_dbdsdc, _sbdsdc = _lapack("dbdsdc"), _lapack("sbdsdc")


@intrinsic
def _pointer_like(typingctx, address, like):
    """The integer ``address`` as a pointer to elements of ``like``'s dtype (for :func:`numba.carray`)."""
    if not (isinstance(address, types.Integer) and isinstance(like, types.Array)):
        return None

    def codegen(context, builder, signature, args):
        target = context.get_value_type(types.CPointer(signature.args[1].dtype))
        return builder.inttoptr(context.cast(builder, args[0], signature.args[0], types.intp), target)

    return types.CPointer(like.dtype)(address, like), codegen


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _table_site(table, k, like):  # pragma: no cover - compiled
    """Row ``k`` of an address table, ``(address, Dl, d, Dr)``, as the C-contiguous site array it
    points to (elements of ``like``'s dtype)."""
    return numba.carray(_pointer_like(table[k, 0], like), (table[k, 1], table[k, 2], table[k, 3]))


@intrinsic
def _prefetch_row(typingctx, arr, row):
    """Ask the CPU to bring row ``row`` of the C-contiguous 2-D ``arr`` into cache (no effect on results)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.layout == "C" and isinstance(row, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        itemsize = context.get_abi_sizeof(context.get_data_type(aryty.dtype))
        ncols = builder.extract_value(ary.shape, 1)
        row_bytes = builder.mul(ncols, ir.Constant(ncols.type, itemsize))
        start = builder.mul(context.cast(builder, args[1], signature.args[1], types.intp), row_bytes)
        base = builder.gep(builder.bitcast(ary.data, i8p), [start])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        with cgutils.for_range(builder, builder.udiv(builder.add(row_bytes, ir.Constant(row_bytes.type, 63)),
                                                     ir.Constant(row_bytes.type, 64))) as loop:
            ptr = builder.gep(base, [builder.mul(loop.index, ir.Constant(loop.index.type, 64))])
            builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, row), codegen


#: LAPACK's character arguments, one byte each (sliced, never copied).
_CHARS = np.frombuffer(b"UI", dtype=np.uint8)
_U, _I = range(2)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bidiagonal_svd(a):  # pragma: no cover - compiled
    """Singular values of the ``(m, n)`` C-contiguous ``a`` and what their vectors need.

    ``X = Q B P^T`` (``gebrd``: ``X`` is ``a^T`` when ``n >= m``, whose
    F-order buffer is ``a``'s C-order one, else ``a``; ``X`` is ``p x q`` with
    ``p >= q``), then ``B = Ub S Vb^T`` (``bdsdc``, divide and conquer): the
    path ``gesdd`` takes.

    Returns
    -------
    info : int
        LAPACK's (0: converged).
    s : ndarray
        All ``q`` singular values, descending.
    x, tauq, taup, ub, vbt : ndarray
        The reflectors of ``Q`` and ``P`` (F-order ``x`` and its scalars) and
        the F-order ``(q, q)`` singular vectors of ``B``.
    """
    m, n = a.shape
    f64 = a.itemsize == 8
    if n >= m:
        x = a.copy().reshape(-1)
        p, q = n, m
    else:
        x = np.empty(m * n, dtype=a.dtype)
        for i in range(m):
            for j in range(n):
                x[j * m + i] = a[i, j]
        p, q = m, n
    vecs = np.empty(4 * q + 2 * q * q, dtype=a.dtype)  # d, e, tauq, taup, Ub, Vb^T
    d, e, tauq, taup = vecs[:q], vecs[q:2 * q], vecs[2 * q:3 * q], vecs[3 * q:4 * q]
    ub, vbt = vecs[4 * q:4 * q + q * q], vecs[4 * q + q * q:]
    lwork = 64 * (p + q)
    work = np.empty(max(lwork, 3 * q * q + 4 * q), dtype=a.dtype)
    ints = np.empty(4 + 8 * q, dtype=np.int32)  # p, q, lwork, info, then bdsdc's integer workspace
    ints[0], ints[1], ints[2], ints[3] = p, q, lwork, 0
    ip, iq, ilwork, info, iwork = ints[0:1], ints[1:2], ints[2:3], ints[3:4], ints[4:]
    args = (ip, iq, x, ip, d, e, tauq, taup, work, ilwork, info)
    if f64:
        _dgebrd(args)
    else:
        _sgebrd(args)
    c = _CHARS
    args2 = (c[_U:_U + 1], c[_I:_I + 1], iq, d, e, ub, iq, vbt, iq, work[:1], iwork[:1], work, iwork, info)
    if f64:
        _dbdsdc(args2)
    else:
        _sbdsdc(args2)
    return int(info[0]), d, x, tauq, taup, ub, vbt


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _reflect_columns(v, tau, c, ld, row, keep):  # pragma: no cover - compiled
    """``C <- (I - tau w w^T) C`` with ``w = e_row + [0 .. 0, v]`` (``v`` from ``row + 1`` on).

    ``C`` is the F-order buffer ``c`` of ``keep`` columns of length ``ld``,
    taken one column at a time (:func:`_dot` and an update of the column's
    tail): ``ormbr``'s arithmetic, without its blocked machinery, which costs
    more than the arithmetic at these sizes.
    """
    if tau == 0.0:
        return
    for j in range(keep):
        head = j * ld + row
        tail = c[head + 1:head + 1 + v.shape[0]]
        w = (c[head] + _dot(v, tail)) * tau
        c[head] -= w
        for r in range(v.shape[0]):
            tail[r] -= w * v[r]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _apply_q(x, p, q, tauq, c, keep):  # pragma: no cover - compiled
    """``C <- Q C`` for the F-order ``(p, keep)`` buffer ``c``; ``Q = H(1) ... H(q)`` of ``gebrd``.

    ``H(i) = I - tau_i v v^T`` with ``v = e_i + X[i+1:p, i]`` (a column of the
    F-order ``x``), applied last to first (:func:`_reflect_columns`).
    """
    for i in range(q - 1, -1, -1):
        _reflect_columns(x[i * p + i + 1:i * p + p], tauq[i], c, p, i, keep)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _apply_p(x, p, q, taup, c, keep):  # pragma: no cover - compiled
    """``C <- P C`` for the F-order ``(q, keep)`` buffer ``c``; ``P = G(1) ... G(q-1)`` of ``gebrd``.

    ``G(i) = I - tau_i u u^T`` with ``u = e_{i+1} + X[i, i+2:q]`` (a row of the
    F-order ``x``, copied to be contiguous), applied last to first (:func:`_reflect_columns`).
    """
    u = np.empty(q, dtype=x.dtype)
    for i in range(q - 2, -1, -1):
        nu = q - i - 2
        for r in range(nu):
            u[r] = x[(i + 2 + r) * p + i]
        _reflect_columns(u[:nu], taup[i], c, q, i + 1, keep)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _kept_vectors(m, n, keep, x, tauq, taup, ub, vbt):  # pragma: no cover - compiled
    """The ``keep`` leading singular vectors of :func:`_bidiagonal_svd`'s block.

    Only these columns of ``Ub`` and ``Vb`` are transformed back by ``Q`` and
    ``P`` (:func:`_apply_q`, :func:`_apply_p`). Returns ``u`` ``(m, keep)`` and
    ``vt`` ``(keep, n)``, C-contiguous.
    """
    p, q = (n, m) if n >= m else (m, n)
    c1 = np.zeros(p * keep, dtype=x.dtype)  # F (p, keep): [Ub[:, :keep]; 0], to become Q Ub
    for j in range(keep):
        for i in range(q):
            c1[j * p + i] = ub[j * q + i]
    c2 = np.empty(q * keep, dtype=x.dtype)  # F (q, keep): Vb[:, :keep], to become P Vb
    for j in range(keep):
        for i in range(q):
            c2[j * q + i] = vbt[i * q + j]
    _apply_q(x, p, q, tauq, c1, keep)
    _apply_p(x, p, q, taup, c2, keep)
    u = np.empty((m, keep), dtype=x.dtype)
    if n >= m:  # a = X^T = (P Vb) S (Q Ub)^T
        for i in range(m):
            for j in range(keep):
                u[i, j] = c2[j * q + i]
        vt = c1.reshape(keep, p)  # the F-order (p, keep) buffer is the C-order (keep, n) one
    else:  # a = X = (Q Ub) S (P Vb)^T
        for i in range(m):
            for j in range(keep):
                u[i, j] = c1[j * p + i]
        vt = np.empty((keep, n), dtype=x.dtype)
        for j in range(keep):
            for i in range(n):
                vt[j, i] = c2[j * q + i]
    return u, vt


@numba.njit(cache=True, nogil=True, error_model="numpy")
def split_block(a, cutoff, max_bond, min_bond, s_left, stats):  # pragma: no cover - compiled
    """Truncated SVD split of a ``(m, n)`` block, the rule of ``interface.truncation_rank``.

    The decomposition is ``gesdd``'s (:func:`_bidiagonal_svd`), with only the
    kept singular vectors transformed back (:func:`_kept_vectors`).

    Parameters
    ----------
    a : ndarray
        ``(m, n)`` block (C-contiguous).
    cutoff : float
        Keep ``s_i >= cutoff * s_0`` (``cutoff = 0``: keep ``s_i > 0``).
    max_bond : int
        Upper bound (``<= 0``: none).
    min_bond : int
        Lower bound (capped by the number of singular values).
    s_left : bool
        The kept singular values (unit 2-norm) go to the left half, else to the right.
    stats : ndarray
        ``(2,)`` float64, filled with the largest discarded singular value over
        the largest and the discarded weight (those of ``truncation_rank``).

    Returns
    -------
    status : int
        0 done; 1 non-finite values in the block or its singular values, no
        convergence, or a block whose largest entry is outside
        ``[sqrt(tiny) / eps, eps / sqrt(tiny)]`` (which ``gesdd`` would rescale
        first); 2 zero block; 3 non-finite halves.
    left, right : ndarray
        ``(m, keep)`` and ``(keep, n)``.
    s : ndarray
        All singular values.
    keep : int
        Number kept.
    """
    empty = np.empty((0, 0), dtype=a.dtype)
    if not _all_finite(a):  # (what LAPACK cannot decompose)
        return 1, empty, empty, np.full(min(a.shape[0], a.shape[1]), np.nan, dtype=a.dtype), 0
    amax = _absmax_finite(a.reshape(-1))
    if amax == 0.0:
        return 2, empty, empty, np.zeros(min(a.shape[0], a.shape[1]), dtype=a.dtype), 0
    # gesdd rescales a block whose largest entry is below sqrt(safmin) / eps or above its
    # inverse before it bidiagonalises; such blocks are left to the caller's plain path
    eps = np.finfo(a.dtype).eps
    small = math.sqrt(np.finfo(a.dtype).tiny) / eps
    if amax < small or amax > 1.0 / small:
        return 1, empty, empty, np.full(min(a.shape[0], a.shape[1]), np.nan, dtype=a.dtype), 0
    info, s, x, tauq, taup, ub, vbt = _bidiagonal_svd(a)
    n = s.shape[0]
    if info != 0:  # did not converge
        return 1, empty, empty, s, 0
    for i in range(n):
        if not np.isfinite(s[i]):
            return 1, empty, empty, s, 0
    if n == 0 or s[0] <= 0:
        return 2, empty, empty, s, 0
    keep = 0
    for i in range(n):
        if (cutoff > 0 and s[i] >= cutoff * s[0]) or (cutoff <= 0 and s[i] > 0):
            keep += 1
    if max_bond > 0:
        keep = min(keep, max_bond)
    keep = max(keep, min(min_bond, n), 1)
    keep = min(keep, n)
    nrm2 = 0.0
    for i in range(keep):
        nrm2 += s[i] * s[i]
    disc2 = 0.0
    for i in range(keep, n):
        disc2 += s[i] * s[i]
    total = nrm2 + disc2
    stats[0] = s[keep] / s[0] if keep < n else 0.0  # largest discarded, relative
    stats[1] = disc2 / total if total > 0 else 0.0  # discarded weight
    nrm = math.sqrt(nrm2)
    left, right = _kept_vectors(a.shape[0], a.shape[1], keep, x, tauq, taup, ub, vbt)
    if s_left:
        for i in range(left.shape[0]):
            for j in range(keep):
                left[i, j] *= s[j] / nrm
    else:
        for j in range(keep):
            f = s[j] / nrm
            for i in range(right.shape[1]):
                right[j, i] *= f
    if not (_all_finite(left) and _all_finite(right)):
        return 3, empty, empty, s, keep
    return 0, left, right, s, keep


@numba.njit(cache=True, nogil=True, error_model="numpy")
def python_list(arrays, start, stop):  # pragma: no cover - compiled
    """``arrays[start:stop]`` of a typed list (``start < stop``) as a Python list.

    One call boxes them all, where an item read from Python costs a
    compiled call each (measured 2.4 -> 1.1 us per array with ``torch.from_numpy``).
    """
    out = [arrays[start]]
    for i in range(start + 1, stop):
        out.append(arrays[i])
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def chain_sweep(site_table, lo, static_table, mvec, xt, k0, nbonds, leftward, rows, same_rows, batch, nsteps,
                lr, cutoff, max_bond, min_bond, max_work, max_split, sites, out_vecs, out_scales, info,
                progress):  # pragma: no cover - compiled
    """Consecutive two-site updates of a chain in one direction, in one call.

    Bond ``k`` joins sites ``k`` and ``k + 1``; the bonds are ``k0, k0 - 1, ...``
    (``leftward``: the centre moves to site ``k``) or ``k0, k0 + 1, ...``. Each
    update is the sweep trainer's: merge the two sites (the centre), normalise,
    take ``nsteps`` plain gradient steps (:func:`block_steps`), split by
    :func:`split_block` (the singular values to the new centre) and compute the
    environment message out of the site left behind (:func:`_message_scaled`),
    which is the moving environment of the next bond.

    The input arrays come as tables of addresses and shapes, read as views
    (a typed list built in Python costs a microsecond per array, a few percent of
    a max-bond-30 loop); the caller keeps them alive and C-contiguous, of
    ``mvec``'s dtype, for the duration of the call, and nothing writes to them.

    Parameters
    ----------
    site_table : ndarray
        ``(nsites, 4)`` int64: address, ``Dl``, ``d``, ``Dr`` of the
        C-contiguous site arrays of sites ``lo, lo + 1, ...``.
    lo : int
        The chain index of the table's first site.
    static_table : ndarray
        ``(nbonds, 3)`` int64: address, ``n``, ``D`` of update ``i``'s
        environment vectors ``(n, D)`` of the side that does not move (into
        site ``k`` from the left when ``leftward``, else into site ``k + 1``
        from the right).
    mvec : ndarray
        The vectors ``(n, D)`` of the moving environment into the first bond
        (its log-scales are the caller's: the kernel returns each message's
        row scales, of which the caller takes the logs, all at once).
    xt : ndarray
        ``(N, n)`` int64 configurations, one contiguous row per variable.
    k0, nbonds : int
        First bond and number of bonds.
    leftward : bool
        Direction.
    rows, same_rows, batch, nsteps
        Update ``i``'s step ``j`` uses ``batch`` rows from
        ``rows[(i * nsteps + j) * batch:]`` (``same_rows``: every step of every
        update uses ``rows[:batch]``).
    lr, cutoff, max_bond, min_bond
        As in the trainer (``max_bond <= 0``: none).
    max_work, max_split : int
        An update whose ``batch * Dl * Dr`` or ``Dl * d * d * Dr`` exceeds these
        is left to the caller (status 4).
    sites : typed List
        Empty; receives the site arrays (views of the table's, then each
        update's new arrays, which replace them: nothing is written in place).
    out_vecs : typed List
        Receives each update's outgoing message vectors (rows of unit max-norm).
    out_scales : ndarray
        ``(nbonds, n)`` float64; row ``i`` receives the scales the rows of
        update ``i``'s message were divided by (:func:`_message_scaled`).
    info : ndarray
        ``(nbonds, 4)``: kept dimension, largest discarded singular value over
        the largest, discarded weight; ``info[0, 3]`` receives the sum of the
        first update's static environment, read once in order before the steps
        gather its rows at random (it was last written a half-sweep ago, so it
        is rarely in cache, and a sequential read runs at the memory's bandwidth
        where the gathers would wait for each row). The rows of each later
        update are fetched ahead, during the message of the update before.
    progress : ndarray
        ``progress[0]``: updates completed so far (also when an exception escapes).

    Returns
    -------
    int
        0 all done; 1 the gradient steps gave a zero or non-finite block; 2 the
        SVD gave non-finite or zero values; 3 non-finite halves; 4 an update
        above the work limits. Updates before ``progress[0]`` are complete; the
        one at ``progress[0]`` left nothing changed.
    """
    for j in range(site_table.shape[0]):
        sites.append(_table_site(site_table, j, mvec))
    stats = np.zeros(2)
    starts = np.empty(nsteps, dtype=np.int64)
    stops = np.empty(nsteps, dtype=np.int64)
    for i in range(nbonds):
        k = k0 - i if leftward else k0 + i
        a = sites[k - lo]
        b = sites[k + 1 - lo]
        dl, d, dm = a.shape
        dr = b.shape[2]
        if batch * dl * dr > max_work or dl * d * d * dr > max_split:
            return 4
        static = numba.carray(_pointer_like(static_table[i, 0], mvec), (static_table[i, 1], static_table[i, 2]))
        if leftward:
            left = static
            right = mvec
        else:
            left = mvec
            right = static
        if i == 0:  # (later updates' rows were fetched during the message before)
            info[i, 3] = _sum(static.reshape(-1))
        merged = np.dot(a.reshape(dl * d, dm), b.reshape(dm, d * dr))
        first = 0 if same_rows else i * nsteps * batch
        for j in range(nsteps):
            starts[j] = first if same_rows else first + j * batch
            stops[j] = starts[j] + batch
        new = block_steps(merged.reshape(dl, d, d, dr), left, right, xt, k, rows, starts, stops, lr)
        if not _all_finite(new) or _absmax_finite(new.reshape(-1)) == 0.0:
            return 1
        status, lmat, rmat, sv, keep = split_block(new.reshape(dl * d, d * dr), cutoff, max_bond, min_bond,
                                                   leftward, stats)
        if status != 0:
            return 2 if status < 3 else 3
        new_a = lmat.reshape(dl, d, keep)
        if i + 1 < nbonds:
            ahead = numba.carray(_pointer_like(static_table[i + 1, 0], mvec),
                                 (static_table[i + 1, 1], static_table[i + 1, 2]))
        else:
            ahead = mvec
        if i + 1 >= nbonds:
            ahead_rows = rows[:0]
        elif same_rows:
            ahead_rows = rows[:batch]
        else:
            ahead_rows = rows[(i + 1) * nsteps * batch:(i + 2) * nsteps * batch]
        new_b = rmat.reshape(keep, d, dr)
        if leftward:  # message out of site k + 1 into site k: y[b] = A[:, x_b, :] @ R_b
            at = np.ascontiguousarray(new_b.transpose(2, 1, 0))
            y, scale = _message_scaled(right, at, xt[k + 1], ahead, ahead_rows)
        else:
            y, scale = _message_scaled(left, new_a, xt[k], ahead, ahead_rows)
        sites[k - lo] = new_a
        sites[k + 1 - lo] = new_b
        out_vecs.append(y)
        out_scales[i] = scale
        mvec = y
        info[i, 0] = keep
        info[i, 1] = stats[0]
        info[i, 2] = stats[1]
        progress[0] = i + 1
    return 0
