"""Binary data sets for Born machines: generators, loaders and validation.

Rows are samples and columns are variables; images are flattened row-major, so
pixel ``(i, j)`` of an ``h x w`` image is column ``i * w + j``. Data enter the
models through :func:`validate_binary`, which raises
:class:`~tnborn.errors.DataError` naming what was expected and what was found.
"""

from __future__ import annotations

import gzip
import inspect
import math
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tnborn.errors import ConfigError, DataError

__all__ = [
    "bars_and_stripes", "is_bars_and_stripes", "random_binary", "even_parity",
    "validate_binary", "binarize", "load_binary", "load_idx", "image_shape_for",
    "train_test_split", "DATASETS", "get_dataset", "register_dataset", "SUPPORTED_FORMATS",
]

#: File name endings understood by :func:`load_binary`.
SUPPORTED_FORMATS: tuple[str, ...] = (".npy", ".npz", "-idx3-ubyte", "-idx3-ubyte.gz")

_MAX_GENERATED_BYTES = 1 << 28  # largest array the exhaustive generators build
_MAX_ENUMERATED_VARS = 20  # largest n_vars for which even_parity lists every string
# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile)


def _check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int (bools and floats refused), or raise DataError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and int(value) < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {int(value)}")
    return int(value)


def _is_real(value: Any) -> bool:
    """Tell whether ``value`` is a real number (not a bool)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _bits(values: np.ndarray, width: int) -> np.ndarray:
    """Return the ``width`` low bits of each integer, least significant first (uint8)."""
    return ((values[:, None] >> np.arange(width, dtype=np.int64)) & 1).astype(np.uint8)


def _sort_rows_by_integer(x: np.ndarray) -> np.ndarray:
    """Sort binary rows by the integer ``x @ 2**arange(N)``, for any ``N`` without overflow."""
    # np.lexsort uses its last key, column N-1 (the most significant bit), as the primary one.
    return x[np.lexsort(x.T)]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert an array, nested list or tensor (``.detach().cpu().numpy()``) to numpy."""
    if hasattr(x, "detach") and callable(x.detach):
        t = x.detach()
        t = t.cpu() if hasattr(t, "cpu") else t
        try:
            return np.asarray(t.numpy())
        except (TypeError, RuntimeError):  # e.g. bfloat16, which numpy cannot hold
            return np.asarray(t.double().numpy())
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{name} must be a rectangular array (n_samples, n_vars), got "
                        f"{type(x).__name__} that numpy cannot convert: {exc}") from None


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    """Return the index of the first ``True`` entry of ``mask`` (C order)."""
    flat = int(np.flatnonzero(mask.ravel())[0])
    return tuple(int(i) for i in np.unravel_index(flat, mask.shape))


def _fmt(v: Any) -> str:
    """Format a scalar found in the data for an error message."""
    v = v.item() if hasattr(v, "item") else v
    return str(int(v)) if isinstance(v, float) and v.is_integer() else repr(v)


def bars_and_stripes(rows: int = 4, cols: int | None = None) -> np.ndarray:
    """Return every distinct bars-and-stripes image of a ``rows x cols`` grid.

    A *stripes* image has every row constant and a *bars* image every column
    constant. The all-0 and all-1 images are both and are counted once, so
    there are ``2**rows + 2**cols - 2`` patterns (30 for 4 x 4).

    Parameters
    ----------
    rows : int, optional
        Number of image rows, at least 1. Default 4.
    cols : int or None, optional
        Number of image columns, at least 1. ``None`` means ``rows``.

    Returns
    -------
    numpy.ndarray
        uint8 array of shape ``(2**rows + 2**cols - 2, rows * cols)``, images
        flattened row-major, sorted by the integer ``x @ 2**arange(rows * cols)``.
    """
    rows = _check_int(rows, "rows", 1)
    cols = rows if cols is None else _check_int(cols, "cols", 1)
    n_patterns, n_vars = 2**rows + 2**cols - 2, rows * cols
    if n_patterns * n_vars > _MAX_GENERATED_BYTES:
        raise DataError(f"bars_and_stripes({rows}, {cols}) would hold {n_patterns} patterns of "
                        f"{n_vars} pixels, more than the {_MAX_GENERATED_BYTES} bytes allowed")
    # stripes: one bit per image row, repeated along the row; bars: one bit per column
    stripes = np.repeat(_bits(np.arange(2**rows, dtype=np.int64), rows), cols, axis=1)
    bars = np.tile(_bits(np.arange(2**cols, dtype=np.int64), cols), (1, rows))
    patterns = _sort_rows_by_integer(np.unique(np.concatenate([stripes, bars]), axis=0))
    assert patterns.shape == (n_patterns, n_vars)
    return np.ascontiguousarray(patterns, dtype=np.uint8)


