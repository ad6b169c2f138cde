"""Any quimb tensor network as a Born machine: :func:`from_quimb`.

The network may be a :class:`quimb.tensor.MatrixProductState`, a
:class:`quimb.tensor.PEPS`, a tree built tensor by tensor, or any other
:class:`quimb.tensor.TensorNetwork` in which every variable has one open
(physical) index named by ``site_ind_id`` and every other index joins two
tensors. A physical index may sit on any tensor; a tensor may carry several or
none. Everything is derived from the network by the base class
(:mod:`tnborn.structure`):

- all networks: exact ``log_prob``, ``nll``, ``log_norm``, ``sample``,
  ``sample_conditional``, checkpoints (index names and tags are stored),
  :class:`~tnborn.training.gradient.GradientTrainer`;
- networks without loops, in addition: the canonical form (QR gauge moves
  along the tree), exact sampling from the centre and the two-site
  :class:`~tnborn.training.sweep.SweepTrainer` on every edge.

Loopy networks are contracted exactly (cotengra / opt_einsum paths); their cost
grows exponentially with the width of the network.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import quimb.tensor as qtn
import torch

from ..backend import check_integer, check_seed, make_generator, resolve_device, resolve_dtype
from ..errors import ConfigError, NumericalError
from ..interface import BornMachine, checked_arrays
from ..registry import register_geometry

__all__ = ["NetworkBornMachine", "from_quimb", "NODE_TAG_ID"]

#: Template of the node tags tnborn puts on the tensors of a network it adopts.
NODE_TAG_ID = "TNBNODE{}"

_NODE_TAG_RE = re.compile(r"^TNBNODE\d+$")


@register_geometry("network")
class NetworkBornMachine(BornMachine):
    """A Born machine on a user's quimb network (build it with :func:`from_quimb`).

    Parameters
    ----------
    tn : quimb.tensor.TensorNetwork
        The network, every tensor tagged ``NODE_TAG_ID.format(i)`` (what
        :func:`from_quimb` does) and holding torch arrays.
    site_ind_id : str
        Template of the physical index names, e.g. ``"k{}"``.
    center : int, optional
        A node the network is already canonical about.
    """

    builds_trees = False

    def __init__(self, tn: qtn.TensorNetwork, site_ind_id: str = "k{}", center: Any = None) -> None:
        super().__init__(tn, site_ind_id=site_ind_id, node_tag_id=NODE_TAG_ID, center=center)

    @classmethod
    def random(
        cls,
        num_variables: int,
        bond_dim: int = 2,
        phys_dim: int = 2,
        seed: int | None = 0,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> "NetworkBornMachine":
        """A random irregular tree through :func:`from_quimb`, normalised to ``Z = 1``.

        About ``2 N / 3`` nodes, each attached to a random earlier node; every
        variable sits on a random node (inner nodes included, some nodes carry
        several variables, some none). Entries are i.i.d. normal.

        Parameters
        ----------
        num_variables : int
            Number of variables ``N`` (at least 2).
        bond_dim : int
            Dimension of every bond.
        phys_dim : int
            Dimension of every physical index.
        seed : int or None
            Seed of the CPU generator.
        dtype : str or torch.dtype, optional
            Default ``float64``.
        device : str or torch.device, optional
            Default: CUDA when present, else CPU.

        Returns
        -------
        NetworkBornMachine
            The machine.
        """
        n = check_integer(num_variables, "num_variables", 2)
        bond = check_integer(bond_dim, "bond_dim", 1)
        d = check_integer(phys_dim, "phys_dim", 2)
        check_seed(seed)
        dt = resolve_dtype(dtype)
        gen = make_generator(seed)
        num_nodes = max(2, (2 * n) // 3)
        parent = [None] + [int(torch.randint(0, i, (1,), generator=gen)) for i in range(1, num_nodes)]
        # every node gets a variable first while variables last, then the rest at random
        owner = list(torch.randperm(num_nodes, generator=gen)[: min(n, num_nodes)].tolist())
        owner += torch.randint(0, num_nodes, (n - len(owner),), generator=gen).tolist()
        tensors = []
        for node in range(num_nodes):
            inds = [f"b{node}_{parent[node]}"] if parent[node] is not None else []
            inds += [f"b{c}_{node}" for c in range(num_nodes) if parent[c] == node]
            inds += [f"k{v}" for v in range(n) if owner[v] == node]
            shape = [bond if ix.startswith("b") else d for ix in inds]
            real = torch.randn(shape, generator=gen, dtype=torch.float64)
            data = torch.complex(real, torch.randn(shape, generator=gen, dtype=torch.float64)) if dt.is_complex \
                else real
            tensors.append(qtn.Tensor(data.to(dt), inds=inds, tags={f"NODE{node}"}))
        model = cls.adopt(qtn.TensorNetwork(tensors), site_ind_id="k{}", device=device)
        model.normalize()
        return model

    @classmethod
    def adopt(
        cls,
        tn: qtn.TensorNetwork,
        site_ind_id: str = "k{}",
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> "NetworkBornMachine":
        """An instance of this class on a copy of ``tn`` (what :func:`from_quimb` does).

        A geometry built on this class calls it from its ``random`` constructor.

        Parameters
        ----------
        tn : quimb.tensor.TensorNetwork
            The network (see :func:`from_quimb`).
        site_ind_id : str
            Template of the physical index names.
        dtype : str or torch.dtype, optional
            Dtype of the machine.
        device : str or torch.device, optional
            Device of the machine.

        Returns
        -------
        NetworkBornMachine
            The machine (of the class it is called on).
        """
        if not isinstance(tn, qtn.TensorNetwork):
            raise ConfigError(f"from_quimb expects a quimb.tensor.TensorNetwork, got {type(tn).__name__}")
        if tn.num_tensors == 0:
            raise ConfigError("from_quimb: the tensor network has no tensors")
        if not isinstance(site_ind_id, str) or "{}" not in site_ind_id:
            raise ConfigError(f"site_ind_id must be a template like 'k{{}}', got {site_ind_id!r}")
        source = list(tn.tensor_map.values())
        arrays = checked_arrays([t.data for t in source], "tensor")
        dev = resolve_device(device)
        if dtype is not None:
            dt = resolve_dtype(dtype)
        else:
            given = {a.dtype for a in arrays}
            dt = given.pop() if len(given) == 1 and all(isinstance(t.data, torch.Tensor) for t in source) \
                else (torch.complex128 if any(a.is_complex() for a in arrays) else torch.float64)
        if any(a.is_complex() for a in arrays) and not dt.is_complex:
            raise ConfigError(f"the network has complex arrays; dtype {dt} would drop their phases")
        tensors = []
        for i, (t, a) in enumerate(zip(source, arrays)):
            tags = [tag for tag in t.tags if not _NODE_TAG_RE.match(tag)] + [NODE_TAG_ID.format(i)]
            tensors.append(qtn.Tensor(a.to(device=dev, dtype=dt), inds=t.inds, tags=tags))
        return cls(qtn.TensorNetwork(tensors, virtual=True), site_ind_id=site_ind_id)

    def config(self) -> dict[str, Any]:
        """Construction parameters: the physical-index template and every node's indices and tags.

        Returns
        -------
        dict
            ``site_ind_id``, ``num_variables``, ``phys_dim`` and ``nodes`` (one
            ``{"inds": [...], "tags": [...]}`` per node, in :meth:`nodes` order).
        """
        nodes = []
        for node in self.nodes():
            t = self.node_tensor(node)
            tags = sorted(tag for tag in t.tags if not _NODE_TAG_RE.match(tag))
            nodes.append({"inds": list(t.inds), "tags": tags})
        return {"site_ind_id": self.site_ind_id, "num_variables": self.num_variables,
                "phys_dim": self.phys_dim, "nodes": nodes}

    @classmethod
    def from_arrays(cls, arrays: Sequence[torch.Tensor], config: dict[str, Any]) -> "NetworkBornMachine":
        """Rebuild from node arrays (in :meth:`nodes` order) and :meth:`config`.

        Parameters
        ----------
        arrays : sequence of torch.Tensor
            One array per node, its axes in the order of ``config["nodes"][i]["inds"]``.
        config : dict
            From :meth:`config`.

        Returns
        -------
        NetworkBornMachine
            The machine.

        Raises
        ------
        ConfigError
            If the arrays do not fit the stored indices, or the network they make is invalid.
        """
        arrays = checked_arrays(arrays, "node")
        records = config.get("nodes")
        if not isinstance(records, list) or len(records) != len(arrays):
            raise ConfigError(f"expected {len(arrays)} node records in the config, got {records!r:.80}")
        sizes: dict[str, int] = {}
        tensors = []
        for i, (a, rec) in enumerate(zip(arrays, records)):
            inds = [str(ix) for ix in rec.get("inds", [])]
            if a.ndim != len(inds):
                raise ConfigError(f"node {i}: a {a.ndim}-D array for the {len(inds)} indices {inds}")
            for ix, size in zip(inds, a.shape):
                if sizes.setdefault(ix, int(size)) != int(size):
                    raise ConfigError(f"index {ix!r} has size {sizes[ix]} on one node and {size} on node {i}")
            tags = [str(tag) for tag in rec.get("tags", [])] + [NODE_TAG_ID.format(i)]
            tensors.append(qtn.Tensor(a, inds=inds, tags=tags))
        model = cls(qtn.TensorNetwork(tensors, virtual=True), site_ind_id=str(config.get("site_ind_id", "k{}")))
        n = config.get("num_variables")
        if n is not None and n != model.num_variables:
            raise ConfigError(f"the config says {n} variables, the arrays make {model.num_variables}")
        return model


def from_quimb(
    tn: qtn.TensorNetwork,
    site_ind_id: str = "k{}",
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> NetworkBornMachine:
    """A Born machine ``P(x) = |psi(x)|^2 / Z`` on any quimb tensor network.

    The network is copied (the caller's stays as it is); its arrays become
    torch tensors (numpy arrays converted; ``dtype`` default: the arrays'
    own floating dtype for torch input, ``float64`` otherwise) and each tensor
    gets the node tag ``TNBNODE{i}`` (``i`` its position in the network).
    The network is not normalised: ``Z`` is computed exactly where needed.

    Parameters
    ----------
    tn : quimb.tensor.TensorNetwork
        Any network (``MatrixProductState``, ``PEPS``, a hand-built tree...)
        with one open index per variable, named ``site_ind_id.format(i)`` for
        ``i = 0 .. N - 1``; every other index joins exactly two tensors.
    site_ind_id : str
        Template of the physical index names.
    dtype : str or torch.dtype, optional
        Dtype of the machine (``float64``, ``complex128``, ...).
    device : str or torch.device, optional
        Device (default: CUDA when present, else CPU).

    Returns
    -------
    NetworkBornMachine
        The machine; ``model.is_tree`` says whether the sweep trainer and
        the canonical form apply.

    Raises
    ------
    ConfigError
        If ``tn`` is not a quimb network, an array is not finite, floating
        or complex, or nonzero, or the indices do not make a Born machine
        (an open index that is not physical, a physical index shared by two
        tensors, a variable missing).

    Examples
    --------
    >>> import quimb.tensor as qtn, tnborn
    >>> peps = qtn.PEPS.rand(2, 2, bond_dim=2, seed=0)
    >>> model = tnborn.from_quimb(peps.reindex({f"k{i},{j}": f"x{2 * i + j}"
    ...                                         for i in range(2) for j in range(2)}), site_ind_id="x{}")
    >>> model.num_variables, model.is_tree
    (4, False)
    """
    return NetworkBornMachine.adopt(tn, site_ind_id=site_ind_id, dtype=dtype, device=device)
