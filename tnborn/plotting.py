"""Figures for tensor-network Born machines, built from plain numpy data.

Every function here takes plain arrays, lists and dicts (never model
objects), draws on a :class:`matplotlib.figure.Figure` created directly
(pyplot is never used, so no global backend or figure state is touched),
returns that figure and, when ``path`` is given, saves it atomically: the
image is written to a temporary file in the destination folder and then
moved over ``path`` with :func:`os.replace`, so a reader never sees a
half-written file.

matplotlib is imported lazily inside the functions; ``import
tnborn.plotting`` does not import it.

Conventions
-----------
* Binary configurations have shape ``(n, N)``; pixel value 1 is "ink" and is
  drawn black (``gray_r`` colour map), 0 is white.
* An image of ``N`` pixels is the row-major flattening of an ``image_shape``
  of ``(h, w)`` with ``h * w == N``. When ``image_shape`` is omitted it is
  ``(r, r)`` if ``N == r * r`` and ``(1, N)`` otherwise.
* Inpainting masks are boolean with ``True`` meaning a KNOWN (fixed) pixel.

Bad input raises :class:`tnborn.errors.DataError`, a subclass of
:class:`ValueError`.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DataError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

__all__ = [
    "DEFAULT_DPI",
    "save_figure",
    "plot_samples",
    "plot_history",
    "plot_bond_dimensions",
    "plot_entanglement",
    "plot_inpainting",
    "plot_capacity",
    "plot_comparison",
]

#: Resolution (dots per inch) used when saving raster figures.
DEFAULT_DPI: int = 120

_FORMATS = {"": "png", ".png": "png", ".pdf": "pdf", ".svg": "svg"}
_MAX_FIGURE_INCHES = 16.0


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """Create a stand-alone figure (no pyplot, no backend selection)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = DEFAULT_DPI) -> None:
    """Save a figure atomically.

    The figure is written to a temporary file next to ``path`` which then
    replaces ``path`` in one :func:`os.replace` step. Missing parent folders
    are created.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        Figure to save.
    path : str or os.PathLike
        Destination. The suffix selects the format: ``.png`` (or no suffix)
        for PNG, ``.pdf`` or ``.svg`` for vector output.
    dpi : int, optional
        Resolution of raster output, by default :data:`DEFAULT_DPI`.

    Returns
    -------
    None

    Raises
    ------
    DataError
        If the suffix of ``path`` is not one of the supported formats.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _FORMATS:
        raise DataError(
            f"cannot save a figure as {suffix!r}: use a .png, .pdf or .svg path"
        )
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    tmp = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # "xb" creates the file exclusively and honours the umask.
        with open(tmp, "xb") as handle:
            fig.savefig(handle, format=_FORMATS[suffix], dpi=dpi)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def _finish(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def _configurations(values: ArrayLike, name: str) -> np.ndarray:
    """Return ``values`` as a float array of shape (n, N) with entries in [0, 1]."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be a numeric array: {exc}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise DataError(f"{name} must have shape (n, N), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise DataError(f"{name} must contain values in [0, 1] (binary pixels)")
    return arr


def _image_shape(n_pixels: int, image_shape: Sequence[int] | None) -> tuple[int, int]:
    """Resolve ``image_shape`` for ``n_pixels`` pixels (see module conventions)."""
    if image_shape is None:
        side = math.isqrt(n_pixels)
        return (side, side) if side * side == n_pixels else (1, n_pixels)
    try:
        h, w = (int(v) for v in image_shape)
    except (TypeError, ValueError):
        raise DataError(f"image_shape must be a pair (h, w), got {image_shape!r}") from None
    if h <= 0 or w <= 0 or h * w != n_pixels:
        raise DataError(
            f"image_shape {(h, w)} does not match {n_pixels} pixels (need h * w == {n_pixels})"
        )
    return h, w


