"""Helpers of the tree tensor network Born machine (private): layout checks and gauge moves.

Node arrays keep the fixed index order of :mod:`tnborn.geometries.tree`
(child bonds, physical indices, parent bond); these functions work on plain
lists of such arrays and a :class:`~tnborn.geometries.tree.TreeStructure`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError

if TYPE_CHECKING:
    from .tree import TreeStructure

__all__: list[str] = []  # private module

_LAYOUTS = ("auto", "binary", "image")


def _resolve_layout(
    num_variables: int, layout: str, image_shape: Sequence[int] | None
) -> tuple[str, tuple[int, int]]:
    if not isinstance(num_variables, int) or isinstance(num_variables, bool) or num_variables < 2:
        raise ConfigError(f"num_variables must be an integer >= 2, got {num_variables!r}")
    if layout not in _LAYOUTS:
        raise ConfigError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    n = num_variables
    if layout == "auto":
        if image_shape is not None:
            layout = "image"
        else:
            layout = "image" if (math.isqrt(n) ** 2 == n and n >= 4) else "binary"
    if layout == "binary":
        if image_shape is not None:
            raise ConfigError("image_shape is only used by layout='image' (or 'auto'); got layout='binary'")
        return "binary", (1, n)
    if image_shape is None:
        r = math.isqrt(n)
        if r * r != n:
            raise ConfigError(
                f"layout='image' needs image_shape=(h, w) when num_variables={n} is not a perfect square"
            )
        return "image", (r, r)
    try:
        h, w = (int(v) for v in image_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"image_shape must be a pair of positive integers (h, w), got {image_shape!r}") from None
    if h < 1 or w < 1 or h * w != n:
        raise ConfigError(f"image_shape {tuple(image_shape)} must be positive with h * w = num_variables = {n}")
    return "image", (h, w)


def _node_shape(struct: TreeStructure, node: int, dims: Sequence[int], d: int) -> tuple[int, ...]:
    """Array shape of ``node`` given the bond dimension ``dims[c]`` of each edge ``c -> parent``."""
    shape = [dims[c] for c in struct.children[node]] + [d] * len(struct.variables[node])
    if struct.parent[node] >= 0:
        shape.append(dims[node])
    return tuple(shape)


def _axis(struct: TreeStructure, node: int, nb: int) -> int:
    """Axis of ``node``'s array that carries the bond to neighbour ``nb``."""
    if struct.parent[node] == nb:
        return len(struct.children[node]) + len(struct.variables[node])
    return struct.children[node].index(nb)


def _qr_move(
    struct: TreeStructure, arrays: list[torch.Tensor], a: int, b: int, normalise: bool = False
) -> None:
    """Move the orthogonality centre from ``a`` to its neighbour ``b`` (in place on the list).

    ``a`` becomes an isometry from its other indices onto the bond ``a-b``
    (whose dimension may shrink to the rank bound) and ``R`` is absorbed into
    ``b``. With ``normalise`` the carried ``R`` is scaled to unit norm (the
    state changes by a positive factor only).
    """
    ax = _axis(struct, a, b)
    moved = arrays[a].movedim(ax, -1)
    shp = moved.shape
    q, r = torch.linalg.qr(moved.reshape(-1, shp[-1]))
    arrays[a] = q.reshape(*shp[:-1], q.shape[1]).movedim(-1, ax).contiguous()
    if normalise:
        r = r / torch.linalg.vector_norm(r)
    bx = _axis(struct, b, a)
    arrays[b] = torch.tensordot(r, arrays[b], dims=([1], [bx])).movedim(0, bx).contiguous()


def _canonize_all(
    struct: TreeStructure, arrays: list[torch.Tensor], target: int, normalise: bool = False
) -> None:
    """Bring every node to an isometry towards ``target`` (leaves first), in place on the list."""
    towards = {target: -1}
    order = [target]
    for node in order:  # breadth-first from the target
        for nb in _neighbours(struct, node):
            if nb not in towards:
                towards[nb] = node
                order.append(nb)
    for node in reversed(order[1:]):
        _qr_move(struct, arrays, node, towards[node], normalise)


def _neighbours(struct: TreeStructure, node: int) -> tuple[int, ...]:
    p = struct.parent[node]
    return struct.children[node] + ((p,) if p >= 0 else ())


def _normalise_rows(vec: torch.Tensor, log: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide every row (first axis) by its max-abs entry; return it and the accumulated log."""
    scale = vec.abs().reshape(vec.shape[0], -1).amax(dim=1)
    positive = scale > 0
    safe = torch.where(positive, scale, torch.ones_like(scale))
    lg = torch.where(positive, torch.log(safe), torch.full_like(safe, -torch.inf))
    shape = (-1,) + (1,) * (vec.ndim - 1)
    out = vec / safe.reshape(shape).to(vec.dtype)
    return out, lg if log is None else log + lg


def _apply_env(u: torch.Tensor, bra: torch.Tensor, axis: int) -> torch.Tensor:
    """Contract a batched doubled environment ``u`` (rows, ket, bra) into ``bra``'s ``axis``.

    ``bra`` has the batch on axis 0; the result keeps the axis position and
    now carries the environment's ket index there.
    """
    moved = bra.movedim(axis, 1)
    shp = moved.shape
    res = torch.bmm(u, moved.reshape(shp[0], shp[1], -1))
    return res.reshape(shp[0], u.shape[1], *shp[2:]).movedim(1, axis)
