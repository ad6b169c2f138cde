"""The two-site merge and truncated SVD split, through quimb.

:class:`TwoSiteMoves` is the part of :class:`~tnborn.interface.BornMachine`
that the two-site sweep uses: :meth:`TwoSiteMoves.merge` contracts two
neighbouring tensors into a :class:`TwoSiteBlock` (with the index bookkeeping
a local update needs), and :meth:`TwoSiteMoves.split` writes an updated block
back by quimb's SVD, truncated by the shared rule of
:func:`~tnborn.primitives.truncation_rank`, leaving the centre on the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import quimb.tensor as qtn
import torch

from ..errors import ConfigError, NumericalError
from ..primitives import SplitInfo, check_split_finite, truncate_spectrum
from ..structure import Node

__all__ = ["TwoSiteBlock", "TwoSiteMoves"]


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


class TwoSiteMoves:
    """Two-site merge and split of a Born machine (the moves of the sweep).

    A base of :class:`~tnborn.interface.BornMachine`, which supplies the
    network accessors and the centre bookkeeping used here.
    """

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
        order, keep, info = truncate_spectrum(s.data.real if s.data.is_complex() else s.data, cutoff, max_bond,
                                              min_bond)
        if order is not None:  # e.g. quimb's "svd:eig" returns ascending values
            left.modify(data=left.data.index_select(left.inds.index(block.bond), order.to(left.data.device)))
            right.modify(data=right.data.index_select(right.inds.index(block.bond), order.to(right.data.device)))
        ldata = left.data.narrow(left.inds.index(block.bond), 0, keep)
        rdata = right.data.narrow(right.inds.index(block.bond), 0, keep)
        kept = info.singular_values
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
