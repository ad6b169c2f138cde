"""Helpers shared by the sub-commands: data sources, image shapes and output."""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ._settings import flag_of_fields

__all__ = [
    "LoadedData",
    "load_data_source",
    "data_entropy",
    "reference_line",
    "checkpoint_extra",
    "stored_image_shape",
    "write_npy",
    "check_sample_memory",
    "RunFolder",
    "cli_message",
    "held_out_spec",
    "load_held_out",
    "LOCK_NAME",
    "Reporter",
]

#: Lock file that ``tnborn train`` holds in its output folder while it runs.
LOCK_NAME = ".tnborn-train.lock"

_DATA_KEYS = ("data", "key", "threshold", "dataset", "rows", "cols", "dataset_size", "data_seed")
_DEFAULT_RANDOM_SIZE = 100


@dataclass
class LoadedData:
    """A data set read for a command.

    Attributes
    ----------
    x : numpy.ndarray
        ``(samples, N)`` 0/1 configurations.
    description : str
        Human-readable origin (``"bars-and-stripes 4x4"`` or a path).
    image_shape : tuple of int or None
        ``(rows, cols)`` for plots, if known.
    spec : dict
        JSON-serialisable options that rebuild the data (stored in checkpoints).
    """

    x: np.ndarray
    description: str
    image_shape: tuple[int, int] | None
    spec: dict[str, Any]


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def load_data_source(
    options: Mapping[str, Any],
    seed: int = 0,
    default_dataset: str | None = "bars-and-stripes",
    fallback_shape: tuple[int, int] | None = None,
) -> LoadedData:
    """Read the data named by ``--data``/``--dataset`` and their companion options.

    Parameters
    ----------
    options : mapping
        Keys ``data``, ``key``, ``threshold``, ``dataset``, ``rows``, ``cols``,
        ``dataset_size`` (missing or None: not given) and ``data_seed`` (the
        seed of a random data set, overriding ``seed``; stored in specs).
    seed : int
        Seed for the random data sets.
    default_dataset : str or None
        Data set used when neither ``data`` nor ``dataset`` is given (None:
        one of them is required).
    fallback_shape : tuple of int, optional
        Image shape used when ``rows`` is not given (e.g. stored in a checkpoint).

    Returns
    -------
    LoadedData
        The data, a description, the image shape and a re-usable spec.

    Raises
    ------
    ConfigError
        If the options contradict each other or a data set is unknown.
    DataError
        If a file is missing, unreadable or not binary.
    """
    from .. import data as tnd

    opt = {k: options.get(k) for k in _DATA_KEYS}
    seed = seed if opt["data_seed"] is None else opt["data_seed"]
    rows, cols = opt["rows"], opt["cols"]
    if cols is not None and rows is None:
        raise ConfigError("--cols needs --rows")
    if opt["data"] is not None and opt["dataset"] is not None:
        raise ConfigError("give either --data PATH or --dataset NAME, not both")
    spec = {k: v for k, v in opt.items() if v is not None}

    if opt["data"] is not None:
        if opt["dataset_size"] is not None:
            raise ConfigError("--dataset-size applies to --dataset random or parity only, not to --data")
        x = tnd.load_binary(opt["data"], key=opt["key"], threshold=opt["threshold"])
        n = x.shape[1]
        if rows is not None:
            shape: tuple[int, int] | None = (rows, cols if cols is not None else rows)
        elif fallback_shape is not None and fallback_shape[0] * fallback_shape[1] == n:
            shape = fallback_shape
        else:
            shape = tnd.image_shape_for(n)
        if shape is not None and shape[0] * shape[1] != n:
            raise DataError(f"--rows {shape[0]} --cols {shape[1]} make {shape[0] * shape[1]} pixels, "
                            f"but the data in {opt['data']} have {n} variables per row")
        desc = os.fspath(opt["data"]) + (f" [{opt['key']}]" if opt["key"] else "")
        return LoadedData(x, desc, shape, spec)

    if opt["key"] is not None or opt["threshold"] is not None:
        raise ConfigError("--key and --threshold apply to --data files only")
    name = opt["dataset"] if opt["dataset"] is not None else default_dataset
    if name is None:
        raise ConfigError("no data given: use --data PATH (.npy, .npz or IDX file) or --dataset NAME "
                          f"({', '.join(sorted(tnd.DATASETS))})")
    key = _normalize(name)
    if rows is None and fallback_shape is not None:
        rows, cols = fallback_shape
    rows = 4 if rows is None else rows
    cols = rows if cols is None else cols
    size = opt["dataset_size"]
    if key == "bars-and-stripes":
        if size is not None:
            raise ConfigError("--dataset-size applies to random and parity; bars-and-stripes has all "
                              "2^rows + 2^cols - 2 patterns")
        x = tnd.get_dataset(key, rows=rows, cols=cols)
        desc = f"bars-and-stripes {rows}x{cols}"
    elif key == "random":
        size = _DEFAULT_RANDOM_SIZE if size is None else size
        x = tnd.get_dataset(key, n_samples=size, n_vars=rows * cols, seed=seed)
        desc = f"random {rows}x{cols} (seed {seed})"
    elif key == "parity":
        x = tnd.get_dataset(key, n_vars=rows * cols, n_samples=size, seed=seed)
        desc = f"even parity {rows}x{cols}"
    else:
        x = tnd.get_dataset(key)
        desc = key
        shape = (rows, cols) if opt["rows"] is not None else tnd.image_shape_for(np.shape(x)[1])
        x = tnd.validate_binary(x, name=f"dataset {key!r}")
        return LoadedData(x, desc, shape, {**spec, "dataset": key})
    x = tnd.validate_binary(x, name=desc)
    spec.update(dataset=key, rows=rows, cols=cols)
    if size is not None:
        spec["dataset_size"] = size
    if key in ("random", "parity"):
        spec["data_seed"] = seed
    return LoadedData(x, desc, (rows, cols), spec)


