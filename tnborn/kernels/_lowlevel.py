"""Low-level pieces of the compiled kernels (private): LAPACK's SVD steps and a cache prefetch.

The SVD split (:func:`tnborn.kernels._numba_mps.split_block`) calls LAPACK's
steps of ``gesdd`` itself (``gebrd``, ``bdsdc``, ``ormbr``), so that only the
kept singular vectors are transformed back. The routines are scipy's (the
LAPACK numba's own ``np.linalg`` uses); each process registers their addresses
under fixed symbol names, which compiled code calls by name, so the compiled
functions stay in numba's cache.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import get_cython_function_address, intrinsic

__all__: list[str] = []  # private module

_LAPACK = ("dgebrd", "sgebrd", "dbdsdc", "sbdsdc", "dormbr", "sormbr")
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
_dormbr, _sormbr = _lapack("dormbr"), _lapack("sormbr")


@intrinsic
def prefetch_row(typingctx, arr, row):
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
_CHARS = np.frombuffer(b"UIQPLN", dtype=np.uint8)
_U, _I, _Q, _P, _L, _N = range(6)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def bidiagonal_svd(a):  # pragma: no cover - compiled
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
    work : ndarray
        Workspace, large enough for :func:`kept_vectors`.
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
    return int(info[0]), d, x, tauq, taup, ub, vbt, work


@numba.njit(cache=True, nogil=True, error_model="numpy")
def kept_vectors(m, n, keep, x, tauq, taup, ub, vbt, work):  # pragma: no cover - compiled
    """The ``keep`` leading singular vectors of :func:`bidiagonal_svd`'s block.

    Only these columns of ``Ub`` and ``Vb`` are transformed back by ``Q`` and
    ``P`` (``ormbr``). Returns ``u`` ``(m, keep)`` and ``vt`` ``(keep, n)``, C-contiguous.
    """
    p, q = (n, m) if n >= m else (m, n)
    f64 = x.itemsize == 8
    c1 = np.zeros(p * keep, dtype=x.dtype)  # F (p, keep): [Ub[:, :keep]; 0], to become Q Ub
    for j in range(keep):
        for i in range(q):
            c1[j * p + i] = ub[j * q + i]
    c2 = np.empty(q * keep, dtype=x.dtype)  # F (q, keep): Vb[:, :keep], to become P Vb
    for j in range(keep):
        for i in range(q):
            c2[j * q + i] = vbt[i * q + j]
    ints = np.empty(5, dtype=np.int32)
    ints[0], ints[1], ints[2], ints[3], ints[4] = p, q, keep, work.shape[0], 0
    ip, iq, ikeep, ilwork, info = ints[0:1], ints[1:2], ints[2:3], ints[3:4], ints[4:5]
    c = _CHARS
    args1 = (c[_Q:_Q + 1], c[_L:_L + 1], c[_N:_N + 1], ip, ikeep, iq, x, ip, tauq, c1, ip, work, ilwork, info)
    args2 = (c[_P:_P + 1], c[_L:_L + 1], c[_N:_N + 1], iq, ikeep, ip, x, ip, taup, c2, iq, work, ilwork, info)
    if f64:
        _dormbr(args1)
        _dormbr(args2)
    else:
        _sormbr(args1)
        _sormbr(args2)
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
