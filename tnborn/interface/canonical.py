"""The canonical form of a tree network and its one owner, the model.

:class:`CanonicalForm` is the part of :class:`~tnborn.interface.BornMachine`
that knows where the orthogonality centre is: it moves it by exact QR gauge
moves through quimb, walks the two-site sweep schedule of any tree, and
notices when the network was edited from outside (the centre is then
forgotten, so nothing stale is ever trusted).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Sequence
from typing import Any

import quimb.tensor as qtn
import torch

from ..errors import NumericalError
from ..structure import NetworkStructure, Node, derive_structure

__all__ = ["CanonicalForm"]


class CanonicalForm:
    """Canonical-centre ownership, gauge moves and the sweep schedule of a Born machine.

    A base of :class:`~tnborn.interface.BornMachine`, which supplies the
    network (``_tn``, ``_structure``) and the node accessors used here.
    """

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
        pointing towards ``node`` (farthest nodes first); the state is
        unchanged, unless ``sqrt(Z)`` is beyond the dtype's range: then it is
        first scaled to ``Z = 1`` (the probabilities are unchanged).

        Parameters
        ----------
        node : hashable
            The new centre.

        Raises
        ------
        NumericalError
            If no canonical form with a finite, non-zero centre is reached
            (the network is then left as it was).
        """
        self._require_tree("a canonical form")
        self._check_unless_trusted()
        node = self._check_node(node)
        if self._center == node:
            return
        if self._center is None:
            self._canonicalise_from_scratch(node)
        else:
            self._move_center(node)
        self._center = node
        self._center_marks = {}
        self._mark(self._structure.nodes)

    def _canonicalise_from_scratch(self, node: Node) -> None:
        """:meth:`_move_center` with no known centre, safe where ``sqrt(Z)`` is beyond the dtype's range.

        The QR moves carry the norm of everything they pass to the centre, so a
        state whose ``sqrt(Z)`` overflows (or underflows) would end with a
        non-finite (or zero) centre. Then the tensors are put back, every tensor
        is scaled by ``Z**(-1/(2 N))`` (``log Z`` from the log-scaled
        contraction, so that ``Z = 1``: the probabilities are unchanged) and
        the moves run again.
        """
        nodes = self._structure.nodes
        saved = [(n, self.node_tensor(n).data, tuple(self.node_tensor(n).inds)) for n in nodes]

        def restore() -> None:
            for n, data, inds in saved:
                self.node_tensor(n).modify(data=data, inds=inds)

        self._move_center(node)
        if self._usable_center(node):
            return
        restore()
        log_z = float(self.log_norm())
        if not math.isfinite(log_z):
            raise NumericalError(f"cannot bring the network into canonical form: log Z = {log_z}")
        factor = math.exp(-log_z / (2 * len(nodes)))
        for n in nodes:
            t = self.node_tensor(n)
            t.modify(data=t.data * factor)
        self._move_center(node)
        if not self._usable_center(node):
            restore()
            raise NumericalError(
                f"cannot bring the network into canonical form: the QR moves leave a zero or non-finite "
                f"centre even with Z scaled to 1 (log Z = {log_z:.6g}); the network was not modified")

    def _usable_center(self, node: Node) -> bool:
        """Whether the centre tensor is finite and not zero (its norm is ``sqrt(Z)``)."""
        norm = torch.linalg.vector_norm(self.node_tensor(node).data)
        return bool(torch.isfinite(norm) & (norm > 0))

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
