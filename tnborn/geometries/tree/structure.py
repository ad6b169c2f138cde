"""The tree's layout: which node holds which variables, and the bonds between nodes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


from ...errors import ConfigError

__all__ = ["TreeStructure", "tree_structure"]


_LAYOUTS = ("auto", "binary", "image")


@dataclass(frozen=True)
class TreeStructure:
    """The shape of a tree: which node holds which variables, who is whose parent.

    Attributes
    ----------
    num_variables : int
        Number of variables ``N``.
    layout : str
        ``"binary"`` or ``"image"``.
    image_shape : tuple of int
        ``(h, w)`` of the pixel grid (``(1, N)`` for the binary layout).
    parent : tuple of int
        Parent of every node, ``-1`` for the root (the last node).
    children : tuple of tuple of int
        Children of every node (empty for bottom nodes).
    variables : tuple of tuple of int
        Variables whose physical index sits on each node (empty for internal nodes).
    blocks : tuple of tuple of int
        Pixel rectangle ``(row0, col0, row1, col1)`` (end-exclusive) covered by
        each node's subtree.
    """

    num_variables: int
    layout: str
    image_shape: tuple[int, int]
    parent: tuple[int, ...]
    children: tuple[tuple[int, ...], ...]
    variables: tuple[tuple[int, ...], ...]
    blocks: tuple[tuple[int, int, int, int], ...]

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return len(self.parent)

    @property
    def root(self) -> int:
        """The root node (the last one)."""
        return len(self.parent) - 1

    def subtree_size(self, node: int) -> int:
        """Number of variables in the subtree of ``node``.

        Parameters
        ----------
        node : int
            A node.

        Returns
        -------
        int
            The size of its pixel block.
        """
        r0, c0, r1, c1 = self.blocks[node]
        return (r1 - r0) * (c1 - c0)

    def depth(self, node: int) -> int:
        """Number of edges between ``node`` and the root.

        Parameters
        ----------
        node : int
            A node.

        Returns
        -------
        int
            Its depth (0 for the root).
        """
        k = 0
        while self.parent[node] >= 0:
            node = self.parent[node]
            k += 1
        return k

    def path(self, a: int, b: int) -> list[int]:
        """Nodes on the tree path from ``a`` to ``b``.

        Parameters
        ----------
        a, b : int
            End nodes.

        Returns
        -------
        list of int
            The path, both ends included.
        """
        up_a, up_b = [a], [b]
        da, db = self.depth(a), self.depth(b)
        while da > db:
            up_a.append(self.parent[up_a[-1]])
            da -= 1
        while db > da:
            up_b.append(self.parent[up_b[-1]])
            db -= 1
        while up_a[-1] != up_b[-1]:
            up_a.append(self.parent[up_a[-1]])
            up_b.append(self.parent[up_b[-1]])
        return up_a + up_b[-2::-1]


def tree_structure(
    num_variables: int, layout: str = "auto", image_shape: Sequence[int] | None = None
) -> TreeStructure:
    """Build the tree of a layout (deterministic: checkpoints rebuild it from the config).

    Blocks of the ``(h, w)`` pixel grid (a ``(1, N)`` strip for ``"binary"``)
    are merged pairwise, alternating between horizontal neighbours (columns
    ``2j, 2j+1`` of blocks) and vertical neighbours (rows ``2i, 2i+1``),
    starting horizontally and skipping a direction with a single block; an
    unpaired last block passes up unchanged. The first merge makes the bottom
    nodes (one or two pixels each). The last merge joins the two top blocks by
    an edge: the later-built one is the root (it may then hold physical
    indices itself when ``N <= 4``; with ``N = 2`` each variable gets a node).

    Parameters
    ----------
    num_variables : int
        ``N >= 2``.
    layout : str
        ``"binary"`` (1-D), ``"image"`` (2-D) or ``"auto"`` (image if
        ``image_shape`` is given or ``N >= 4`` is a perfect square, else binary).
    image_shape : pair of int, optional
        ``(h, w)`` with ``h * w = N`` for the image layout (default: square).

    Returns
    -------
    TreeStructure
        The tree.
    """
    layout, (h, w) = _resolve_layout(num_variables, layout, image_shape)
    parent: list[int] = []
    children: list[tuple[int, ...]] = []
    variables: list[tuple[int, ...]] = []
    blocks: list[tuple[int, int, int, int]] = []

    def new_node(kids: tuple[int, ...], vars_: tuple[int, ...], rect: tuple[int, int, int, int]) -> int:
        parent.append(-1)
        children.append(kids)
        variables.append(vars_)
        blocks.append(rect)
        for c in kids:
            parent[c] = len(parent) - 1
        return len(parent) - 1

    def join_top(a: int, b: int) -> None:
        # the last merge joins the two top blocks by one edge, with no new node: a root
        # holding only two bonds would cap both at their initial dimension forever
        root, other = max(a, b), min(a, b)
        kids = children[root]
        children[root] = (other,) + kids if other == a else kids + (other,)
        parent[other] = root
        blocks[root] = (0, 0, h, w)

    # a grid of items: ("pix", var, rect) before the first merge, then ("node", id, rect)
    grid = [[("pix", r * w + c, (r, c, r + 1, c + 1)) for c in range(w)] for r in range(h)]
    horizontal = True
    while len(grid) > 1 or len(grid[0]) > 1:
        if horizontal and len(grid[0]) == 1:
            horizontal = False
        elif not horizontal and len(grid) == 1:
            horizontal = True
        if not horizontal:  # pair rows of blocks: transpose, pair columns, transpose back
            grid = [list(col) for col in zip(*grid)]
        final = len(grid) == 1 and len(grid[0]) == 2
        merged = []
        for row in grid:
            out = []
            for j in range(0, len(row), 2):
                group = row[j : j + 2]
                rects = [g[2] for g in group]
                rect = (min(r[0] for r in rects), min(r[1] for r in rects),
                        max(r[2] for r in rects), max(r[3] for r in rects))
                if final:
                    if group[0][0] == "pix":  # N = 2: one bottom node per variable
                        group = [("node", new_node((), (g[1],), g[2]), g[2]) for g in group]
                    join_top(group[0][1], group[1][1])
                    out.append(("node", max(g[1] for g in group), rect))
                elif group[0][0] == "pix":
                    vars_ = tuple(sorted(g[1] for g in group))
                    out.append(("node", new_node((), vars_, rect), rect))
                elif len(group) == 1:
                    out.append(group[0])
                else:
                    out.append(("node", new_node(tuple(g[1] for g in group), (), rect), rect))
            merged.append(out)
        grid = merged
        if not horizontal:
            grid = [list(col) for col in zip(*grid)]
        horizontal = not horizontal
    assert parent.count(-1) == 1 and parent[-1] == -1
    return TreeStructure(
        num_variables=num_variables,
        layout=layout,
        image_shape=(h, w),
        parent=tuple(parent),
        children=tuple(children),
        variables=tuple(variables),
        blocks=tuple(blocks),
    )


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


def _neighbours(struct: TreeStructure, node: int) -> tuple[int, ...]:
    p = struct.parent[node]
    return struct.children[node] + ((p,) if p >= 0 else ())
