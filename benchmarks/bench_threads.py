"""1 thread against 2, side by side in one run: the paper's MNIST loop and the large operations.

Thread counts are fixed when a BLAS library loads (OpenBLAS behind numpy, scipy
and the compiled kernels; MKL/OpenMP behind torch), so every measurement runs in
a fresh subprocess with ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``MKL_NUM_THREADS`` and ``TNBORN_NUM_THREADS`` set to the count under test, and
the counts alternate (1, 2, 1, 2, ...) so that both see the same machine load.
Each subprocess measures:

- ``loop_max30``: median seconds of one loop of the authors' MNIST schedule at
  max bond 30 (start loop, then two loops to reach the cap, then ``--loops``
  timed loops: batch 50, lr 1e-3, cutoff 5e-5, 10 steps, min bond 2);
- ``log_prob_1000`` / ``sample_1000``: log P of the 1000 images and 1000 exact
  samples of a random bond-100 MPS (median of 3).

Usage::

    python benchmarks/bench_threads.py [--reps 2] [--loops 3] [--out results/threads_<name>.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def measure(data: Path, loops: int) -> dict:
    """The measurements of one subprocess (its thread counts come from the environment)."""
    import numpy as np
    import torch

    import tnborn

    x = torch.from_numpy(np.load(data / "mnist1k_train_thr50.npy").astype(np.int64))
    model = tnborn.MPSBornMachine.random(784, 2, seed=1)
    trainer = tnborn.SweepTrainer(model, lr=0.05, cutoff=0.3, batch_size=100, descent_steps=10, min_bond=2,
                                  progress=False, seed=0)
    trainer.fit(x, loops=1)
    capped = dict(lr=1e-3, cutoff=5e-5, max_bond=30, batch_size=50)
    trainer.fit(x, loops=2, **capped)
    walls, cpus = [], []
    for _ in range(loops):
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.fit(x, loops=1, **capped)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    big = tnborn.MPSBornMachine.random(784, 100, seed=0)
    lp, sm = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        big.log_prob(x)
        lp.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        big.sample(1000, seed=0)
        sm.append(time.perf_counter() - t0)
    return {"torch_threads": torch.get_num_threads(), "loop_max30_seconds": walls, "loop_max30_cpu_seconds": cpus,
            "loop_max30_seconds_median": statistics.median(walls),
            "loop_max30_cpu_seconds_median": statistics.median(cpus),
            "nll_after": trainer.history[-1]["train_nll"],
            "log_prob_1000_seconds_median": statistics.median(lp), "sample_1000_seconds_median": statistics.median(sm)}


def run_child(threads: int, data: Path, loops: int) -> dict:
    """One measurement in a subprocess with ``threads`` threads everywhere."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TNBORN_NUM_THREADS"):
        env[key] = str(threads)
    out = subprocess.run([sys.executable, __file__, "--child", "--data", str(data), "--loops", str(loops)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--reps", type=int, default=2, help="subprocesses per thread count (alternating)")
    p.add_argument("--loops", type=int, default=3, help="timed loops per subprocess")
    p.add_argument("--out", type=Path, default=HERE / "results" / "threads_compiled.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.data, args.loops)))
        return 0
    sys.path.insert(0, str(HERE))
    from bench_mps import machine_info

    runs: dict[str, list[dict]] = {"1": [], "2": []}
    for rep in range(args.reps):
        for n in (1, 2) if rep % 2 == 0 else (2, 1):
            runs[str(n)].append(run_child(n, args.data, args.loops))
            last = runs[str(n)][-1]
            print(f"[threads] {n}: loop {last['loop_max30_seconds_median']:.3f} s, log P "
                  f"{last['log_prob_1000_seconds_median']:.3f} s, sample {last['sample_1000_seconds_median']:.3f} s",
                  file=sys.stderr, flush=True)
    keys = ("loop_max30_seconds_median", "loop_max30_cpu_seconds_median", "log_prob_1000_seconds_median",
            "sample_1000_seconds_median")
    summary = {n: {k: statistics.median(r[k] for r in rs) for k in keys} for n, rs in runs.items()}
    summary["ratio_1_over_2"] = {k: summary["1"][k] / summary["2"][k] for k in keys}
    res = {"machine": machine_info("cpu", "float64"), "runs": runs, "summary": summary,
           "note": "each measurement in a fresh subprocess with OMP/OPENBLAS/MKL/TNBORN_NUM_THREADS set to the "
                   "count; counts alternate; ratio_1_over_2 > 1 means 2 threads are faster"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
