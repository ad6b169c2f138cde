"""Log-amplitudes, log-probabilities and the log-norm by exact contraction.

:class:`Probabilities` is the part of :class:`~tnborn.interface.BornMachine`
that turns configurations into numbers: it validates them, contracts the
network with one-hot selections (a shared batch hyper-index, log-scaled, see
:func:`~tnborn.contraction.contract_log_scaled`) and the doubled network
``<psi|psi>``. Geometries override :meth:`Probabilities._log_amplitude` and
:meth:`Probabilities._log_norm` with faster exact paths.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..backend import check_integer, to_numpy
from ..contraction import contract_log_scaled, onehot
from ..data import validate_binary
from ..errors import DataError

__all__ = ["Probabilities"]

#: Name of the batch hyper-index shared by the selections of one contraction.
BATCH_INDEX = "__batch__"


class Probabilities:
    """Exact ``log |psi(x)|``, ``log Z``, ``log P(x)`` and the NLL of a Born machine.

    A base of :class:`~tnborn.interface.BornMachine`, which supplies the
    network accessors used here.
    """

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
            inputs.append((BATCH_INDEX, self.variable_index(var)))
        mant, log = contract_log_scaled(arrays, inputs, (BATCH_INDEX,), batch_ind=BATCH_INDEX)
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
