"""Side-by-side run of the authors' own code (``MPScumulant.MPS_c``) and tnborn.

Used by ``bench_mps.py --authors-code DIR``: ``DIR`` is a checkout of
congzlwag/UnsupGenModbyMPS that the user provides (the folder holding
``MPScumulant.py``). Nothing of it is copied into tnborn: the module is
imported from ``DIR`` at run time and only its public methods are called.

Both trainers start from the same initial MPS (the authors' ``seed(1)``
uniform random bond-2 tensors), run on the same 1000 images with the same
schedule, in the same process, one loop of each in turn so that both see the
same machine load:

- start loop: cutoff 0.3, lr 0.05, batch 100, 10 steps per bond;
- then loops at batch 50, lr 1e-3, cutoff 5e-5, 10 steps, max bond 30,
  at least 2 singular values kept (the authors' ``minibond``).

The batch streams differ (the authors take consecutive batches from a random
start, tnborn a shuffled stream), so the NLL curves agree statistically, not to
rounding.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["import_authors", "AuthorsRun", "TnbornRun", "side_by_side"]


def import_authors(folder: Path):
    """Import ``MPScumulant`` from ``folder`` (a checkout of the authors' repository).

    Parameters
    ----------
    folder : Path
        Folder containing ``MPScumulant.py``.

    Returns
    -------
    module
        The imported module.

    Raises
    ------
    SystemExit
        With a clear message if the file is not there.
    """
    folder = Path(folder).resolve()
    if not (folder / "MPScumulant.py").is_file():
        raise SystemExit(f"--authors-code: expected {folder}/MPScumulant.py (a checkout of "
                         "congzlwag/UnsupGenModbyMPS), not found")
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("MPScumulant")
    finally:
        sys.path.remove(str(folder))


class AuthorsRun:
    """The authors' ``MPS_c`` driven as in their ``MNIST_main.py`` (output silenced)."""

    def __init__(self, module, data: np.ndarray):
        self.m = module.MPS_c(data.shape[1])  # seeds numpy with 1 and draws the bond-2 tensors
        self.initial = [a.copy() for a in self.m.matrices]
        self.data = data

    def _quiet(self):
        return contextlib.redirect_stdout(io.StringIO())

    def start(self) -> float:
        """The start loop; returns its wall seconds."""
        m = self.m
        t0 = time.perf_counter()
        with self._quiet():
            m.verbose = 0
            m.left_cano()
            m.designate_data(self.data)
            m.init_cumulants()
            m.nbatch = self.data.shape[0] // 100
            m.descenting_step_length = 0.05
            m.descent_steps = 10
            m.cutoff = 0.3
            m.train(1, False)
        return time.perf_counter() - t0

    def set_capped(self, max_bond: int) -> None:
        """The later loops' settings."""
        m = self.m
        m.maxibond = max_bond
        m.nbatch = self.data.shape[0] // 50
        m.descent_steps = 10
        m.descenting_step_length = 1e-3
        m.cutoff = 5e-5
        m.minibond = 2

    def loop(self) -> float:
        """One loop; returns its wall seconds."""
        t0 = time.perf_counter()
        with self._quiet():
            self.m.train(1, False)
        return time.perf_counter() - t0

    def nll(self) -> float:
        """The NLL the authors' code recorded at the end of the last half-sweep."""
        return float(self.m.Loss[-1])

    def bond_dims(self) -> list[int]:
        """Bond dimensions between sites (``bond_dimension[:-1]``)."""
        return [int(b) for b in self.m.bond_dimension[:-1]]


class TnbornRun:
    """tnborn's :class:`~tnborn.SweepTrainer` on the same initial state and schedule."""

    def __init__(self, initial: list[np.ndarray], x: torch.Tensor, seed: int = 0):
        from tnborn import MPSBornMachine, SweepTrainer

        self.model = MPSBornMachine([torch.from_numpy(a.copy()) for a in initial])
        self.x = x
        self.trainer = SweepTrainer(self.model, lr=0.05, cutoff=0.3, batch_size=100, descent_steps=10,
                                    min_bond=2, seed=seed, progress=False)

    def start(self) -> float:
        """The start loop; returns its wall seconds."""
        t0 = time.perf_counter()
        self.trainer.fit(self.x, loops=1)
        return time.perf_counter() - t0

    def set_capped(self, max_bond: int) -> None:
        """The later loops' settings."""
        self._overrides = dict(lr=1e-3, cutoff=5e-5, max_bond=max_bond, batch_size=50, min_bond=2,
                               descent_steps=10)

    def loop(self) -> float:
        """One loop; returns its wall seconds."""
        t0 = time.perf_counter()
        self.trainer.fit(self.x, loops=1, **self._overrides)
        return time.perf_counter() - t0

    def nll(self) -> float:
        """Training NLL after the last half-sweep."""
        return float(self.trainer.history[-1]["train_nll"])

    def bond_dims(self) -> list[int]:
        """Bond dimensions."""
        return list(self.model.bond_dims())


def side_by_side(module, x: torch.Tensor, loops: int, max_bond: int = 30, seed: int = 0,
                 bound=None) -> dict:
    """Run both codes, one loop of each in turn; per-loop seconds, NLL, medians and ratios.

    Parameters
    ----------
    module : module
        The authors' ``MPScumulant``.
    x : torch.Tensor
        ``(samples, N)`` int64 images on the CPU.
    loops : int
        Loops after the start loop.
    max_bond : int
        Cap of the later loops.
    seed : int
        tnborn's batch-stream seed.
    bound : callable, optional
        ``bound(bond_dims) -> seconds``: roofline bound of one loop at these
        bond dimensions (recorded next to tnborn's times).

    Returns
    -------
    dict
        Per-loop records and the summary.
    """
    data = x.cpu().numpy().astype(np.int8)
    authors = AuthorsRun(module, data)
    ours = TnbornRun(authors.initial, x.cpu(), seed=seed)
    runs = {"authors": authors, "tnborn": ours}
    recs: dict[str, list[dict]] = {"authors": [], "tnborn": []}
    start = {}
    for name, run in runs.items():
        wall = run.start()
        start[name] = {"seconds": wall, "nll": run.nll(), "max_bond": max(run.bond_dims()),
                       "mean_bond": float(np.mean(run.bond_dims()))}
        run.set_capped(max_bond)
    # tnborn runs as one fit (its environment cache lives across loops, as in a user's
    # fit(loops=...)); a callback at the end of each tnborn loop runs one authors' loop, so the
    # two alternate loop by loop and see the same machine load
    from tnborn.training.callbacks import Callback

    class _Interleave(Callback):
        def __init__(self):
            self.c0 = self.w0 = None
            self.halves = 0

        def on_fit_start(self, trainer, total_steps):  # noqa: D102
            self.w0, self.c0 = time.perf_counter(), time.process_time()

        def on_half_sweep_end(self, trainer, record):  # noqa: D102
            self.halves += 1
            if self.halves % 2:
                return
            wall, cpu = time.perf_counter() - self.w0, time.process_time() - self.c0
            dims = ours.bond_dims()
            i = self.halves // 2
            # the trainer's own seconds exclude its NLL evaluation and the callbacks
            secs = sum(h["seconds"] for h in trainer.history[-2:])
            rec = {"loop": i, "seconds": secs, "seconds_with_nll": wall, "cpu_seconds": cpu,
                   "nll": ours.nll(), "max_bond": max(dims), "mean_bond": float(np.mean(dims))}
            if bound is not None:
                rec["roofline_bound_seconds"] = bound(dims)
            recs["tnborn"].append(rec)
            c0 = time.process_time()
            wall = authors.loop()
            adims = authors.bond_dims()
            recs["authors"].append({"loop": i, "seconds": wall, "cpu_seconds": time.process_time() - c0,
                                    "nll": authors.nll(), "max_bond": max(adims),
                                    "mean_bond": float(np.mean(adims))})
            print(f"[authors] loop {i}: authors {recs['authors'][-1]['seconds']:.2f} s "
                  f"NLL {recs['authors'][-1]['nll']:.2f} | tnborn {rec['seconds']:.2f} s "
                  f"NLL {rec['nll']:.2f}", file=sys.stderr, flush=True)
            self.w0, self.c0 = time.perf_counter(), time.process_time()

    clock = _Interleave()
    ours.trainer.callbacks.append(clock)
    ours.trainer.fit(ours.x, loops=loops, **ours._overrides)
    ours.trainer.callbacks.remove(clock)
    at_cap = [i for i in range(loops)
              if recs["authors"][i]["max_bond"] >= max_bond and recs["tnborn"][i]["max_bond"] >= max_bond]
    out = {"schedule": {"start_loop": "cutoff 0.3, lr 0.05, batch 100, 10 steps per bond, min bond 2",
                        "later_loops": f"batch 50, lr 1e-3, cutoff 5e-5, 10 steps, max bond {max_bond}, "
                                       "min bond 2",
                        "initial_state": "the authors' MPS_c(784) initial tensors (numpy seed 1, uniform "
                                         "[0, 1), bond 2), used by both"},
           "start_loop": start, "loops": recs, "loops_at_cap": [i + 1 for i in at_cap]}
    if at_cap:
        summ = {}
        for key in ("seconds", "cpu_seconds"):
            a = statistics.median(recs["authors"][i][key] for i in at_cap)
            t = statistics.median(recs["tnborn"][i][key] for i in at_cap)
            summ[f"authors_{key}_median"] = a
            summ[f"tnborn_{key}_median"] = t
            summ[f"ratio_{key}"] = a / t
            summ[f"ratio_{key}_per_loop_median"] = statistics.median(
                recs["authors"][i][key] / recs["tnborn"][i][key] for i in at_cap)
        if bound is not None:
            b = statistics.median(recs["tnborn"][i]["roofline_bound_seconds"] for i in at_cap)
            summ["tnborn_loop_roofline_bound_seconds_median"] = b
            summ["tnborn_cpu_seconds_over_bound"] = summ["tnborn_cpu_seconds_median"] / b
        out["summary_at_cap"] = summ
    out["nll_final"] = {"authors": recs["authors"][-1]["nll"] if loops else start["authors"]["nll"],
                        "tnborn": recs["tnborn"][-1]["nll"] if loops else start["tnborn"]["nll"]}
    out["nll_final"]["difference_tnborn_minus_authors"] = out["nll_final"]["tnborn"] - out["nll_final"]["authors"]
    return out