def data_entropy(x: np.ndarray) -> tuple[float, int, bool]:
    """Entropy of the empirical distribution of the rows of ``x`` (the lowest possible NLL).

    Parameters
    ----------
    x : numpy.ndarray
        ``(samples, N)`` configurations.

    Returns
    -------
    entropy : float
        ``-sum_v p(v) ln p(v)`` in nats.
    distinct : int
        Number of distinct rows.
    uniform : bool
        Whether every distinct row occurs equally often (then ``entropy == ln distinct``).
    """
    _, counts = np.unique(np.asarray(x), axis=0, return_counts=True)
    p = counts / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    return entropy, int(counts.size), bool(np.all(counts == counts[0]))


def reference_line(x: np.ndarray) -> tuple[str, float]:
    """Label and value of the lowest possible training NLL of ``x``.

    Parameters
    ----------
    x : numpy.ndarray
        Training configurations.

    Returns
    -------
    label : str
        ``"ln 30 = 3.4012"`` for a uniform set of 30 distinct rows, else
        ``"data entropy = ..."``.
    value : float
        The entropy in nats.
    """
    entropy, distinct, uniform = data_entropy(x)
    if uniform:
        return f"ln {distinct} = {math.log(distinct):.4f}", entropy
    return f"data entropy = {entropy:.4f}", entropy


