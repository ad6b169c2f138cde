"""Save and load Born machines (and their trainers) without pickle.

A checkpoint is one file in the format of :mod:`tnborn.io` (a zip of ``.npy``
arrays and a JSON header with checksums, written atomically). It records the
geometry's registry name and construction parameters, every node array (in
the order of :meth:`BornMachine.nodes`, with its quimb index names), the
canonical centre, the library versions and, optionally, the trainer state, so
that :func:`load` rebuilds the model without knowing its class in advance.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backend import resolve_device, resolve_dtype, to_numpy
from .errors import CheckpointError, ConfigError, DeviceError
from .interface import BornMachine
from .io import load_arrays, read_header, save_arrays
from .registry import get_geometry

__all__ = ["save", "load", "load_trainer_state", "checkpoint_info", "MODEL_FORMAT"]

#: Version of the model layout inside the file (independent of the file format).
MODEL_FORMAT = 1


def _versions() -> dict[str, str]:
    import quimb

    from . import __version__

    return {"tnborn": __version__, "quimb": quimb.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _json_key(node: Any) -> Any:
    return list(node) if isinstance(node, tuple) else node


def save(path: str | Path, model: BornMachine, trainer: Any = None, extra: dict | None = None) -> Path:
    """Write ``model`` (and optionally ``trainer``'s state) to ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        Destination file (parent folders are created).
    model : BornMachine
        The model.
    trainer : SweepTrainer or GradientTrainer, optional
        Its ``state_dict()`` is stored so that training can resume exactly.
    extra : dict, optional
        JSON-serialisable user metadata.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for i, node in enumerate(model.nodes()):
        t = model.node_tensor(node)
        arrays[f"node/{i}"] = np.ascontiguousarray(to_numpy(t.data))
        nodes.append({"node": _json_key(node), "inds": list(t.inds)})
    center = model.center
    meta = {
        "library": "tnborn",
        "model_format": MODEL_FORMAT,
        "geometry": model.geometry,
        "config": model.config(),
        "dtype": str(model.dtype).replace("torch.", ""),
        "nodes": nodes,
        "center": _json_key(center) if center is not None else None,
        "bond_dims": model.bond_dims(),
        "num_parameters": model.num_parameters(),
        "versions": _versions(),
        "trainer": None,
        "extra": extra or {},
    }
    if trainer is not None:
        state = trainer.state_dict()
        meta["trainer"] = {"class": type(trainer).__name__, "state": state}
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"checkpoint metadata is not JSON-serialisable: {exc}") from exc
    return save_arrays(path, arrays, meta)


def _check_meta(meta: dict, path: Any) -> None:
    if meta.get("library") != "tnborn" or "geometry" not in meta or "nodes" not in meta:
        raise CheckpointError(f"{path} is not a tnborn model checkpoint (no model metadata)")
    fmt = meta.get("model_format", 0)
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise CheckpointError(f"{path}: model format must be an integer, got {fmt!r}")
    if fmt > MODEL_FORMAT:
        raise CheckpointError(
            f"{path} holds model format {meta['model_format']} > {MODEL_FORMAT}: written by a newer tnborn"
        )
    nodes = meta["nodes"]
    if not isinstance(nodes, list) or not all(
        isinstance(r, dict) and isinstance(r.get("inds"), list) for r in nodes
    ) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: malformed model metadata ('nodes' or 'config')")


