"""Exact sampling by sequential marginals of the doubled network.

:class:`ExactSampling` is the part of :class:`~tnborn.interface.BornMachine`
that draws independent samples from ``P`` and completes partly known
configurations from ``P(unknown | known)``. The generic sampler contracts the
doubled network once per variable (small networks); tree geometries override
:meth:`ExactSampling._sample_free` with their batched exact samplers.
"""

from __future__ import annotations

from typing import Any

import torch

from ..backend import check_integer, make_generator
from ..contraction import contract_log_scaled, onehot
from ..errors import ConfigError, DeviceError
from ..primitives import draw_categorical
from .probability import BATCH_INDEX

__all__ = ["ExactSampling"]


class ExactSampling:
    """Exact unconditional and conditional sampling of a Born machine.

    A base of :class:`~tnborn.interface.BornMachine`, which supplies the
    network accessors and configuration checks used here.
    """

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
            inputs.append((BATCH_INDEX, ix, ix + "'"))
        # a ones vector carries the batch index even when nothing is determined yet
        arrays.append(torch.ones(x.shape[0], dtype=eye_dtype, device=self.device))
        inputs.append((BATCH_INDEX,))
        mant, _ = contract_log_scaled(arrays, inputs, (BATCH_INDEX, out_ix), batch_ind=BATCH_INDEX)
        # each row is rescaled separately; only ratios within a row matter
        return mant
