"""Gauge moves and row normalisation on the plain list of node arrays.

Node arrays keep the fixed index order of the tree (child bonds, physical
indices, parent bond); these functions work on such lists and a
:class:`~tnborn.geometries.tree.structure.TreeStructure`.
"""

from __future__ import annotations


import torch
from .structure import TreeStructure, _axis, _neighbours

__all__: list[str] = []



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
