"""Low-level checkpoint file format and atomic file writing.

A tnborn checkpoint is a single file holding a set of named NumPy arrays and a
JSON-serialisable metadata dictionary.  Model-level save/load is built on top
of :func:`save_arrays` and :func:`load_arrays`; this module knows nothing about
models.

File layout
-----------
The file is a ZIP archive (readable without :mod:`pickle`) containing

``header.json``
    UTF-8 JSON object with the keys

    - ``"format"``: always :data:`FORMAT_NAME`;
    - ``"format_version"``: integer, :data:`FORMAT_VERSION` at writing time;
    - ``"created_utc"``: ISO 8601 creation time in UTC;
    - ``"metadata"``: the caller's metadata dictionary;
    - ``"arrays"``: list, in insertion order, of one record per array with
      ``"name"``, ``"entry"`` (archive member name), ``"dtype"`` (NumPy dtype
      string such as ``"<c16"``), ``"shape"``, ``"nbytes"`` and ``"sha256"``
      (hex digest of the array's C-order bytes);
    - ``"checksum"``: SHA-256 hex digest of the canonical JSON encoding of
      ``{"arrays": ..., "metadata": ...}``, which protects the header itself.

``arrays/NNNNNN.npy``
    One ``.npy`` file per array, written with
    :func:`numpy.lib.format.write_array` and ``allow_pickle=False``.  Entry
    names are numbered so that any array name (slashes, unicode, ...) is
    allowed.

All files are written atomically (temporary file in the target folder,
``fsync``, :func:`os.replace`), so an interrupted write never leaves a partial
file at the target path: it holds either the previous content or the new one.

What a write may replace
------------------------
:func:`atomic_open` (and everything built on it) writes only regular files:

- a new path, or an existing regular file, is written atomically;
- a symbolic link is followed (also through chains of links): the file it
  finally points to is written atomically, the link itself is kept; a
  dangling link creates the file it names;
- a directory, character or block device (``/dev/null``, ``/dev/full``),
  FIFO or socket at the path (or at the end of a link) is refused with a
  :class:`~tnborn.errors.ConfigError` before anything is written, so a device
  node is never turned into a regular file.

:func:`check_not_input` refuses an output path that names an input file
(the same file by :func:`os.path.samefile`: through hard links, symbolic
links or another spelling of the path).

Bounded reading
---------------
:func:`read_header` and :func:`load_arrays` read regular files only (a
FIFO or ``/dev/zero`` is refused before it is opened), read the header with
a cap of :data:`MAX_HEADER_BYTES` and a nesting limit of
:data:`MAX_HEADER_DEPTH`, and check every array's declared size against the
header, the archive's size and a memory limit (see :func:`load_arrays`)
before reading it; an array entry is then read header first (its dtype and
shape are compared with the checkpoint header before any data are read) and
never past the size the header declares.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import pathlib
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, Union

import numpy as np

from tnborn.errors import CheckpointError, ConfigError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "HEADER_ENTRY",
    "SUPPORTED_DTYPE_KINDS",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_DEPTH",
    "memory_limit",
    "check_not_input",
    "check_output_path",
    "save_arrays",
    "load_arrays",
    "read_header",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Value of the ``"format"`` field of every tnborn checkpoint header.
FORMAT_NAME = "tnborn-checkpoint"
#: Newest checkpoint format version this module can write and read.
FORMAT_VERSION = 1
#: Name of the JSON header member inside the archive.
HEADER_ENTRY = "header.json"
#: NumPy dtype kinds that may be stored: bool, signed/unsigned int, float, complex.
SUPPORTED_DTYPE_KINDS = frozenset("biufc")

#: Largest ``header.json`` that is read (bytes); a larger one is refused unread.
MAX_HEADER_BYTES = 256 * 2**20
#: Deepest nesting of JSON arrays and objects accepted in a header.
MAX_HEADER_DEPTH = 100
#: Largest ``.npy`` header of an array entry (bytes beyond the array data).
_MAX_NPY_HEADER = 2**20
#: Deflate expands at most about 1032:1; a larger declared ratio is forged.
_MAX_DEFLATE_RATIO = 1100

_ARRAY_ENTRY_PREFIX = "arrays/"
_ARRAY_RECORD_KEYS = ("name", "entry", "dtype", "shape", "nbytes", "sha256")


# ---------------------------------------------------------------------------
# Atomic writing
# ---------------------------------------------------------------------------


def _current_umask() -> int:
    """Return the process umask (read once, at import time)."""
    try:
        mask = os.umask(0)
        os.umask(mask)
    except (AttributeError, OSError):  # pragma: no cover - exotic platforms
        mask = 0o022
    return mask


_UMASK = _current_umask()


def _fsync_directory(directory: pathlib.Path) -> None:
    """Flush a directory entry to disk; best effort, silent where unsupported."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_open(
    path: PathLike,
    mode: str = "wb",
    *,
    encoding: str = "utf-8",
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a file for writing so that it appears at `path` all at once.

    The yielded file object writes to a hidden temporary file in the same
    folder as `path`.  When the ``with`` block exits normally the data are
    flushed and ``fsync``-ed, the temporary file is renamed onto `path` with
    :func:`os.replace`, and the folder is ``fsync``-ed (best effort).  When the
    block raises, the temporary file is removed, the exception propagates, and
    any previous file at `path` is left untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.  Missing parent folders are created.
    mode : {"wb", "w", "wt"}, default "wb"
        Binary (``"wb"``) or text (``"w"``/``"wt"``) writing.
    encoding : str, default "utf-8"
        Text encoding; used in text mode only.
    newline : str or None, optional
        Newline translation, as for :func:`open`; text mode only.

    Yields
    ------
    file object
        Writable file object; do not close it inside the block.

    Raises
    ------
    ConfigError
        If `mode` is not one of the supported modes, or `path` (or the file
        a symbolic link at `path` points to) exists and is not a regular file
        (see :func:`check_output_path`).
    OSError
        If the folder cannot be created or the file cannot be written or
        renamed.

    Notes
    -----
    A symbolic link at `path` is kept: the file it points to is replaced.
    The new file gets the permission bits of the file it replaces, or the
    usual ``0o666 & ~umask`` if there was none.  A process killed with
    ``SIGKILL`` mid-write may leave a ``.<name>.*.tmp`` file behind, but never
    a partial file at `path`.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_open(target, "w") as fh:
    ...     _ = fh.write("hello")
    >>> target.read_text()
    'hello'
    """
    if mode == "wb":
        open_kwargs: dict[str, Any] = {"mode": "wb"}
    elif mode in ("w", "wt"):
        open_kwargs = {"mode": "w", "encoding": encoding, "newline": newline}
    else:
        raise ConfigError(f"atomic_open: mode must be 'wb', 'w' or 'wt', got {mode!r}")

    target = check_output_path(path)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)

    try:
        new_mode = target.stat().st_mode & 0o7777
    except OSError:
        new_mode = 0o666 & ~_UMASK

    tmp = tempfile.NamedTemporaryFile(
        dir=parent, prefix=f".{target.name}.", suffix=".tmp", delete=False, **open_kwargs
    )
    tmp_name = tmp.name
    try:
        yield tmp
        tmp.flush()
        os.fsync(tmp.fileno())
        tmp.close()
        with contextlib.suppress(OSError, NotImplementedError):
            os.chmod(tmp_name, new_mode)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(Exception):
            tmp.close()
        _unlink_quietly(tmp_name)
        raise
    _fsync_directory(parent)


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def _file_kind(mode: int) -> str:
    """``"a directory"``, ``"a FIFO (named pipe)"``, ... for a non-regular ``st_mode``."""
    for test, name in _FILE_KINDS:
        if test(mode):
            return name
    return "not a regular file"


def check_output_path(path: PathLike) -> pathlib.Path:
    """Return the file an atomic write of `path` replaces, refusing anything but regular files.

    Parameters
    ----------
    path : str or os.PathLike
        Where an output is to be written.

    Returns
    -------
    pathlib.Path
        `path` itself, or, when `path` is a symbolic link, the path it finally
        resolves to (the link is kept and its target is written).

    Raises
    ------
    ConfigError
        If `path` (or the end of its chain of links) exists and is a
        directory, a device, a FIFO or a socket.
    OSError
        If a link cannot be resolved (e.g. a loop of links).
    """
    given = pathlib.Path(os.fspath(path))
    target = given
    if given.is_symlink():
        target = pathlib.Path(os.path.realpath(given))
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    if not stat.S_ISREG(mode):
        via = f" (the target of the link {os.fspath(given)!r})" if target != given else ""
        raise ConfigError(
            f"cannot write {os.fspath(target)!r}{via}: it is {_file_kind(mode)}, not a regular "
            "file; tnborn writes outputs only to regular files or new paths (an existing file "
            "is replaced atomically)"
        )
    return target


def check_not_input(output: PathLike, inputs: Iterable[PathLike | None], *, what: str = "output") -> None:
    """Refuse to write `output` when it is one of the `inputs`.

    Two paths are the same file when :func:`os.path.samefile` says so (same
    device and inode: hard links, symbolic links, ``./a`` and ``a``), or, for
    paths that do not exist yet, when they resolve to the same path.

    Parameters
    ----------
    output : str or os.PathLike
        The path about to be written.
    inputs : iterable of str, os.PathLike or None
        Files read by the same command (None entries are skipped).
    what : str, default "output"
        How to name `output` in the message (e.g. ``"--out samples.tnb"``).

    Raises
    ------
    ConfigError
        If `output` is one of `inputs`.
    """
    out = os.fspath(output)
    for source in inputs:
        if source is None:
            continue
        src = os.fspath(source)
        try:
            same = os.path.samefile(out, src)
        except OSError:
            same = os.path.realpath(out) == os.path.realpath(src)
        if same:
            extra = "" if os.path.abspath(out) == os.path.abspath(src) else f" ({src!r})"
            raise ConfigError(
                f"{what} is the input file {out!r}{extra}; writing it would destroy the "
                "input: choose another output path"
            )


def atomic_write_bytes(path: PathLike, data: bytes) -> pathlib.Path:
    """Write `data` to `path` atomically (see :func:`atomic_open`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; missing parent folders are created.
    data : bytes-like
        Content of the file.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return pathlib.Path(os.fspath(path))


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8") -> pathlib.Path:
    """Write `text` to `path` atomically (see :func:`atomic_open`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; missing parent folders are created.
    text : str
        Content of the file; newlines are written as given (no translation).
    encoding : str, default "utf-8"
        Text encoding.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if not isinstance(text, str):
        raise TypeError(f"atomic_write_text: text must be str, got {type(text).__name__}")
    with atomic_open(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)
    return pathlib.Path(os.fspath(path))


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------


def _check_metadata(value: Any, where: str, seen: set[int]) -> None:
    """Raise CheckpointError if `value` does not round-trip through JSON."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, (int, float)):
        # int/float subclasses (IntEnum, numpy.float64) are written as plain numbers
        return
    if isinstance(value, (dict, list, tuple)):
        if id(value) in seen:
            raise CheckpointError(f"metadata{where} contains a circular reference")
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise CheckpointError(
                        f"metadata{where} has key {key!r} of type {type(key).__name__}; "
                        "JSON object keys must be str"
                    )
                _check_metadata(item, f"{where}[{key!r}]", seen)
        else:
            for i, item in enumerate(value):
                _check_metadata(item, f"{where}[{i}]", seen)
        seen.discard(id(value))
        return
    hint = ""
    if isinstance(value, (np.generic, np.ndarray)):
        hint = "; convert NumPy values with .item() or .tolist(), or store arrays as arrays"
    raise CheckpointError(
        f"metadata{where} has type {type(value).__module__}.{type(value).__qualname__}, "
        f"which is not JSON-serialisable (expected dict, list, str, int, float, bool or None){hint}"
    )


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True
    ).encode("ascii")


