"""Benchmark of the MPS Born machine at the authors' MNIST settings (one command, JSON out).

Usage (from the repository root)::

    python benchmarks/bench_mps.py                 # full run (~10-20 min on 2 cores)
    python benchmarks/bench_mps.py --quick         # ~1-2 min
    python benchmarks/bench_mps.py --only large    # 10,000 images, one loop at max bond 100
    python benchmarks/bench_mps.py --device cuda --dtype float32 --name gpu_f32

It writes ``benchmarks/results/<name>.json`` (or ``--out``). What it measures,
on ``mnist1k_train_thr50.npy`` (``--data``, default ``../shared/data`` next to
the repository):

- ``train_max30`` / ``train_max100``: the authors' schedule, one start loop at
  cutoff 0.3, lr 0.05, batch 100, 10 steps per bond; then batch 50, 10 steps
  per bond, lr 1e-3, cutoff 5e-5 and max bond 30 (resp. 100), always keeping
  at least 2 singular values (the authors' Dmin): seconds of every
  half-sweep (wall and process CPU) and the NLL after it;
- ``fullbatch_loop_max100``: one loop of 1566 bond updates, one full-batch
  step each (batch 1000, lr 5e-3, cutoff 0), on a random bond-100 state (every
  bond at 100 from the first update: the worst case);
- ``log_prob_1000`` and ``sample_1000``: log P of the 1000 images and 1000
  exact samples on a random bond-100 MPS (``MPSBornMachine.random(784, 100)``)
  and on the trained max-bond-100 state, median of 5; log P also with the
  plain torch path (``set_kernels("torch")``), alternating with the default
  in the same run, with the ratio and the largest difference between the two
  (sampling with the same seeds on both paths: whether the samples agree);
- ``chain_eval`` (only with ``--only``): log P of the 1000 images and 1000
  samples on random chains of bond 2 to 200, compiled against the plain torch
  path, alternating in the same run;
- ``threads``: the half-sweep at max bond 30 with 1 and 2 torch threads,
  interleaved;
- ``reference``: the same half-sweep with a plain-numpy implementation in the
  authors' style (``reference_numpy.py``), measured in the same run: tnborn's
  times are reported as ratios to it;
- peak resident memory (``ru_maxrss``) after each section and the bytes held
  by the environment cache.

The machine is shared and noisy: every figure is a median of repetitions,
reported both as wall-clock seconds and as process CPU seconds (which other
processes' load inflates less), with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# numpy's BLAS threads for the reference: fixed before numpy is imported
_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--threads", type=int, default=None)
_threads_arg = _pre.parse_known_args()[0].threads
if _threads_arg is None:  # tnborn's default (tnborn.backend.default_num_threads), without importing it
    _threads_arg = os.environ.get("TNBORN_NUM_THREADS") or max(1, min(4, (os.cpu_count() or 1) // 2))
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(_threads_arg))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import tnborn  # noqa: E402
from tnborn import MPSBornMachine, SweepTrainer  # noqa: E402
from tnborn.training.callbacks import Callback  # noqa: E402

N_PIXELS = 784
TARGETS = {  # seconds on the 2-core development CPU (see the task notes)
    "half_sweep_max30": 0.7,
    "half_sweep_max100": 2.0,
    "fullbatch_loop_max100": 15.0,
    "sample_1000_bond100": 0.5,
    "log_prob_1000_bond100": 0.3,
    "authors_nll_10_loops_max30": 106.8,
}

NOTES = [
    "seconds: wall clock (median); cpu_seconds: process CPU time (median), steadier on a shared machine",
    "bond-100 log P / sampling state: MPSBornMachine.random(784, 100) (centre at the last site, so the "
    "sampler needs no canonicalisation), and the state trained at max bond 100 (train_max100)",
    "full-batch loop state: MPSBornMachine.random(784, 100), every bond at 100 from the first update",
    "threads: torch threads = tnborn.backend.default_num_threads() = min(4, cores // 2); on the shared "
    "2-core machine 2 threads were as fast as 1 when the other core was idle and 10-30x slower when it "
    "was busy (OpenMP threads waiting for a core), see the threads section",
    "reference: benchmarks/reference_numpy.py, an independent plain-numpy implementation in the authors' "
    "style, timed in the same run; not the authors' own code",
]

# --------------------------------------------------------------------------- helpers
def machine_info(device: str, dtype: str) -> dict:
    """Platform, CPU model, cores, library versions."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import quimb

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "tnborn_default_threads": tnborn.backend.default_num_threads(),
        "torch": torch.__version__,
        "quimb": quimb.__version__,
        "numpy": np.__version__,
        "tnborn": tnborn.__version__,
        "dtype": dtype,
        "device": device,
        "load_average_start": os.getloadavg(),
    }
    if device.startswith("cuda"):
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tnborn"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
        info["git_commit"] = rev.stdout.strip() or None
        info["tnborn_tree_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sync(device: str) -> None:
    """Wait for queued GPU work so that timers measure it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, reps: int, device: str) -> dict:
    """Run ``fn`` ``reps`` times; medians of wall and process CPU seconds (plus all values)."""
    wall, cpu = [], []
    out = None
    for _ in range(reps):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall_median": statistics.median(wall), "cpu_median": statistics.median(cpu),
            "wall": wall, "cpu": cpu, "result": out}


class HalfSweepClock(Callback):
    """Records process CPU seconds of every half-sweep (the trainer records wall seconds)."""

    def __init__(self, device: str):
        self.device = device
        self.cpu: list[float] = []
        self._c0 = None

    def on_fit_start(self, trainer, total_steps):  # noqa: D102
        sync(self.device)
        self._c0 = time.process_time()

    def on_half_sweep_end(self, trainer, record):  # noqa: D102
        sync(self.device)
        now = time.process_time()
        self.cpu.append(now - self._c0)
        self._c0 = now


def load_data(path: Path, device: str) -> torch.Tensor:
    """The 1000 training images as an int64 tensor on ``device``."""
    x = np.load(path / "mnist1k_train_thr50.npy")
    return torch.as_tensor(x.astype(np.int64), device=device)


def start_loop(x, dtype, device, seed=0):
    """The authors' first loop (cutoff 0.3, lr 0.05, batch 100, 10 steps) from bond 2."""
    model = MPSBornMachine.random(N_PIXELS, 2, seed=seed, dtype=dtype, device=device)
    clock = HalfSweepClock(device)
    trainer = SweepTrainer(model, lr=0.05, cutoff=0.3, batch_size=100, descent_steps=10, min_bond=2,
                           seed=seed, progress=False, callbacks=[clock])
    trainer.fit(x, loops=1)
    return model, trainer, clock


def records(trainer, clock, first=0) -> list[dict]:
    """Compact per-half-sweep records."""
    out = []
    for rec, cpu in zip(trainer.history[first:], clock.cpu[first:]):
        dims = rec["bond_dims"]
        out.append({"half_sweep": rec["half_sweep"], "loop": rec["loop"], "train_nll": rec["train_nll"],
                    "seconds": rec["seconds"], "cpu_seconds": cpu, "max_bond": rec["max_bond"],
                    "mean_bond": float(np.mean(dims)), "bond_dims": list(dims)})
    return out


def train_capped(model, x, max_bond, half_sweeps, device, seed=0):
    """Half-sweeps at batch 50, 10 steps, lr 1e-3, cutoff 5e-5 and ``max_bond``."""
    clock = HalfSweepClock(device)
    trainer = SweepTrainer(model, lr=1e-3, cutoff=5e-5, max_bond=max_bond, batch_size=50, min_bond=2,
                           descent_steps=10, seed=seed, progress=False, callbacks=[clock])
    loops, rest = divmod(half_sweeps, 2)
    trainer.fit(x, loops=loops)
    if rest:  # one more half-sweep (the trainer runs whole loops)
        trainer.stop_training = False
        stopper = _StopAfter(1)
        trainer.callbacks.append(stopper)
        trainer.fit(x, loops=1)
        trainer.callbacks.remove(stopper)
    return trainer, clock


class _StopAfter(Callback):
    """Stop a fit after ``n`` half-sweeps."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def on_half_sweep_end(self, trainer, record):  # noqa: D102
        self.seen += 1
        if self.seen >= self.n:
            trainer.stop_training = True


def summarise(recs: list[dict], cap: int) -> dict:
    """Median seconds of the half-sweeps at the cap (or of the last ones if it was not reached)."""
    at_cap = [r for r in recs if r["max_bond"] >= cap]
    use = at_cap if at_cap else recs[-max(1, len(recs) // 2):]
    return {"half_sweeps_used": len(use), "reached_cap": bool(at_cap),
            "seconds_median": statistics.median(r["seconds"] for r in use),
            "cpu_seconds_median": statistics.median(r["cpu_seconds"] for r in use),
            "final_nll": recs[-1]["train_nll"]}


# --------------------------------------------------------------------------- sections
def section_train(res, x, args):
    """Start loop, then max bond 30 and (separately) 100."""
    model, trainer, clock = start_loop(x, args.dtype, args.device)
    res["start_loop"] = {"records": records(trainer, clock),
                         "seconds": sum(r["seconds"] for r in trainer.history),
                         "nll": trainer.history[-1]["train_nll"]}
    start = model.copy()
    n30 = 4 if args.quick else 20
    t30, c30 = train_capped(model, x, 30, n30, args.device)
    recs = records(t30, c30)
    res["train_max30"] = {"half_sweeps": recs, "summary": summarise(recs, 30),
                          "cache_bytes": t30._cache.nbytes(), "peak_rss_mb": peak_rss_mb()}
    if not args.quick:
        per_loop = [r["train_nll"] for r in recs if float(r["loop"]).is_integer()]
        res["train_max30"]["nll_after_each_loop_at_max30"] = per_loop
        res["train_max30"]["nll_after_10_loops"] = per_loop[9] if len(per_loop) >= 10 else None
    n100 = 3 if args.quick else 10
    model100 = start.copy()
    t100, c100 = train_capped(model100, x, 100, n100, args.device)
    recs = records(t100, c100)
    res["train_max100"] = {"half_sweeps": recs, "summary": summarise(recs, 100),
                           "cache_bytes": t100._cache.nbytes(), "peak_rss_mb": peak_rss_mb()}
    return model, model100


def section_fullbatch(res, x, args):
    """One full-batch loop (1566 updates, 1 step each) at max bond 100 on a random bond-100 state."""
    reps = 1 if args.quick else 2
    total = 2 * (N_PIXELS - 2)
    walls, cpus, nlls = [], [], []
    for r in range(reps):
        model = MPSBornMachine.random(N_PIXELS, 100, seed=r, dtype=args.dtype, device=args.device)
        trainer = SweepTrainer(model, lr=5e-3, cutoff=0.0, max_bond=100, batch_size=None,
                               descent_steps=1, progress=False)
        sync(args.device)
        t0, c0 = time.perf_counter(), time.process_time()
        if args.quick:  # cache fill, then 150 updates extrapolated to the loop
            trainer.fit(x, loops=0)
            steps = [st for half in model.sweep_schedule() for st in half][:150]
            trainer._cache.block_environments(model.merge(*steps[0]))
            sync(args.device)
            fill_w, fill_c = time.perf_counter() - t0, time.process_time() - c0
            for source, target in steps:
                trainer.update_bond(trainer._cache, source, target)
            done, nll = len(steps), None
            sync(args.device)
            walls.append(fill_w + (time.perf_counter() - t0 - fill_w) * total / done)
            cpus.append(fill_c + (time.process_time() - c0 - fill_c) * total / done)
        else:
            trainer.fit(x, loops=1)
            done, nll = total, trainer.history[-1]["train_nll"]
            sync(args.device)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        nlls.append(nll)
        cache = trainer._cache.nbytes()
        del trainer, model
    res["fullbatch_loop_max100"] = {
        "state": "MPSBornMachine.random(784, 100): every bond at 100 from the first update",
        "bond_updates": total, "bond_updates_timed": done,
        "extrapolated": done < total, "seconds_median": statistics.median(walls),
        "cpu_seconds_median": statistics.median(cpus), "seconds": walls, "cpu_seconds": cpus,
        "nll_after": nlls, "cache_bytes": cache, "peak_rss_mb": peak_rss_mb()}


def _alternating(fn, reps: int, device: str, seeded: bool = False) -> tuple[dict, dict]:
    """``fn`` on the default path and on the plain torch path (``set_kernels("torch")``), alternating.

    Returns the wall / CPU seconds and the last result of each (``fn(seed)`` with the
    same seed on both paths when ``seeded``).
    """
    choice = tnborn.kernels.get_kernels()
    out = {"default": {"wall": [], "cpu": []}, "plain": {"wall": [], "cpu": []}}
    try:
        for rep in range(reps):
            for path, kern in (("default", choice), ("plain", "torch")):
                tnborn.kernels.set_kernels(kern)
                t = timed((lambda: fn(rep)) if seeded else fn, 1, device)
                out[path]["wall"].append(t["wall"][0])
                out[path]["cpu"].append(t["cpu"][0])
                out[path]["result"] = t["result"]
    finally:
        tnborn.kernels.set_kernels(choice)
    return out["default"], out["plain"]


def _against_plain(default: dict, plain: dict) -> dict:
    """The plain path's median CPU seconds, its ratio to the default's, the largest difference."""
    a, b = default["result"], plain["result"]
    if isinstance(a, tuple):  # (samples, log-probabilities): compare the log-probabilities
        a, b = a[1], b[1]
    return {"plain_path_cpu_seconds_median": statistics.median(plain["cpu"]),
            "plain_path_seconds": plain["wall"],
            "plain_over_default_cpu": statistics.median(plain["cpu"]) / statistics.median(default["cpu"]),
            "max_abs_difference_to_plain_path": float((a - b).abs().max())}


def section_logp_sample(res, x, args, trained=None):
    """log P of the 1000 images and 1000 exact samples, median of 5."""
    reps = 3 if args.quick else 5
    states = {"random_bond100": MPSBornMachine.random(N_PIXELS, 100, seed=0, dtype=args.dtype,
                                                      device=args.device)}
    if trained is not None:
        states["trained_max100"] = trained
    out_lp, out_s = {}, {}
    for name, model in states.items():
        lp, plain = _alternating(lambda: model.log_prob(x), reps, args.device)
        out_lp[name] = {"seconds_median": statistics.median(lp["wall"]),
                        "cpu_seconds_median": statistics.median(lp["cpu"]),
                        "seconds": lp["wall"], "max_bond": model.max_bond,
                        "mean_bond": float(np.mean(model.bond_dims())), "bond_dims": list(model.bond_dims()),
                        "nll": float(-lp["result"].mean()), **_against_plain(lp, plain)}
        # the same seeds on both paths: the samples are compared too
        sm, plain = _alternating(lambda seed: model.sample(1000, seed=seed), reps, args.device, seeded=True)
        out_s[name] = {"seconds_median": statistics.median(sm["wall"]),
                       "cpu_seconds_median": statistics.median(sm["cpu"]),
                       "seconds": sm["wall"], "max_bond": model.max_bond, "centre": model.center,
                       **_against_plain(sm, plain),
                       "same_samples_as_plain_path": bool(torch.equal(sm["result"][0], plain["result"][0])),
                       "ones_fraction": float(sm["result"][0].double().mean())}
    res["log_prob_1000"] = out_lp
    res["sample_1000"] = out_s
    res["log_prob_1000"]["peak_rss_mb"] = peak_rss_mb()


def section_chain_eval(res, x, args):
    """log P of the 1000 images and 1000 samples on random chains of several bonds: the compiled
    chain kernels against the plain torch path, alternating in the same run (median of 3)."""
    bonds = (2, 26, 100) if args.quick else (2, 10, 26, 50, 100, 200)
    out = {}
    for bond in bonds:
        model = MPSBornMachine.random(N_PIXELS, bond, seed=0, dtype=args.dtype, device=args.device)
        lp, plain_lp = _alternating(lambda: model.log_prob(x), 3, args.device)
        sm, plain_sm = _alternating(lambda seed: model.sample(1000, seed=seed), 3, args.device, seeded=True)
        out[str(bond)] = {
            "log_prob_cpu_seconds_median": statistics.median(lp["cpu"]),
            "log_prob_seconds": lp["wall"], "log_prob": _against_plain(lp, plain_lp),
            "sample_cpu_seconds_median": statistics.median(sm["cpu"]),
            "sample_seconds": sm["wall"], "sample": _against_plain(sm, plain_sm),
            "same_samples_as_plain_path": bool(torch.equal(sm["result"][0], plain_sm["result"][0]))}
    res["chain_eval"] = out


def _half_sweep_once(model, x, device):
    """One half-sweep at the max-bond-30 settings on a copy of ``model``; wall and CPU seconds."""
    trainer, clock = train_capped(model.copy(), x, 30, 1, device)
    return trainer.history[-1]["seconds"], clock.cpu[-1], trainer.history[-1]["train_nll"]


def section_threads(res, x, args, model30):
    """Half-sweep at max bond 30 with 1 and 2 threads, interleaved; log P / sampling too."""
    reps = 2
    before = torch.get_num_threads()
    out = {}
    for n in (1, 2):
        out[n] = {"half_sweep_wall": [], "half_sweep_cpu": [], "log_prob_wall": [], "sample_wall": []}
    big = MPSBornMachine.random(N_PIXELS, 100, seed=0, dtype=args.dtype, device=args.device)
    for _ in range(reps):
        for n in (1, 2):
            torch.set_num_threads(n)
            w, c, _ = _half_sweep_once(model30, x, args.device)
            out[n]["half_sweep_wall"].append(w)
            out[n]["half_sweep_cpu"].append(c)
            out[n]["log_prob_wall"].append(timed(lambda: big.log_prob(x), 1, args.device)["wall_median"])
            out[n]["sample_wall"].append(timed(lambda: big.sample(1000, seed=0), 1, args.device)["wall_median"])
    torch.set_num_threads(before)
    res["threads"] = {str(n): {k + "_median": statistics.median(v) for k, v in d.items()} | d
                      for n, d in out.items()}
    res["threads"]["note"] = ("half-sweep from the trained max-bond-30 state; log P / sampling on a random "
                              "bond-100 MPS; thread counts interleaved so both see the same load")


def section_reference(res, x, args, model30):
    """The authors'-style numpy half-sweep on the same state, and tnborn's on the same state."""
    from reference_numpy import NumpyMPSReference

    sites = [a.detach().cpu().to(torch.float64).numpy() for a in model30.site_arrays()]
    n = N_PIXELS
    # a leftward half-sweep from the right end, like tnborn's first half-sweep
    m = model30.copy()
    m.move_center(n - 1)
    sites = [a.detach().cpu().to(torch.float64).numpy() for a in m.site_arrays()]
    ref = NumpyMPSReference(sites, x.cpu().numpy(), n - 1)
    bonds = list(range(n - 2, 0, -1))
    rng = np.random.default_rng(0)
    t0, c0 = time.perf_counter(), time.process_time()
    for k in bonds:
        batches = [rng.integers(0, x.shape[0], 50) for _ in range(10)]
        ref.update_bond(k, True, 1e-3, 5e-5, 30, batches)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    scale = (n - 2) / len(bonds)
    ours_w, ours_c = [], []
    for _ in range(2 if args.quick else 3):
        w, c, ours_nll = _half_sweep_once(m, x, args.device)
        ours_w.append(w)
        ours_c.append(c)
    res["reference"] = {
        "what": "plain-numpy two-site update in the authors' style (benchmarks/reference_numpy.py), "
                "leftward half-sweep at max bond 30 from the trained max-bond-30 state",
        "bond_updates_timed": len(bonds), "extrapolated_to": n - 2,
        "numpy_half_sweep_seconds": wall * scale, "numpy_half_sweep_cpu_seconds": cpu * scale,
        "numpy_nll_after": ref.nll(),
        "tnborn_nll_after": ours_nll,
        "tnborn_half_sweep_seconds_median": statistics.median(ours_w),
        "tnborn_half_sweep_cpu_seconds_median": statistics.median(ours_c),
    }
    r = res["reference"]
    r["speedup_wall"] = r["numpy_half_sweep_seconds"] / r["tnborn_half_sweep_seconds_median"]
    r["speedup_cpu"] = r["numpy_half_sweep_cpu_seconds"] / r["tnborn_half_sweep_cpu_seconds_median"]


def section_authors(res, x, args):
    """The authors' own ``MPS_c`` and tnborn side by side (``--authors-code DIR``)."""
    import authors_code
    import roofline

    module = authors_code.import_authors(args.authors_code)
    limits = roofline.measure_limits(reps=5, dtypes=(torch.float64,))["float64"]
    peak = limits["gemm_gflops"]["1024x1024@1024x1024"] * 1e9
    bw = limits["peak_gbs"] * 1e9

    def bound(dims):
        return roofline.loop_bound_seconds(dims, peak, bw)

    out = authors_code.side_by_side(module, x, args.authors_loops, max_bond=30, bound=bound)
    out["authors_code"] = str(Path(args.authors_code).resolve())
    out["gemm_peak_float64_gflops_1thread"] = peak / 1e9
    out["bandwidth_gbs_1thread"] = bw / 1e9
    out["limits_float64_1thread"] = limits
    out["numpy_blas"] = _numpy_blas()
    out["note"] = ("authors: MPScumulant.MPS_c (numpy/scipy) imported from --authors-code; both codes "
                   "in this process, one loop each in turn (alternating who goes first), float64, the "
                   "thread count of --threads for torch and numpy's BLAS; ratios are authors / tnborn; "
                   "roofline bound: benchmarks/roofline.py's bond-update model at the bond dimensions "
                   "after each loop, this CPU's measured 1-thread float64 GEMM peak and bandwidth")
    res["authors"] = out


def _numpy_blas() -> str:
    """Name of numpy's BLAS (for the record)."""
    try:
        cfg = np.show_config(mode="dicts")
        return str(cfg.get("Build Dependencies", {}).get("blas", {}).get("name"))
    except Exception:  # noqa: BLE001 - informative only
        return "unknown"


def large_dataset(path: Path) -> tuple[np.ndarray, str]:
    """10,000 binary images: every shared MNIST set, topped up with shifted copies."""
    g = np.load(path / "mnist_t10k_shared_images.npy")
    parts = [(g > 50).astype(np.uint8),
             np.load(path / "mnist1k_train_thr50.npy").astype(np.uint8),
             np.load(path / "mnist1k_other_thr50.npy").astype(np.uint8)]
    cap = np.load(path / "mnist1k_capacity_thr127.npz")
    parts += [cap["data"].astype(np.uint8), cap["data_test"].astype(np.uint8)]
    x = np.concatenate(parts)
    extra = 10_000 - x.shape[0]
    shifted = np.roll(x[:extra].reshape(-1, 28, 28), 1, axis=2).reshape(-1, N_PIXELS)
    x = np.concatenate([x, shifted])
    what = ("5000 t10k images binarised at >50, the 1000 + 1000 thr50 sets, the 1000 + 1000 capacity "
            f"sets (thr127), and {extra} of the t10k images shifted one pixel right: 10,000 rows, "
            f"{len(np.unique(x, axis=0))} distinct")
    return x, what


def section_large(res, path, args):
    """10,000 images, one loop at max bond 100, peak RSS.

    ``--large-state random100``: a random bond-100 MPS (every bond at 100: the
    largest environment cache) trained with the capacity runs' one-step
    full-batch updates (lr 5e-3, cutoff 0); mini-batch steps from a random
    state overflow (``1/psi`` of badly fitted samples). ``start``: the
    authors' start loop on the 10,000 images, then their mini-batch settings.
    (A state trained on the 1000 images cannot be used: it gives some of the
    other images probability exactly zero, e.g. ink where the 1000 have none.)
    """
    xl, what = large_dataset(path)
    x = torch.as_tensor(xl.astype(np.int64), device=args.device)
    state = args.large_state
    settings = dict(lr=1e-3, cutoff=5e-5, max_bond=100, batch_size=50, descent_steps=10, min_bond=2)
    if state == "random100":
        model = MPSBornMachine.random(N_PIXELS, 100, seed=0, dtype=args.dtype, device=args.device)
        settings = dict(lr=5e-3, cutoff=0.0, max_bond=100, batch_size=None, descent_steps=1)
    else:
        model, _, _ = start_loop(x, args.dtype, args.device)
    dims = model.bond_dims()
    itemsize = torch.empty((), dtype=model.dtype).element_size()
    clock = HalfSweepClock(args.device)
    trainer = SweepTrainer(model, progress=False, callbacks=[clock], **settings)
    rss0 = peak_rss_mb()
    stopper = _StopAfter(1 if args.quick else 2)
    trainer.callbacks.append(stopper)
    trainer.fit(x, loops=1)
    recs = records(trainer, clock)
    res["large"] = {"data": what, "samples": int(x.shape[0]), "start_state": state, "settings": settings,
                    "bond_dims_at_start": {"max": max(dims), "mean": float(np.mean(dims))},
                    "unbounded_cache_estimate_bytes": int(x.shape[0] * sum(dims) * itemsize),
                    "half_sweeps": recs, "cache_bytes_end": trainer._cache.nbytes(),
                    "cache_budget_bytes": trainer._cache.max_bytes,
                    "peak_rss_mb_before_training": rss0, "peak_rss_mb": peak_rss_mb()}


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    """Run the benchmark and write the JSON results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--name", default=None, help="results/<name>.json (default: quick / full / large)")
    p.add_argument("--quick", action="store_true", help="short version (~1-2 min)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: tnborn's default)")
    p.add_argument("--only", nargs="*", default=None,
                   choices=["train", "fullbatch", "logp", "chain_eval", "threads", "reference", "large",
                            "authors"],
                   help="sections to run (default: all but large)")
    p.add_argument("--authors-code", type=Path, default=None,
                   help="folder of a checkout of congzlwag/UnsupGenModbyMPS (holding MPScumulant.py): "
                        "run its MPS_c side by side with tnborn (section 'authors')")
    p.add_argument("--authors-loops", type=int, default=10,
                   help="loops at max bond 30 after the start loop in the 'authors' section")
    p.add_argument("--large-state", default="random100", choices=["random100", "start"],
                   help="large section: random bond-100 MPS with full-batch steps, or the authors' "
                        "start loop then their mini-batch steps at max bond 100")
    args = p.parse_args(argv)

    tnborn.set_num_threads(args.threads)
    sections = args.only or ["train", "fullbatch", "logp", "threads", "reference"]
    if args.authors_code is not None and "authors" not in sections:
        sections = list(sections) + ["authors"]
    if "authors" in sections and args.authors_code is None:
        p.error("section 'authors' needs --authors-code DIR")
    name = args.name or ("large" if sections == ["large"] else ("quick" if args.quick else "full"))
    out = args.out or (Path(__file__).resolve().parent / "results" / f"{name}.json")
    res: dict = {"machine": machine_info(args.device, args.dtype), "targets_seconds": TARGETS,
                 "quick": args.quick, "sections": sections, "notes": NOTES}
    t_start = time.perf_counter()
    x = load_data(args.data, args.device)

    def step(label, fn, *a):
        t0 = time.perf_counter()
        out = fn(*a)
        print(f"[bench] {label}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        return out

    model30 = trained100 = None
    if "train" in sections:
        model30, trained100 = step("train", section_train, res, x, args)
    if "fullbatch" in sections:
        step("fullbatch", section_fullbatch, res, x, args)
    if "logp" in sections:
        step("logp/sample", section_logp_sample, res, x, args, trained100)
    if "chain_eval" in sections:
        step("chain_eval", section_chain_eval, res, x, args)
    if model30 is None and ("threads" in sections or "reference" in sections):
        model30, _, _ = start_loop(x, args.dtype, args.device)
        train_capped(model30, x, 30, 4, args.device)
    if "threads" in sections:
        step("threads", section_threads, res, x, args, model30)
    if "reference" in sections:
        step("reference", section_reference, res, x, args, model30)
    if "large" in sections:
        step("large", section_large, res, args.data, args)
    if "authors" in sections:
        step("authors", section_authors, res, x, args)

    res["ratios_to_targets"] = ratios(res)
    res["machine"]["load_average_end"] = os.getloadavg()
    res["machine"]["torch_threads"] = torch.get_num_threads()
    res["total_seconds"] = time.perf_counter() - t_start
    res["peak_rss_mb"] = peak_rss_mb()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=_json_default) + "\n")
    print(json.dumps(res["ratios_to_targets"], indent=1, default=_json_default))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def ratios(res: dict) -> dict:
    """Measured / target (below 1 meets the target), wall and CPU seconds."""
    out = {}

    def put(key, entry, target_key):
        if entry is None:
            return
        out[key] = {"target": TARGETS[target_key], "seconds": entry.get("seconds_median"),
                    "cpu_seconds": entry.get("cpu_seconds_median")}
        out[key]["ratio_wall"] = out[key]["seconds"] / TARGETS[target_key]
        if out[key]["cpu_seconds"] is not None:
            out[key]["ratio_cpu"] = out[key]["cpu_seconds"] / TARGETS[target_key]

    if "train_max30" in res:
        put("half_sweep_max30", res["train_max30"]["summary"], "half_sweep_max30")
        nll = res["train_max30"].get("nll_after_10_loops")
        if nll is not None:
            out["nll_after_10_loops_max30"] = {"target": TARGETS["authors_nll_10_loops_max30"], "nll": nll,
                                               "difference": nll - TARGETS["authors_nll_10_loops_max30"]}
    if "train_max100" in res:
        put("half_sweep_max100", res["train_max100"]["summary"], "half_sweep_max100")
        out["half_sweep_max100"]["reached_cap"] = res["train_max100"]["summary"]["reached_cap"]
    if "fullbatch_loop_max100" in res:
        put("fullbatch_loop_max100", res["fullbatch_loop_max100"], "fullbatch_loop_max100")
    if "sample_1000" in res:
        put("sample_1000_bond100", res["sample_1000"]["random_bond100"], "sample_1000_bond100")
    if "log_prob_1000" in res:
        put("log_prob_1000_bond100", res["log_prob_1000"]["random_bond100"], "log_prob_1000_bond100")
    if "authors" in res and "summary_at_cap" in res["authors"]:
        a = res["authors"]["summary_at_cap"]
        out["speedup_vs_authors_max30"] = {"wall": a["ratio_seconds"], "cpu": a["ratio_cpu_seconds"],
                                           "target": 8.0}
        out["nll_vs_authors"] = res["authors"]["nll_final"]
    if "reference" in res:
        out["speedup_vs_numpy_reference"] = {"wall": res["reference"]["speedup_wall"],
                                             "cpu": res["reference"]["speedup_cpu"]}
    return out


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
