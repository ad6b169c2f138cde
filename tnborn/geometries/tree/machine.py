"""The tree Born machine: its constructor, checkpoint config and fast exact paths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import quimb.tensor as qtn
import torch

from ...backend import check_integer, check_seed, make_generator, resolve_device, resolve_dtype
from ...errors import ConfigError, NumericalError
from ...interface import checked_arrays, BornMachine, TwoSiteBlock
from ...primitives import SplitInfo, draw_categorical
from ...registry import register_geometry
from .arrays import _apply_env, _canonize_all, _normalise_rows, _qr_move
from .structure import TreeStructure, _node_shape, tree_structure

__all__ = ["random_tree_arrays", "TreeBornMachine"]


def random_tree_arrays(
    struct: TreeStructure,
    bond_dim: int = 2,
    phys_dim: int = 2,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float64,
) -> list[torch.Tensor]:
    """Random normalised node arrays, canonical towards the root.

    Entries are i.i.d. normal in float64 (real and imaginary parts for complex
    dtypes); QR from the leaves up makes every non-root node an isometry onto
    its parent bond, normalising the carried factor at every step so nothing
    under- or overflows at any size; the root (the centre) gets unit norm, so
    ``Z = 1``.

    Parameters
    ----------
    struct : TreeStructure
        The tree.
    bond_dim : int
        Bond dimension (capped at ``d^min(k, N - k)`` for an edge above ``k`` variables).
    phys_dim : int
        Physical dimension ``d``.
    seed : int or None
        Seed of the CPU generator.
    dtype : torch.dtype
        Dtype of the returned arrays.

    Returns
    -------
    list of torch.Tensor
        CPU arrays in node order, each in the fixed index order (child bonds,
        physical indices, parent bond).
    """
    gen = make_generator(seed)
    n = struct.num_variables
    sizes = [struct.subtree_size(c) for c in range(struct.num_nodes)]
    dims = [int(min(bond_dim, phys_dim ** min(k, n - k, 60))) for k in sizes]
    arrays = []
    for node in range(struct.num_nodes):
        shape = _node_shape(struct, node, dims, int(phys_dim))
        a = torch.randn(shape, generator=gen, dtype=torch.float64)
        if dtype.is_complex:
            a = torch.complex(a, torch.randn(shape, generator=gen, dtype=torch.float64))
        arrays.append(a)
    _canonize_all(struct, arrays, struct.root, normalise=True)
    arrays[-1] = arrays[-1] / torch.linalg.vector_norm(arrays[-1])
    return [a.to(dtype) for a in arrays]


@register_geometry("tree")
class TreeBornMachine(BornMachine):
    """Born machine on a tree tensor network with physical indices on the bottom nodes.

    Parameters
    ----------
    arrays : sequence of torch.Tensor
        Node arrays in node order, each with indices (child bonds, physical
        indices, parent bond); see :func:`tree_structure` for the numbering.
    structure : TreeStructure
        The tree (from :func:`tree_structure`).
    center : int, optional
        The orthogonality centre if the arrays are canonical around it (not
        checked), else ``None``.

    See Also
    --------
    TreeBornMachine.random : the usual constructor.
    """

    geometry = "tree"
    builds_trees = True

    def __init__(self, arrays: Sequence[torch.Tensor], structure: TreeStructure, center: int | None = None):
        arrays = checked_arrays(arrays, "node")
        st = structure
        if len(arrays) != st.num_nodes:
            raise ConfigError(f"the tree has {st.num_nodes} nodes but {len(arrays)} arrays were given")
        d = int(arrays[0].shape[0]) if arrays[0].ndim else 0  # node 0 is a bottom node
        if d < 2:
            raise ConfigError(f"physical dimension must be >= 2, got {d}")
        dims = [int(a.shape[-1]) if a.ndim else 0 for a in arrays]
        for node, a in enumerate(arrays):
            expected = _node_shape(st, node, dims, d)
            if tuple(a.shape) != expected:
                raise ConfigError(f"node {node}: expected shape {expected} (child bonds, "
                                  f"{len(st.variables[node])} physical, parent bond), got {tuple(a.shape)}")
        self._struct = st
        self._inds = []
        tensors = []
        for node, a in enumerate(arrays):
            inds = tuple(f"b{c}" for c in st.children[node]) + tuple(f"k{v}" for v in st.variables[node])
            if st.parent[node] >= 0:
                inds = inds + (f"b{node}",)
            self._inds.append(inds)
            tensors.append(qtn.Tensor(a, inds=inds, tags={f"NODE{node}"}))
        if center is not None and not (isinstance(center, int) and 0 <= center < st.num_nodes):
            raise ConfigError(f"center must be a node number in [0, {st.num_nodes}), got {center!r}")
        super().__init__(qtn.TensorNetwork(tensors, virtual=True), site_ind_id="k{}", node_tag_id="NODE{}",
                         center=center)

    def _structure_changed(self) -> None:
        """Check that the network still has the layout's shape (the fast paths rely on it)."""
        st, net = self._struct, self.structure
        if net.nodes != tuple(range(st.num_nodes)) or any(
            set(net.tensors[n].inds) != set(self._inds[n]) for n in net.nodes
        ):
            raise ConfigError("the network of a TreeBornMachine must keep its layout's nodes and "
                              "indices; use tnborn.from_quimb for other networks")
        self._tensors = [net.tensors[n] for n in net.nodes]

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
        layout: str = "auto",
        image_shape: Sequence[int] | None = None,
    ) -> "TreeBornMachine":
        """A random normalised tree Born machine, canonical around the root.

        Parameters
        ----------
        num_variables : int
            Number of variables ``N >= 2``.
        bond_dim : int
            Initial bond dimension (capped at the exact maximum of each edge).
        phys_dim : int
            Values per variable (2 for binary data).
        seed : int or None
            Seed of the initialisation.
        dtype : str or torch.dtype, optional
            ``"float64"`` (default), ``"float32"``, ``"complex64"``, ``"complex128"``.
        device : str or torch.device, optional
            ``"cpu"`` (default), ``"cuda"``, ``"auto"``.
        layout : str
            ``"binary"``, ``"image"`` or ``"auto"`` (see :func:`tree_structure`).
        image_shape : pair of int, optional
            ``(h, w)`` for the image layout (default: square).

        Returns
        -------
        TreeBornMachine
            The machine with ``Z = 1`` and the root as centre.
        """
        bond_dim = check_integer(bond_dim, "bond_dim", 1)
        phys_dim = check_integer(phys_dim, "phys_dim", 2)
        check_seed(seed)
        struct = tree_structure(num_variables, layout, image_shape)
        dt = resolve_dtype(dtype)
        dev = resolve_device(device)
        arrays = random_tree_arrays(struct, bond_dim, phys_dim, seed, dt)
        return cls([a.to(dev) for a in arrays], struct, center=struct.root)

    def config(self) -> dict[str, Any]:
        """Construction parameters (for checkpoints): size, layout and the whole tree.

        The tree itself (parents, children, variables and pixel blocks of every
        node) is stored, so that a model built on a hand-made
        :class:`TreeStructure` loads back.

        Returns
        -------
        dict
            ``num_variables``, ``phys_dim``, ``layout``, ``image_shape`` and ``tree``.
        """
        st = self._struct
        return {
            "num_variables": st.num_variables,
            "phys_dim": self.phys_dim,
            "layout": st.layout,
            "image_shape": list(st.image_shape) if st.layout == "image" else None,
            "tree": {
                "image_shape": list(st.image_shape),
                "parent": list(st.parent),
                "children": [list(c) for c in st.children],
                "variables": [list(v) for v in st.variables],
                "blocks": [list(b) for b in st.blocks],
            },
        }

    @classmethod
    def from_arrays(cls, arrays: Sequence[torch.Tensor], config: dict[str, Any]) -> "TreeBornMachine":
        """Rebuild from node arrays as returned by :meth:`arrays`.

        Parameters
        ----------
        arrays : sequence of torch.Tensor
            Node arrays in :meth:`nodes` order, in the fixed index order.
        config : dict
            From :meth:`config` (checkpoints written before the tree was stored
            have only the layout, which is rebuilt).

        Returns
        -------
        TreeBornMachine
            The machine (centre unknown until set by the caller).
        """
        arrays = checked_arrays(arrays, "node")
        if not isinstance(config, dict) or not isinstance(config.get("num_variables"), int):
            raise ConfigError(f"a tree config needs an integer 'num_variables', got {config!r}")
        if config.get("tree") is not None:
            struct = _stored_tree(config)
        else:
            struct = tree_structure(config["num_variables"], config.get("layout", "auto"), config.get("image_shape"))
        d = config.get("phys_dim")
        machine = cls(arrays, struct)
        if d is not None and int(d) != machine.phys_dim:
            raise ConfigError(f"config says phys_dim={d} but the arrays have {machine.phys_dim}")
        return machine

    # ----------------------------------------------------------- structure
    @property
    def tree(self) -> TreeStructure:
        """The tree layout (parents, children, variables and pixel block of every node)."""
        return self._struct

    @property
    def root(self) -> int:
        """The root node (the last one)."""
        return self._struct.root

    def _data(self, node: int) -> torch.Tensor:
        """Array of ``node`` in the fixed index order."""
        t = self._tensors[node]
        if tuple(t.inds) == self._inds[node]:
            return t.data
        return t.data.permute(*[t.inds.index(ix) for ix in self._inds[node]])

    def _set(self, node: int, data: torch.Tensor) -> None:
        self._tensors[node].modify(data=data.contiguous(), inds=self._inds[node])

    def _reorder(self, node: int) -> None:
        """Restore the fixed index order after a generic operation permuted it."""
        if tuple(self._tensors[node].inds) != self._inds[node]:
            self._set(node, self._data(node))

    # ----------------------------------------------------------- sweeps
    def sweep_schedule(self) -> list[list[tuple[int, int]]]:
        """Depth-first walks from the root: round trips into the root's subtrees.

        At a node ``n`` holding the centre, each child ``c`` in turn is either
        a bottom node, updated once by the step ``(c, n)`` with the centre
        staying on ``n``, or an internal node, entered by ``(n, c)``, walked
        recursively and left by ``(c, n)``. So consecutive steps share the
        centre, internal edges are updated once each way and bottom edges once
        (like the end bonds of the chain schedule), and every half-sweep starts
        and ends with the centre on the root. The first half-sweep is the round
        trip into the root's first child (the other half of the image), the
        second the trips into the remaining children (the same trip twice when
        the root has a single child).

        Returns
        -------
        list of list of (int, int)
            The two half-sweeps.
        """
        st = self._struct

        def trip(n: int) -> list[tuple[int, int]]:  # parent -> n, walk below n, n -> parent
            if not st.children[n]:
                return [(n, st.parent[n])]
            steps = [(st.parent[n], n)]
            for c in st.children[n]:
                steps += trip(c)
            return steps + [(n, st.parent[n])]

        trips = [trip(c) for c in st.children[st.root]]
        if len(trips) == 1:
            return [trips[0], list(trips[0])]
        return [trips[0], [step for t in trips[1:] for step in t]]

    def _move_center(self, node: int) -> None:
        """QR moves along the tree path, in the fixed index order (fast path of the generic walk)."""
        st = self._struct
        arrays = [self._data(n) for n in range(st.num_nodes)]
        if self._center is None:
            _canonize_all(st, arrays, node)
            changed = range(st.num_nodes)
        else:
            path = st.path(self._center, node)
            for a, b in zip(path[:-1], path[1:]):
                _qr_move(st, arrays, a, b)
            changed = path
        for n in changed:
            self._set(n, arrays[n])

    def split(
        self,
        block: TwoSiteBlock,
        data: torch.Tensor | None = None,
        target: int | None = None,
        cutoff: float = 0.0,
        max_bond: int | None = None,
        min_bond: int = 1,
        method: str = "svd",
    ) -> SplitInfo:
        """Truncated SVD split (:meth:`BornMachine.split`), then restore the fixed index order.

        Parameters
        ----------
        block, data, target, cutoff, max_bond, min_bond, method
            As in :meth:`BornMachine.split`.

        Returns
        -------
        SplitInfo
            What the split kept and discarded.
        """
        info = super().split(block, data, target, cutoff, max_bond, min_bond, method)
        for node in block.nodes:
            self._reorder(node)
        self._center_moved(self._center, block.nodes)
        return info

    # ----------------------------------------------------------- probabilities
    def _log_norm(self) -> torch.Tensor:
        """``log Z``: from the centre tensor when canonical, else by a leaves-to-root doubled pass.

        Returns
        -------
        torch.Tensor
            A real 0-d tensor, ``log`` of the squared norm.
        """
        if self._center is not None:
            c = self._data(self._center)
            return 2.0 * torch.log(torch.linalg.vector_norm(c)).to(c.real.dtype)
        st = self._struct
        envs: dict[int, torch.Tensor] = {}
        real = self.dtype.to_real() if self.dtype.is_complex else self.dtype
        log = torch.zeros((), dtype=real, device=self.device)
        for node in range(st.num_nodes):
            a = self._data(node)
            if st.parent[node] < 0:
                a = a.unsqueeze(-1)
            bra = a.conj()
            for i, c in enumerate(st.children[node]):
                bra = torch.tensordot(envs.pop(c), bra, dims=([1], [i])).movedim(0, i)
            dp = a.shape[-1]
            env = a.reshape(-1, dp).transpose(0, 1) @ bra.reshape(-1, dp)
            scale = env.abs().amax()
            env = env / scale
            log = log + torch.log(scale)
            envs[node] = env
        return log + torch.log(envs[st.root].real.reshape(()))

    def _grouped(self, node: int, a: torch.Tensor | None = None) -> torch.Tensor:
        """Array of ``node`` as ``(child bonds..., S, Dp)``: joint physical axis ``S = d^k``
        (1 without physical indices) and parent bond ``Dp`` (1 at the root)."""
        st = self._struct
        a = self._data(node) if a is None else a
        k = len(st.children[node])
        dp = a.shape[-1] if st.parent[node] >= 0 else 1
        return a.reshape(*a.shape[:k], -1, dp)

    def _log_amplitude(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        st = self._struct
        b = x.shape[0]
        rows = torch.arange(b, device=x.device)
        msgs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for node in range(st.num_nodes):  # children before parents
            a = self._grouped(node)
            kids = st.children[node]
            code = self._leaf_codes(node, x)
            if not kids:
                m, log = a[code], None
            else:
                m0, log = msgs.pop(kids[0])
                y = m0 @ a.reshape(a.shape[0], -1)
                for c in kids[1:]:
                    mc, lc = msgs.pop(c)
                    y = torch.bmm(mc.unsqueeze(1), y.reshape(b, mc.shape[1], -1)).squeeze(1)
                    log = log + lc
                y = y.reshape(b, -1, a.shape[-1])
                m = y[rows, code]
            msgs[node] = _normalise_rows(m, log)
        m, log = msgs[st.root]
        m = m[:, 0]
        mag = m.abs()
        log_abs = log + torch.log(mag)
        phase = m / torch.where(mag > 0, mag, torch.ones_like(mag)).to(m.dtype)
        return log_abs, phase

    # ----------------------------------------------------------- sampling
    def _root_canonical_arrays(self) -> list[torch.Tensor]:
        """Node arrays canonical towards the root (new tensors where they differ; ``self`` untouched).

        With no known centre every carried ``R`` is normalised (the sampler needs
        the state only up to a factor): no norm beyond the dtype's range is formed.
        """
        st = self._struct
        arrays = [self._data(n) for n in range(st.num_nodes)]
        if self._center is None:
            _canonize_all(st, arrays, st.root, normalise=True)
        elif self._center != st.root:
            path = st.path(self._center, st.root)
            for a, b in zip(path[:-1], path[1:]):
                _qr_move(st, arrays, a, b)
        return arrays

    def _leaf_codes(self, node: int, x: torch.Tensor) -> torch.Tensor:
        """Joint code of the node's variables (first variable most significant), ``(rows,)``."""
        code = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        for v in self._struct.variables[node]:
            code = code * self.phys_dim + x[:, v]
        return code

    def _leaf_weights(self, node: int, x: torch.Tensor, known: torch.Tensor) -> torch.Tensor | None:
        """``(rows, d^k)`` mask of the joint values consistent with the known variables (or None)."""
        vs = self._struct.variables[node]
        if not vs or not bool(known[:, list(vs)].any()):
            return None
        d = self.phys_dim
        codes = torch.arange(d ** len(vs), device=x.device)
        ok = torch.ones((x.shape[0], codes.shape[0]), dtype=torch.bool, device=x.device)
        for j, v in enumerate(vs):
            digit = (codes // d ** (len(vs) - 1 - j)) % d
            ok = ok & (~known[:, v, None] | (x[:, v, None] == digit[None, :]))
        return ok

    def _doubled_up(
        self, arrays: list[torch.Tensor], x: torch.Tensor, known: torch.Tensor
    ) -> dict[int, torch.Tensor]:
        """Doubled subtree environments ``U_n`` (rows, D, D) on each parent bond.

        Known variables are projected on their values and free ones traced;
        only nodes with a known variable below them in some row are stored
        (the others are the identity, by the root-centred canonical form).
        """
        st = self._struct
        envs: dict[int, torch.Tensor] = {}
        for node in range(st.num_nodes - 1):
            kids = st.children[node]
            w = self._leaf_weights(node, x, known)
            if w is None and not any(c in envs for c in kids):
                continue
            a = self._grouped(node, arrays[node])
            bra = a.conj().unsqueeze(0)
            for i, c in enumerate(kids):
                if c in envs:
                    u = envs[c]
                    bra = _apply_env(u, bra.expand(u.shape[0], *bra.shape[1:]), i + 1)
            if w is not None:
                bra = bra * w.to(a.dtype).reshape(w.shape[0], *([1] * len(kids)), -1, 1)
            dp = a.shape[-1]
            env = torch.einsum("kp,bkq->bpq", a.reshape(-1, dp), bra.reshape(bra.shape[0], -1, dp))
            envs[node] = _normalise_rows(env)[0]
        return envs

    def _sample_free(
        self, x: torch.Tensor, known: torch.Tensor, gen: torch.Generator, chunk_bytes: int = 2**28
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Root-down sampler: exact, batched; conditional when ``known`` is set.

        In the root-centred canonical form a subtree whose variables are all
        free traces to the identity on its parent bond. Walking the tree depth
        first from the root, each node hands to a child the doubled environment
        of their bond (a ``D x D`` matrix per row): its own tensor with the
        environment from above, the children already sampled as amplitude
        vectors and the others as the identity, or as their doubled
        environment :meth:`_doubled_up` when they hold known variables. At a
        node with physical indices the diagonal of the environment gives the
        exact conditional distribution of its variables, drawn jointly.
        """
        arrays = self._root_canonical_arrays()
        x = x.clone()
        out_logp = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        biggest = max(a.numel() for a in arrays)
        per_row = (8 * biggest + 2 * sum(a.shape[-1] ** 2 for a in arrays)) * arrays[0].element_size()
        step = max(1, int(chunk_bytes // max(per_row, 1)))
        for start in range(0, x.shape[0], step):
            xs, ks = x[start : start + step], known[start : start + step]
            ups, inverse = {}, None
            if bool(ks.any()):
                # doubled environments depend only on the known part: once per distinct row
                key = torch.where(ks, xs, torch.full_like(xs, -1))
                uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
                ups = self._doubled_up(arrays, uniq.clamp_min(0), uniq >= 0)
            xs, lp = self._sample_chunk(arrays, xs.clone(), ks, ups, inverse, gen)
            x[start : start + step] = xs
            out_logp[start : start + step] = lp
        return x, out_logp

    def _sample_chunk(self, arrays, x, known, ups, inverse, gen):
        st = self._struct
        b = x.shape[0]
        rows = torch.arange(b, device=x.device)
        logp = torch.zeros(b, dtype=torch.float64, device=x.device)

        def batch(t: torch.Tensor) -> torch.Tensor:
            return t.expand(b, *t.shape[1:])

        def visit(node: int, env: torch.Tensor) -> torch.Tensor:
            nonlocal logp
            a = self._grouped(node, arrays[node])  # (D_c..., S, Dp)
            dp = a.shape[-1]
            kids = st.children[node]
            amp = a.unsqueeze(0)  # ket without the environment (for the upward message)
            ket = torch.matmul(a.reshape(-1, dp), env).reshape(b, *a.shape)
            bra = a.conj().unsqueeze(0)
            w = self._leaf_weights(node, x, known)
            for i, c in enumerate(kids):
                # the later children enter traced (identity) or through their doubled environment
                bra_i = bra
                for j in range(i + 1, len(kids)):
                    if kids[j] in ups:
                        bra_i = _apply_env(ups[kids[j]][inverse], batch(bra_i), 1 + j - i)
                if w is not None:
                    bra_i = bra_i * w.to(a.dtype).reshape(b, *([1] * (len(kids) - i)), -1, 1)
                di = ket.shape[1]
                env_i = torch.bmm(ket.reshape(b, di, -1), batch(bra_i).reshape(b, di, -1).transpose(1, 2))
                m = visit(c, _normalise_rows(env_i)[0])
                ket = torch.bmm(m.unsqueeze(1), ket.reshape(b, di, -1)).reshape(b, *ket.shape[2:])
                bra = torch.bmm(m.conj().unsqueeze(1), batch(bra).reshape(b, di, -1)).reshape(b, *bra.shape[2:])
                amp = torch.bmm(m.unsqueeze(1), batch(amp).reshape(b, di, -1)).reshape(b, *amp.shape[2:])
            vs = st.variables[node]
            if vs:
                weights = (ket * batch(bra)).sum(dim=-1).real.clamp_min(0)
                if w is not None:
                    weights = weights * w.to(weights.dtype)
                active = (~known[:, list(vs)]).any(dim=1)
                code, lp = draw_categorical(weights, active, gen)
                code = torch.where(active, code, self._leaf_codes(node, x))
                d = self.phys_dim
                for j, v in enumerate(vs):
                    digit = (code // d ** (len(vs) - 1 - j)) % d
                    x[:, v] = torch.where(known[:, v], x[:, v], digit)
                logp = logp + lp
                m = batch(amp)[rows, code]
            else:
                m = batch(amp)[:, 0]
            m, _ = _normalise_rows(m)
            if bool((m.abs().amax(dim=1) == 0).any()):
                raise NumericalError("a configuration reached zero amplitude during sampling")
            return m

        visit(st.root, torch.ones((b, 1, 1), dtype=arrays[0].dtype, device=x.device))
        return x, logp

    # ----------------------------------------------------------- diagnostics
    def entanglement_entropies(self) -> list[float]:
        """Von Neumann entropy (nats) of the normalised state across every edge.

        Returns
        -------
        list of float
            One entropy per edge, in :meth:`edges` order (edge ``c`` joins
            node ``c`` to its parent).
        """
        st = self._struct
        arrays = self._root_canonical_arrays()
        out = [0.0] * (st.num_nodes - 1)

        def down(node: int) -> None:  # depth-first walk carrying the centre along
            for c in st.children[node]:
                _qr_move(st, arrays, node, c)
                a = arrays[c]
                p = torch.linalg.svdvals(a.reshape(-1, a.shape[-1])) ** 2
                p = p[p > 0] / p.sum()
                out[c] = float(-(p * torch.log(p)).sum())
                down(c)
                _qr_move(st, arrays, c, node)

        down(st.root)
        return out


def _stored_tree(config: dict[str, Any]) -> TreeStructure:
    """The :class:`TreeStructure` stored in a config, checked to be one tree over all variables."""
    tree, n = config["tree"], config["num_variables"]
    try:
        parent = tuple(int(p) for p in tree["parent"])
        children = tuple(tuple(int(c) for c in cs) for cs in tree["children"])
        variables = tuple(tuple(int(v) for v in vs) for vs in tree["variables"])
        blocks = tuple(tuple(int(b) for b in bl) for bl in tree["blocks"])
        image_shape = tuple(int(x) for x in tree["image_shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"the stored tree is malformed ({exc}); expected parent, children, variables, "
                          "blocks and image_shape lists") from None
    m = len(parent)
    if not (len(children) == len(variables) == len(blocks) == m) or m == 0:
        raise ConfigError("the stored tree's parent, children, variables and blocks lists differ in length")
    roots = [k for k in range(m) if parent[k] < 0]
    if roots != [m - 1] or any(not (0 <= p < m) for p in parent[:-1]):
        raise ConfigError("the stored tree must have exactly one root, the last node, and valid parents")
    for k in range(m):
        if sorted(children[k]) != sorted(c for c in range(m) if parent[c] == k):
            raise ConfigError(f"the stored tree's children of node {k} do not match the parents")
    if sorted(v for vs in variables for v in vs) != list(range(n)):
        raise ConfigError(f"the stored tree must place every variable 0..{n - 1} exactly once")
    layout = config.get("layout", "binary")
    return TreeStructure(num_variables=n, layout=str(layout), image_shape=image_shape, parent=parent,
                         children=children, variables=variables, blocks=blocks)