def _header_checksum(array_table: list[dict[str, Any]], metadata: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the array table and metadata."""
    payload = _canonical_json({"arrays": array_table, "metadata": metadata})
    return hashlib.sha256(payload).hexdigest()


def _array_sha256(array: np.ndarray) -> str:
    """SHA-256 of the C-order bytes of `array`."""
    contiguous = array if array.flags.c_contiguous else np.ascontiguousarray(array)
    if contiguous.ndim == 0:
        contiguous = contiguous.reshape(1)
    return hashlib.sha256(contiguous.reshape(-1).view(np.uint8)).hexdigest()


def _is_storable(dtype: np.dtype) -> bool:
    """Whether arrays of `dtype` can be stored without pickle and read back exactly."""
    return not dtype.hasobject and dtype.fields is None and dtype.kind in SUPPORTED_DTYPE_KINDS


def _prepare_array(name: Any, value: Any) -> np.ndarray:
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"array names must be non-empty str, got {name!r}")
    if not isinstance(value, np.ndarray):
        raise CheckpointError(
            f"array {name!r} must be a numpy.ndarray, got {type(value).__module__}."
            f"{type(value).__qualname__} (convert tensors with .detach().cpu().numpy())"
        )
    dtype = value.dtype
    if not _is_storable(dtype):
        raise CheckpointError(
            f"array {name!r} has dtype {dtype!s}, which cannot be stored; expected a bool, "
            "integer, float or complex dtype (object arrays would need pickle)"
        )
    return value if value.flags.c_contiguous else np.ascontiguousarray(value)


def _display(path: PathLike) -> str:
    return repr(os.fspath(path))


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def save_arrays(
    path: PathLike,
    arrays: Mapping[str, np.ndarray],
    metadata: Mapping[str, Any],
    *,
    compress: bool = False,
) -> pathlib.Path:
    """Write named arrays and a metadata dictionary to one checkpoint file.

    The file is written atomically: a crash or exception during the write
    leaves any previous file at `path` unchanged.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file (conventionally with suffix ``.tnb``); missing parent
        folders are created and an existing file is replaced.
    arrays : Mapping[str, numpy.ndarray]
        Arrays to store, by name.  Names are arbitrary non-empty strings.
        Dtypes must be bool, signed/unsigned integer, float or complex; byte
        order and values are preserved bit-exactly.  Non-contiguous arrays are
        stored in C order.
    metadata : Mapping[str, Any]
        JSON-serialisable data: nested ``dict`` (with ``str`` keys), ``list``,
        ``tuple`` (read back as ``list``), ``str``, ``int``, ``float``
        (including ``nan``/``inf``), ``bool`` and ``None``.
    compress : bool, default False
        Deflate the array entries.  Slower, and usually of little use for
        floating-point tensors.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    CheckpointError
        If an array name, array type or dtype (e.g. ``object``) cannot be
        stored, or if `metadata` is not JSON-serialisable.
    OSError
        If the file cannot be written.

    See Also
    --------
    load_arrays, read_header

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "ckpt.tnb"
    >>> _ = save_arrays(p, {"w": np.eye(2)}, {"step": 3})
    >>> arrays, meta = load_arrays(p)
    >>> meta["step"], arrays["w"].shape
    (3, (2, 2))
    """
    if not isinstance(arrays, Mapping):
        raise CheckpointError(
            f"arrays must be a mapping of name -> numpy.ndarray, got {type(arrays).__name__}"
        )
    if not isinstance(metadata, Mapping):
        raise CheckpointError(f"metadata must be a mapping (dict), got {type(metadata).__name__}")
    metadata = dict(metadata)
    _check_metadata(metadata, "", set())
    # normalise (tuples -> lists, float subclasses -> float) exactly as the
    # reader will see it, keeping the key order
    metadata = json.loads(json.dumps(metadata, ensure_ascii=True, allow_nan=True))

    prepared: list[tuple[str, np.ndarray]] = []
    table: list[dict[str, Any]] = []
    for index, (name, value) in enumerate(arrays.items()):
        array = _prepare_array(name, value)
        entry = f"{_ARRAY_ENTRY_PREFIX}{index:06d}.npy"
        prepared.append((entry, array))
        table.append(
            {
                "name": name,
                "entry": entry,
                "dtype": array.dtype.str,
                "shape": [int(n) for n in array.shape],
                "nbytes": int(array.nbytes),
                "sha256": _array_sha256(array),
            }
        )

    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "metadata": metadata,
        "arrays": table,
        "checksum": _header_checksum(table, metadata),
    }
    header_bytes = json.dumps(header, indent=1, ensure_ascii=True, allow_nan=True).encode("ascii")
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED

    with atomic_open(path, "wb") as fh:
        with zipfile.ZipFile(fh, mode="w", compression=compression, allowZip64=True) as zf:
            zf.writestr(HEADER_ENTRY, header_bytes, compress_type=zipfile.ZIP_DEFLATED)
            for entry, array in prepared:
                with zf.open(entry, mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
    return pathlib.Path(os.fspath(path))


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _open_archive(path: PathLike) -> zipfile.ZipFile:
    p = pathlib.Path(os.fspath(path))
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file not found: {_display(path)}") from None
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"{_display(path)} is a directory, expected a tnborn checkpoint file")
    if not stat.S_ISREG(mode):
        # never opened: a FIFO would block, /dev/zero would be read without end
        raise CheckpointError(
            f"{_display(path)} is {_file_kind(mode)}, not a regular file; a tnborn checkpoint "
            "is a regular file"
        )
    try:
        zf = zipfile.ZipFile(p, mode="r")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
        size = ""
        with contextlib.suppress(OSError):
            size = f", {p.stat().st_size} bytes"
        raise CheckpointError(
            f"{_display(path)} is not a tnborn checkpoint (not a readable archive{size}: "
            f"{exc}); the file may be truncated, corrupted or of another type"
        ) from exc
    return zf


def _json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether JSON `value` nests arrays/objects more than `limit` levels (iterative)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _foreign_hint(names: list[str]) -> str:
    if names and all(n.endswith(".npy") for n in names):
        return "; it looks like a NumPy .npz archive"
    if any(n.endswith("data.pkl") for n in names):
        return "; it looks like a PyTorch checkpoint"
    return ""


def _parse_header(zf: zipfile.ZipFile, path: PathLike) -> dict[str, Any]:
    names = zf.namelist()
    if HEADER_ENTRY not in names:
        raise CheckpointError(
            f"{_display(path)} is not a tnborn checkpoint (archive has no {HEADER_ENTRY!r}"
            f"{_foreign_hint(names)})"
        )
    declared = zf.getinfo(HEADER_ENTRY).file_size
    if declared > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{_display(path)}: checkpoint header declares {declared} bytes, more than the limit "
            f"of {MAX_HEADER_BYTES} bytes (tnborn.io.MAX_HEADER_BYTES); refusing to read it"
        )
    try:
        with zf.open(HEADER_ENTRY, mode="r") as member:
            raw = member.read(MAX_HEADER_BYTES + 1)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as exc:
        raise CheckpointError(f"{_display(path)}: checkpoint header is corrupted ({exc})") from exc
    if len(raw) > MAX_HEADER_BYTES:  # pragma: no cover - zipfile stops at the declared size
        raise CheckpointError(f"{_display(path)}: checkpoint header is larger than {MAX_HEADER_BYTES} bytes")
    try:
        header = json.loads(raw.decode("utf-8"))
    except RecursionError:
        header = None
        deep = True
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(
            f"{_display(path)} is not a tnborn checkpoint "
            f"({HEADER_ENTRY} is not valid UTF-8 JSON: {exc})"
        ) from exc
    else:
        deep = _json_depth_exceeds(header, MAX_HEADER_DEPTH)
    if deep:
        raise CheckpointError(
            f"{_display(path)}: malformed checkpoint header: JSON nested more than "
            f"{MAX_HEADER_DEPTH} levels deep (tnborn.io.MAX_HEADER_DEPTH)"
        )
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{_display(path)} is not a tnborn checkpoint ({HEADER_ENTRY} must hold a JSON "
            f"object, found {type(header).__name__})"
        )

    fmt = header.get("format")
    if fmt != FORMAT_NAME:
        raise CheckpointError(
            f"{_display(path)} is not a tnborn checkpoint (header format is {fmt!r}, "
            f"expected {FORMAT_NAME!r})"
        )
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(
            f"{_display(path)}: invalid checkpoint format version {version!r} "
            "(expected a positive integer)"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{_display(path)} was written by a newer tnborn (format version {version} > "
            f"{FORMAT_VERSION}); upgrade tnborn to read it"
        )

    _validate_header_structure(header, path)
    expected = _header_checksum(header["arrays"], header["metadata"])
    if header["checksum"] != expected:
        raise CheckpointError(
            f"{_display(path)}: checkpoint header checksum mismatch (stored "
            f"{header['checksum']!r}, computed {expected!r}); the header is corrupted or was edited"
        )
    return header


def _validate_header_structure(header: dict[str, Any], path: PathLike) -> None:
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{_display(path)}: malformed checkpoint header: {what}")

    if not isinstance(header.get("metadata"), dict):
        raise bad("'metadata' must be a JSON object")
    if not isinstance(header.get("checksum"), str):
        raise bad("'checksum' must be a string")
    table = header.get("arrays")
    if not isinstance(table, list):
        raise bad("'arrays' must be a list")
    names: set[str] = set()
    entries: set[str] = set()
    for i, rec in enumerate(table):
        if not isinstance(rec, dict) or any(k not in rec for k in _ARRAY_RECORD_KEYS):
            raise bad(f"array record {i} must be an object with keys {list(_ARRAY_RECORD_KEYS)}")
        name, entry = rec["name"], rec["entry"]
        if not isinstance(name, str) or not name:
            raise bad(f"array record {i} has invalid name {name!r}")
        if not isinstance(entry, str) or entry == HEADER_ENTRY or not entry:
            raise bad(f"array {name!r} has invalid entry {entry!r}")
        if name in names:
            raise bad(f"array name {name!r} appears twice")
        if entry in entries:
            raise bad(f"archive entry {entry!r} is used by two arrays")
        names.add(name)
        entries.add(entry)
        shape = rec["shape"]
        if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise bad(
                f"array {name!r} has invalid shape {shape!r} (expected a list of non-negative ints)"
            )
        try:
            dtype = np.dtype(rec["dtype"]) if isinstance(rec["dtype"], str) else None
        except (TypeError, ValueError):
            dtype = None
        if dtype is None or not _is_storable(dtype):
            raise bad(f"array {name!r} has unsupported dtype {rec['dtype']!r}")
        nbytes = rec["nbytes"]
        if (
            not isinstance(nbytes, int)
            or isinstance(nbytes, bool)
            or nbytes != math.prod(shape) * dtype.itemsize
        ):
            raise bad(
                f"array {name!r}: nbytes {nbytes!r} does not match dtype {dtype.str} "
                f"and shape {shape}"
            )
        sha = rec["sha256"]
        if not isinstance(sha, str) or len(sha) != 64:
            raise bad(f"array {name!r} has invalid sha256 {sha!r}")


def read_header(path: PathLike) -> dict[str, Any]:
    """Read and validate only the header of a checkpoint.

    Cheap even for large checkpoints: array data are not read.

    Parameters
    ----------
    path : str or os.PathLike
        Checkpoint file written by :func:`save_arrays`.

    Returns
    -------
    dict
        The parsed header: ``format``, ``format_version``, ``created_utc``,
        ``metadata``, ``arrays`` (list of ``name``/``entry``/``dtype``/
        ``shape``/``nbytes``/``sha256`` records) and ``checksum``.

    Raises
    ------
    CheckpointError
        If the file is missing, not a readable archive, has no or an invalid
        header, is of another format, is from a newer format version, or the
        header checksum does not match.
    """
    with _open_archive(path) as zf:
        return _parse_header(zf, path)


def memory_limit() -> int:
    """Default bound on the bytes of arrays :func:`load_arrays` reads: the physical memory.

    Returns
    -------
    int
        Total physical memory in bytes (``os.sysconf``), or 1 TiB where it is
        unknown. The environment variable ``TNBORN_MAX_LOAD_BYTES`` (an
        integer) overrides it.
    """
    env = os.environ.get("TNBORN_MAX_LOAD_BYTES")
    if env:
        with contextlib.suppress(ValueError):
            return max(0, int(env))
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 2**40


def _check_declared_sizes(
    zf: zipfile.ZipFile, header: dict[str, Any], path: PathLike, max_bytes: int
) -> None:
    """Refuse, before reading any array, sizes the header or the archive cannot back."""
    total = sum(rec["nbytes"] for rec in header["arrays"])
    if total > max_bytes:
        raise CheckpointError(
            f"{_display(path)}: the header declares {total} bytes of arrays, more than the limit "
            f"of {max_bytes} bytes (max_bytes; default: the physical memory); refusing to read them"
        )
    archive_size = os.stat(os.fspath(path)).st_size
    for rec in header["arrays"]:
        name, info = rec["name"], zf.getinfo(rec["entry"])
        if info.file_size < rec["nbytes"]:
            raise CheckpointError(
                f"{_display(path)}: array {name!r} is truncated (archive entry holds {info.file_size} "
                f"bytes, header says {rec['nbytes']} bytes of data)"
            )
        if info.file_size > rec["nbytes"] + _MAX_NPY_HEADER:
            raise CheckpointError(
                f"{_display(path)}: array {name!r}: the archive entry declares {info.file_size} bytes, "
                f"but the header says {rec['nbytes']} bytes of data; refusing to read it"
            )
        stored = info.compress_type == zipfile.ZIP_STORED
        if info.compress_size > archive_size or (stored and info.file_size != info.compress_size) or (
            not stored and info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024
        ):
            raise CheckpointError(
                f"{_display(path)}: array {name!r}: the archive entry declares {info.file_size} bytes "
                f"({info.compress_size} compressed) in a file of {archive_size} bytes; the archive "
                "directory is corrupted or forged"
            )


def _read_npy_header(member: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read the ``.npy`` header of an entry (shape, Fortran order, dtype), never its data."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(member)
    raise ValueError(f"unsupported .npy format version {version}")


def _read_member_array(zf: zipfile.ZipFile, rec: dict[str, Any], path: PathLike) -> np.ndarray:
    name, entry = rec["name"], rec["entry"]
    expected_dtype = np.dtype(rec["dtype"])
    expected_shape = tuple(rec["shape"])
    try:
        with zf.open(entry, mode="r") as member:
            shape, fortran, dtype = _read_npy_header(member)
            # compare with the checkpoint header before reading any data
            if dtype.hasobject:
                raise CheckpointError(
                    f"{_display(path)}: array {name!r} entry declares an object (pickled) dtype; "
                    "tnborn never reads pickles"
                )
            if dtype != expected_dtype or dtype.str != expected_dtype.str:
                raise CheckpointError(
                    f"{_display(path)}: array {name!r} has dtype {dtype.str!r} in the archive, "
                    f"but the header expects {expected_dtype.str!r}"
                )
            if tuple(shape) != expected_shape:
                raise CheckpointError(
                    f"{_display(path)}: array {name!r} has shape {tuple(shape)} in the archive, "
                    f"but the header expects shape {expected_shape}"
                )
            buffer = bytearray(rec["nbytes"])
            view, pos = memoryview(buffer), 0
            while pos < len(buffer):
                got = member.readinto(view[pos: pos + 2**24])
                if not got:
                    raise EOFError(f"entry ends after {pos} of {len(buffer)} data bytes")
                pos += got
            # read on to the end so that zipfile verifies the CRC-32 of the entry
            trailing = member.read(1)
    except (zipfile.BadZipFile, zlib.error) as exc:
        raise CheckpointError(
            f"{_display(path)}: array {name!r} is corrupted (archive integrity check failed: {exc})"
        ) from exc
    except (EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{_display(path)}: array {name!r} is truncated or corrupted and could not be "
            f"read ({exc})"
        ) from exc
    if trailing:
        raise CheckpointError(
            f"{_display(path)}: array {name!r} entry has unexpected trailing data"
        )
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    digest = _array_sha256(array)
    if digest != rec["sha256"]:
        raise CheckpointError(
            f"{_display(path)}: array {name!r} is corrupted (sha256 checksum mismatch: "
            f"expected {rec['sha256']}, got {digest})"
        )
    return array


def load_arrays(
    path: PathLike, map_location: Any = None, *, max_bytes: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a checkpoint written by :func:`save_arrays`.

    Every array is checked against the header (dtype, shape, SHA-256 of its
    bytes) and the header against its own checksum.  No pickle is used.

    Parameters
    ----------
    path : str or os.PathLike
        Checkpoint file.
    map_location : optional
        Accepted for symmetry with model-level loaders, which use it to place
        tensors on a device.  Arrays are always returned as host NumPy arrays,
        so this argument has no effect here.

    Returns
    -------
    arrays : dict[str, numpy.ndarray]
        The arrays, by name, in the order they were saved, with the saved
        dtype (including byte order) and shape.
    metadata : dict
        The metadata dictionary (tuples come back as lists).

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, not a readable archive, of another
        format, from a newer format version, lacks or has extra array entries,
        declares more data than the archive or `max_bytes` can hold, or if a
        dtype, shape or checksum does not match the header.

    See Also
    --------
    save_arrays, read_header
    """
    del map_location  # numpy arrays live on the host; see docstring
    with _open_archive(path) as zf:
        header = _parse_header(zf, path)
        names = zf.namelist()
        if len(names) != len(set(names)):
            dups = sorted({n for n in names if names.count(n) > 1})
            raise CheckpointError(f"{_display(path)}: archive has duplicate entries {dups}")
        listed = {rec["entry"]: rec["name"] for rec in header["arrays"]}
        present = set(names) - {HEADER_ENTRY}
        missing = [f"{listed[e]!r} ({e})" for e in listed if e not in present]
        if missing:
            raise CheckpointError(
                f"{_display(path)}: array(s) {', '.join(missing)} listed in the header are "
                "missing from the archive"
            )
        extra = sorted(present - set(listed))
        if extra:
            raise CheckpointError(
                f"{_display(path)}: archive entries {extra} are not listed in the checkpoint header"
            )
        _check_declared_sizes(zf, header, path, memory_limit() if max_bytes is None else max_bytes)
        arrays = {rec["name"]: _read_member_array(zf, rec, path) for rec in header["arrays"]}
    return arrays, header["metadata"]
