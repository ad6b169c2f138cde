"""The compiled chain sweep on and off, alternating in one process: what it changes, operation by operation.

"off" runs every update through the plain one-at-a-time path (with the per-update
numba kernels of ``tnborn.kernels`` where they apply, as before the compiled
sweep existed); "on" is the default. Each repetition starts both from the same
state, on and off in alternating order, so both see the same machine load:

- ``loop_max30``: one loop of the authors' MNIST schedule at max bond 30 (batch
  50, lr 1e-3, cutoff 5e-5, 10 steps, min bond 2), from a state trained to the
  cap (start loop, then 3 loops);
- ``loop_max100``: the same at max bond 100 from a state trained to that cap;
- ``fullbatch_loop_max100``: one loop of 1-step full-batch updates (batch 1000,
  lr 5e-3, cutoff 0, max bond 100) from ``MPSBornMachine.random(784, 100)``
  (``--skip-fullbatch`` leaves it out: ~25 s a run).

Reports median process-CPU seconds per operation and the ratio on / off.

Usage::

    python benchmarks/bench_compiled_ab.py [--reps 3] [--out results/compiled_ab.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import tnborn  # noqa: E402
import tnborn.training.sweep as sweep_module  # noqa: E402

CAPPED = dict(lr=1e-3, cutoff=5e-5, batch_size=50, descent_steps=10, min_bond=2)


def _switch(on: bool) -> None:
    from tnborn.training.compiled import compiled_updates

    sweep_module.compiled_updates = compiled_updates if on else (lambda *args: [])


def _trained(x: torch.Tensor, max_bond: int) -> tnborn.MPSBornMachine:
    model = tnborn.MPSBornMachine.random(784, 2, seed=1)
    trainer = tnborn.SweepTrainer(model, lr=0.05, cutoff=0.3, batch_size=100, descent_steps=10, min_bond=2,
                                  progress=False, seed=0)
    trainer.fit(x, loops=1)
    trainer.fit(x, loops=3, max_bond=max_bond, **CAPPED)
    return model


def _loop_cpu(model, x, **settings) -> tuple[float, float]:
    trainer = tnborn.SweepTrainer(model, progress=False, seed=0, **settings)
    trainer.fit(x, loops=0)
    trainer._cache.log_amplitudes_at(model.center)  # the environments of the first update, outside the timing
    c0 = time.process_time()
    trainer.fit(x, loops=1)
    return time.process_time() - c0, trainer.history[-1]["train_nll"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--skip-fullbatch", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results" / "compiled_ab.json")
    args = p.parse_args(argv)
    from bench_mps import machine_info

    torch.set_num_threads(1)
    x = torch.from_numpy(np.load(args.data / "mnist1k_train_thr50.npy").astype(np.int64))
    states = {"loop_max30": (_trained(x, 30), dict(max_bond=30, **CAPPED)),
              "loop_max100": (_trained(x, 100), dict(max_bond=100, **CAPPED))}
    runs: dict[str, dict[str, list]] = {}
    for rep in range(args.reps):
        order = (True, False) if rep % 2 == 0 else (False, True)
        for name, (state, settings) in states.items():
            for on in order:
                _switch(on)
                cpu, nll = _loop_cpu(state.copy(), x, **settings)
                runs.setdefault(name, {}).setdefault("on" if on else "off", []).append({"cpu": cpu, "nll": nll})
        if not args.skip_fullbatch and rep < 2:
            for on in order:
                _switch(on)
                model = tnborn.MPSBornMachine.random(784, 100, seed=rep)
                cpu, nll = _loop_cpu(model, x, lr=5e-3, cutoff=0.0, max_bond=100, batch_size=None,
                                     descent_steps=1)
                runs.setdefault("fullbatch_loop_max100", {}).setdefault("on" if on else "off", []).append(
                    {"cpu": cpu, "nll": nll})
        print(f"[ab] rep {rep}: " + ", ".join(
            f"{k} on {v['on'][-1]['cpu']:.3f} off {v['off'][-1]['cpu']:.3f}" for k, v in runs.items()),
            file=sys.stderr, flush=True)
    _switch(True)
    summary = {}
    for name, sides in runs.items():
        on = statistics.median(r["cpu"] for r in sides["on"])
        off = statistics.median(r["cpu"] for r in sides["off"])
        summary[name] = {"cpu_seconds_on_median": on, "cpu_seconds_off_median": off, "on_over_off": on / off}
    import roofline

    limits = roofline.measure_limits(reps=5, dtypes=(torch.float64,))["float64"]
    res = {"machine": machine_info("cpu", "float64"), "runs": runs, "summary": summary,
           "gemm_peak_float64_gflops_1thread": limits["gemm_gflops"]["1024x1024@1024x1024"],
           "bandwidth_gbs_1thread": limits["peak_gbs"],
           "note": "compiled chain sweep on (default) and off (every update one at a time), alternating in one "
                   "process from the same states; process CPU seconds of one loop, 1 thread; the NLLs of on "
                   "and off agree to rounding for the mini-batch loops; the full-batch loop from a random "
                   "bond-100 state amplifies rounding differences ~1000x per update (1/psi weights of a "
                   "random-sign state), so its NLLs differ"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
