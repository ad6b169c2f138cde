"""Per-sample environments of a tree-shaped Born machine, cached and log-scaled.

For a network whose graph is a tree (a matrix product state is a path), the
amplitude of a configuration factorises into *messages* along directed edges:
the message ``u -> v`` is the contraction of everything on ``u``'s side of the
edge, with the physical indices fixed to the configuration, leaving the bond
index open. It is a vector per configuration, here a ``(batch, D)`` tensor
stored with unit max-norm per row and the logarithm of the removed scale.

:class:`EnvironmentCache` computes messages lazily and keeps them until a node
tensor they depend on changes (:meth:`EnvironmentCache.invalidate`), so the
two-site sweep recomputes one message per step: the ``O(|T| D^2)`` environment
update of the paper, for any tree geometry.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

from .contraction import onehot

__all__ = ["EnvironmentCache", "Message", "node_message"]

Message = tuple[torch.Tensor, torch.Tensor]  # (vectors (B, D), log-scales (B,))
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXY"


def _normalise(vec: torch.Tensor, log: torch.Tensor) -> Message:
    scale = vec.abs().amax(dim=1)
    positive = scale > 0
    safe = torch.where(positive, scale, torch.ones_like(scale))
    log = log + torch.where(positive, torch.log(safe), torch.full_like(safe, -torch.inf))
    return vec / safe[:, None].to(vec.dtype), log


def node_message(
    data: torch.Tensor,
    inds: tuple[str, ...],
    incoming: dict[str, Message],
    physical: dict[str, torch.Tensor],
    out_ind: str | None,
    phys_dim: int,
) -> Message:
    """Contract one node with its incoming messages and physical selections.

    Parameters
    ----------
    data : torch.Tensor
        The node tensor.
    inds : tuple of str
        Its index names.
    incoming : dict
        Index name -> message ``(vectors (B, D), log-scales (B,))``.
    physical : dict
        Physical index name -> ``(B,)`` integer values.
    out_ind : str or None
        The index left open (``None``: contract everything, giving the
        amplitude mantissa as a ``(B, 1)`` tensor).
    phys_dim : int
        Dimension of the physical indices.

    Returns
    -------
    Message
        Normalised output vectors and accumulated log-scales.
    """
    letters = {ix: _LETTERS[i] for i, ix in enumerate(inds)}
    terms = ["".join(letters[ix] for ix in inds)]
    operands = [data]
    log = None
    for ix, (vec, lg) in incoming.items():
        terms.append("Z" + letters[ix])
        operands.append(vec)
        log = lg if log is None else log + lg
    for ix, vals in physical.items():
        terms.append("Z" + letters[ix])
        operands.append(onehot(vals, phys_dim, data.dtype))
    out = "Z" + (letters[out_ind] if out_ind is not None else "")
    res = torch.einsum(",".join(terms) + "->" + out, *operands)
    if out_ind is None:
        res = res[:, None]
    if log is None:
        log = torch.zeros(res.shape[0], dtype=res.real.dtype, device=res.device)
    return _normalise(res, log)


class EnvironmentCache:
    """Lazily computed, invalidated-on-change messages of a tree Born machine.

    Parameters
    ----------
    machine : BornMachine
        A machine with ``is_tree = True``.
    x : torch.Tensor
        ``(batch, N)`` int64 configurations (on the machine's device).
    """

    def __init__(self, machine, x: torch.Tensor):
        self.machine = machine
        self.x = x
        self._messages: dict[tuple[Hashable, Hashable], Message] = {}
        # let a geometry supply a faster kernel for one message
        self._kernel: Callable[..., Message] = getattr(machine, "message_kernel", None) or node_message

    def __len__(self) -> int:
        return len(self._messages)

    def clear(self) -> None:
        """Forget every cached message."""
        self._messages.clear()

    def nbytes(self) -> int:
        """Memory held by the cached messages, in bytes."""
        return sum(v.element_size() * v.numel() + l.element_size() * l.numel()
                   for v, l in self._messages.values())

    def _compute(self, src: Hashable, dst: Hashable | None) -> Message:
        m = self.machine
        t = m.node_tensor(src)
        incoming = {}
        for nb in m.neighbours(src):
            if nb != dst:
                incoming[m.bond_index(src, nb)] = self._messages[(nb, src)]
        physical = {m.variable_index(v): self.x[:, v] for v in m.node_variables(src)}
        out = m.bond_index(src, dst) if dst is not None else None
        return self._kernel(t.data, tuple(t.inds), incoming, physical, out, m.phys_dim)

    def message(self, src: Hashable, dst: Hashable) -> Message:
        """Return the message ``src -> dst``, computing what is missing.

        Parameters
        ----------
        src, dst : hashable
            Neighbouring nodes.

        Returns
        -------
        Message
            ``(vectors (B, D), log-scales (B,))``.
        """
        if (src, dst) in self._messages:
            return self._messages[(src, dst)]
        # iterative post-order walk (no recursion: chains have hundreds of nodes)
        stack = [(src, dst, False)]
        m = self.machine
        while stack:
            s, d, ready = stack.pop()
            if (s, d) in self._messages:
                continue
            if ready:
                self._messages[(s, d)] = self._compute(s, d)
                continue
            stack.append((s, d, True))
            for nb in m.neighbours(s):
                if nb != d and (nb, s) not in self._messages:
                    stack.append((nb, s, False))
        return self._messages[(src, dst)]

    def invalidate(self, node: Hashable) -> None:
        """Drop every cached message that depends on ``node``'s tensor.

        Parameters
        ----------
        node : hashable
            A node whose tensor changed.
        """
        m = self.machine
        stack = [(node, nb) for nb in m.neighbours(node)]
        while stack:
            s, d = stack.pop()
            if self._messages.pop((s, d), None) is None:
                continue  # downstream messages cannot be cached without this one
            for nb in m.neighbours(d):
                if nb != s:
                    stack.append((d, nb))

    def log_amplitudes_at(self, node: Hashable) -> Message:
        """Contract ``node`` with all its incoming messages: ``psi`` of every sample.

        Parameters
        ----------
        node : hashable
            Any node.

        Returns
        -------
        Message
            ``(mantissa (B, 1), log-scales (B,))`` with ``psi = mantissa * exp(log)``.
        """
        m = self.machine
        for nb in m.neighbours(node):
            self.message(nb, node)
        return self._compute(node, None)

    def block_environments(self, block) -> dict[str, Message]:
        """Messages into a merged two-site block, keyed by the block's virtual index.

        Parameters
        ----------
        block : TwoSiteBlock
            From :meth:`BornMachine.merge`.

        Returns
        -------
        dict
            Virtual index name -> message.
        """
        return {ix: self.message(out, inside) for ix, (out, inside) in block.virtual.items()}
