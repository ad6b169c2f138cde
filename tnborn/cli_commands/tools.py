"""``tnborn sample``, ``evaluate``, ``info`` and ``inpaint``: commands on a checkpoint.

Imported by :mod:`tnborn.cli` only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ._common import (
    Reporter,
    check_sample_memory,
    checkpoint_extra,
    load_data_source,
    stored_image_shape,
    write_npy,
)

__all__ = ["sample_command", "evaluate_command", "info_command", "inpaint_command", "half_mask"]

MAX_SAMPLES_PLOTTED = 100


def _load_model(path: str, device: str) -> tuple[Any, dict[str, Any]]:
    import tnborn

    return tnborn.load(path, device=device), checkpoint_extra(path)


def _data_from_args(args: argparse.Namespace, model: Any, extra: dict[str, Any]):
    options = {k: getattr(args, k, None) for k in ("data", "key", "threshold", "dataset", "rows", "cols",
                                                  "dataset_size")}
    loaded = load_data_source(options, seed=0, default_dataset=None,
                              fallback_shape=stored_image_shape(extra, model.num_variables))
    if loaded.x.shape[1] != model.num_variables:
        raise DataError(f"the data ({loaded.description}) have {loaded.x.shape[1]} variables per row, "
                        f"but the model has {model.num_variables}")
    return loaded


def sample_command(args: argparse.Namespace) -> int:
    """Run ``tnborn sample``: draw exact samples, save them as ``.npy`` (and a PNG grid).

    Parameters
    ----------
    args : argparse.Namespace
        ``checkpoint``, ``num_samples``, ``out``, ``png``, ``seed``, ``device``, ``quiet``.

    Returns
    -------
    int
        Exit status (0).
    """
    from ..io import check_not_input, check_output_path

    say = Reporter(args.quiet)
    check_not_input(args.out, [args.checkpoint], what=f"--out {args.out}")
    check_output_path(args.out)
    if args.png:
        check_not_input(args.png, [args.checkpoint, args.out], what=f"--png {args.png}")
        check_output_path(args.png)
    model, extra = _load_model(args.checkpoint, args.device)
    check_sample_memory(args.num_samples, model.num_variables)
    samples, log_prob = model.sample(args.num_samples, seed=args.seed)
    x = samples.cpu().numpy().astype(np.uint8)
    path = write_npy(args.out, x)
    say(f"wrote {x.shape[0]} samples of {x.shape[1]} variables to {path} "
        f"(mean log P = {float(log_prob.mean()):.4f})")
    if args.png:
        from ..data import image_shape_for
        from ..plotting import plot_samples

        shape = stored_image_shape(extra, model.num_variables) or image_shape_for(model.num_variables)
        shown = x[:MAX_SAMPLES_PLOTTED]
        plot_samples(shown, image_shape=shape, path=args.png, title=f"{shown.shape[0]} samples")
        say(f"wrote {args.png}")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    """Run ``tnborn evaluate``: print the mean NLL of a data set.

    Parameters
    ----------
    args : argparse.Namespace
        ``checkpoint``, the data options, ``json``, ``device``.

    Returns
    -------
    int
        Exit status (0).
    """
    model, extra = _load_model(args.checkpoint, args.device)
    loaded = _data_from_args(args, model, extra)
    nll = model.nll(loaded.x)
    result = {"checkpoint": str(args.checkpoint), "data": loaded.description, "nll": nll,
              "num_samples": int(loaded.x.shape[0]), "num_variables": int(loaded.x.shape[1])}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"NLL {nll:.6f} nats  ({loaded.x.shape[0]} samples of {loaded.x.shape[1]} variables "
              f"from {loaded.description})")
    return 0


def _compact(values: list[int], edge: int = 8) -> str:
    if len(values) <= 2 * edge + 1:
        return " ".join(map(str, values))
    return " ".join(map(str, values[:edge])) + " ... " + " ".join(map(str, values[-edge:]))


def _describe(key: str, value: Any) -> str:
    if isinstance(value, (list, tuple, dict)) and len(value) > 4:
        return f"{key} [{len(value)} entries]"
    return f"{key} {value}"


def info_command(args: argparse.Namespace) -> int:
    """Run ``tnborn info``: summarise a checkpoint (see :func:`tnborn.checkpoint_info`).

    Parameters
    ----------
    args : argparse.Namespace
        ``checkpoint`` and ``json``.

    Returns
    -------
    int
        Exit status (0).
    """
    from ..checkpoint import checkpoint_info

    info = checkpoint_info(args.checkpoint)
    extra = checkpoint_extra(args.checkpoint)
    if args.json:
        print(json.dumps({**info, "extra": extra}, indent=1))
        return 0
    config = info.get("config") or {}
    dims = list(info.get("bond_dims") or [])
    rows = [
        ("checkpoint", str(args.checkpoint)),
        ("geometry", f"{info['geometry']}  ({', '.join(_describe(k, v) for k, v in config.items())})"),
        ("dtype", str(info.get("dtype"))),
        ("bond dims", f"{_compact(dims)}  ({len(dims)} bonds, max {info.get('max_bond')})"),
        ("parameters", f"{info.get('num_parameters'):,}" if info.get("num_parameters") is not None else "?"),
        ("centre", str(info.get("center"))),
    ]
    if extra.get("image_shape"):
        rows.append(("image shape", " x ".join(map(str, extra["image_shape"]))))
    if info.get("trainer"):
        unit = "epochs" if info["trainer"] == "GradientTrainer" else "loops"
        rows.append(("trainer", f"{info['trainer']}, {info['records']} history records, "
                     f"{info.get('loops') or 0:g} {unit}"))
    if info.get("records"):
        rows.append(("train NLL", f"{info['first_train_nll']:.5f} -> {info['last_train_nll']:.5f} nats"))
        if info.get("last_test_nll") is not None:
            rows.append(("test NLL", f"{info['last_test_nll']:.5f} nats (last record)"))
    if isinstance(extra.get("data"), dict):
        rows.append(("trained on", ", ".join(f"{k}={v}" for k, v in extra["data"].items())))
    rows.append(("created", f"{info.get('created_utc')} UTC"))
    versions = info.get("versions") or {}
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def half_mask(side: str, shape: tuple[int, int]) -> np.ndarray:
    """Mask of known pixels with one half of a ``rows x cols`` image removed.

    Parameters
    ----------
    side : str
        ``"left"``, ``"right"``, ``"top"`` or ``"bottom"``: the half that is
        removed (unknown). For an odd size the removed half is the smaller one.
    shape : tuple of int
        ``(rows, cols)``.

    Returns
    -------
    numpy.ndarray
        Boolean ``(rows * cols,)``, True = known, flattened row-major.

    Raises
    ------
    ConfigError
        If the side is unknown or the image is too small to remove a half.
    """
    h, w = shape
    known = np.ones((h, w), dtype=bool)
    if side == "left":
        known[:, : w // 2] = False
    elif side == "right":
        known[:, w - w // 2:] = False
    elif side == "top":
        known[: h // 2, :] = False
    elif side == "bottom":
        known[h - h // 2:, :] = False
    else:
        raise ConfigError(f"side must be one of left, right, top, bottom; got {side!r}")
    if known.all():
        raise ConfigError(f"cannot remove the {side} half of a {h} x {w} image: it has no such half; "
                          "give --rows/--cols or --mask FILE.npy")
    return known.reshape(-1)


def _read_mask(path: str, n: int, shape: tuple[int, int] | None, batch: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"mask file {path!r} does not exist")
    try:
        mask = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"could not read the mask {path!r} (expected a boolean .npy array): {exc}") from None
    if mask.dtype != bool:
        if mask.dtype.kind not in "iuf" or not np.isin(mask, (0, 1)).all():
            raise DataError(f"the mask in {path!r} must be boolean (True = known pixel) or 0/1")
        mask = mask.astype(bool)
    if mask.ndim == 2 and mask.shape != (batch, n) and mask.size == n:
        mask = mask.reshape(-1)  # an image-shaped (rows, cols) mask
    if mask.shape not in ((n,), (batch, n)):
        raise DataError(f"the mask in {path!r} has shape {mask.shape}; expected ({n},), "
                        f"{shape or '(rows, cols)'} or ({batch}, {n})")
    return mask


def inpaint_command(args: argparse.Namespace) -> int:
    """Run ``tnborn inpaint``: complete removed pixels by exact conditional sampling.

    Parameters
    ----------
    args : argparse.Namespace
        ``checkpoint``, the data options, ``remove`` or ``mask``,
        ``num_images``, ``num_samples``, ``out``, ``seed``, ``device``, ``quiet``.

    Returns
    -------
    int
        Exit status (0).
    """
    say = Reporter(args.quiet)
    model, extra = _load_model(args.checkpoint, args.device)
    loaded = _data_from_args(args, model, extra)
    x = loaded.x[: args.num_images]
    n = model.num_variables
    shape = loaded.image_shape or (1, n)
    if args.mask is not None:
        mask = _read_mask(args.mask, n, loaded.image_shape, x.shape[0])
        what = f"mask {args.mask}"
    else:
        mask = half_mask(args.remove, shape)
        what = f"{args.remove} half removed"
    masks = np.broadcast_to(mask, x.shape)
    if masks.all():
        raise DataError("the mask marks every pixel as known: nothing to inpaint")
    completions, _ = model.sample_conditional(x, mask, num_samples=args.num_samples, seed=args.seed)
    comp = completions.cpu().numpy().astype(np.uint8)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_npy(out / "completions.npy", comp)
    write_npy(out / "mask.npy", np.ascontiguousarray(masks))
    write_npy(out / "originals.npy", x.astype(np.uint8))
    from ..plotting import plot_inpainting

    plot_inpainting(x, masks, comp, image_shape=shape, path=out / "inpainting.png",
                    title=f"{loaded.description}: {what}")
    unknown = ~masks
    hits = (comp == x[:, None, :]) & unknown[:, None, :]
    accuracy = float(hits.sum() / (unknown.sum() * comp.shape[1]))
    say(f"completed {x.shape[0]} image(s) x {comp.shape[1]} sample(s) ({what}); "
        f"{accuracy:.1%} of the removed pixels match the originals")
    say(f"wrote {out}/inpainting.png, completions.npy, mask.npy, originals.npy")
    return 0
