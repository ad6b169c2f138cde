"""Roofline view of the benchmark: how far each timed operation is from this machine's limits.

Usage (from the repository root)::

    python benchmarks/roofline.py            # ~1-2 min, writes benchmarks/results/roofline.json

It measures the single-thread limits of this CPU (``torch.set_num_threads(1)``,
float64 and float32): the GEMM rate (median of several ``torch.matmul``, at
1024 x 1024 and at the shapes of our kernels) and the memory bandwidth (median
of a copy and of ``a + b`` on ~200 MB arrays, bytes moved / s). Then, for the
operations timed in ``benchmarks/results/full.json`` (median process CPU
seconds, float64, 1 thread), it counts the arithmetic work and the minimal
memory traffic from the actual shapes and reports the lower-bound time
``max(flops / peak, bytes / bandwidth)`` and the ratio measured / bound.

Counting conventions (stated again in the JSON): a product ``(m x k) @ (k x n)``
is ``2 m k n`` flops; an SVD of an ``n x n`` matrix is ``SVD_CONST * n**3``
flops (``SVD_CONST = 10``: Golub-Kahan bidiagonalisation ~ 8/3 n^3 plus
accumulation of U and V, LAPACK ``gesdd`` is usually quoted between 4 and 20 n^3);
bytes count every operand read once and every result written once (no re-reads),
8 bytes per float64 value.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tnborn import MPSBornMachine  # noqa: E402

__all__ = ["measure_limits", "count_operations", "main"]

N_PIXELS = 784
D_PHYS = 2
SVD_CONST = 10.0
ITEM = 8  # float64 (full.json was run in float64)
RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- machine limits
def _median_seconds(fn, reps: int) -> float:
    """Median process CPU seconds of ``reps`` calls of ``fn`` (after one warm-up call)."""
    fn()
    out = []
    for _ in range(reps):
        c0 = time.process_time()
        fn()
        out.append(time.process_time() - c0)
    return statistics.median(out)


def measure_limits(reps: int = 7, dtypes=(torch.float64, torch.float32)) -> dict:
    """Single-thread GEMM rates and memory bandwidth of this machine.

    Parameters
    ----------
    reps : int
        Repetitions per measurement (the median is kept).
    dtypes : sequence of torch.dtype
        Dtypes to measure.

    Returns
    -------
    dict
        ``{dtype: {"gemm_gflops": {shape: rate}, "peak_gflops": ..., "bandwidth_gbs": {...},
        "peak_gbs": ...}}``.
    """
    g = torch.Generator().manual_seed(0)
    shapes = {"1024x1024@1024x1024": (1024, 1024, 1024),
              "1000x100@100x200": (1000, 100, 200),
              "500x100@100x100": (500, 100, 100),
              "1000x200@200x100": (1000, 200, 100),
              "50x30@30x30": (50, 30, 30)}
    out = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    for dtype in dtypes:
        rates = {}
        for name, (m, k, n) in shapes.items():
            a = torch.randn(m, k, generator=g, dtype=dtype)
            b = torch.randn(k, n, generator=g, dtype=dtype)
            inner = max(1, int(2e8 // (2 * m * k * n)))  # ~0.2 GFLOP per timed call

            def run(a=a, b=b, inner=inner):
                for _ in range(inner):
                    torch.matmul(a, b)

            t = _median_seconds(run, reps)
            rates[name] = 2 * m * k * n * inner / t / 1e9
        item = torch.empty((), dtype=dtype).element_size()
        n_el = 200_000_000 // item
        a = torch.rand(n_el, generator=g, dtype=dtype)
        b = torch.rand(n_el, generator=g, dtype=dtype)
        c = torch.empty_like(a)
        t_copy = _median_seconds(lambda: c.copy_(a), reps)
        t_add = _median_seconds(lambda: torch.add(a, b, out=c), reps)
        bw = {"copy_200MB": 2 * n_el * item / t_copy / 1e9, "add_200MB": 3 * n_el * item / t_add / 1e9}
        del a, b, c
        out[str(dtype).replace("torch.", "")] = {
            "gemm_gflops": rates, "peak_gflops": max(rates.values()),
            "bandwidth_gbs": bw, "peak_gbs": max(bw.values())}
    return out


# --------------------------------------------------------------------------- operation counts
def _chain(dims: list[int], batch: int, branches: int) -> tuple[float, float]:
    """Flops and bytes of a left-to-right pass of ``batch`` message vectors through an MPS.

    ``branches`` = 1: one product per row and site (rows grouped by pixel value,
    log P); ``branches`` = d: every value contracted (conditional weights, sampling).
    """
    flops = bytes_ = 0.0
    full = [1] + list(dims) + [1]
    for k in range(1, N_PIXELS):
        dl, dr = full[k], full[k + 1]
        flops += 2.0 * batch * dl * dr * branches
        bytes_ += ITEM * (dl * D_PHYS * dr + batch * dl + batch * dr * branches)
    return flops, bytes_


def _bond_update(d: float, batch: int, n_env: int, steps: int) -> tuple[float, float]:
    """Flops and bytes of one two-site update at bond ``d`` (the brief's model, see the README)."""
    return bond_update_cost(d, d, d, batch, n_env, steps)


def bond_update_cost(dl: float, dm: float, dr: float, batch: int, n_env: int,
                     steps: int) -> tuple[float, float]:
    """Flops and minimal bytes of one two-site update with outer bonds ``dl``, ``dr``.

    The same model as the README's (``dl = dm = dr = D`` gives it): per step two
    GEMMs ``(B x 2 dl 2) @ (4 dl x dr)``; one SVD of the ``2 dl x 2 dr`` block
    (``SVD_CONST m n min(m, n)``); the new environment of every cached sample,
    ``(n x max(dl, dr)) @ (max(dl, dr) x 2 dm)`` (the larger outer bond: the
    direction of the sweep is not counted, an upper estimate of this term).
    """
    k, d = 4 * dl, dr
    design = batch * k
    gemm = 2 * 2.0 * batch * k * d
    m, n = 2 * dl, 2 * dr
    svd = SVD_CONST * m * n * min(m, n)
    de = max(dl, dr)
    env = 2.0 * n_env * de * 2 * dm
    flops = steps * gemm + svd + env
    bytes_ = ITEM * (steps * (design + batch * d + 2 * k * d) + 2 * m * n + n_env * (de + dm))
    return flops, bytes_


def loop_bound_seconds(dims: list[int], peak_flops: float, bandwidth: float, batch: int = 50,
                       n_env: int = 1000, steps: int = 10) -> float:
    """Roofline lower bound of one loop (both half-sweeps) at bond dimensions ``dims``.

    Parameters
    ----------
    dims : list of int
        ``N - 1`` bond dimensions (those after the loop stand in for the loop's).
    peak_flops, bandwidth : float
        FLOP/s and bytes/s.
    batch, n_env, steps : int
        Mini-batch size, cached samples, gradient steps per bond.

    Returns
    -------
    float
        ``sum over the 2 (N - 2) updates of max(flops / peak, bytes / bandwidth)``.
    """
    full = [1] + list(dims) + [1]
    total = 0.0
    for k in range(len(dims)):  # bond k joins sites k, k+1: outer bonds full[k], full[k + 2]
        times = 1 if k in (0, len(dims) - 1) else 2  # the end bonds are updated once per loop
        f, b = bond_update_cost(full[k], full[k + 1], full[k + 2], batch, n_env, steps)
        total += times * max(f / peak_flops, b / bandwidth)
    return total


def count_operations(full: dict) -> dict:
    """Flops, minimal bytes and measured CPU seconds of the operations in ``full.json``.

    Parameters
    ----------
    full : dict
        The parsed ``benchmarks/results/full.json``.

    Returns
    -------
    dict
        ``{name: {"flops", "bytes", "cpu_seconds", "assumption", "why"}}``.
    """
    ops = {}
    model = MPSBornMachine.random(N_PIXELS, 100, seed=0)  # as bench_mps.section_logp_sample
    dims = list(model.bond_dims())
    batch = 1000
    f, b = _chain(dims, batch, 1)
    ops["log_prob_1000.random_bond100"] = {
        "flops": f, "bytes": b, "cpu_seconds": full["log_prob_1000"]["random_bond100"]["cpu_seconds_median"],
        "assumption": "bond dims of MPSBornMachine.random(784, 100, seed=0); rows grouped by pixel "
                      "value: 2 B Dl Dr per site",
        "why": "783 sequential sites, each a few small GEMMs (~500 x 100 @ 100 x 100) plus a norm, "
               "a gather and a scale: per-call overhead and memory passes over the B x D messages"}
    trained = full["log_prob_1000"]["trained_max100"]
    mean100 = trained["mean_bond"]
    profile = trained.get("bond_dims") or full.get("train_max100", {}).get("half_sweeps", [{}])[-1].get("bond_dims")
    if profile:  # the trained state's own bonds (the last half-sweep's record is the final state)
        f, b = _chain(list(profile), batch, 1)
        assumption = (f"the trained state's recorded bond dimensions (mean {mean100:.1f}, max "
                      f"{max(profile)}): 2 B Dl Dr per site")
    else:  # an older results file without the profile
        f, b = _chain([round(mean100)] * (N_PIXELS - 1), batch, 1)
        assumption = f"every bond at the recorded mean bond {mean100:.1f} (by Jensen a lower bound on sum Dl Dr)"
    ops["log_prob_1000.trained_max100"] = {
        "flops": f, "bytes": b, "cpu_seconds": trained["cpu_seconds_median"], "assumption": assumption,
        "why": "bonds of 2-30 at most sites, 100 in the middle: the small products run below peak "
               "and each site has a fixed cost (one compiled call for the whole chain on the CPU)"}
    for name, state_dims in (("random_bond100", dims), ("trained_max100", profile)):
        rec = full["sample_1000"].get(name)
        if rec is None or not state_dims:
            continue
        # the binary zipper: m A_0 for every row, m A_1 only for the rows that take the value 1
        ones = rec.get("ones_fraction")
        f, b = _chain(list(state_dims), batch, 1 + (ones or 0.0))
        ops[f"sample_1000.{name}"] = {
            "flops": f, "bytes": b, "cpu_seconds": rec["cpu_seconds_median"],
            "assumption": (f"the binary zipper: 2 B Dl Dr (1 + {ones:.3f}) per site, the recorded fraction of ones"
                           if ones is not None else
                           "the binary zipper: at least 2 B Dl Dr per site (m A_0 for every row; m A_1 for "
                           "the rows that take 1 is left out: the results file has no fraction of ones)"),
            "why": "783 sequential sites, each a product, a weight per row, a draw and the product of "
                   "the rows that take 1 (one compiled call on the CPU)"}
    fb = full.get("fullbatch_loop_max100")
    if fb is not None:  # (a run with --only may leave it out)
        f1, b1 = _bond_update(100, batch, batch, 1)
        ops["fullbatch_loop_max100"] = {
            "flops": f1 * fb["bond_updates"], "bytes": b1 * fb["bond_updates"],
            "cpu_seconds": fb["cpu_seconds_median"],
            "assumption": f"{fb['bond_updates']} updates at D = 100, batch 1000, 1 step; per update 2 GEMMs "
                          f"of 2 B 4D D, SVD {SVD_CONST:g} (2D)^3, environments 2 B 2D D",
            "why": "mostly GEMM-bound (B = 1000, D = 100 products run near peak); the rest is the "
                   "200 x 200 SVD's latency and the environment-cache copies"}
    for key, cap in (("train_max30", 30), ("train_max100", 100)):
        if key not in full:
            continue
        recs = [r for r in full[key]["half_sweeps"] if r["max_bond"] >= cap]
        summary = full[key]["summary"]
        if not recs:  # the cap was not reached: the half-sweeps the summary used (the last half)
            recs = full[key]["half_sweeps"][-summary["half_sweeps_used"]:]
        updates = N_PIXELS - 2
        if all("bond_dims" in r for r in recs):  # the actual bond dimensions of every half-sweep
            work = [_half_sweep_work(r["bond_dims"], 50, batch, 10) for r in recs]
            f = statistics.median(w[0] for w in work)
            b = statistics.median(w[1] for w in work)
            reached = "" if summary["reached_cap"] else " not reached"
            assumption = (f"{updates} updates at the recorded bond dimensions of each half-sweep (median "
                          f"over {len(recs)} half-sweeps, max bond {cap}{reached}), "
                          "batch 50, 10 steps, SVD once, environments of all 1000 cached samples updated")
        else:
            mean_d = statistics.median(r["mean_bond"] for r in recs)
            f1, b1 = _bond_update(mean_d, 50, batch, 10)
            f, b = f1 * updates, b1 * updates
            assumption = (f"{updates} updates, every bond at the recorded median mean bond {mean_d:.1f} "
                          f"(records hold only the mean and max bond), batch 50, 10 steps, SVD once, "
                          f"environments of all 1000 cached samples updated")
        ops[f"{key}.half_sweep"] = {
            "flops": f, "bytes": b, "cpu_seconds": summary["cpu_seconds_median"], "assumption": assumption,
            "why": "per update the 10 gradient steps (small products over the ~12 rows of each pixel pair), "
                   "an SVD of <= 2D x 2D (LAPACK latency at these sizes) and the environment message"}
    return ops


def _half_sweep_work(dims: list[int], batch: int, n_env: int, steps: int) -> tuple[float, float]:
    """Flops and bytes of one half-sweep (every bond once) at bond dimensions ``dims``."""
    full = [1] + list(dims) + [1]
    flops = bytes_ = 0.0
    for k in range(len(dims)):
        if k == len(dims) - 1 and len(dims) > 1:
            continue  # a half-sweep updates N - 2 bonds
        f, b = bond_update_cost(full[k], full[k + 1], full[k + 2], batch, n_env, steps)
        flops += f
        bytes_ += b
    return flops, bytes_


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    """Measure the limits, count the operations, write ``results/roofline.json`` and print a table."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS / "full.json",
                   help="bench_mps.py results to compare (default results/full.json)")
    p.add_argument("--out", type=Path, default=RESULTS / "roofline.json")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    full = json.loads(args.results.read_text())
    limits = measure_limits()
    peak = limits["float64"]["gemm_gflops"]["1024x1024@1024x1024"] * 1e9
    bw = limits["float64"]["peak_gbs"] * 1e9
    ops = count_operations(full)
    for op in ops.values():
        t = op["cpu_seconds"]
        op["achieved_gflops"] = op["flops"] / t / 1e9
        op["achieved_gbs"] = op["bytes"] / t / 1e9
        op["bound_seconds"] = max(op["flops"] / peak, op["bytes"] / bw)
        op["bound_by"] = "flops" if op["flops"] / peak >= op["bytes"] / bw else "bytes"
        op["ratio_measured_to_bound"] = t / op["bound_seconds"]
    res = {"limits_single_thread": limits,
           "peak_used": {"gflops_float64": peak / 1e9, "gbs_float64": bw / 1e9,
                         "note": "float64 1024^3 GEMM rate and the best of copy / add bandwidth"},
           "conventions": {"svd_flops": f"{SVD_CONST:g} n^3 for an n x n SVD",
                           "gemm_flops": "2 m k n", "bytes": "operands read once, results written once, 8 B",
                           "measured": "full.json cpu_seconds_median (float64, 1 torch thread)"},
           "full_json_commit": full["machine"].get("git_commit"),
           "load_average": os.getloadavg(), "operations": ops,
           "total_seconds": time.perf_counter() - t0}
    res["results_file"] = str(args.results.name)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"peak float64 GEMM {peak / 1e9:.1f} GFLOP/s (float32 "
          f"{limits['float32']['gemm_gflops']['1024x1024@1024x1024']:.1f}), bandwidth {bw / 1e9:.1f} GB/s")
    print(f"{'operation':34s} {'GFLOP':>8s} {'GB':>7s} {'meas s':>8s} {'GFLOP/s':>8s} {'GB/s':>6s} "
          f"{'bound s':>8s} {'ratio':>6s}")
    for name, op in ops.items():
        print(f"{name:34s} {op['flops'] / 1e9:8.2f} {op['bytes'] / 1e9:7.3f} {op['cpu_seconds']:8.3f} "
              f"{op['achieved_gflops']:8.2f} {op['achieved_gbs']:6.2f} {op['bound_seconds']:8.4f} "
              f"{op['ratio_measured_to_bound']:6.1f}")
    print(f"wrote {args.out} in {res['total_seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
