"""The :class:`BornMachine` class: a quimb network seen as a Born machine.

It holds the network and derives its structure (nodes, bonds, where each
variable sits, :mod:`tnborn.structure`); its other responsibilities come from
its bases, one module each: :mod:`~tnborn.interface.canonical` (the centre),
:mod:`~tnborn.interface.probability` (exact probabilities),
:mod:`~tnborn.interface.sampling` (exact samples) and
:mod:`~tnborn.interface.blocks` (the two-site merge and split).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import quimb.tensor as qtn
import torch

from ..backend import dtype_name, resolve_device, resolve_dtype
from ..errors import ConfigError
from ..structure import NetworkStructure, Node, derive_structure
from .blocks import TwoSiteMoves
from .canonical import CanonicalForm
from .probability import Probabilities
from .sampling import ExactSampling

__all__ = ["BornMachine", "checked_arrays"]

class _TreeFlag:
    """``is_tree``: derived from the network on an instance, declared on a class.

    On a model it says whether *its* graph is a tree (so the two-site sweep,
    the canonical form and message-passing environments apply). On a geometry
    class it says whether every network the geometry builds is a tree
    (``builds_trees``), which is what a command line needs before a model exists.
    """

    def __get__(self, obj: Any, owner: type) -> bool:
        if obj is None:
            return bool(getattr(owner, "builds_trees", False))
        return obj.structure.is_tree


class BornMachine(CanonicalForm, Probabilities, ExactSampling, TwoSiteMoves, abc.ABC):
    """Tensor-network Born machine ``P(x) = |psi(x)|^2 / Z`` on a quimb network.

    The structure (nodes, neighbours, bonds, where each variable sits) is read
    off the network by :func:`~tnborn.structure.derive_structure`; a geometry
    subclass supplies only how to build its network and, optionally, faster
    exact paths (see the module docstring).

    Parameters
    ----------
    tn : quimb.tensor.TensorNetwork
        The network, torch arrays, one node tag per tensor.
    site_ind_id : str
        Template of the physical index names (``"k{}"``).
    node_tag_id : str
        Template of the node tags (``"I{}"`` for quimb's MPS).
    center : hashable, optional
        A node the network is already canonical about (not checked).
    """

    #: Registry name of the geometry (``"mps"``, ``"tree"`` ...).
    geometry: ClassVar[str] = ""
    #: Whether every network this geometry builds is a tree.
    builds_trees: ClassVar[bool] = False
    is_tree = _TreeFlag()

    def __init__(
        self,
        tn: qtn.TensorNetwork,
        site_ind_id: str = "k{}",
        node_tag_id: str = "I{}",
        center: Node | None = None,
    ):
        self._tn = tn
        self._site_ind_id = site_ind_id
        self._node_tag_id = node_tag_id
        self._structure = derive_structure(tn, site_ind_id, node_tag_id)
        self._center: Node | None = None
        self._center_marks: dict = {}
        self._trusting = 0  # > 0 inside trusting_network()
        self._structure_changed()
        if center is not None:
            self.set_center(center)

    # ------------------------------------------------------------------ #
    # structure: derived from the quimb network
    # ------------------------------------------------------------------ #
    @property
    def tn(self) -> qtn.TensorNetwork:
        """The underlying quimb tensor network (torch arrays, live).

        Editing it is allowed: the model notices at its next public call that
        an array changed (and forgets its canonical centre), or that tensors or
        indices changed (and derives its structure again).
        """
        return self._tn

    @property
    def structure(self) -> NetworkStructure:
        """What the model knows about its network (derived, see :mod:`tnborn.structure`)."""
        return self._structure

    @property
    def site_ind_id(self) -> str:
        """Template of the physical index names."""
        return self._site_ind_id

    @property
    def node_tag_id(self) -> str:
        """Template of the node tags."""
        return self._node_tag_id

    def _structure_changed(self) -> None:
        """Hook run whenever the structure is (re)derived: geometries refresh fast-path caches here."""

    def _check_node(self, node: Any) -> Node:
        try:
            if node in self._structure.tensors:
                return node
        except TypeError:  # unhashable
            pass
        raise ConfigError(f"{node!r} is not a node of this {self.geometry} model "
                          f"(nodes are {_preview(self._structure.nodes)})")

    @property
    def num_variables(self) -> int:
        """Number of variables ``N`` (physical indices)."""
        return len(self._structure.variable_indices)

    @property
    def phys_dim(self) -> int:
        """Dimension of every physical index (2 for binary variables)."""
        return self._structure.phys_dim

    def nodes(self) -> tuple[Node, ...]:
        """All node keys, sorted (the order of checkpoints and :meth:`arrays`).

        Returns
        -------
        tuple of hashable
            The node keys.
        """
        return self._structure.nodes

    def neighbours(self, node: Node) -> tuple[Node, ...]:
        """Nodes joined to ``node`` by a virtual bond, in node order.

        Parameters
        ----------
        node : hashable
            A node key.

        Returns
        -------
        tuple of hashable
            Its neighbours.
        """
        return self._structure.neighbours[self._check_node(node)]

    def node_tensor(self, node: Node) -> qtn.Tensor:
        """The quimb tensor of ``node`` (the live one, not a copy).

        Parameters
        ----------
        node : hashable
            A node key.

        Returns
        -------
        quimb.tensor.Tensor
            The tensor held by the network.
        """
        try:
            return self._structure.tensors[node]
        except (KeyError, TypeError):
            self._check_node(node)
            raise

    def bond_index(self, u: Node, v: Node) -> str:
        """Name of the virtual index joining neighbours ``u`` and ``v``.

        Parameters
        ----------
        u, v : hashable
            Two neighbouring nodes (in either order).

        Returns
        -------
        str
            The index name.
        """
        try:
            return self._structure.bonds[frozenset((u, v))]
        except (KeyError, TypeError):
            raise ConfigError(f"{u!r} and {v!r} are not neighbours in this {self.geometry} network") from None

    def variable_index(self, var: int) -> str:
        """Name of the physical index of variable ``var``.

        Parameters
        ----------
        var : int
            Variable number, ``0 <= var < num_variables``.

        Returns
        -------
        str
            The index name.
        """
        return self._structure.variable_indices[var]

    def variable_node(self, var: int) -> Node:
        """The node carrying the physical index of variable ``var``.

        Parameters
        ----------
        var : int
            Variable number, ``0 <= var < num_variables``.

        Returns
        -------
        hashable
            The node key.
        """
        return self._structure.variable_nodes[var]

    def node_variables(self, node: Node) -> tuple[int, ...]:
        """Variables whose physical index sits on ``node``.

        Parameters
        ----------
        node : hashable
            A node key.

        Returns
        -------
        tuple of int
            The variables, ascending (empty for a node without physical index).
        """
        return self._structure.node_variables.get(self._check_node(node), ())

    def edges(self) -> list[tuple[Node, Node]]:
        """All virtual bonds ``(u, v)`` once each, ``u`` before ``v`` in node order.

        Returns
        -------
        list of (hashable, hashable)
            The edges.
        """
        return self._structure.edges()

    def bond_dims(self) -> list[int]:
        """Bond dimension of every edge, in :meth:`edges` order.

        Returns
        -------
        list of int
            The bond dimensions.
        """
        st = self._structure
        return [int(st.tensors[u].ind_size(st.bonds[frozenset((u, v))])) for u, v in st.edges()]

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable construction parameters (for checkpoints).

        Returns
        -------
        dict
            What :meth:`from_arrays` needs besides the arrays.
        """

    @classmethod
    @abc.abstractmethod
    def from_arrays(
        cls, arrays: Sequence[torch.Tensor], config: dict[str, Any]
    ) -> "BornMachine":
        """Rebuild a machine from its node arrays (in :meth:`nodes` order) and config.

        Parameters
        ----------
        arrays : sequence of torch.Tensor
            One array per node, in :meth:`nodes` order.
        config : dict
            The output of :meth:`config`.

        Returns
        -------
        BornMachine
            The machine (centre unknown until the caller sets it).
        """

    # ------------------------------------------------------------------ #
    # arrays, dtype, device, copies
    # ------------------------------------------------------------------ #
    @property
    def max_bond(self) -> int:
        """The largest bond dimension."""
        dims = self.bond_dims()
        return max(dims) if dims else 1

    def num_parameters(self) -> int:
        """Total number of scalar entries in all tensors.

        Returns
        -------
        int
            The parameter count (a complex entry counts once).
        """
        return int(sum(self.node_tensor(n).data.numel() for n in self.nodes()))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the tensors."""
        return self.node_tensor(self.nodes()[0]).data.dtype

    @property
    def device(self) -> torch.device:
        """The device of the tensors."""
        return self.node_tensor(self.nodes()[0]).data.device

    def arrays(self) -> list[torch.Tensor]:
        """The node arrays in :meth:`nodes` order (live references).

        Returns
        -------
        list of torch.Tensor
            One array per node.
        """
        return [self.node_tensor(n).data for n in self.nodes()]

    def to(
        self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
    ) -> "BornMachine":
        """Move every tensor to ``device`` and/or cast to ``dtype``, in place.

        Parameters
        ----------
        device : str or torch.device, optional
            Target device (unchanged if None).
        dtype : str or torch.dtype, optional
            Target dtype (unchanged if None).

        Returns
        -------
        BornMachine
            ``self``.
        """
        dev = resolve_device(device) if device is not None else self.device
        dt = resolve_dtype(dtype) if dtype is not None else self.dtype
        if not dt.is_complex and self.dtype.is_complex:
            raise ConfigError("casting a complex Born machine to a real dtype would drop the phases")
        center = self.center
        for n in self.nodes():
            t = self.node_tensor(n)
            t.modify(data=t.data.to(device=dev, dtype=dt))
        self.set_center(center)
        return self

    def copy(self) -> "BornMachine":
        """Return an independent copy (tensors cloned).

        Returns
        -------
        BornMachine
            A machine of the same class, with the same centre.
        """
        center = self.center
        new = type(self).from_arrays([a.clone() for a in self.arrays()], self.config())
        new.set_center(center)
        return new

    def __repr__(self) -> str:
        dims = self.bond_dims()
        if len(dims) > 8:
            shown = " ".join(map(str, dims[:4])) + " ... " + " ".join(map(str, dims[-4:]))
        else:
            shown = " ".join(map(str, dims))
        return (
            f"{type(self).__name__}(geometry={self.geometry!r}, num_variables={self.num_variables}, "
            f"max_bond={self.max_bond}, bond_dims=[{shown}], dtype={dtype_name(self.dtype)}, "
            f"device={self.device}, center={self.center!r})"
        )



def checked_arrays(arrays: Any, what: str = "node") -> list[torch.Tensor]:
    """Validate the arrays given to a geometry constructor and return them as torch tensors.

    Parameters
    ----------
    arrays : sequence of array_like
        torch tensors or numpy arrays (converted, keeping their dtype).
    what : str
        What one array is called in messages (``"site"``, ``"node"``).

    Returns
    -------
    list of torch.Tensor
        The arrays.

    Raises
    ------
    ConfigError
        If an array is not numeric floating point or complex, has a NaN or
        infinite entry, or is all zero (then ``psi = 0`` and ``P`` is undefined).
    """
    try:
        arrays = list(arrays)
    except TypeError:
        raise ConfigError(f"expected a sequence of {what} arrays, got {type(arrays).__name__}") from None
    out = []
    for k, a in enumerate(arrays):
        if isinstance(a, np.ndarray):
            if a.dtype.kind not in "fc":
                raise ConfigError(f"{what} {k}: expected a floating or complex array, got dtype {a.dtype}")
            a = torch.from_numpy(np.ascontiguousarray(a))
        if not isinstance(a, torch.Tensor):
            raise ConfigError(f"{what} {k}: expected a torch tensor or numpy array, got {type(a).__name__}")
        if not (a.dtype.is_floating_point or a.dtype.is_complex):
            raise ConfigError(f"{what} {k}: expected a floating or complex tensor, got {a.dtype} "
                              "(convert with .double())")
        if a.numel() and not bool(torch.isfinite(a).all()):
            raise ConfigError(f"{what} {k}: the array has NaN or infinite entries")
        if a.numel() == 0 or not bool((a != 0).any()):
            raise ConfigError(f"{what} {k}: the array is all zero, so psi = 0 and P is undefined")
        out.append(a)
    return out


def _preview(items: Sequence[Any], limit: int = 4) -> str:
    shown = ", ".join(repr(i) for i in list(items)[:limit])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > limit else shown
