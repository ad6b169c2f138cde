"""The graph of a quimb tensor network, as a Born machine sees it.

A Born machine does not declare its structure: it reads it off its quimb
network. :func:`derive_structure` looks at the tensors and indices of a
:class:`quimb.tensor.TensorNetwork` and returns a :class:`NetworkStructure`:

- the *nodes*: one per tensor, keyed by the tensor's node tag (``"I{}"`` for a
  quimb MPS gives nodes ``0, 1, ...``, ``"I{},{}"`` for a PEPS gives ``(i, j)``);
- the *variables*: the open indices matching ``site_ind_id`` (``"k{}"`` gives
  variable ``v`` for index ``k{v}``; a pattern with several fields, such as
  quimb's PEPS ``"k{},{}"``, numbers the variables in sorted order of the
  fields, i.e. row-major);
- the *bonds*: every other index, shared by exactly two tensors;
- whether the graph is a tree, and a fingerprint of the arrays that tells
  whether anyone changed them since the model last looked.

Everything is checked: a tensor without exactly one node tag, an open index
that is not physical, an index shared by three tensors, two bonds between one
pair of tensors, or a disconnected network is refused with a message that says
what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import quimb.tensor as qtn

from .errors import ConfigError

__all__ = ["NetworkStructure", "Node", "derive_structure", "tag_pattern"]

#: Type of a node key: any hashable (an int site for the MPS, a tuple for trees and grids).
Node = Hashable


def tag_pattern(template: str) -> tuple[re.Pattern, int]:
    """Compile a quimb-style ``str.format`` template (``"I{}"``, ``"k{},{}"``) into a regex.

    Parameters
    ----------
    template : str
        A template whose ``{}`` fields stand for non-negative integers.

    Returns
    -------
    pattern : re.Pattern
        Matches a whole name and captures each field.
    fields : int
        Number of fields.
    """
    if not isinstance(template, str) or "{}" not in template:
        raise ConfigError(f"an index or tag template must contain '{{}}' (like 'k{{}}'), got {template!r}")
    parts = template.split("{}")
    if any("{" in p or "}" in p for p in parts):
        raise ConfigError(f"template {template!r}: only plain '{{}}' fields are supported")
    regex = r"(\d+)".join(re.escape(p) for p in parts)
    return re.compile(f"^{regex}$"), len(parts) - 1


def _parse(name: str, pattern: re.Pattern, fields: int) -> Any:
    m = pattern.match(name)
    if m is None:
        return None
    vals = tuple(int(g) for g in m.groups())
    return vals[0] if fields == 1 else vals


@dataclass
class NetworkStructure:
    """What the Born machine knows about its network, derived from the network.

    Attributes
    ----------
    nodes : tuple
        Node keys in sorted order.
    tensors : dict
        Node -> its live :class:`quimb.tensor.Tensor`.
    neighbours : dict
        Node -> neighbouring nodes, in node order.
    bonds : dict
        ``frozenset({u, v})`` -> name of the bond index.
    variable_indices : tuple of str
        Physical index of every variable.
    variable_nodes : tuple
        Node carrying every variable.
    node_variables : dict
        Node -> its variables, ascending.
    phys_dim : int
        Dimension of the physical indices.
    is_tree : bool
        Whether the graph of nodes is a tree (connected, no loop).
    """

    nodes: tuple
    tensors: dict
    neighbours: dict
    bonds: dict
    variable_indices: tuple
    variable_nodes: tuple
    node_variables: dict
    phys_dim: int
    is_tree: bool
    tids: tuple = field(default=())
    index_sets: tuple = field(default=())

    def edges(self) -> list[tuple[Node, Node]]:
        """Every bond once, as ``(u, v)`` with ``u`` before ``v`` in node order.

        Returns
        -------
        list of (node, node)
            The edges.
        """
        order = {n: i for i, n in enumerate(self.nodes)}
        return [(u, v) for u in self.nodes for v in self.neighbours[u] if order[u] < order[v]]

    def still_describes(self, tn: qtn.TensorNetwork) -> bool:
        """Whether ``tn`` still has exactly these tensors with these indices.

        Parameters
        ----------
        tn : quimb.tensor.TensorNetwork
            The network the structure was derived from.

        Returns
        -------
        bool
            False if a tensor was added, removed or replaced, or an index renamed.
        """
        tmap = tn.tensor_map
        if len(tmap) != len(self.tids):
            return False
        for tid, node, inds in zip(self.tids, self.nodes, self.index_sets):
            t = tmap.get(tid)
            if t is not self.tensors[node]:
                return False
            if t.inds != inds[0] and frozenset(t.inds) != inds[1]:
                return False
        return True


def derive_structure(tn: qtn.TensorNetwork, site_ind_id: str, node_tag_id: str) -> NetworkStructure:
    """Read the Born machine structure off a quimb network.

    Parameters
    ----------
    tn : quimb.tensor.TensorNetwork
        The network (arrays of any backend).
    site_ind_id : str
        Template of the physical index names, e.g. ``"k{}"``.
    node_tag_id : str
        Template of the node tags, e.g. ``"I{}"``; every tensor carries exactly one.

    Returns
    -------
    NetworkStructure
        The derived structure.

    Raises
    ------
    ConfigError
        If the network is not a valid Born machine network (see the module docstring).
    """
    if not isinstance(tn, qtn.TensorNetwork):
        raise ConfigError(f"expected a quimb TensorNetwork, got {type(tn).__name__}")
    if tn.num_tensors == 0:
        raise ConfigError("the tensor network has no tensors")
    tag_re, tag_fields = tag_pattern(node_tag_id)
    ind_re, ind_fields = tag_pattern(site_ind_id)
    tensors: dict = {}
    tid_of: dict = {}
    for tid, t in tn.tensor_map.items():
        keys = [k for k in (_parse(tag, tag_re, tag_fields) for tag in t.tags) if k is not None]
        if len(keys) != 1:
            raise ConfigError(
                f"every tensor needs exactly one node tag matching {node_tag_id!r}; "
                f"a tensor with indices {t.inds} has tags {sorted(t.tags)}"
            )
        key = keys[0]
        if key in tensors:
            raise ConfigError(f"two tensors carry the node tag {node_tag_id.format(*_fields(key))!r}")
        tensors[key] = t
        tid_of[key] = tid
    nodes = tuple(sorted(tensors))
    node_of_tid = {tid: n for n, tid in tid_of.items()}
    phys: dict = {}
    bonds: dict = {}
    neighbours: dict = {n: set() for n in nodes}
    for ix, tids in tn.ind_map.items():
        var_key = _parse(ix, ind_re, ind_fields)
        owners = [node_of_tid[tid] for tid in tids]
        if len(owners) == 1:
            if var_key is None:
                raise ConfigError(
                    f"index {ix!r} of node {owners[0]!r} is open but is not a physical index "
                    f"(physical indices are named like {site_ind_id!r})"
                )
            phys[var_key] = (ix, owners[0])
            continue
        if var_key is not None:
            raise ConfigError(f"physical index {ix!r} is shared by {len(owners)} tensors; it must be open")
        if len(owners) > 2:
            raise ConfigError(
                f"index {ix!r} is shared by {len(owners)} tensors (a hyper-index); "
                "a Born machine network joins tensors pairwise"
            )
        u, v = owners
        if u == v:
            raise ConfigError(f"index {ix!r} appears twice on node {u!r} (a trace); contract it first")
        pair = frozenset((u, v))
        if pair in bonds:
            raise ConfigError(
                f"nodes {u!r} and {v!r} share two bonds ({bonds[pair]!r}, {ix!r}); "
                "fuse them first (quimb: tn.fuse_multibonds_())"
            )
        bonds[pair] = ix
        neighbours[u].add(v)
        neighbours[v].add(u)
    if not phys:
        raise ConfigError(f"the network has no physical index named like {site_ind_id!r}")
    var_keys = sorted(phys)
    if ind_fields == 1 and var_keys != list(range(len(var_keys))):
        missing = sorted(set(range(var_keys[-1] + 1)) - set(var_keys))[:5]
        raise ConfigError(
            f"physical indices must be {site_ind_id.format(0)} .. {site_ind_id.format(len(var_keys) - 1)}, "
            f"one per variable; missing {[site_ind_id.format(m) for m in missing]}"
        )
    dims = {int(tensors[phys[k][1]].ind_size(phys[k][0])) for k in var_keys}
    if len(dims) != 1:
        raise ConfigError(f"all physical indices must have the same dimension, got {sorted(dims)}")
    (phys_dim,) = dims
    if phys_dim < 2:
        raise ConfigError(f"physical indices must have dimension >= 2, got {phys_dim}")
    order = {n: i for i, n in enumerate(nodes)}
    neighbour_tuples = {n: tuple(sorted(neighbours[n], key=order.__getitem__)) for n in nodes}
    _check_connected(nodes, neighbour_tuples)
    node_vars: dict = {}
    for var, k in enumerate(var_keys):
        node_vars.setdefault(phys[k][1], []).append(var)
    return NetworkStructure(
        nodes=nodes,
        tensors=tensors,
        neighbours=neighbour_tuples,
        bonds=bonds,
        variable_indices=tuple(phys[k][0] for k in var_keys),
        variable_nodes=tuple(phys[k][1] for k in var_keys),
        node_variables={n: tuple(vs) for n, vs in node_vars.items()},
        phys_dim=phys_dim,
        is_tree=len(bonds) == len(nodes) - 1,
        tids=tuple(tid_of[n] for n in nodes),
        index_sets=tuple((tensors[n].inds, frozenset(tensors[n].inds)) for n in nodes),
    )


def _fields(key: Any) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def _check_connected(nodes: tuple, neighbours: dict) -> None:
    seen = {nodes[0]}
    stack = [nodes[0]]
    while stack:
        for nb in neighbours[stack.pop()]:
            if nb not in seen:
                seen.add(nb)
                stack.append(nb)
    if len(seen) != len(nodes):
        lonely = [n for n in nodes if n not in seen][:3]
        raise ConfigError(
            f"the network is not connected (nodes {lonely} are not reachable from {nodes[0]!r}); "
            "join its parts by size-1 bonds"
        )