def _vector(values: ArrayLike, name: str, *, min_length: int = 1) -> np.ndarray:
    """Return ``values`` as a 1-D float array of at least ``min_length`` entries."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be a 1-D numeric array: {exc}") from None
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size < min_length:
        raise DataError(f"{name} needs at least {min_length} value(s), got {arr.size}")
    return arr


def _number(value: Any, what: str) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a number, got {value!r}") from None


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise DataError(f"{name} must be a positive integer, got {value!r}")
    number = _number(value, name)
    if not (math.isfinite(number) and number >= 1 and number == round(number)):
        raise DataError(f"{name} must be a positive integer, got {value!r}")
    return int(number)


def _grid_figsize(nrows: int, ncols: int, h: int, w: int, cell: float = 1.3) -> tuple[float, float]:
    """Figure size for a grid of ``nrows x ncols`` images of shape (h, w)."""
    aspect = min(max(w / h, 0.25), 8.0)
    width = ncols * cell * aspect
    height = nrows * cell + 0.4
    scale = min(1.0, _MAX_FIGURE_INCHES / width, _MAX_FIGURE_INCHES / height)
    return (max(width * scale, 1.5), max(height * scale, 1.0))


def _show_image(ax: Axes, image: np.ndarray, cmap: str = "gray_r") -> None:
    ax.imshow(image, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------
# samples
# --------------------------------------------------------------------------


def plot_samples(
    samples: ArrayLike,
    image_shape: Sequence[int] | None = None,
    ncols: int | None = None,
    title: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Draw binary configurations as a grid of images.

    Parameters
    ----------
    samples : array_like, shape (n, N) or (N,)
        Configurations with values in [0, 1] (binary samples, or marginal
        probabilities). Value 1 ("ink") is drawn black.
    image_shape : tuple of int, optional
        ``(h, w)`` with ``h * w == N``; each row is reshaped row-major.
        Defaults to ``(r, r)`` when ``N == r * r``, else ``(1, N)``.
    ncols : int, optional
        Number of grid columns. Defaults to ``ceil(sqrt(n))`` for images
        that are not much wider than tall, and 1 for strip-like images.
    title : str, optional
        Figure title.
    path : str or os.PathLike, optional
        Where to save the figure (see :func:`save_figure`).

    Returns
    -------
    matplotlib.figure.Figure
        The figure, with one axes (holding one image) per sample, in order.

    Raises
    ------
    DataError
        If ``samples`` is not (n, N) with values in [0, 1], ``image_shape``
        does not match ``N`` or ``ncols`` is not positive.
    """
    data = _configurations(samples, "samples")
    n, n_pixels = data.shape
    h, w = _image_shape(n_pixels, image_shape)
    if ncols is None:
        ncols = 1 if w > 4 * h else math.ceil(math.sqrt(n))
    ncols = min(_positive_int(ncols, "ncols"), n)
    nrows = math.ceil(n / ncols)

    fig = _new_figure(_grid_figsize(nrows, ncols, h, w))
    for i in range(n):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _show_image(ax, data[i].reshape(h, w))
    if title is not None:
        fig.suptitle(title)
    return _finish(fig, path)


# --------------------------------------------------------------------------
# training history
# --------------------------------------------------------------------------