def load(
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> BornMachine:
    """Rebuild the model stored at ``path``.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`save`.
    device : str or torch.device, optional
        Where to put the tensors (default CPU).
    dtype : str or torch.dtype, optional
        Cast to this dtype (default: the stored one).

    Returns
    -------
    BornMachine
        The model, with its canonical centre restored.

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, corrupt, foreign, from a newer
        version, or its arrays do not match its metadata.
    """
    arrays, meta = load_arrays(path)
    _check_meta(meta, path)
    try:
        cls = get_geometry(meta["geometry"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    dev = resolve_device(device)
    try:
        stored = resolve_dtype(meta.get("dtype"))
    except DeviceError:
        raise CheckpointError(f"{path}: unsupported model dtype {meta.get('dtype')!r} in the metadata") from None
    dt = resolve_dtype(dtype) if dtype is not None else stored
    if stored.is_complex and not dt.is_complex:
        raise ConfigError(
            f"{path} holds a complex ({meta.get('dtype')}) model; loading it as {dt} would drop the phases"
        )
    tensors = []
    for i, rec in enumerate(meta["nodes"]):
        key = f"node/{i}"
        if key not in arrays:
            raise CheckpointError(f"{path}: array {key!r} listed in the metadata is missing")
        a = arrays[key]
        if a.ndim != len(rec.get("inds", [])):
            raise CheckpointError(
                f"{path}: array {key!r} has {a.ndim} dimensions but the metadata names {len(rec['inds'])} indices"
            )
        try:
            same_dtype = a.dtype.kind in "fc" and resolve_dtype(a.dtype) == stored
        except DeviceError:
            same_dtype = False
        if not same_dtype:
            raise CheckpointError(f"{path}: array {key!r} has dtype {a.dtype} but the metadata says {meta.get('dtype')}")
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: array {key!r} holds NaN or inf values")
        tensors.append(torch.as_tensor(a).to(device=dev, dtype=dt))
    try:
        model = cls.from_arrays(tensors, meta["config"])
    except (ConfigError, ValueError, RuntimeError, IndexError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{path}: arrays do not match the stored {meta['geometry']} metadata: {exc}") from exc
    if model.bond_dims() != list(meta.get("bond_dims", model.bond_dims())):
        raise CheckpointError(f"{path}: bond dimensions do not match the metadata")
    center = meta.get("center")
    if center is not None:
        center = tuple(center) if isinstance(center, list) else center
        if center not in set(model.nodes()):
            raise CheckpointError(f"{path}: stored centre {center!r} is not a node of the model")
    model.set_center(center)
    return model


def load_trainer_state(path: str | Path) -> dict[str, Any] | None:
    """Return the trainer state stored with a model (``None`` if there is none).

    Parameters
    ----------
    path : str or Path
        A checkpoint.

    Returns
    -------
    dict or None
        ``{"class": name, "state": ...}``.
    """
    meta = read_header(path)["metadata"]
    _check_meta(meta, path)
    return meta.get("trainer")


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """Summary of a checkpoint without loading its arrays.

    Parameters
    ----------
    path : str or Path
        A checkpoint.

    Returns
    -------
    dict
        Geometry, config, dtype, bond dimensions, parameter count, centre,
        versions and a short training-history summary.
    """
    header = read_header(path)
    meta = header["metadata"]
    _check_meta(meta, path)
    trainer = meta.get("trainer") or {}
    state = trainer.get("state") if isinstance(trainer, dict) else None
    history = (state.get("history") if isinstance(state, dict) else None) or []
    if not isinstance(trainer, dict) or not isinstance(history, list) or not all(
            isinstance(r, dict) for r in history):
        raise CheckpointError(f"{path}: malformed trainer metadata ('trainer' must be an object whose "
                              "'state.history' is a list of records)")
    summary = {
        "geometry": meta["geometry"],
        "config": meta["config"],
        "dtype": meta.get("dtype"),
        "bond_dims": meta.get("bond_dims"),
        "max_bond": max(meta.get("bond_dims") or [1]),
        "num_parameters": meta.get("num_parameters"),
        "center": meta.get("center"),
        "created_utc": header.get("created_utc"),
        "versions": meta.get("versions"),
        "trainer": trainer.get("class"),
        "records": len(history),
    }
    if history:
        summary["first_train_nll"] = history[0].get("train_nll")
        summary["last_train_nll"] = history[-1].get("train_nll")
        summary["last_test_nll"] = history[-1].get("test_nll")
        summary["loops"] = history[-1].get("loop")
    return summary
