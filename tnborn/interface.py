"""The geometry-agnostic Born machine interface: read this module first.

A Born machine is a tensor network ``psi`` with one physical index per
variable; it defines ``P(x) = |psi(x)|^2 / Z`` with ``Z = sum_x |psi(x)|^2``.
Every geometry (matrix product state, tree, PEPS ...) is a subclass of
:class:`BornMachine` holding a quimb tensor network whose arrays are torch
tensors. The network is seen as a graph of *nodes* (hashable keys, one tensor
each) joined by virtual bonds; physical indices hang off some nodes.

What a geometry must supply (the abstract methods) is only its structure:

- :attr:`~BornMachine.tn`, :meth:`~BornMachine.nodes`,
  :meth:`~BornMachine.neighbours`, :meth:`~BornMachine.node_tensor`,
  :meth:`~BornMachine.bond_index`, :meth:`~BornMachine.variable_index`,
  :meth:`~BornMachine.variable_node`;
- its construction parameters :meth:`~BornMachine.config` and
  :meth:`~BornMachine.from_arrays` (used by checkpoints);
- for the two-site sweep trainer (geometries whose graph is a tree):
  :meth:`~BornMachine.sweep_schedule` and :meth:`~BornMachine.move_center`.

Everything else has an exact generic implementation here, written against
that structure: log-amplitudes and log-probabilities by a log-scaled batched
contraction of the network (batch as a shared hyper-index, cotengra paths
cached per shape), the log-norm, exact sampling and conditional sampling by
sequential marginals, the two-site merge and SVD split through quimb. A
geometry overrides a method only where it has a faster exact path, and the
test suite checks the fast path against the generic one.
"""

from __future__ import annotations

import abc
import contextlib
import math
import weakref
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import quimb.tensor as qtn
import torch

from .backend import check_integer, dtype_name, make_generator, resolve_device, resolve_dtype, to_numpy
from .contraction import contract_log_scaled, onehot
from .data import validate_binary
from .errors import ConfigError, DataError, DeviceError, NumericalError
from .primitives import SplitInfo, check_split_finite, draw_categorical, truncation_rank
from .structure import NetworkStructure, derive_structure

__all__ = [
    "BornMachine",
    "checked_arrays",
    "TwoSiteBlock",
    "Node",
]

#: Type of a node key: any hashable (an int site for the MPS, a tuple for trees and grids).
Node = Hashable
_BATCH = "__batch__"


@dataclass
class TwoSiteBlock:
    """Two neighbouring tensors merged into one, ready for a local update.

    Attributes
    ----------
    nodes : tuple
        The two merged nodes ``(u, v)``.
    data : torch.Tensor
        The merged tensor.
    inds : tuple of str
        Index names of ``data``.
    left_inds : tuple of str
        The indices that belonged to ``u`` (they go left in the split).
    bond : str
        Name of the bond index that joined ``u`` and ``v`` (reused by the split).
    physical : dict
        Physical index name -> variable number, for the physical indices of
        the block.
    virtual : dict
        Virtual index name -> ``(outside_node, inside_node)``: the environment
        on that index is the message from ``outside_node`` into the block.
    """

    nodes: tuple[Node, Node]
    data: torch.Tensor
    inds: tuple[str, ...]
    left_inds: tuple[str, ...]
    bond: str
    physical: dict[str, int]
    virtual: dict[str, tuple[Node, Node]]


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


