"""CUDA: the sweep and log P on a GPU agree with the CPU (skipped without CUDA).

Run by ``benchmarks/run_gpu.sh``. The compiled CPU kernels (tnborn.kernels)
decline CUDA tensors, so on a GPU the plain torch path runs; these tests check
that it gives the CPU's results to rounding.
"""

from __future__ import annotations

import pytest
import torch

from tnborn import MPSBornMachine, SweepTrainer, kernels

from tolerances import rounding_bound

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


def _data(n, num_vars, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n, num_vars), generator=g, dtype=torch.int64)


def test_kernels_decline_cuda_tensors():
    a = torch.rand(4, 2, 3, dtype=torch.float64, device="cuda")
    vec = torch.rand(5, 4, dtype=torch.float64, device="cuda")
    log = torch.zeros(5, dtype=torch.float64, device="cuda")
    x = _data(5, 3, 0).cuda()
    kernels.set_kernels("numba")
    try:
        assert kernels.mps_site_message(a, vec, log, x, 0) is None
        assert kernels.split_matrix(torch.rand(4, 6, dtype=torch.float64, device="cuda"), 0.0, None, 1,
                                    True, "svd") is None
    finally:
        kernels.set_kernels(None)


@pytest.mark.parametrize("batch_size", [None, 9])
def test_sweep_on_cuda_matches_cpu(batch_size):
    data = _data(40, 10, seed=1)
    hist = {}
    for dev in ("cpu", "cuda"):
        model = MPSBornMachine.random(10, 3, seed=0, dtype=torch.float64, device=dev)
        tr = SweepTrainer(model, lr=0.05, cutoff=1e-3, max_bond=6, batch_size=batch_size, descent_steps=3,
                          min_bond=2, seed=0, progress=False)
        hist[dev] = ([h["train_nll"] for h in tr.fit(data.to(dev), loops=2)], model)
    bound = rounding_bound(torch.float64, 2 * 2 * 8 * 3 * (40 + 4 * 36), scale=max(hist["cpu"][0]))
    for a, b in zip(*(hist[d][0] for d in ("cpu", "cuda"))):
        assert abs(a - b) <= bound
    lp_cpu = hist["cpu"][1].log_prob(data)
    lp_gpu = hist["cuda"][1].log_prob(data.cuda()).cpu()
    assert float((lp_cpu - lp_gpu).abs().max()) <= bound


@pytest.mark.parametrize("batch_size", [None, 16])
def test_gradient_steps_on_cuda_do_not_synchronise_per_step(batch_size):
    """torch's synchronisation debug mode warns at every operation that waits for the GPU; a
    loop's count of such warnings does not grow with the gradient steps per bond (the CPU
    counterpart, tests/test_sweep.py, counts the reads back to Python)."""
    import warnings

    data = _data(64, 8, seed=0).cuda()
    counts = {}
    for steps in (1, 6):
        g = torch.Generator().manual_seed(1)
        full = [1] + [2] * 7 + [1]  # uniform [0.05, 1) entries: psi > 0 for every row
        model = MPSBornMachine([(0.05 + 0.95 * torch.rand(full[k], 2, full[k + 1], generator=g,
                                                          dtype=torch.float64)).cuda() for k in range(8)])
        trainer = SweepTrainer(model, lr=0.05, cutoff=1e-3, max_bond=6, descent_steps=steps,
                               batch_size=batch_size, seed=0, progress=False)
        trainer.fit(data, loops=1)  # warm-up: caches, lazy initialisation
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                trainer.fit(data, loops=1)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert trainer.fallbacks == 0
        counts[steps] = sum("synchroniz" in str(w.message) for w in caught)
    assert counts[1] == counts[6], counts
