"""Projected entangled pair state (PEPS) Born machine on a small 2-D grid.

``psi(x)`` is a quimb :class:`~quimb.tensor.PEPS` on an ``h x w`` grid with
open boundaries, one physical index per site: variable ``v`` (images flattened
row by row) lives on node ``(v // w, v % w)``. This follows the idea of PEPS
Born machines for 2-D data (Vieijra et al., arXiv:2202.08177), but with
**exact** contraction: log-probabilities, the normalisation and sampling use
the generic exact paths of :class:`~tnborn.interface.BornMachine` (batched,
log-scaled contraction of the network and of the doubled network, sequential
marginals for sampling). Their cost grows exponentially with the grid width
(the contraction carries a boundary of about ``D^w`` -- ``D^(2w)`` for the
doubled network -- entries), so this geometry is meant for small grids such
as 4 x 4 bars-and-stripes. A PEPS has loops, hence no exact canonical form
and no two-site sweep: train it with :class:`~tnborn.training.GradientTrainer`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import quimb.tensor as qtn
import torch

from ..backend import check_integer, check_seed, make_generator, resolve_device, resolve_dtype
from ..errors import ConfigError, NumericalError
from ..interface import checked_arrays, BornMachine
from ..registry import register_geometry

__all__ = ["PEPSBornMachine", "random_peps_arrays", "grid_shape"]

#: Direction order of the non-physical indices of a site array (quimb's
#: ``"urdlp"`` convention: "up" is the neighbour with the larger row number).
_DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def grid_shape(num_variables: int, image_shape: Sequence[int] | None = None) -> tuple[int, int]:
    """Return the grid ``(h, w)`` for ``num_variables`` sites.

    Parameters
    ----------
    num_variables : int
        Number of variables ``N >= 2``.
    image_shape : sequence of two int, optional
        Explicit ``(h, w)`` with ``h * w == N``. Default: the most square
        factorisation ``h <= w`` (``(r, r)`` when ``N = r^2``, 12 -> (3, 4),
        a prime ``N`` -> (1, N)).

    Returns
    -------
    tuple of int
        ``(h, w)``.
    """
    n = check_integer(num_variables, "num_variables", 2)
    if image_shape is None:
        h = max(k for k in range(1, math.isqrt(n) + 1) if n % k == 0)
        return h, n // h
    try:
        h, w = (int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"image_shape must be a pair (rows, cols), got {image_shape!r}") from None
    if h < 1 or w < 1 or h * w != n:
        raise ConfigError(f"image_shape {image_shape!r} must be two positive integers whose product is {n}")
    return h, w


def _site_directions(i: int, j: int, h: int, w: int) -> list[tuple[int, int]]:
    """Offsets of the neighbours of site ``(i, j)`` in array index order."""
    return [(di, dj) for di, dj in _DIRECTIONS if 0 <= i + di < h and 0 <= j + dj < w]


def random_peps_arrays(
    shape: tuple[int, int],
    bond_dim: int = 2,
    phys_dim: int = 2,
    seed: int | None = 0,
    noise: float = 0.2,
    dtype: torch.dtype = torch.float64,
) -> list[torch.Tensor]:
    """Site arrays of a PEPS near the uniform product state, plus noise.

    Every site array is ``delta(all bonds = 0) / sqrt(d)`` (the uniform product
    state, for which ``psi(x) = d^(-N/2)`` never vanishes) plus i.i.d. normal
    noise of standard deviation ``noise / sqrt(d)`` on all entries (real and
    imaginary parts for complex dtypes), so that the bonds carry signal and
    gradients do not start at the symmetric point.

    Parameters
    ----------
    shape : tuple of int
        Grid ``(h, w)``.
    bond_dim : int
        Bond dimension ``D``.
    phys_dim : int
        Physical dimension ``d``.
    seed : int or None
        Seed of the CPU generator.
    noise : float
        Relative noise level (0: exactly the product state).
    dtype : torch.dtype
        Dtype of the returned arrays.

    Returns
    -------
    list of torch.Tensor
        ``h * w`` CPU arrays in row-major node order; site ``(i, j)`` has one
        axis of size ``D`` per neighbour in the order (row + 1, col + 1,
        row - 1, col - 1), then the physical axis.
    """
    h, w = shape
    d, bond = int(phys_dim), int(bond_dim)
    gen = make_generator(seed)
    out = []
    for i in range(h):
        for j in range(w):
            k = len(_site_directions(i, j, h, w))
            dims = (bond,) * k + (d,)
            base = torch.zeros(dims, dtype=torch.float64)
            base[(0,) * k] = 1.0 / math.sqrt(d)
            a = base + (noise / math.sqrt(d)) * torch.randn(dims, generator=gen, dtype=torch.float64)
            if dtype.is_complex:
                im = (noise / math.sqrt(d)) * torch.randn(dims, generator=gen, dtype=torch.float64)
                a = torch.complex(a, im)
            out.append(a.to(dtype))
    return out


@register_geometry("peps")
class PEPSBornMachine(BornMachine):
    """Born machine on an open-boundary PEPS over an ``h x w`` grid (exact contraction).

    All probabilities, the normalisation and the samplers are the exact
    generic implementations of :class:`~tnborn.interface.BornMachine`; their
    cost is exponential in the grid width, so use small grids (4 x 4 and
    similar). There is no canonical form and no sweep schedule; train with
    :class:`~tnborn.training.GradientTrainer`.

    Parameters
    ----------
    arrays : sequence of torch.Tensor
        ``h * w`` site arrays in row-major node order. Site ``(i, j)`` has one
        bond axis per existing neighbour in the order (row + 1, col + 1,
        row - 1, col - 1) -- quimb's ``"urdlp"`` -- followed by the physical axis.
    image_shape : sequence of two int
        The grid ``(h, w)``.

    See Also
    --------
    PEPSBornMachine.random : the usual constructor.
    """

    geometry = "peps"

    def __init__(self, arrays: Sequence[torch.Tensor], image_shape: Sequence[int]):
        arrays = checked_arrays(arrays, "site")
        h, w = grid_shape(len(arrays), image_shape)
        d = int(arrays[0].shape[-1]) if arrays[0].ndim else 0
        if d < 2:
            raise ConfigError(f"the physical (last) axis must have size >= 2, got {tuple(arrays[0].shape)}")
        self._shape = (h, w)
        self._nodes = tuple((i, j) for i in range(h) for j in range(w))
        grid: list[list[torch.Tensor]] = [[None] * w for _ in range(h)]  # type: ignore[list-item]
        for (i, j), a in zip(self._nodes, arrays):
            dirs = _site_directions(i, j, h, w)
            if not isinstance(a, torch.Tensor):
                raise ConfigError(f"site {(i, j)}: expected a torch tensor, got {type(a).__name__}")
            if a.ndim != len(dirs) + 1 or a.shape[-1] != d:
                raise ConfigError(
                    f"site {(i, j)}: expected {len(dirs)} bond axes and a physical axis of size {d}, "
                    f"got shape {tuple(a.shape)}"
                )
            grid[i][j] = a
        # bond dimensions must agree across every edge
        for i, j in self._nodes:
            for axis, (di, dj) in enumerate(_site_directions(i, j, h, w)):
                oi, oj = i + di, j + dj
                back = _site_directions(oi, oj, h, w).index((-di, -dj))
                if grid[i][j].shape[axis] != grid[oi][oj].shape[back]:
                    raise ConfigError(
                        f"bond {(i, j)}-{(oi, oj)}: dimensions {grid[i][j].shape[axis]} and "
                        f"{grid[oi][oj].shape[back]} differ"
                    )
        peps = qtn.PEPS(grid, shape="urdlp")
        super().__init__(peps, site_ind_id=peps.site_ind_id, node_tag_id=peps.site_tag_id)

    def _structure_changed(self) -> None:
        """Check that the network is still the ``h x w`` grid (row-major variables)."""
        if self.structure.nodes != self._nodes or self.structure.variable_nodes != self._nodes:
            raise ConfigError(f"the network of a PEPSBornMachine must stay a {self._shape[0]}x{self._shape[1]} "
                              "grid with one variable per site; use tnborn.from_quimb for other networks")

    # ----------------------------------------------------------- construction
    @classmethod
    def random(
        cls,
        num_variables: int,
        bond_dim: int = 2,
        phys_dim: int = 2,
        seed: int | None = 0,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        image_shape: Sequence[int] | None = None,
        noise: float = 0.2,
    ) -> "PEPSBornMachine":
        """A PEPS near the uniform product state plus noise, normalised to ``Z = 1``.

        Parameters
        ----------
        num_variables : int
            Number of variables ``N = h * w >= 2``.
        bond_dim : int
            Bond dimension ``D`` of every bond.
        phys_dim : int
            Values per variable.
        seed : int or None
            Seed of the initialisation.
        dtype : str or torch.dtype, optional
            ``"float64"`` (default), ``"float32"``, ``"complex64"``, ``"complex128"``.
        device : str or torch.device, optional
            ``"cpu"`` (default), ``"cuda"``, ``"auto"``.
        image_shape : sequence of two int, optional
            The grid ``(h, w)``; default square (see :func:`grid_shape`).
        noise : float
            Relative noise on top of the product state (see :func:`random_peps_arrays`).

        Returns
        -------
        PEPSBornMachine
            The machine, with every tensor scaled by the same factor so that ``Z = 1``.
        """
        shape = grid_shape(num_variables, image_shape)
        bond_dim = check_integer(bond_dim, "bond_dim", 1)
        phys_dim = check_integer(phys_dim, "phys_dim", 2)
        check_seed(seed)
        if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
            raise ConfigError(f"noise must be a finite number >= 0, got {noise!r}")
        dt = resolve_dtype(dtype)
        dev = resolve_device(device)
        # drawn and normalised in double precision, then cast
        wide = torch.complex128 if dt.is_complex else torch.float64
        arrays = random_peps_arrays(shape, int(bond_dim), int(phys_dim), seed, float(noise), wide)
        model = cls(arrays, shape)
        model.normalize()
        return model.to(device=dev, dtype=dt)

    def config(self) -> dict[str, Any]:
        """Construction parameters (for checkpoints), with each site's index layout.

        ``layout[k]`` spells the index order of node ``k``'s live array with
        the letters of quimb's ``"urdlp"`` (``u``: row + 1, ``r``: col + 1,
        ``d``: row - 1, ``l``: col - 1, ``p``: physical), so that
        :meth:`from_arrays` can rebuild arrays whose indices were reordered
        (by :meth:`~tnborn.interface.BornMachine.split`, for instance).

        Returns
        -------
        dict
            ``num_variables``, ``phys_dim``, ``image_shape`` and ``layout``.
        """
        layout = []
        for node in self._nodes:
            letters = {self.variable_index(self.node_variables(node)[0]): "p"}
            for nb in self.neighbours(node):
                offset = (nb[0] - node[0], nb[1] - node[1])
                letters[self.bond_index(node, nb)] = "urdl"[_DIRECTIONS.index(offset)]
            layout.append("".join(letters[ix] for ix in self.node_tensor(node).inds))
        return {"num_variables": self.num_variables, "phys_dim": self.phys_dim,
                "image_shape": list(self._shape), "layout": layout}

    @classmethod
    def from_arrays(cls, arrays: Sequence[torch.Tensor], config: dict[str, Any]) -> "PEPSBornMachine":
        """Rebuild from site arrays as returned by :meth:`arrays`.

        Parameters
        ----------
        arrays : sequence of torch.Tensor
            Node arrays in :meth:`nodes` (row-major) order, in quimb's index order.
        config : dict
            From :meth:`config`.

        Returns
        -------
        PEPSBornMachine
            The machine.
        """
        arrays = checked_arrays(arrays, "site")
        n = int(config.get("num_variables", len(arrays)))
        if len(arrays) != n:
            raise ConfigError(f"expected {n} site arrays, got {len(arrays)}")
        layout = config.get("layout")
        if layout is not None:
            if len(layout) != n:
                raise ConfigError(f"layout has {len(layout)} entries for {n} sites")
            arrays = list(arrays)
            for k, (a, lay) in enumerate(zip(arrays, layout)):
                want = "".join(c for c in "urdlp" if c in lay)
                if len(set(lay)) != len(lay) or len(lay) != a.ndim or set(lay) - set("urdlp"):
                    raise ConfigError(f"site {k}: layout {lay!r} does not fit a {a.ndim}-D array")
                arrays[k] = a.permute(*[lay.index(c) for c in want])
        return cls(arrays, config.get("image_shape") or grid_shape(n))

    # ----------------------------------------------------------- structure
    @property
    def tn(self) -> qtn.PEPS:
        """The quimb :class:`~quimb.tensor.PEPS` (torch arrays)."""
        return self._tn

    @property
    def image_shape(self) -> tuple[int, int]:
        """The grid ``(h, w)``."""
        return self._shape