def plot_history(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    reference: Mapping[str, float] | None = None,
) -> Figure:
    """Plot a training history: negative log-likelihood against training progress.

    Parameters
    ----------
    history : sequence of dict
        One record per half-sweep or epoch, with keys such as ``"step"``,
        ``"loop"``, ``"train_nll"``, ``"test_nll"``, ``"max_bond"`` and
        ``"seconds"``. Records may omit keys (or hold ``None``); such
        points are skipped for that curve. The x axis is ``"loop"`` when
        every record has it, else the record index.
    path : str or os.PathLike, optional
        Where to save the figure (see :func:`save_figure`).
    title : str, optional
        Axes title.
    reference : dict of str to float, optional
        Horizontal reference lines, label to NLL value, e.g.
        ``{"ln 30": 3.4012}``.

    Returns
    -------
    matplotlib.figure.Figure
        The figure: one axes with the NLL curves, plus a secondary y axis
        (a second axes) with the maximum bond dimension when any record
        has ``"max_bond"``.

    Raises
    ------
    DataError
        If ``history`` is empty, a record is not a mapping, no record has
        ``"train_nll"`` or ``"test_nll"``, or a value is not a number.
    """
    if isinstance(history, Mapping) or not isinstance(history, Sequence):
        raise DataError("history must be a list of dict records")
    if len(history) == 0:
        raise DataError("history is empty")
    for i, record in enumerate(history):
        if not isinstance(record, Mapping):
            raise DataError(f"history[{i}] must be a dict, got {type(record).__name__}")

    def column(key: str) -> np.ndarray:
        return np.array(
            [_number(r.get(key), f"history[{i}][{key!r}]") for i, r in enumerate(history)],
            dtype=float,
        )

    has = {key: any(r.get(key) is not None for r in history)
           for key in ("train_nll", "test_nll", "max_bond")}
    if not (has["train_nll"] or has["test_nll"]):
        raise DataError("history records need a 'train_nll' or 'test_nll' entry")
    if all(r.get("loop") is not None for r in history):
        x, xlabel = column("loop"), "loop (sweeps)"
    else:
        x, xlabel = np.arange(len(history), dtype=float), "record"

    fig = _new_figure((7.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    marker = "o" if len(history) <= 40 else None
    for key, label, colour in (("train_nll", "train NLL", "C0"), ("test_nll", "held-out NLL", "C1")):
        if has[key]:
            y = column(key)
            keep = np.isfinite(y)
            ax.plot(x[keep], y[keep], marker=marker, ms=3, color=colour, label=label)
    if reference:
        for j, (label, value) in enumerate(reference.items()):
            ax.axhline(_number(value, f"reference[{label!r}]"), color="0.4",
                       linestyle=("--", ":", "-.")[j % 3], linewidth=1, label=str(label))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("NLL (nats)")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()

    if has["max_bond"]:
        ax2 = ax.twinx()
        bonds = column("max_bond")
        keep = np.isfinite(bonds)
        ax2.step(x[keep], bonds[keep], where="post", color="C2", alpha=0.7, label="max bond")
        ax2.set_ylabel("max bond dimension")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="best", fontsize="small")
    if title is not None:
        ax.set_title(title)
    return _finish(fig, path)


# --------------------------------------------------------------------------
# bond dimensions and entanglement
# --------------------------------------------------------------------------


def plot_bond_dimensions(
    bond_dims: ArrayLike,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    max_bond: int | None = None,
) -> Figure:
    """Bar plot of the bond dimension along a chain.

    Parameters
    ----------
    bond_dims : array_like of int, shape (N - 1,)
        Dimension of bond ``k`` (between sites ``k`` and ``k + 1``).
    path : str or os.PathLike, optional
        Where to save the figure (see :func:`save_figure`).
    title : str, optional
        Axes title.
    max_bond : int, optional
        Cap on the bond dimension, drawn as a dashed horizontal line.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, with one axes.

    Raises
    ------
    DataError
        If ``bond_dims`` is not a non-empty 1-D array of positive integers
        or ``max_bond`` is not a positive integer.
    """
    dims = _vector(bond_dims, "bond_dims")
    if not np.all(np.isfinite(dims)) or np.any(dims < 1) or np.any(dims != np.round(dims)):
        raise DataError("bond_dims must be positive integers")
    if max_bond is not None:
        max_bond = _positive_int(max_bond, "max_bond")

    fig = _new_figure((7.0, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    k = np.arange(dims.size)
    ax.bar(k, dims, width=1.0 if dims.size > 64 else 0.8, color="C0", label="bond dimension")
    if max_bond is not None:
        ax.axhline(max_bond, color="C3", linestyle="--", linewidth=1, label=f"max bond = {int(max_bond)}")
        ax.legend(loc="best", fontsize="small")
    ax.set_xlim(-0.6, dims.size - 0.4)
    ax.set_xlabel("bond k (between sites k and k+1)")
    ax.set_ylabel("bond dimension")
    if title is not None:
        ax.set_title(title)
    return _finish(fig, path)


def plot_entanglement(
    entropies: ArrayLike,
    image_shape: Sequence[int] | None = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Plot the entanglement entropy across every bond of a chain.

    Parameters
    ----------
    entropies : array_like, shape (N - 1,)
        Von Neumann entropy (nats) of the cut at bond ``k``, between sites
        ``k`` and ``k + 1`` of a chain of ``N`` sites.
    image_shape : tuple of int, optional
        ``(h, w)`` with ``h * w == N``. When given, a second panel shows
        the entropies as an image: bond ``k`` at pixel ``k`` (row-major),
        the last pixel ``N - 1`` empty (NaN), with a colour bar.
    path : str or os.PathLike, optional
        Where to save the figure (see :func:`save_figure`).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure: one axes (line plot), or three with ``image_shape``
        (line plot, image map, colour bar).

    Raises
    ------
    DataError
        If ``entropies`` is not a non-empty 1-D array of finite numbers or
        ``image_shape`` does not have ``len(entropies) + 1`` pixels.
    """
    s = _vector(entropies, "entropies")
    if not np.all(np.isfinite(s)):
        raise DataError("entropies must be finite")
    n_sites = s.size + 1
    shape = None if image_shape is None else _image_shape(n_sites, image_shape)

    fig = _new_figure((11.0, 3.8) if shape is not None else (7.0, 3.4))
    if shape is not None:
        ax_line, ax_map = fig.subplots(1, 2, width_ratios=(1.6, 1.0))
    else:
        ax_line = fig.add_subplot(1, 1, 1)
    k = np.arange(s.size)
    ax_line.plot(k, s, marker="o" if s.size <= 64 else None, ms=3, color="C0")
    ax_line.set_xlabel("bond k (between sites k and k+1)")
    ax_line.set_ylabel("entanglement entropy (nats)")
    ax_line.set_ylim(bottom=min(0.0, float(s.min())))
    ax_line.grid(True, alpha=0.3)

    if shape is not None:
        grid = np.full(n_sites, np.nan)
        grid[:-1] = s
        image = ax_map.imshow(grid.reshape(shape), cmap="viridis", interpolation="nearest")
        ax_map.set_xticks([])
        ax_map.set_yticks([])
        ax_map.set_title("entropy at bond k, pixel k")
        fig.colorbar(image, ax=ax_map, label="nats")
    if title is not None:
        fig.suptitle(title)
    return _finish(fig, path)


# --------------------------------------------------------------------------
# inpainting
# --------------------------------------------------------------------------


def plot_inpainting(
    originals: ArrayLike,
    masks: ArrayLike,
    completions: ArrayLike,
    image_shape: Sequence[int] | None = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    most_likely: ArrayLike | None = None,
) -> Figure:
    """Show inpainting results: original, masked input and completions.

    Each row is one image; the columns are the original, the masked input
    (unknown pixels grey), every completion, and optionally the most likely
    completion.

    Parameters
    ----------
    originals : array_like, shape (n_images, N) or (N,)
        The complete images, values in [0, 1].
    masks : array_like of bool, shape (n_images, N) or (N,)
        ``True`` marks a KNOWN (fixed) pixel, ``False`` an unknown one. A
        single mask of shape (N,) applies to every image. Integer 0/1
        arrays are accepted.
    completions : array_like, shape (n_images, n_samples, N)
        Sampled completions; shape (n_images, N) means one per image.
    image_shape : tuple of int, optional
        ``(h, w)`` with ``h * w == N``; default as in :func:`plot_samples`.
    path : str or os.PathLike, optional
        Where to save the figure (see :func:`save_figure`).
    title : str, optional
        Figure title.
    most_likely : array_like, shape (n_images, N), optional
        Most likely completion of each image, shown in a last column.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, with ``n_images * (2 + n_samples + (1 if most_likely
        is given else 0))`` axes, row by row.

    Raises
    ------
    DataError
        If the arrays' shapes do not agree or a mask is not boolean.
    """
    orig = _configurations(originals, "originals")
    n_images, n_pixels = orig.shape

    mask_arr = np.asarray(masks)
    if mask_arr.dtype != bool:
        if mask_arr.dtype.kind not in "iuf" or not np.all(np.isin(mask_arr, (0, 1))):
            raise DataError("masks must be boolean (True = known pixel)")
        mask_arr = mask_arr.astype(bool)
    if mask_arr.ndim == 1:
        mask_arr = np.broadcast_to(mask_arr, (n_images, mask_arr.size))
    if mask_arr.shape != (n_images, n_pixels):
        raise DataError(
            f"masks must have shape ({n_images}, {n_pixels}) or ({n_pixels},) "
            f"to match originals, got {np.shape(masks)}"
        )

    try:
        comp = np.asarray(completions, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"completions must be a numeric array: {exc}") from None
    if comp.ndim == 2:
        comp = comp[:, None, :]
    if comp.ndim != 3 or comp.shape[0] != n_images or comp.shape[2] != n_pixels:
        raise DataError(
            f"completions must have shape ({n_images}, n_samples, {n_pixels}), "
            f"got {np.shape(completions)}"
        )
    n_samples = comp.shape[1]
    if comp.size:
        _configurations(comp.reshape(-1, n_pixels), "completions")

    best = None
    if most_likely is not None:
        best = _configurations(most_likely, "most_likely")
        if best.shape != (n_images, n_pixels):
            raise DataError(
                f"most_likely must have shape ({n_images}, {n_pixels}), "
                f"got {np.shape(most_likely)}"
            )

    h, w = _image_shape(n_pixels, image_shape)
    ncols = 2 + n_samples + (best is not None)
    fig = _new_figure(_grid_figsize(n_images, ncols, h, w, cell=1.2))
    headers = ["original", "masked"] + [f"sample {j + 1}" for j in range(n_samples)]
    if best is not None:
        headers.append("most likely")
    for i in range(n_images):
        masked = np.where(mask_arr[i], orig[i], 0.5)
        panels = [orig[i], masked] + [comp[i, j] for j in range(n_samples)]
        if best is not None:
            panels.append(best[i])
        for j, panel in enumerate(panels):
            ax = fig.add_subplot(n_images, ncols, i * ncols + j + 1)
            _show_image(ax, panel.reshape(h, w))
            if i == 0:
                ax.set_title(headers[j], fontsize="small")
    if title is not None:
        fig.suptitle(title)
    return _finish(fig, path)


# --------------------------------------------------------------------------
# capacity and model comparison
# --------------------------------------------------------------------------


def plot_capacity(
    max_bonds: ArrayLike,
    nll: ArrayLike,
    paper_nll: ArrayLike | Mapping[int, float] | None = None,
    test_nll: ArrayLike | None = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Plot NLL against the maximum bond dimension (log x axis).

    Parameters
    ----------
    max_bonds : array_like of int, shape (m,)
        Maximum bond dimensions of the trained models (positive).
    nll : array_like, shape (m,)
        Training NLL of each model; NaN marks a missing value.
    paper_nll : array_like of shape (m,) or dict of int to float, optional
        Published values, drawn as markers: either aligned with
        ``max_bonds`` (NaN = no value) or a mapping max bond -> NLL.
    test_nll : array_like, shape (m,), optional
        Held-out NLL of each model.
    path : str or os.PathLike, optional
        Where to save the figure (see :func:`save_figure`).
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, with one axes.

    Raises
    ------
    DataError
        If the lengths differ or ``max_bonds`` holds non-positive values.
    """
    d = _vector(max_bonds, "max_bonds")
    if not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise DataError("max_bonds must be positive")
    y = _vector(nll, "nll")
    if y.size != d.size:
        raise DataError(f"nll has {y.size} values but max_bonds has {d.size}")
    y_test = None
    if test_nll is not None:
        y_test = _vector(test_nll, "test_nll")
        if y_test.size != d.size:
            raise DataError(f"test_nll has {y_test.size} values but max_bonds has {d.size}")
    if isinstance(paper_nll, Mapping):
        p_x = _vector([_number(k, "paper_nll key") for k in paper_nll], "paper_nll keys", min_length=0)
        p_y = _vector([_number(v, "paper_nll value") for v in paper_nll.values()], "paper_nll", min_length=0)
        if np.any(p_x <= 0):
            raise DataError("paper_nll keys (max bonds) must be positive")
    elif paper_nll is not None:
        p_y = _vector(paper_nll, "paper_nll")
        if p_y.size != d.size:
            raise DataError(f"paper_nll has {p_y.size} values but max_bonds has {d.size}")
        p_x = d
    else:
        p_x = p_y = np.empty(0)

    order = np.argsort(d, kind="stable")
    fig = _new_figure((6.4, 4.0))
    ax = fig.add_subplot(1, 1, 1)

    def line(values: np.ndarray, **kwargs: Any) -> None:
        xs, ys = d[order], values[order]
        keep = np.isfinite(ys)
        ax.plot(xs[keep], ys[keep], marker="o", **kwargs)

    line(y, color="C0", label="train NLL")
    if y_test is not None:
        line(y_test, color="C1", label="held-out NLL")
    keep = np.isfinite(p_y)
    if np.any(keep):
        ax.plot(p_x[keep], p_y[keep], linestyle="none", marker="X", ms=8, color="C3", label="paper")
    ax.set_xscale("log", base=2)
    ticks = np.unique(np.concatenate([d, p_x[keep]]))
    if ticks.size <= 16:
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("maximum bond dimension")
    ax.set_ylabel("NLL (nats)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if title is not None:
        ax.set_title(title)
    return _finish(fig, path)


def plot_comparison(
    results: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Grouped bar chart of train and held-out NLL per model.

    Parameters
    ----------
    results : dict of str to dict
        Model name to a record with ``"train_nll"`` and/or ``"test_nll"``
        (other keys are ignored; a missing or ``None`` value draws no bar).
    path : str or os.PathLike, optional
        Where to save the figure (see :func:`save_figure`).
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, with one axes.

    Raises
    ------
    DataError
        If ``results`` is empty, an entry is not a dict, a value is not a
        number, or no model has either NLL.
    """
    if not isinstance(results, Mapping) or len(results) == 0:
        raise DataError("results must be a non-empty dict of model name -> record")
    names = [str(name) for name in results]
    columns: dict[str, np.ndarray] = {}
    for key in ("train_nll", "test_nll"):
        values = []
        for name, record in results.items():
            if not isinstance(record, Mapping):
                raise DataError(f"results[{name!r}] must be a dict, got {type(record).__name__}")
            values.append(_number(record.get(key), f"results[{name!r}][{key!r}]"))
        columns[key] = np.array(values, dtype=float)
    if not any(np.any(np.isfinite(v)) for v in columns.values()):
        raise DataError("no model in results has a 'train_nll' or 'test_nll' value")

    fig = _new_figure((max(4.5, 1.3 * len(names) + 2.0), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    width = 0.38
    for offset, (key, label, colour) in zip(
        (-width / 2, width / 2),
        (("train_nll", "train NLL", "C0"), ("test_nll", "held-out NLL", "C1")),
    ):
        values = columns[key]
        if not np.any(np.isfinite(values)):
            continue
        heights = np.where(np.isfinite(values), values, 0.0)
        bars = ax.bar(x + offset, heights, width, color=colour, label=label)
        ax.bar_label(bars, labels=[f"{v:.2f}" if np.isfinite(v) else "" for v in values],
                     fontsize="x-small", padding=2)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20 if len(names) > 4 else 0)
    ax.set_ylabel("NLL (nats)")
    ax.margins(y=0.12)
    ax.legend(loc="best", fontsize="small")
    if title is not None:
        ax.set_title(title)
    return _finish(fig, path)