def is_bars_and_stripes(x: Any, rows: int, cols: int | None = None) -> np.ndarray:
    """Tell, for each row of ``x``, whether it is a bars-and-stripes image.

    Parameters
    ----------
    x : array_like
        Binary data of shape ``(n, rows * cols)``, or one image ``(rows * cols,)``.
    rows : int
        Number of image rows.
    cols : int or None, optional
        Number of image columns. ``None`` means ``rows``.

    Returns
    -------
    numpy.ndarray
        Boolean array of shape ``(n,)``: True where every image row or every
        image column is constant.
    """
    rows = _check_int(rows, "rows", 1)
    cols = rows if cols is None else _check_int(cols, "cols", 1)
    images = validate_binary(x, n_vars=rows * cols, allow_1d=True).reshape(-1, rows, cols)
    stripes = np.all(images.min(axis=2) == images.max(axis=2), axis=1)
    bars = np.all(images.min(axis=1) == images.max(axis=1), axis=1)
    return stripes | bars


def random_binary(n_samples: int, n_vars: int, seed: int | None = 0) -> np.ndarray:
    """Draw binary strings uniformly at random.

    Parameters
    ----------
    n_samples : int
        Number of strings, at least 1.
    n_vars : int
        Length of each string, at least 1.
    seed : int or None, optional
        Seed of :func:`numpy.random.default_rng`; None is not reproducible.

    Returns
    -------
    numpy.ndarray
        uint8 array of shape ``(n_samples, n_vars)`` of independent fair bits.
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    n_vars = _check_int(n_vars, "n_vars", 1)
    return np.random.default_rng(seed).integers(0, 2, size=(n_samples, n_vars), dtype=np.uint8)


def even_parity(n_vars: int, n_samples: int | None = None, seed: int | None = 0) -> np.ndarray:
    """Return binary strings with an even number of ones.

    Parameters
    ----------
    n_vars : int
        Length of each string, at least 1.
    n_samples : int or None, optional
        None (default) lists all ``2**(n_vars - 1)`` even-parity strings
        (needs ``n_vars <= 20``); an integer draws that many uniformly.
    seed : int or None, optional
        Seed of the random generator, used only when ``n_samples`` is given.

    Returns
    -------
    numpy.ndarray
        uint8 array of shape ``(2**(n_vars - 1), n_vars)`` sorted by the
        integer ``x @ 2**arange(n_vars)``, or ``(n_samples, n_vars)``.
    """
    n_vars = _check_int(n_vars, "n_vars", 1)
    if n_samples is None:
        if n_vars > _MAX_ENUMERATED_VARS:
            raise DataError(f"n_vars must be <= {_MAX_ENUMERATED_VARS} to list all even-parity "
                            f"strings, got {n_vars}; pass n_samples to draw a sample instead")
        free = _bits(np.arange(2 ** (n_vars - 1), dtype=np.int64), n_vars - 1)
    else:
        n_samples = _check_int(n_samples, "n_samples", 1)
        free = np.random.default_rng(seed).integers(0, 2, size=(n_samples, n_vars - 1),
                                                    dtype=np.uint8)
    last = (free.sum(axis=1, dtype=np.int64) % 2).astype(np.uint8)
    out = np.concatenate([free, last[:, None]], axis=1)
    out = _sort_rows_by_integer(out) if n_samples is None else out
    return np.ascontiguousarray(out, dtype=np.uint8)


def validate_binary(x: Any, n_vars: int | None = None, phys_dim: int = 2, name: str = "data",
                    allow_1d: bool = False) -> np.ndarray:
    """Check that ``x`` is a 2-D array of states in ``{0, ..., phys_dim - 1}``.

    Parameters
    ----------
    x : array_like
        numpy array, nested list or torch tensor (converted with
        ``.detach().cpu().numpy()``); rows are samples, columns variables.
        Bools, integers and integer-valued floats (``1.0``) are accepted.
    n_vars : int or None, optional
        Required number of columns; None accepts any positive number.
    phys_dim : int, optional
        Number of states per variable. Default 2 (binary).
    name : str, optional
        Name of the data in error messages. Default ``"data"``.
    allow_1d : bool, optional
        Read a 1-D array of length ``n`` as one sample ``(1, n)`` instead of
        refusing it. Default False.

    Returns
    -------
    numpy.ndarray
        C-contiguous int64 array of shape ``(n_samples, n_vars)``.

    Raises
    ------
    DataError
        On a wrong number of dimensions or columns, an empty array, a
        non-numeric dtype, NaN/inf, non-integer or out-of-range values; the
        message gives ``name``, what was expected, and what (and where, 0-based)
        was found.
    """
    phys_dim = _check_int(phys_dim, "phys_dim", 2)
    n_vars = None if n_vars is None else _check_int(n_vars, "n_vars", 1)
    arr = _to_numpy(x, name)
    kind = arr.dtype.kind
    if kind not in "biuf":
        raise DataError(f"{name} must hold numbers (bool, integer or float), got dtype {arr.dtype}")
    if arr.ndim == 1 and allow_1d:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        hint = " (pass a single sample as shape (1, n_vars))" if arr.ndim == 1 else ""
        raise DataError(f"{name} must be a 2-D array (n_samples, n_vars), "
                        f"got a {arr.ndim}-D array of shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise DataError(f"{name} must have at least one row (sample), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise DataError(f"{name} must have at least one column (variable), got shape {arr.shape}")
    if n_vars is not None and arr.shape[1] != n_vars:
        raise DataError(f"{name} must have {n_vars} columns (one per variable), "
                        f"got {arr.shape[1]}")
    values = ("{" + ", ".join(map(str, range(phys_dim))) + "}" if phys_dim <= 4
              else f"{{0, 1, ..., {phys_dim - 1}}}")
    if kind == "f":
        for bad, what in ((np.isnan(arr), "NaN"), (np.isinf(arr), "inf")):
            if bad.any():
                r, c = _first_bad(bad)
                raise DataError(f"{name} contains {what} (expected values in {values}), "
                                f"found {_fmt(arr[r, c])} at row {r}, column {c}")
        bad = arr != np.round(arr)
        if bad.any():
            r, c = _first_bad(bad)
            raise DataError(f"{name} values must be integers in {values}, "
                            f"found {_fmt(arr[r, c])} at row {r}, column {c}")
    if kind != "b":
        bad = (arr < 0) | (arr > phys_dim - 1)
        if bad.any():
            r, c = _first_bad(bad)
            raise DataError(f"{name} values must be in {values}, "
                            f"found {_fmt(arr[r, c])} at row {r}, column {c}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def binarize(x: Any, threshold: float) -> np.ndarray:
    """Binarise grey values with a strict threshold: ``(x > threshold)``.

    The conventions of Han et al. (PRX 8, 031012, 2018) on raw MNIST grey
    values 0..255: *thr50* means ``pixel > 50`` (``threshold=50``) and
    *thr127* means ``pixel > 127.5``, i.e. ``pixel >= 128`` (``threshold=127.5``).

    Parameters
    ----------
    x : array_like
        Grey values of any shape (numpy array, list or torch tensor), no NaN.
    threshold : float
        A finite number; values strictly greater become 1, the others 0.

    Returns
    -------
    numpy.ndarray
        uint8 array of the same shape as ``x`` with values in ``{0, 1}``.
    """
    if not _is_real(threshold) or not math.isfinite(float(threshold)):
        raise DataError(f"threshold must be a finite real number, got {threshold!r}")
    arr = _to_numpy(x, "data")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"data to binarize must hold numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise DataError("data to binarize contains NaN (expected finite grey values)")
    return (arr > threshold).astype(np.uint8)


def _existing_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a :class:`Path`, or raise DataError if it is not a file."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise DataError(f"no such data file: {p}")
    if not p.is_file():
        raise DataError(f"data path must be a file, got a directory or special file: {p}")
    return p


def _file_format(p: Path) -> str:
    """Return the format of ``p`` from its name: ``npy``, ``npz`` or ``idx``."""
    name = p.name.lower()
    for fmt, endings in (("npy", (".npy",)), ("npz", (".npz",)),
                         ("idx", ("idx3-ubyte", "idx3-ubyte.gz"))):
        if name.endswith(endings):
            return fmt
    hint = " (an idx1 file holds labels, not images: read it with load_idx)" \
        if "idx1-ubyte" in name else ""
    raise DataError(f"unsupported data file {p}: expected a name ending in one of "
                    f"{', '.join(SUPPORTED_FORMATS)}, got {p.name!r}{hint}")


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), optionally gzip-compressed.

    The header is the bytes ``0, 0, type, ndim`` then ``ndim`` big-endian
    uint32 sizes; big-endian data follow in C order. Types 0x08 (uint8),
    0x09 (int8), 0x0B (int16), 0x0C (int32), 0x0D (float32) and 0x0E (float64)
    are read. Gzip is detected from the first bytes, whatever the name.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file, e.g. ``t10k-images-idx3-ubyte.gz`` or ``t10k-labels-idx1-ubyte``.

    Returns
    -------
    numpy.ndarray
        Native-byte-order array with the shape given in the header. A missing
        or corrupt file (bad gzip, magic number or size) raises DataError.
    """
    p = _existing_file(path)
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"corrupt gzip-compressed IDX file {p}: {exc}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        types = ", ".join(f"0x{t:02X}" for t in _IDX_DTYPES)
        raise DataError(f"bad IDX magic number in {p}: expected 0x0000TTDD with type TT in "
                        f"{{{types}}} and DD >= 1 dimensions, got 0x{raw[:4].hex().upper()}")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"corrupt IDX file {p}: header declares {ndim} dimensions "
                        f"({header} header bytes), but the file has only {len(raw)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected, found = math.prod(shape) * dtype.itemsize, len(raw) - header
    if found != expected:
        raise DataError(f"corrupt IDX file {p}: header shape {shape} needs {expected} data "
                        f"bytes, found {found}")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def _load_numpy(p: Path, fmt: str, key: str | None) -> np.ndarray:
    """Load the array of a ``.npy`` file or an ``.npz`` archive (no pickles)."""
    if fmt == "npy" and key is not None:
        raise DataError(f"key is only meaningful for .npz archives, got key={key!r} for {p}")
    if fmt == "npy":
        with open(p, "rb") as fh:
            magic = fh.read(6)
        if magic != b"\x93NUMPY" and magic[:4] != b"PK\x03\x04":
            raise DataError(f"{p} is not a valid .npy file (it does not start with the .npy "
                            f"magic bytes b'\\x93NUMPY', found {magic!r})")
    try:
        loaded = np.load(p, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(f"could not read {p} as a .{fmt} file (corrupt or truncated?): "
                        f"{exc}") from None
    if isinstance(loaded, np.ndarray):
        if fmt == "npz":
            raise DataError(f"{p} has a .npz name but holds a single .npy array")
        return loaded
    with loaded:  # an NpzFile
        keys = list(loaded.files)
        if fmt == "npy":
            raise DataError(f"{p} has a .npy name but is an .npz archive with keys {keys}")
        if key is None:
            if len(keys) != 1:
                what = "no arrays" if not keys else f"{len(keys)} arrays: {keys}"
                raise DataError(f"the archive {p} holds {what}; pass key= to choose one")
            key = keys[0]
        if key not in keys:
            raise DataError(f"no array {key!r} in {p}; available keys: {keys}")
        try:
            return loaded[key]
        except _READ_ERRORS as exc:
            raise DataError(f"could not read array {key!r} from {p} (corrupt or truncated?): "
                            f"{exc}") from None


def load_binary(path: str | os.PathLike, key: str | None = None, threshold: float | None = None,
                n_vars: int | None = None, limit: int | None = None) -> np.ndarray:
    """Load a binary data set from a ``.npy``, ``.npz`` or MNIST IDX image file.

    Arrays ``(n, h, w)`` are flattened row-major to ``(n, h * w)``. Grey values
    must be binarised with ``threshold`` (see :func:`binarize`: 50 for thr50,
    127.5 for thr127). Numpy files are read with ``allow_pickle=False``.

    Parameters
    ----------
    path : str or os.PathLike
        File whose name ends in ``.npy``, ``.npz``, ``-idx3-ubyte`` or ``-idx3-ubyte.gz``.
    key : str or None, optional
        Array to read from an ``.npz`` archive; needed if it holds several.
    threshold : float or None, optional
        Values ``> threshold`` become 1, the others 0. None: the file must
        already be binary.
    n_vars : int or None, optional
        Required number of variables (columns after flattening).
    limit : int or None, optional
        Keep only the first ``limit`` rows.

    Returns
    -------
    numpy.ndarray
        C-contiguous int64 array ``(n_samples, n_vars)`` of 0/1 (the output
        of :func:`validate_binary`).

    Raises
    ------
    DataError
        If the file is missing, has an unsupported name, is corrupt, the key
        is missing or unknown, the values are not binary and no threshold was
        given, or the result fails :func:`validate_binary`.
    """
    p = _existing_file(path)
    fmt = _file_format(p)
    limit = None if limit is None else _check_int(limit, "limit", 1)
    if fmt == "idx":
        if key is not None:
            raise DataError(f"key is only meaningful for .npz archives, got key={key!r} for {p}")
        arr = load_idx(p)
        if arr.ndim != 3:
            raise DataError(f"IDX image file {p} must hold a 3-D array (n_images, rows, cols), "
                            f"got a {arr.ndim}-D array of shape {arr.shape}")
    else:
        arr = _load_numpy(p, fmt, key)
    arr = arr.reshape(arr.shape[0], -1) if arr.ndim == 3 else arr
    arr = arr if limit is None else arr[:limit]
    name = f"data in {p}"
    if threshold is not None:
        arr = binarize(arr, threshold)
    elif arr.dtype.kind in "iuf" and arr.size:
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        if ((finite != 0) & (finite != 1)).any():
            raise DataError(f"{name} is not binary: expected values in {{0, 1}}, found values "
                            f"in [{_fmt(finite.min())}, {_fmt(finite.max())}]; pass threshold= "
                            f"to binarize (threshold=50 for thr50, 127.5 for thr127)")
    return validate_binary(arr, n_vars=n_vars, name=name)


def image_shape_for(n_vars: int) -> tuple[int, int] | None:
    """Return the square image shape with ``n_vars`` pixels, if there is one.

    Parameters
    ----------
    n_vars : int
        Number of variables (pixels), at least 1.

    Returns
    -------
    tuple of int or None
        ``(r, r)`` if ``n_vars == r * r`` (784 -> (28, 28), 16 -> (4, 4)), else None.
    """
    n_vars = _check_int(n_vars, "n_vars", 1)
    r = math.isqrt(n_vars)
    return (r, r) if r * r == n_vars else None


def train_test_split(x: Any, test_fraction: float,
                     seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split the rows of ``x`` at random into a training and a test set.

    Parameters
    ----------
    x : array_like
        Array with at least two rows (numpy array, list or torch tensor).
    test_fraction : float
        Fraction of rows for the test set, strictly between 0 and 1; the test
        size ``round(test_fraction * n)`` is clipped to ``[1, n - 1]``.
    seed : int or None, optional
        Seed of the random generator. Default 0.

    Returns
    -------
    train, test : numpy.ndarray
        The two parts, each in the original relative order of its rows.
    """
    arr = _to_numpy(x, "data")
    if arr.ndim == 0 or arr.shape[0] < 2:
        raise DataError(f"data to split must have at least 2 rows, got shape {arr.shape}")
    if not _is_real(test_fraction) or not 0.0 < float(test_fraction) < 1.0:
        raise DataError("test_fraction must be a number strictly between 0 and 1, "
                        f"got {test_fraction!r}")
    n = arr.shape[0]
    n_test = min(max(int(round(float(test_fraction) * n)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return arr[np.sort(perm[n_test:])], arr[np.sort(perm[:n_test])]


def _normalize_name(name: Any) -> str:
    """Return the registry form of a data-set name (lower case, ``_`` -> ``-``)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"dataset name must be a non-empty string, got {name!r}")
    return name.strip().lower().replace("_", "-")


#: Named built-in data sets: name -> function returning a uint8 array.
DATASETS: dict[str, Callable[..., np.ndarray]] = {
    "bars-and-stripes": bars_and_stripes,
    "random": random_binary,
    "parity": even_parity,
}


def register_dataset(name: str, fn: Callable[..., np.ndarray], overwrite: bool = False) -> None:
    """Add a named data set to :data:`DATASETS`.

    Parameters
    ----------
    name : str
        Name of the data set; case and ``_``/``-`` are not distinguished.
    fn : callable
        Function called as ``fn(**kwargs)`` by :func:`get_dataset`.
    overwrite : bool, optional
        Allow replacing an existing entry (otherwise ConfigError). Default False.

    Returns
    -------
    None
    """
    key = _normalize_name(name)
    if not callable(fn):
        raise ConfigError(f"dataset {key!r} needs a callable, got {type(fn).__name__}")
    if key in DATASETS and not overwrite:
        raise ConfigError(f"dataset {key!r} is already registered; "
                          "pass overwrite=True to replace it")
    DATASETS[key] = fn


def get_dataset(name: str, **kwargs: Any) -> np.ndarray:
    """Build a named data set from :data:`DATASETS`.

    Parameters
    ----------
    name : str
        ``"bars-and-stripes"`` (kwargs ``rows``, ``cols``), ``"random"``
        (``n_samples``, ``n_vars``, ``seed``), ``"parity"`` (``n_vars``,
        ``n_samples``, ``seed``) or a name added by :func:`register_dataset`.
    **kwargs
        Keyword arguments of the data-set function.

    Returns
    -------
    numpy.ndarray
        The data set, as returned by the registered function. An unknown name
        (the message lists the valid names) or unfitting kwargs raise ConfigError.
    """
    key = _normalize_name(name)
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    fn = DATASETS[key]
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: just call
        return fn(**kwargs)
    try:
        sig.bind(**kwargs)
    except TypeError as exc:
        params = [p.name for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise ConfigError(f"bad arguments for dataset {key!r}: {exc}; accepted keyword "
                          f"arguments: {', '.join(params)}") from None
    return fn(**kwargs)
