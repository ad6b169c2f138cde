"""The MPS Born machine: the quimb MatrixProductState, its constructor and fast exact paths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import quimb.tensor as qtn
import torch

from ... import kernels
from ...backend import check_integer, check_seed, make_generator, resolve_device, resolve_dtype
from ...environments import Message, node_message
from ...errors import ConfigError, NumericalError
from ...interface import checked_arrays, BornMachine, TwoSiteBlock
from ...primitives import SplitInfo, check_split_finite, draw_categorical, truncate_spectrum
from ...registry import register_geometry
from . import chain as kern

__all__ = ["MPSBornMachine", "random_mps_arrays"]


def _max_bond_at(k: int, n: int, bond_dim: int, d: int) -> int:
    """Largest useful dimension of bond ``k`` (between sites k and k+1)."""
    left = d ** min(k + 1, 60)
    right = d ** min(n - k - 1, 60)
    return int(min(bond_dim, left, right))


def random_mps_arrays(
    num_variables: int,
    bond_dim: int = 2,
    phys_dim: int = 2,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float64,
) -> list[torch.Tensor]:
    """Random normalised MPS site arrays ``(D_l, d, D_r)`` in left-canonical form.

    Entries are drawn i.i.d. normal (real and imaginary parts for complex
    dtypes) in float64, then the chain is brought to left-canonical form by
    QR from left to right, normalising the carried factor at every step, so
    nothing under- or overflows at any length; the last site is the centre,
    with unit norm, so ``Z = 1``.

    Parameters
    ----------
    num_variables : int
        Number of sites ``N >= 2``.
    bond_dim : int
        Bond dimension (capped at the exact maximum ``min(d^k, d^(N-k))``).
    phys_dim : int
        Physical dimension ``d``.
    seed : int or None
        Seed of the CPU generator.
    dtype : torch.dtype
        Dtype of the returned arrays.

    Returns
    -------
    list of torch.Tensor
        ``N`` CPU arrays, site ``k`` of shape ``(D_{k-1}, d, D_k)`` with
        ``D_{-1} = D_{N-1} = 1``.
    """
    n, d = int(num_variables), int(phys_dim)
    gen = make_generator(seed)
    dims = [1] + [_max_bond_at(k, n, bond_dim, d) for k in range(n - 1)] + [1]
    complex_ = dtype.is_complex
    arrays = []
    for k in range(n):
        shape = (dims[k], d, dims[k + 1])
        a = torch.randn(shape, generator=gen, dtype=torch.float64)
        if complex_:
            a = torch.complex(a, torch.randn(shape, generator=gen, dtype=torch.float64))
        arrays.append(a)
    carry = None
    for k in range(n):
        a = arrays[k]
        if carry is not None:
            a = torch.tensordot(carry, a, dims=([1], [0]))
        if k == n - 1:
            arrays[k] = a / torch.linalg.vector_norm(a)
            break
        dl, _, dr = a.shape
        q, r = torch.linalg.qr(a.reshape(dl * d, dr))
        arrays[k] = q.reshape(dl, d, q.shape[1])
        carry = r / torch.linalg.vector_norm(r)
    return [a.to(dtype) for a in arrays]


@register_geometry("mps")
class MPSBornMachine(BornMachine):
    """Born machine on an open-chain matrix product state.

    Parameters
    ----------
    arrays : sequence of torch.Tensor
        Site arrays of shape ``(D_{k-1}, d, D_k)`` with ``D_{-1} = D_{N-1} = 1``.
    center : int, optional
        The orthogonality centre if the arrays are in mixed-canonical form
        around it (not checked), else ``None``.

    See Also
    --------
    MPSBornMachine.random : the usual constructor.
    """

    geometry = "mps"
    builds_trees = True

    def __init__(self, arrays: Sequence[torch.Tensor], center: int | None = None):
        arrays = checked_arrays(arrays, "site")
        if len(arrays) < 2:
            raise ConfigError(f"an MPS Born machine needs at least 2 variables, got {len(arrays)}")
        d = int(arrays[0].shape[1])
        for k, a in enumerate(arrays):
            if a.ndim != 3 or a.shape[1] != d:
                raise ConfigError(f"site {k}: expected a (D_left, {d}, D_right) array, got {tuple(a.shape)}")
            if k > 0 and a.shape[0] != arrays[k - 1].shape[2]:
                raise ConfigError(f"bond {k - 1}: dimensions {arrays[k - 1].shape[2]} and {a.shape[0]} differ")
        if arrays[0].shape[0] != 1 or arrays[-1].shape[2] != 1:
            raise ConfigError("the end sites must have outer bond dimension 1")
        quimb_arrays = [arrays[0][0]] + list(arrays[1:-1]) + [arrays[-1][:, :, 0]]
        mps = qtn.MatrixProductState(quimb_arrays, shape="lpr")
        n = len(arrays)
        # quimb stores (left, right, phys); keep (left, phys, right) contiguous instead,
        # the layout of the fast kernels and of split (no per-call transposes)
        for k, a in enumerate(quimb_arrays):
            t = mps[mps.site_tag(k)]
            lpr = tuple(ix for ix in (mps.bond(k - 1, k) if k > 0 else None, mps.site_ind(k),
                                      mps.bond(k, k + 1) if k < n - 1 else None) if ix is not None)
            if tuple(t.inds) != lpr:
                t.modify(data=a.contiguous(), inds=lpr)
        super().__init__(mps, site_ind_id=mps.site_ind_id, node_tag_id=mps.site_tag_id, center=center)

    def _structure_changed(self) -> None:
        """Cache the chain's tensors, bonds and physical indices for the fast paths."""
        st = self.structure
        n = len(st.nodes)
        if st.nodes != tuple(range(n)) or st.variable_nodes != tuple(range(n)) or any(
            st.neighbours[k] != tuple(j for j in (k - 1, k + 1) if 0 <= j < n) for k in range(n)
        ):
            raise ConfigError("the network of an MPSBornMachine must stay an open chain with one "
                              "variable per site; use tnborn.from_quimb for other networks")
        self._tensors = [st.tensors[k] for k in range(n)]
        self._bonds = [st.bonds[frozenset((k, k + 1))] for k in range(n - 1)]
        self._phys = list(st.variable_indices)

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
    ) -> "MPSBornMachine":
        """A random normalised MPS Born machine (centre on the last site).

        Parameters
        ----------
        num_variables : int
            Number of variables ``N >= 2``.
        bond_dim : int
            Initial bond dimension (the authors use 2).
        phys_dim : int
            Values per variable (2 for binary data).
        seed : int or None
            Seed of the initialisation.
        dtype : str or torch.dtype, optional
            ``"float64"`` (default), ``"float32"``, ``"complex64"``, ``"complex128"``.
        device : str or torch.device, optional
            ``"cpu"`` (default), ``"cuda"``, ``"auto"``.

        Returns
        -------
        MPSBornMachine
            The machine, mixed-canonical around site ``N-1`` with ``Z = 1``.
        """
        n = check_integer(num_variables, "num_variables", 2)
        bond_dim = check_integer(bond_dim, "bond_dim", 1)
        phys_dim = check_integer(phys_dim, "phys_dim", 2)
        check_seed(seed)
        dt = resolve_dtype(dtype)
        dev = resolve_device(device)
        arrays = random_mps_arrays(n, int(bond_dim), int(phys_dim), seed, dt)
        return cls([a.to(dev) for a in arrays], center=n - 1)

    def config(self) -> dict[str, Any]:
        """Construction parameters (for checkpoints), with each site's index layout.

        ``layout[k]`` spells the index order of site ``k``'s live array with
        ``l`` (left bond), ``p`` (physical), ``r`` (right bond): quimb and the
        SVD split reorder indices, so :meth:`from_arrays` needs it.

        Returns
        -------
        dict
            ``num_variables``, ``phys_dim`` and ``layout``.
        """
        names = {}
        for k, b in enumerate(self._bonds):
            names[(k + 1, b)], names[(k, b)] = "l", "r"
        layout = ["".join("p" if ix == self._phys[k] else names[(k, ix)] for ix in t.inds)
                  for k, t in enumerate(self._tensors)]
        return {"num_variables": self.num_variables, "phys_dim": self.phys_dim, "layout": layout}

    @classmethod
    def from_arrays(cls, arrays: Sequence[torch.Tensor], config: dict[str, Any]) -> "MPSBornMachine":
        """Rebuild from site arrays as returned by :meth:`arrays`.

        Parameters
        ----------
        arrays : sequence of torch.Tensor
            Node arrays in :meth:`nodes` order, with quimb's index order.
        config : dict
            From :meth:`config`.

        Returns
        -------
        MPSBornMachine
            The machine (centre unknown until set by the caller).
        """
        arrays = checked_arrays(arrays, "site")
        n = int(config.get("num_variables", len(arrays)))
        if len(arrays) != n:
            raise ConfigError(f"expected {n} site arrays, got {len(arrays)}")
        sites = []
        layout = config.get("layout")
        for k, a in enumerate(arrays):
            if layout is not None:  # permute to (l, p, r) minus the missing end bonds
                want = "".join(c for c in "lpr" if c in layout[k])
                if sorted(layout[k]) != sorted(want) or a.ndim != len(want):
                    raise ConfigError(f"site {k}: layout {layout[k]!r} does not fit a {a.ndim}-D array")
                a = a.permute(*[layout[k].index(c) for c in want])
            if k == 0:
                a = a.reshape(1, *a.shape) if a.ndim == 2 else a
            elif k == n - 1:
                a = a.reshape(*a.shape, 1) if a.ndim == 2 else a
            sites.append(a)
        return cls(sites)

    # ----------------------------------------------------------- structure
    @property
    def tn(self) -> qtn.MatrixProductState:
        """The quimb :class:`~quimb.tensor.MatrixProductState` (torch arrays)."""
        return self._tn

    def _site(self, k: int) -> torch.Tensor:
        """Site ``k``'s array as ``(D_l, d, D_r)`` (a view of the live data)."""
        n = len(self._tensors)
        t = self._tensors[k]
        return kern.site_lpr(t.data, t.inds, self._bonds[k - 1] if k > 0 else None, self._phys[k],
                             self._bonds[k] if k < n - 1 else None)

    def site_array(self, k: int) -> torch.Tensor:
        """Site ``k``'s array reshaped to ``(D_l, d, D_r)`` (a view of the live data).

        Parameters
        ----------
        k : int
            The site.

        Returns
        -------
        torch.Tensor
            A 3-D view (end bonds of size 1).
        """
        return self._site(int(k))

    def site_arrays(self) -> list[torch.Tensor]:
        """Site arrays reshaped to ``(D_l, d, D_r)`` (views of the live data).

        Returns
        -------
        list of torch.Tensor
            One 3-D array per site (end bonds of size 1).
        """
        return _lpr_sites(self._tensors, self._bonds, self._phys)

    def replace_site_arrays(self, arrays: dict[int, torch.Tensor], center: int) -> None:
        """Write new ``(D_l, d, D_r)`` arrays into sites and declare the centre (fast path of the sweep).

        For the compiled chain sweep (:mod:`tnborn.training.compiled`), which
        computes a run of two-site updates outside quimb and writes their
        result back once: the same writes as :meth:`split` makes per update.
        The arrays must leave the chain consistent (bond dimensions of
        neighbours equal, checked) and canonical about ``center`` (not checked:
        the caller's split guarantees it).

        Parameters
        ----------
        arrays : dict
            Site -> C-contiguous ``(D_l, d, D_r)`` array (end bonds of size 1), of the model's dtype.
        center : int
            The orthogonality centre after the writes.

        Raises
        ------
        ConfigError
            If a bond dimension no longer matches its neighbour's.
        """
        n = len(self._tensors)

        def shape(k: int) -> tuple[int, ...]:
            return tuple(arrays[k].shape) if k in arrays else tuple(self._site(k).shape)

        for k in arrays:
            if k + 1 < n and shape(k)[2] != shape(k + 1)[0]:
                raise ConfigError(f"bond ({k}, {k + 1}): dimensions {shape(k)[2]} and {shape(k + 1)[0]} differ")
            if k > 0 and k - 1 not in arrays and shape(k - 1)[2] != shape(k)[0]:
                raise ConfigError(f"bond ({k - 1}, {k}): dimensions {shape(k - 1)[2]} and {shape(k)[0]} differ")
        for k, a in arrays.items():
            if k == 0:
                a = a[0]
            if k == n - 1:
                a = a[..., 0]
            self._tensors[k].modify(data=a)
        self._center_moved(center, tuple(arrays))

    # ----------------------------------------------------------- sweeps
    def sweep_schedule(self) -> list[list[tuple[int, int]]]:
        """Leftward bonds ``N-2 .. 1`` then rightward bonds ``0 .. N-3``.

        A leftward step on bond ``k`` is ``(k+1, k)`` (centre ends on ``k``), a
        rightward one ``(k, k+1)``: ``2(N-2)`` updates per loop, as in the paper.
        For ``N = 2`` the only bond is updated once per half-sweep.

        Returns
        -------
        list of list of (int, int)
            The two half-sweeps.
        """
        n = len(self._tensors)
        if n == 2:
            return [[(1, 0)], [(0, 1)]]
        left = [(k + 1, k) for k in range(n - 2, 0, -1)]
        right = [(k, k + 1) for k in range(0, n - 2)]
        return [left, right]

    def _move_center(self, node: int) -> None:
        """Move the orthogonality centre with quimb's canonize (fast path of the generic QR walk)."""
        old = self._center
        cur = "calc" if old is None else old
        self._tn.canonize(node, cur_orthog=cur)
        # quimb may leave transposed (non-contiguous) arrays: restore the contiguous
        # (left, phys, right) layout, so that results do not depend on how a state was reached
        # (a checkpoint reloads contiguous arrays, and must compute bit-identically)
        n = len(self._tensors)
        lo, hi = (0, n - 1) if old is None else (min(old, node), max(old, node))
        for k in range(lo, hi + 1):
            t = self._tensors[k]
            lpr = tuple(ix for ix in (self._bonds[k - 1] if k > 0 else None, self._phys[k],
                                      self._bonds[k] if k < n - 1 else None) if ix is not None)
            if tuple(t.inds) != lpr or not t.data.is_contiguous():
                t.transpose_(*lpr)
                t.modify(data=t.data.contiguous())

    # ----------------------------------------------------------- fast two-site update
    def _block_inds(self, k: int) -> tuple[str | None, str, str, str | None]:
        """``(left bond, phys k, phys k+1, right bond)`` of the block on bond ``k`` (None at the ends)."""
        n = len(self._tensors)
        return (self._bonds[k - 1] if k > 0 else None, self._phys[k], self._phys[k + 1],
                self._bonds[k + 1] if k + 1 < n - 1 else None)

    def merge(self, u: int, v: int) -> TwoSiteBlock:
        """Contract neighbouring sites into a block (fast path of :meth:`BornMachine.merge`).

        The block's indices are ``(left bond, phys k, phys k+1, right bond)``
        with ``k = min(u, v)`` (bonds that do not exist at the ends omitted).

        Parameters
        ----------
        u, v : int
            Neighbouring sites.

        Returns
        -------
        TwoSiteBlock
            The merged tensor and its index bookkeeping.
        """
        if abs(u - v) != 1:
            raise ConfigError(f"sites {u} and {v} are not neighbours")
        k = min(u, v)
        a, b = self._site(k), self._site(k + 1)
        dl, d, dm = a.shape
        dr = b.shape[2]
        data = (a.reshape(dl * d, dm) @ b.reshape(dm, d * dr)).reshape(dl, d, d, dr)
        names = self._block_inds(k)
        inds = tuple(ix for ix in names if ix is not None)
        data = data.reshape([s for s, ix in zip(data.shape, names) if ix is not None])
        left = names[:2] if u == k else names[2:]
        virtual = {}
        for node, other in ((u, v), (v, u)):
            for nb in self.neighbours(node):
                if nb != other:
                    virtual[self._bonds[min(node, nb)]] = (nb, node)
        return TwoSiteBlock(
            nodes=(u, v), data=data, inds=inds,
            left_inds=tuple(ix for ix in left if ix is not None), bond=self._bonds[k],
            physical={self._phys[k]: k, self._phys[k + 1]: k + 1}, virtual=virtual,
        )

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
        """Split a block by a truncated SVD (fast path of :meth:`BornMachine.split`).

        Same semantics: quimb's array-level split performs the decomposition
        (``method``), :func:`~tnborn.primitives.truncation_rank` decides what is
        kept, the kept singular values (unit 2-norm) go to ``target``.
        Sites are stored with index order ``(left bond, physical, right bond)``.

        Parameters
        ----------
        block : TwoSiteBlock
            From :meth:`merge`.
        data : torch.Tensor, optional
            New block data with the block's indices (default ``block.data``).
        target : int, optional
            The site that receives the singular values (default ``block.nodes[1]``).
        cutoff : float
            Relative singular-value cutoff in ``[0, 1)``.
        max_bond : int, optional
            Largest bond dimension kept.
        min_bond : int
            Smallest bond dimension kept.
        method : str
            quimb split method: ``"svd"`` or ``"svd:eig"``.

        Returns
        -------
        SplitInfo
            Kept dimension and discarded weights.
        """
        from quimb.tensor.decomp import array_split

        u, v = block.nodes
        target, data = self._split_inputs(block, data, target)
        k = min(u, v)
        names = self._block_inds(k)
        inds = tuple(ix for ix in names if ix is not None)
        if tuple(block.inds) != inds:
            data = data.permute(*[block.inds.index(ix) for ix in inds])
        d = self.phys_dim
        dl = data.shape[0] if names[0] is not None else 1
        dr = data.shape[-1] if names[3] is not None else 1
        fused = kernels.split_matrix(data.reshape(dl * d, d * dr), cutoff, max_bond, min_bond,
                                     target == k, method)  # compiled kernel where it applies
        if fused is not None:
            left, right, sv, keep, max_disc, weight = fused
            kept = sv[:keep] / torch.linalg.vector_norm(sv[:keep])
            info = SplitInfo(keep, max_disc, weight, kept)
        else:
            try:
                left, s, right = array_split(data.reshape(dl * d, d * dr), method=method, absorb=None,
                                             max_bond=None, cutoff=0.0, cutoff_mode="rel", renorm=False)
            except torch.linalg.LinAlgError as exc:
                raise NumericalError(
                    f"the SVD ({method!r}) of the merged block of sites {block.nodes} did not converge: {exc}"
                ) from exc
            order, keep, info = truncate_spectrum(s.real if s.is_complex() else s, cutoff, max_bond, min_bond)
            if order is not None:  # e.g. quimb's "svd:eig" returns ascending values
                left, right = left[:, order], right[order]
            kept = info.singular_values
            left, right = left[:, :keep], right[:keep]
            if target == k:
                left = left * kept.to(left.dtype)
            else:
                right = kept.to(right.dtype).unsqueeze(1) * right
            check_split_finite(left, right, block.nodes)
        bond = self._bonds[k]
        lshape = ([dl] if names[0] is not None else []) + [d, keep]
        rshape = [keep, d] + ([dr] if names[3] is not None else [])
        self._tensors[k].modify(data=left.reshape(lshape).contiguous(),
                                inds=tuple(ix for ix in (names[0], names[1], bond) if ix is not None))
        self._tensors[k + 1].modify(data=right.reshape(rshape).contiguous(),
                                    inds=tuple(ix for ix in (bond, names[2], names[3]) if ix is not None))
        self._center_moved(target, block.nodes)
        info.singular_values = kept
        return info

    def message_kernel(
        self,
        data: torch.Tensor,
        inds: tuple[str, ...],
        incoming: dict[str, Message],
        physical: dict[str, torch.Tensor],
        out_ind: str | None,
        phys_dim: int,
    ) -> Message:
        """One site's message for :class:`~tnborn.environments.EnvironmentCache` (fast path).

        Same contract as :func:`~tnborn.environments.node_message`, computed as
        ``vec @ A[:, x, :]`` per row (grouped by ``x``) instead of a generic
        einsum with one-hot selections; anything that is not a chain site
        falls back to :func:`~tnborn.environments.node_message`.

        Parameters
        ----------
        data, inds, incoming, physical, out_ind, phys_dim
            As in :func:`~tnborn.environments.node_message`.

        Returns
        -------
        Message
            Normalised vectors and accumulated log-scales.
        """
        ins = list(incoming)
        if len(physical) != 1 or len(ins) > (2 if out_ind is None else 1) or \
                len(inds) != 1 + len(ins) + (out_ind is not None):
            return node_message(data, inds, incoming, physical, out_ind, phys_dim)
        ((phys, vals),) = physical.items()
        first = ins[0] if ins else None
        second = out_ind if out_ind is not None else (ins[1] if len(ins) > 1 else None)
        a = kern.site_lpr(data, inds, first, phys, second)
        if first is not None and out_ind is not None:  # compiled kernel where it applies
            vec, log = incoming[first]
            fused = kernels.mps_site_message(a, vec, log, vals.unsqueeze(1), 0)
            if fused is not None:
                return fused
        if first is not None:
            vec, log = incoming[first]
            y = kern.contract_select(vec.to(a.dtype), a, vals)
        else:
            y = a[0].index_select(0, vals)
            log = torch.zeros(vals.shape[0], dtype=y.real.dtype, device=y.device)
        if out_ind is None and second is not None:
            vec2, log2 = incoming[second]
            y = (y * vec2.to(y.dtype)).sum(dim=1, keepdim=True)
            log = log + log2
        return kern.normalise_rows(y, log)

    # ----------------------------------------------------------- probabilities
    def _log_norm(self) -> torch.Tensor:
        """``log Z``: from the centre tensor when canonical, else by transfer matrices.

        Returns
        -------
        torch.Tensor
            A real 0-d tensor, ``log`` of the squared norm.
        """
        if self._center is not None:
            c = self._tensors[self._center].data
            return 2.0 * torch.log(torch.linalg.vector_norm(c)).to(c.real.dtype)
        env = None
        log = torch.zeros((), dtype=self.dtype.to_real() if self.dtype.is_complex else self.dtype,
                          device=self.device)
        for a in self.site_arrays():
            if env is None:
                env = torch.einsum("isj,isk->jk", a, a.conj())
            else:
                env = torch.einsum("ab,asj,bsk->jk", env, a, a.conj())
            scale = env.abs().amax()
            env = env / scale
            log = log + torch.log(scale)
        return log + torch.log(env.real.reshape(()))

    def _log_amplitude(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-to-right log-amplitudes with per-site rescaling (exact, batched; compiled where that applies)."""
        sites = [a.contiguous() for a in self.site_arrays()]
        compiled = kernels.chain_log_amplitude(sites, x)
        return compiled if compiled is not None else kern.log_amplitude_chain(sites, x)

    # ----------------------------------------------------------- sampling
    def _canonical_sites(self, end: int = 0) -> list[torch.Tensor]:
        """Copies of the site arrays, canonical towards a unit-norm centre at site ``end``.

        With no known centre, a state whose ``sqrt(Z)`` is beyond the dtype's
        range is canonicalised as :meth:`move_center` does it (scaled to
        ``Z = 1`` first), on a copy.
        """
        if self._center is None:
            model = self.copy()
            model.move_center(end)  # (safe from overflow; raises NumericalError where it cannot)
            return model._canonical_sites(end)
        mps = self._tn.copy()
        mps.canonize(end, cur_orthog=self._center)
        tensors = [mps[mps.site_tag(k)] for k in range(len(self._tensors))]
        sites = _lpr_sites(tensors, self._bonds, self._phys)
        sites[end] = sites[end] / torch.linalg.vector_norm(sites[end])
        return sites

    def _right_environments(
        self, sites: list[torch.Tensor], x: torch.Tensor, known: torch.Tensor
    ) -> list[torch.Tensor | None]:
        """Doubled right environments ``R_k`` (rows, D_k, D_k) of the part right of site k.

        Known variables are projected on their values, free ones traced. With
        right-canonical sites, ``R_k`` is the identity (returned as ``None``)
        right of the last known variable.
        """
        n = len(sites)
        envs: list[torch.Tensor | None] = [None] * n
        known_any = known.any(dim=0)
        idx = torch.nonzero(known_any)
        if idx.numel() == 0:
            return envs
        last = int(idx.max())
        b = x.shape[0]
        d = self.phys_dim
        env = None  # identity
        for k in range(last - 1, -1, -1):
            a = sites[k + 1]
            dl, _, dr = a.shape
            if env is None:
                env = torch.eye(dr, dtype=a.dtype, device=a.device).expand(b, dr, dr)
            new = torch.zeros((b, dl, dl), dtype=a.dtype, device=a.device)
            for s in range(d):
                a_s = a[:, s, :]
                term = torch.einsum("ij,bjk,lk->bil", a_s, env, a_s.conj())
                w = (~known[:, k + 1]) | (x[:, k + 1] == s)
                new = new + term * w[:, None, None].to(term.dtype)
            scale = new.abs().amax(dim=(1, 2))
            env = new / torch.where(scale > 0, scale, torch.ones_like(scale))[:, None, None].to(new.dtype)
            envs[k] = env
        return envs

    def _sample_free(
        self, x: torch.Tensor, known: torch.Tensor, gen: torch.Generator, chunk_bytes: int = 2**28
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zipper sampler: exact, batched; conditional when ``known`` is set.

        Unconditional sampling walks away from the end nearer the centre (right
        to left on a mirrored chain when the centre is in the right half), so
        that a trained or freshly built state needs no canonicalisation sweep;
        conditional sampling walks left to right.
        """
        n = len(self._tensors)
        if not bool(known.any()):
            if self._center is not None and 2 * self._center > n - 1:
                sites = [a.permute(2, 1, 0).contiguous() for a in reversed(self._canonical_sites(n - 1))]
                xr, logp = self._zipper(sites, x.flip(1), known, [None] * n, None, gen)
                return xr.flip(1), logp
            return self._zipper(self._canonical_sites(), x.clone(), known, [None] * n, None, gen)
        sites = self._canonical_sites()
        x = x.clone()
        out_logp = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        # environments depend only on the known part: compute once per distinct row
        key = torch.where(known, x, torch.full_like(x, -1))
        uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
        per_row = sum(a.shape[2] ** 2 for a in sites) * sites[0].element_size()
        step = max(1, int(chunk_bytes // max(per_row, 1)))
        for start in range(0, uniq.shape[0], step):
            sel = torch.nonzero((inverse >= start) & (inverse < start + step)).squeeze(1)
            ukey = uniq[start : start + step]
            envs = self._right_environments(sites, ukey.clamp_min(0), ukey >= 0)
            local = inverse[sel] - start
            xs, lp = self._zipper(sites, x[sel], known[sel], envs, local, gen)
            x[sel] = xs
            out_logp[sel] = lp
        return x, out_logp

    def _zipper(self, sites, x, known, envs, env_rows, gen):
        """Sample site by site (in place in ``x``); ``envs[k]``: doubled right environment or None."""
        b, n = x.shape
        rows = torch.arange(b, device=x.device)
        logp = torch.zeros(b, dtype=torch.float64, device=x.device)
        m = torch.ones((b, 1), dtype=sites[0].dtype, device=x.device)
        # from `start` on, everything to the right is right-canonical: fast binary kernel
        start = n - 1
        while start > 0 and envs[start - 1] is None:
            start -= 1
        if self.phys_dim != 2:
            start = n
        for k in range(start):
            a = sites[k]
            dl, d, dr = a.shape
            y = (m @ a.reshape(dl, d * dr)).reshape(b, d, dr)
            env = envs[k]
            if env is None or k == len(sites) - 1:
                w = (y.abs() ** 2).sum(dim=2)
            else:
                r = env[env_rows]
                w = torch.einsum("bsi,bij,bsj->bs", y, r, y.conj()).real
            free = ~known[:, k]
            vals, lp = draw_categorical(w.clamp_min(0), free, gen)
            x[:, k] = torch.where(free, vals, x[:, k])
            logp = logp + lp
            m = y[rows, x[:, k]]
            scale = m.abs().amax(dim=1)
            if bool((scale == 0).any()):
                raise NumericalError("a configuration reached zero amplitude during sampling")
            m = m / scale[:, None].to(m.dtype)
        if start < n:
            tail = known[:, start:]
            free = ~tail if bool(tail.any()) else None
            tail_sites = sites[start:]
            compiled = kernels.zipper_binary(tail_sites, m, x[:, start:], free, gen)  # where it applies
            vals, lp = compiled if compiled is not None else kern.zipper_binary(tail_sites, m, x[:, start:],
                                                                               free, gen)
            x[:, start:] = vals
            logp = logp + lp
        return x, logp

    # ----------------------------------------------------------- diagnostics
    def entanglement_entropies(self) -> list[float]:
        """Von Neumann entropy (nats) of the normalised state across every bond.

        Returns
        -------
        list of float
            ``N-1`` entropies, bond ``k`` between sites ``k`` and ``k+1``.
        """
        sites = self._canonical_sites()
        out = []
        carry = None
        for k in range(len(sites) - 1):
            a = sites[k] if carry is None else torch.tensordot(carry, sites[k], dims=([1], [0]))
            dl, d, dr = a.shape
            u, s, vh = torch.linalg.svd(a.reshape(dl * d, dr), full_matrices=False)
            p = (s / torch.linalg.vector_norm(s)) ** 2
            p = p[p > 0]
            out.append(float(-(p * torch.log(p)).sum()))
            carry = s[:, None].to(vh.dtype) * vh
        return out


def _lpr_sites(tensors: Sequence[qtn.Tensor], bonds: Sequence[str], phys: Sequence[str]) -> list[torch.Tensor]:
    """Chain tensors as ``(D_l, d, D_r)`` views (end bonds of size 1)."""
    n = len(tensors)
    out = []
    for k, t in enumerate(tensors):
        order = ([t.inds.index(bonds[k - 1])] if k > 0 else []) + [t.inds.index(phys[k])]
        if k < n - 1:
            order.append(t.inds.index(bonds[k]))
        a = t.data.permute(*order)
        if k == 0:
            a = a.unsqueeze(0)
        if k == n - 1:
            a = a.unsqueeze(-1)
        out.append(a)
    return out