class BornMachine(abc.ABC):
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

    def check_network(self) -> None:
        """Notice edits made to :attr:`tn` from outside the model.

        Public methods call this before they trust the canonical centre. If a
        tensor or index was added, removed or renamed, the structure is derived
        again (and checked); if any array was replaced or written in place
        since the centre was established, the centre is dropped, so every
        quantity is computed exactly until :meth:`move_center` restores it.

        Raises
        ------
        ConfigError
            If the edited network is no longer a valid Born machine network.
        """
        if not self._structure.still_describes(self._tn):
            self._structure = derive_structure(self._tn, self._site_ind_id, self._node_tag_id)
            self._structure_changed()
            self._center = None
            self._center_marks = {}
            return
        if self._center is not None and not self._marks_hold():
            self._center = None
            self._center_marks = {}

    def _marks_hold(self) -> bool:
        tensors = self._structure.tensors
        for node, (ref, version) in self._center_marks.items():
            data = tensors[node].data
            if ref() is not data or data._version != version:
                return False
        return True

    def _mark(self, nodes: Any) -> None:
        tensors = self._structure.tensors
        for node in nodes:
            data = tensors[node].data
            self._center_marks[node] = (weakref.ref(data), data._version)

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
    # canonical form (generic for every tree; geometries may go faster)
    # ------------------------------------------------------------------ #
    def _require_tree(self, what: str) -> None:
        if not self._structure.is_tree:
            raise NotImplementedError(
                f"{what} needs a network without loops; this {self.geometry} network has "
                f"{len(self._structure.bonds) - len(self._structure.nodes) + 1} independent loop(s): "
                "train it with GradientTrainer"
            )

    def sweep_schedule(self) -> list[list[tuple[Node, Node]]]:
        """The two-site sweep of this network, as half-sweeps of steps.

        Each step ``(source, target)`` names two neighbouring nodes: they are
        merged, updated and split, and the canonical centre ends on
        ``target``. Consecutive steps share the node the centre is on, so the
        centre walks along the graph. A *loop* is the concatenation of all
        half-sweeps.

        The generic schedule, for any tree, is rooted at the last node: each
        half-sweep is a depth-first walk from the root into some of its
        subtrees and back. A node ``c`` without further children is updated
        once, by ``(c, parent)``; an inner node is entered by
        ``(parent, c)``, walked recursively and left by ``(c, parent)``. The
        first half-sweep is the trip into the root's first subtree, the second
        the trips into the others (the same trip again when there is only one).

        Returns
        -------
        list of list of (node, node)
            The half-sweeps.
        """
        self._require_tree("the two-site sweep")
        st = self._structure
        root = st.nodes[-1]
        parent, children = _rooted(st, root)

        def trip(n: Node) -> list[tuple[Node, Node]]:
            if not children[n]:
                return [(n, parent[n])]
            steps = [(parent[n], n)]
            for c in children[n]:
                steps += trip(c)
            return steps + [(n, parent[n])]

        trips = [trip(c) for c in children[root]]
        if len(trips) == 1:
            return [trips[0], list(trips[0])]
        return [trips[0], [step for t in trips[1:] for step in t]]

    def move_center(self, node: Node) -> None:
        """Move the orthogonality centre to ``node`` by exact gauge moves (QR).

        With no known centre every other node is first made an isometry
        pointing towards ``node`` (farthest nodes first); the state is unchanged.

        Parameters
        ----------
        node : hashable
            The new centre.
        """
        self._require_tree("a canonical form")
        self._check_unless_trusted()
        node = self._check_node(node)
        if self._center == node:
            return
        self._move_center(node)
        self._center = node
        self._center_marks = {}
        self._mark(self._structure.nodes)

    def _move_center(self, node: Node) -> None:
        """Gauge moves bringing the centre to ``node`` (generic: QR along the tree via quimb)."""
        st = self._structure
        if self._center is None:
            parent, children = _rooted(st, node)
            order = _post_order(children, node)
            moves = [(n, parent[n]) for n in order if n != node]
        else:
            path = _path(st, self._center, node)
            moves = list(zip(path[:-1], path[1:]))
        for a, b in moves:
            qtn.tensor_canonize_bond(st.tensors[a], st.tensors[b], absorb="right", method="qr")

    # ------------------------------------------------------------------ #
    # the canonical centre: one owner
    # ------------------------------------------------------------------ #
    @property
    def center(self) -> Node | None:
        """The current orthogonality centre, or ``None`` if not canonical.

        Checked against the network first (:meth:`check_network`): after an
        outside edit of :attr:`tn` it is ``None``.
        """
        self._check_unless_trusted()
        return self._center

    def _check_unless_trusted(self) -> None:
        if not self._trusting:
            self.check_network()

    @contextlib.contextmanager
    def trusting_network(self):
        """Context for code that owns the model for a while (a trainer's half-sweep).

        The network is checked once on entry (:meth:`check_network`); inside,
        :attr:`center` is read without the O(N) check, so the network must be
        changed only through the model's methods (or :meth:`check_network`
        called after an outside edit). Contexts nest.

        Yields
        ------
        BornMachine
            The model itself.
        """
        self.check_network()
        self._trusting += 1
        try:
            yield self
        finally:
            self._trusting -= 1

    def normalize(self) -> None:
        """Rescale the network so that ``Z = 1``.

        A geometry that always builds trees (``builds_trees``) is brought into
        canonical form (about the last node, if no centre is known) and its
        centre tensor divided by its norm; any other network has every tensor
        rescaled by the same factor (no gauge change, no centre).

        Raises
        ------
        NumericalError
            If ``log Z`` is not finite (uniform rescaling).
        """
        if type(self).builds_trees:
            center = self.center
            if center is None:
                center = self._structure.nodes[-1]
                self.move_center(center)
            t = self.node_tensor(center)
            t.modify(data=t.data / torch.linalg.vector_norm(t.data))
            self._center_moved(center, (center,))
            return
        log_z = float(self.log_norm())
        if not math.isfinite(log_z):
            raise NumericalError(f"cannot normalise: log Z = {log_z}")
        factor = math.exp(-log_z / (2 * len(self._structure.nodes)))
        for node in self._structure.nodes:
            t = self.node_tensor(node)
            t.modify(data=t.data * factor)
        self.drop_center()

    def set_center(self, node: Node | None) -> None:
        """Declare that the network is already canonical about ``node``.

        For code that restores tensors it saved itself (a checkpoint, a
        snapshot taken before a failed update). Nothing is checked or moved:
        use :meth:`move_center` to bring the network into canonical form.

        Parameters
        ----------
        node : hashable or None
            A node of the network, or ``None`` for "not canonical".
        """
        if node is None:
            self.drop_center()
            return
        if not self._structure.still_describes(self._tn):
            self.check_network()
        node = self._check_node(node)
        self._center = node
        self._center_marks = {}
        self._mark(self._structure.nodes)

    def _center_moved(self, node: Node, written: Sequence[Node]) -> None:
        """Record that this model's own code wrote ``written`` and left the centre on ``node``."""
        had_center = self._center is not None
        self._center = node
        self._mark(written if had_center else self._structure.nodes)

    def drop_center(self) -> None:
        """Forget the canonical form (after the tensors were changed from outside).

        Every quantity is then computed by exact contraction until
        :meth:`move_center` restores a centre.
        """
        self._center = None
        self._center_marks = {}

    @contextlib.contextmanager
    def ignoring_center(self):
        """Context in which the canonical centre is not used (and restored afterwards).

        Inside it, :meth:`log_norm` contracts the whole network, so that autograd
        sees ``Z`` as a function of every tensor.

        Yields
        ------
        BornMachine
            The model itself.
        """
        center, marks = self._center, dict(self._center_marks)
        self._center = None
        self._center_marks = {}
        try:
            yield self
        finally:
            self._center, self._center_marks = center, marks


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

    # ------------------------------------------------------------------ #
    # data handling
    # ------------------------------------------------------------------ #
    def as_configurations(self, x: Any, name: str = "x") -> torch.Tensor:
        """Validate configurations and return them as an int64 tensor on the device.

        Parameters
        ----------
        x : array_like
            Shape ``(batch, num_variables)`` (or ``(num_variables,)``) with
            values in ``{0, ..., phys_dim - 1}``.
        name : str
            Name used in error messages.

        Returns
        -------
        torch.Tensor
            ``(batch, num_variables)`` int64 on :attr:`device`.
        """
        if isinstance(x, torch.Tensor) and x.dtype == torch.int64 and x.ndim == 2:
            if x.shape[1] != self.num_variables or x.shape[0] == 0:
                validate_binary(to_numpy(x), n_vars=self.num_variables, phys_dim=self.phys_dim, name=name)
            if bool(((x < 0) | (x >= self.phys_dim)).any()):
                validate_binary(to_numpy(x), n_vars=self.num_variables, phys_dim=self.phys_dim, name=name)
            return x.to(self.device)
        arr = validate_binary(
            x, n_vars=self.num_variables, phys_dim=self.phys_dim, name=name, allow_1d=True
        )
        return torch.as_tensor(arr, dtype=torch.int64, device=self.device)

    def as_mask(self, mask: Any, batch: int) -> torch.Tensor:
        """Validate a mask of known variables and broadcast it to ``(batch, N)``.

        Parameters
        ----------
        mask : array_like of bool
            ``True`` where the variable is known (fixed). Shape ``(N,)`` or
            ``(batch, N)``.
        batch : int
            Number of configurations.

        Returns
        -------
        torch.Tensor
            Boolean ``(batch, N)`` tensor on :attr:`device`.
        """
        m = to_numpy(mask)
        if m.dtype != bool:
            if m.size and not np.isin(m, (0, 1)).all():
                raise DataError("mask must be boolean (True = known variable) or 0/1")
            m = m.astype(bool)
        n = self.num_variables
        if m.ndim == 1:
            if m.shape[0] != n:
                raise DataError(f"mask must have {n} entries (one per variable), got {m.shape[0]}")
            m = np.broadcast_to(m, (batch, n))
        elif m.ndim == 2:
            if m.shape[1] != n or m.shape[0] not in (1, batch):
                raise DataError(
                    f"mask must have shape ({n},) or ({batch}, {n}), got {tuple(m.shape)}"
                )
            m = np.broadcast_to(m, (batch, n))
        else:
            raise DataError(f"mask must be 1-D or 2-D, got {m.ndim}-D")
        # copy: a broadcast view is read-only, which torch does not support
        return torch.tensor(np.ascontiguousarray(m), dtype=torch.bool, device=self.device)

    # ------------------------------------------------------------------ #
    # probabilities (generic exact contraction; geometries may override)
    # ------------------------------------------------------------------ #
    def log_amplitude(self, x: Any, chunk_size: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``log|psi(x)|`` and the phase ``psi/|psi|`` of a batch.

        Generic exact path: the network and a one-hot selection per variable
        (sharing a batch hyper-index) are contracted by
        :func:`~tnborn.contraction.contract_log_scaled`; geometries supply
        faster exact paths through :meth:`_log_amplitude`.

        Parameters
        ----------
        x : array_like
            Configurations ``(batch, N)``.
        chunk_size : int
            Configurations processed at once (bounds memory).

        Returns
        -------
        log_abs : torch.Tensor
            Real ``(batch,)`` tensor, ``-inf`` where ``psi(x) = 0``.
        phase : torch.Tensor
            ``(batch,)`` tensor of signs (real) or unit phases (complex).
        """
        chunk_size = check_integer(chunk_size, "chunk_size", 1)
        self._check_unless_trusted()
        xt = self.as_configurations(x)
        if xt.shape[0] <= chunk_size:
            return self._log_amplitude(xt)
        outs = [self._log_amplitude(xt[s : s + chunk_size]) for s in range(0, xt.shape[0], chunk_size)]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def _log_amplitude(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-amplitudes of validated configurations (fast paths override this)."""
        return self._log_amplitude_contract(x)

    def _log_amplitude_contract(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        arrays, inputs = [], []
        for n in self.nodes():
            t = self.node_tensor(n)
            arrays.append(t.data)
            inputs.append(tuple(t.inds))
        for var in range(self.num_variables):
            arrays.append(onehot(x[:, var], self.phys_dim, self.dtype))
            inputs.append((_BATCH, self.variable_index(var)))
        mant, log = contract_log_scaled(arrays, inputs, (_BATCH,), batch_ind=_BATCH)
        mag = mant.abs()
        log_abs = torch.where(mag > 0, torch.log(mag) + log, torch.full_like(log, -math.inf))
        phase = torch.where(mag > 0, mant / torch.where(mag > 0, mag, 1).to(mant.dtype), 0)
        return log_abs, phase

    def log_norm(self) -> torch.Tensor:
        """Return ``log Z`` where ``Z = sum_x |psi(x)|^2`` (a real scalar tensor).

        Generic path: contraction of the doubled network ``<psi|psi>``; with a
        canonical centre, geometries read it off the centre tensor.

        Returns
        -------
        torch.Tensor
            ``log Z``.
        """
        self._check_unless_trusted()
        return self._log_norm()

    def _log_norm(self) -> torch.Tensor:
        """``log Z`` of the network as it is (fast paths override this)."""
        arrays, inputs = self._doubled_network(frozenset())
        mant, log = contract_log_scaled(arrays, inputs, ())
        return torch.log(mant.real) + log

    def _doubled_network(
        self, open_vars: frozenset[int]
    ) -> tuple[list[torch.Tensor], list[tuple[str, ...]]]:
        """Ket and bra tensors with bra virtual indices primed.

        Physical indices of variables not in ``open_vars`` are shared between
        ket and bra (traced); those in ``open_vars`` are primed on the bra.
        """
        phys = {self.variable_index(v): v for v in range(self.num_variables)}
        arrays, inputs = [], []
        for n in self.nodes():
            t = self.node_tensor(n)
            arrays.append(t.data)
            inputs.append(tuple(t.inds))
            bra_inds = tuple(
                ix if (ix in phys and phys[ix] not in open_vars) else ix + "'" for ix in t.inds
            )
            arrays.append(t.data.conj() if t.data.is_complex() else t.data)
            inputs.append(bra_inds)
        return arrays, inputs

    def log_prob(self, x: Any) -> torch.Tensor:
        """Return ``log P(x)`` of a batch of configurations.

        Parameters
        ----------
        x : array_like
            ``(batch, N)`` configurations with values in ``{0..phys_dim-1}``.

        Returns
        -------
        torch.Tensor
            Real ``(batch,)`` log-probabilities (``-inf`` where ``psi = 0``).
        """
        log_abs, _ = self.log_amplitude(x)
        return 2.0 * log_abs - self.log_norm()

    def score_samples(self, x: Any) -> np.ndarray:
        """Return ``log P(x)`` as a numpy array (scikit-learn spelling).

        Parameters
        ----------
        x : array_like
            ``(batch, N)`` configurations.

        Returns
        -------
        numpy.ndarray
            Log-probabilities.
        """
        return to_numpy(self.log_prob(x))

    def nll(self, x: Any, batch_size: int = 4096) -> float:
        """Mean negative log-likelihood ``-(1/|x|) sum log P(x)`` in nats.

        Parameters
        ----------
        x : array_like
            ``(batch, N)`` data.
        batch_size : int
            Configurations evaluated at once.

        Returns
        -------
        float
            The NLL (``inf`` if some configuration has probability zero).
        """
        batch_size = check_integer(batch_size, "batch_size", 1)
        xt = self.as_configurations(x)
        total = 0.0
        for start in range(0, xt.shape[0], batch_size):
            total += float(self.log_prob(xt[start : start + batch_size]).sum())
        return -total / xt.shape[0]

    # ------------------------------------------------------------------ #
    # sampling (generic exact sequential marginals; geometries may override)
    # ------------------------------------------------------------------ #
    def sample(
        self, num_samples: int, seed: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw exact independent samples from ``P``.

        Parameters
        ----------
        num_samples : int
            Number of samples.
        seed : int, optional
            Seed for a fresh generator (ignored when ``generator`` is given).
        generator : torch.Generator, optional
            Source of randomness (on the model's device).

        Returns
        -------
        samples : torch.Tensor
            ``(num_samples, N)`` int64 configurations.
        log_prob : torch.Tensor
            ``(num_samples,)`` their exact log-probabilities.
        """
        n = check_integer(num_samples, "num_samples", 1)
        self._check_unless_trusted()
        gen = self._generator(seed, generator)
        x = torch.zeros((n, self.num_variables), dtype=torch.int64, device=self.device)
        mask = torch.zeros_like(x, dtype=torch.bool)
        return self._sample_free(x, mask, gen)

    def sample_conditional(
        self,
        x: Any,
        mask: Any,
        num_samples: int = 1,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample the unknown variables exactly from ``P(unknown | known)``.

        Parameters
        ----------
        x : array_like
            ``(batch, N)`` configurations; entries where ``mask`` is False are
            ignored (they are resampled).
        mask : array_like of bool
            ``True`` for known (fixed) variables; ``(N,)`` or ``(batch, N)``.
        num_samples : int
            Completions per configuration.
        seed : int, optional
            Seed for a fresh generator (ignored when ``generator`` is given).
        generator : torch.Generator, optional
            Source of randomness.

        Returns
        -------
        samples : torch.Tensor
            ``(batch, num_samples, N)`` completed configurations (known
            variables copied from ``x``).
        log_prob : torch.Tensor
            ``(batch, num_samples)`` exact ``log P(unknown | known)``.
        """
        k = check_integer(num_samples, "num_samples", 1)
        self._check_unless_trusted()
        xt = self.as_configurations(x)
        m = self.as_mask(mask, xt.shape[0])
        xr = xt.repeat_interleave(k, dim=0)
        mr = m.repeat_interleave(k, dim=0)
        xr = torch.where(mr, xr, torch.zeros_like(xr))
        gen = self._generator(seed, generator)
        samples, logp = self._sample_free(xr, mr, gen)
        b = xt.shape[0]
        return samples.reshape(b, k, -1), logp.reshape(b, k)

    def _generator(self, seed: int | None, generator: torch.Generator | None) -> torch.Generator:
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise ConfigError(f"generator must be a torch.Generator, got {type(generator).__name__}")
            if generator.device.type != self.device.type:
                raise DeviceError(
                    f"generator is on {generator.device} but the model is on {self.device}; "
                    "create it with torch.Generator(device=model.device)"
                )
            return generator
        return make_generator(seed, self.device)

    def sampling_order(self) -> list[int]:
        """Order in which the generic sampler fixes the variables.

        Returns
        -------
        list of int
            A permutation of ``range(num_variables)``.
        """
        return list(range(self.num_variables))

    def _sample_free(
        self, x: torch.Tensor, known: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generic exact sampler: sequential marginals of the doubled network.

        Cost: one contraction of the doubled network per variable, so this is
        meant for small networks; tree geometries override it.
        """
        x = x.clone()
        b = x.shape[0]
        logp = torch.zeros(b, dtype=torch.float64, device=self.device)
        determined = known.clone()
        for var in self.sampling_order():
            free_rows = ~known[:, var]
            if not bool(free_rows.any()):
                continue
            marg = self._marginal(x, determined, var).real.clamp_min(0).to(torch.float64)
            x_var, logp_var = draw_categorical(marg, free_rows, gen)
            x[:, var] = torch.where(free_rows, x_var, x[:, var])
            logp = logp + logp_var
            determined[:, var] = True
        return x, logp

    def _marginal(self, x: torch.Tensor, determined: torch.Tensor, var: int) -> torch.Tensor:
        """Unnormalised ``(batch, d)`` marginal of ``var`` with determined variables projected.

        Rows may differ in which variables are determined; variables that are
        determined in some rows and free in others are handled by a one-hot
        selection in the determined rows and an all-ones vector (a trace) in
        the others, which is exact because ``sum_s |s><s| = 1``.
        """
        arrays, inputs = [], []
        d = self.phys_dim
        out_ix = "__out__"
        for n in self.nodes():
            t = self.node_tensor(n)
            ket_inds, bra_inds = [], []
            for ix in t.inds:
                ket_inds.append(ix)
                bra_inds.append(ix + "'")
            arrays.append(t.data)
            inputs.append(tuple(ket_inds))
            arrays.append(t.data.conj() if t.data.is_complex() else t.data)
            inputs.append(tuple(bra_inds))
        eye_dtype = self.dtype
        for v in range(self.num_variables):
            ix = self.variable_index(v)
            if v == var:
                # diagonal delta tying ket, bra and the output index
                delta = torch.zeros((d, d, d), dtype=eye_dtype, device=self.device)
                idx = torch.arange(d, device=self.device)
                delta[idx, idx, idx] = 1
                arrays.append(delta)
                inputs.append((ix, ix + "'", out_ix))
                continue
            det = determined[:, v]
            if not bool(det.any()):
                arrays.append(torch.eye(d, dtype=eye_dtype, device=self.device))
                inputs.append((ix, ix + "'"))
                continue
            sel = onehot(x[:, v], d, eye_dtype)
            sel = torch.where(det[:, None], sel, torch.ones_like(sel))
            # ket and bra selections: diag(sel) on (ket, bra) per batch row
            diag = torch.diag_embed(sel)
            # rows where v is free need the identity, not diag(ones)=identity: same thing
            arrays.append(diag)
            inputs.append((_BATCH, ix, ix + "'"))
        # a ones vector carries the batch index even when nothing is determined yet
        arrays.append(torch.ones(x.shape[0], dtype=eye_dtype, device=self.device))
        inputs.append((_BATCH,))
        mant, _ = contract_log_scaled(arrays, inputs, (_BATCH, out_ix), batch_ind=_BATCH)
        # each row is rescaled separately; only ratios within a row matter
        return mant

    # ------------------------------------------------------------------ #
    # two-site merge / split (generic through quimb)
    # ------------------------------------------------------------------ #
    def merge(self, u: Node, v: Node) -> TwoSiteBlock:
        """Contract neighbouring nodes ``u`` and ``v`` into a :class:`TwoSiteBlock`.

        The network itself is not modified; :meth:`split` writes the result back.

        Parameters
        ----------
        u, v : hashable
            Neighbouring nodes.

        Returns
        -------
        TwoSiteBlock
            The merged tensor and its index bookkeeping.
        """
        tu, tv = self.node_tensor(u), self.node_tensor(v)
        bond = self.bond_index(u, v)
        merged = qtn.tensor_contract(tu, tv, preserve_tensor=True)
        left = tuple(ix for ix in tu.inds if ix != bond)
        phys = {}
        for node in (u, v):
            for var in self.node_variables(node):
                phys[self.variable_index(var)] = var
        virtual = {}
        for node, other in ((u, v), (v, u)):
            for nb in self.neighbours(node):
                if nb != other:
                    virtual[self.bond_index(node, nb)] = (nb, node)
        return TwoSiteBlock(
            nodes=(u, v),
            data=merged.data,
            inds=tuple(merged.inds),
            left_inds=left,
            bond=bond,
            physical=phys,
            virtual=virtual,
        )

    def split(
        self,
        block: TwoSiteBlock,
        data: torch.Tensor | None = None,
        target: Node | None = None,
        cutoff: float = 0.0,
        max_bond: int | None = None,
        min_bond: int = 1,
        method: str = "svd",
    ) -> SplitInfo:
        """Split a block back into its two nodes by a truncated SVD.

        Singular values ``s_i < cutoff * s_0`` are discarded (relative to the
        largest), keeping at least ``min_bond`` and at most ``max_bond``. The
        kept values are renormalised to unit 2-norm and absorbed into the
        ``target`` node, which becomes the orthogonality centre; the other node
        is left an isometry. With a normalised block this keeps ``Z = 1``.

        Parameters
        ----------
        block : TwoSiteBlock
            From :meth:`merge`.
        data : torch.Tensor, optional
            New block data with the same indices (default ``block.data``).
        target : hashable, optional
            The node that receives the singular values (default ``block.nodes[1]``).
        cutoff : float
            Relative singular-value cutoff in ``[0, 1)``.
        max_bond : int, optional
            Largest bond dimension kept.
        min_bond : int
            Smallest bond dimension kept (bounded by the rank of the split).
        method : str
            quimb split method: ``"svd"`` or ``"svd:eig"``.

        Returns
        -------
        SplitInfo
            Kept dimension and discarded weights.
        """
        u, v = block.nodes
        target, data = self._split_inputs(block, data, target)
        tensor = qtn.Tensor(data, inds=block.inds)
        # quimb performs the SVD; truncation is done below so that min_bond and
        # the largest discarded value are available (absorb/cutoff_mode explicit).
        try:
            left, s, right = qtn.tensor_split(
                tensor,
                block.left_inds,
                method=method,
                absorb=None,
                max_bond=None,
                cutoff=0.0,
                cutoff_mode="rel",
                renorm=False,
                get="tensors",
                bond_ind=block.bond,
            )
        except torch.linalg.LinAlgError as exc:
            raise NumericalError(
                f"the SVD ({method!r}) of the merged block of nodes {block.nodes} did not converge: {exc}"
            ) from exc
        sv = s.data.real if s.data.is_complex() else s.data
        keep, info = truncation_rank(sv, cutoff, max_bond, min_bond)
        ldata = left.data.narrow(left.inds.index(block.bond), 0, keep)
        rdata = right.data.narrow(right.inds.index(block.bond), 0, keep)
        kept = sv[:keep]
        kept = kept / torch.linalg.vector_norm(kept)
        if target == v:
            shape = [1] * rdata.ndim
            shape[right.inds.index(block.bond)] = keep
            rdata = rdata * kept.reshape(shape).to(rdata.dtype)
        else:
            shape = [1] * ldata.ndim
            shape[left.inds.index(block.bond)] = keep
            ldata = ldata * kept.reshape(shape).to(ldata.dtype)
        check_split_finite(ldata, rdata, block.nodes)
        self.node_tensor(u).modify(data=ldata.contiguous(), inds=left.inds)
        self.node_tensor(v).modify(data=rdata.contiguous(), inds=right.inds)
        self._center_moved(target, block.nodes)
        info.singular_values = kept
        return info

    @staticmethod
    def _split_inputs(block: TwoSiteBlock, data: torch.Tensor | None, target: Node | None
                      ) -> tuple[Node, torch.Tensor]:
        """The node that receives the singular values (checked) and the data to split, of :meth:`split`."""
        target = block.nodes[1] if target is None else target
        if target not in block.nodes:
            raise ConfigError(f"target {target!r} is not one of the block's nodes {block.nodes}")
        return target, block.data if data is None else data


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


def _rooted(st: NetworkStructure, root: Node) -> tuple[dict, dict]:
    """Parent and children (in node order) of every node of a tree rooted at ``root``."""
    parent: dict = {root: None}
    children: dict = {n: [] for n in st.nodes}
    stack = [root]
    while stack:
        n = stack.pop()
        for nb in st.neighbours[n]:
            if nb not in parent:
                parent[nb] = n
                children[n].append(nb)
                stack.append(nb)
    return parent, children


def _post_order(children: dict, root: Node) -> list:
    """Nodes of a rooted tree, every node after all of its descendants."""
    out: list = []
    stack = [(root, False)]
    while stack:
        n, done = stack.pop()
        if done:
            out.append(n)
            continue
        stack.append((n, True))
        stack.extend((c, False) for c in reversed(children[n]))
    return out


def _path(st: NetworkStructure, a: Node, b: Node) -> list:
    """The nodes on the tree path from ``a`` to ``b`` (both included)."""
    parent, _ = _rooted(st, b)
    path = [a]
    while path[-1] != b:
        path.append(parent[path[-1]])
    return path
