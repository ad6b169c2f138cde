"""Helpers shared by the sub-commands: data sources, image shapes and output."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

__all__ = [
    "LoadedData",
    "load_data_source",
    "data_entropy",
    "reference_line",
    "checkpoint_extra",
    "stored_image_shape",
    "write_npy",
    "Reporter",
]

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