def checkpoint_extra(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``extra`` metadata stored in a checkpoint (``{}`` if none).

    Parameters
    ----------
    path : str or os.PathLike
        A checkpoint.

    Returns
    -------
    dict
        The user metadata written with :func:`tnborn.save`.
    """
    from ..io import read_header

    extra = read_header(path).get("metadata", {}).get("extra")
    return extra if isinstance(extra, dict) else {}


def stored_image_shape(extra: Mapping[str, Any], num_variables: int) -> tuple[int, int] | None:
    """Image shape recorded by ``tnborn train`` if it fits ``num_variables``.

    Parameters
    ----------
    extra : mapping
        Checkpoint ``extra`` metadata.
    num_variables : int
        Number of variables of the model.

    Returns
    -------
    tuple of int or None
        ``(rows, cols)`` or None.
    """
    shape = extra.get("image_shape")
    if (isinstance(shape, (list, tuple)) and len(shape) == 2 and all(isinstance(v, int) for v in shape)
            and shape[0] * shape[1] == num_variables):
        return int(shape[0]), int(shape[1])
    return None


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Save ``array`` as a ``.npy`` file atomically, at exactly ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination (no ``.npy`` is appended).
    array : numpy.ndarray
        The array.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from ..io import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return Path(atomic_write_bytes(path, buf.getvalue()))


#: API names in messages -> the flag that sets them on the command line.
_FLAG_OF = {**flag_of_fields(), "num_samples": "--num-samples", "threshold": "--threshold", "key": "--key",
            "early_stop": "--early-stop"}
_NAMES = "|".join(sorted(_FLAG_OF, key=len, reverse=True))
_PASS = re.compile(rf"\bpass ({_NAMES})=([^\s,;)]*)")
_SETTING = re.compile(rf"(?<![\w.-])({_NAMES})(?= \(| must )")


def cli_message(text: str) -> str:
    """Translate a library error message to command-line spelling.

    ``pass threshold=`` becomes ``pass --threshold`` (``pass max_nll_rise=0``:
    ``pass --max-nll-rise 0``), ``batch_size (31) is
    larger ...`` becomes ``--batch-size (31) is larger ...``, ``lr must be``
    becomes ``--lr must be`` and ``use device='cpu'`` becomes ``use --device cpu``.

    Parameters
    ----------
    text : str
        The message of a :class:`~tnborn.errors.TnbornError`.

    Returns
    -------
    str
        The message for ``tnborn: error:``.
    """
    text = _PASS.sub(lambda m: f"pass {_FLAG_OF[m.group(1)]}" + (f" {m.group(2)}" if m.group(2) else ""), text)
    text = _SETTING.sub(lambda m: _FLAG_OF[m.group(1)], text)
    return text.replace("use device='cpu' or 'auto'", "use --device cpu or auto")


def _fingerprint(x: np.ndarray) -> str:
    import hashlib

    arr = np.ascontiguousarray(np.asarray(x, dtype=np.int64))
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()


def held_out_spec(path: str | os.PathLike[str], key: str | None, threshold: float | None,
                  x: np.ndarray) -> dict[str, Any]:
    """Reference to the ``--test-data`` set stored in a checkpoint: path, options, SHA-256.

    Parameters
    ----------
    path, key, threshold
        How the data were read.
    x : numpy.ndarray
        The binary data read.

    Returns
    -------
    dict
        ``{"path", "key", "threshold", "sha256"}`` (JSON-serialisable).
    """
    return {"path": os.fspath(path), "key": key, "threshold": threshold, "sha256": _fingerprint(x)}


def load_held_out(spec: Mapping[str, Any], num_variables: int) -> np.ndarray:
    """Read the held-out data a checkpoint refers to, checking they did not change.

    Parameters
    ----------
    spec : mapping
        As written by :func:`held_out_spec`.
    num_variables : int
        Variables of the model.

    Returns
    -------
    numpy.ndarray
        The data.

    Raises
    ------
    DataError
        If the file is missing or its content differs from when the
        checkpoint was written.
    """
    from .. import data as tnd

    path = spec.get("path")
    if not isinstance(path, str):
        raise DataError("the checkpoint's held-out data reference is malformed; pass --test-data PATH")
    x = tnd.load_binary(path, key=spec.get("key"), threshold=spec.get("threshold"), n_vars=num_variables)
    if _fingerprint(x) != spec.get("sha256"):
        raise DataError(f"the held-out data {path} changed since the checkpoint was written (SHA-256 "
                        "differs); pass --test-data PATH to use them anyway")
    return x


def check_sample_memory(num_samples: int, num_variables: int) -> None:
    """Refuse ``--num-samples`` whose arrays cannot fit in memory, before allocating them.

    The sampler holds ``num_samples x num_variables`` int64 configurations
    plus per-sample float64 log-probabilities; the command adds a uint8 copy.

    Parameters
    ----------
    num_samples : int
        Samples asked for.
    num_variables : int
        Variables of the model.

    Raises
    ------
    ConfigError
        If the estimate exceeds the physical memory (:func:`tnborn.io.memory_limit`).
    """
    from ..io import memory_limit

    need = num_samples * (num_variables * 9 + 16)
    limit = memory_limit()
    if need > limit:
        raise ConfigError(f"--num-samples {num_samples} needs about {need / 2**30:.3g} GiB for {num_variables} "
                          f"variables, more than the {limit / 2**30:.3g} GiB of memory; draw fewer samples "
                          "(several runs with different --seed)")


class RunFolder:
    """The output folder of one ``tnborn train`` run: checked, created and locked.

    Use as a context manager. On entry the folder is created if missing, an
    exclusive ``fcntl`` lock is taken on ``DIR/.tnborn-train.lock`` (a second
    run into the same folder fails at once), and a folder that already holds
    files is refused unless ``overwrite`` (or ``resume``) is set. If the run
    fails and the folder was created by it and holds nothing else, it is
    removed again, so a failed run leaves no empty folder.

    Parameters
    ----------
    path : path-like
        The folder.
    overwrite : bool
        Allow replacing the outputs of an earlier run.
    resume : bool
        The run continues a checkpoint (writes where it is told).
    """

    def __init__(self, path: str | os.PathLike[str], overwrite: bool = False, resume: bool = False):
        self.path = Path(path)
        self.overwrite, self.resume = bool(overwrite), bool(resume)
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> "RunFolder":
        import fcntl

        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} exists and is not a folder")
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK_NAME
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"another tnborn train is writing to {self.path} (it holds the lock "
                              f"{lock}); wait for it to finish or choose another --out") from None
        self._fd = fd
        others = sorted(p.name for p in self.path.iterdir() if p.name != LOCK_NAME)
        if others and not (self.overwrite or self.resume):
            self._release(remove=False)
            shown = ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")
            raise ConfigError(f"--out {self.path} is not empty ({shown}): it holds an earlier run; "
                              "pass --overwrite to replace its outputs, or choose another --out")
        return self

    def _release(self, remove: bool) -> None:
        if self._fd is None:
            return
        if remove and self._created and [p.name for p in self.path.iterdir()] == [LOCK_NAME]:
            with contextlib_suppress():
                os.unlink(self.path / LOCK_NAME)
                self.path.rmdir()
        os.close(self._fd)  # releases the lock
        self._fd = None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._release(remove=exc_type is not None)


def contextlib_suppress():
    import contextlib

    return contextlib.suppress(OSError)


class Reporter:
    """Prints progress lines on standard output unless ``quiet``.

    Parameters
    ----------
    quiet : bool
        Suppress everything.
    """

    def __init__(self, quiet: bool = False):
        self.quiet = bool(quiet)

    def __call__(self, text: str = "") -> None:
        """Print ``text`` (a line) unless quiet."""
        if not self.quiet:
            print(text, flush=True)
