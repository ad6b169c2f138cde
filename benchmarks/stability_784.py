"""Numerical stability of a long, wide MPS Born machine: N = 784 sites at bond dimension 500.

For float64 and float32, on one CPU thread, this script checks that nothing
overflows, underflows to zero or turns into NaN in

- ``log_prob`` of 100 binarised MNIST images,
- the environments of those images and one two-site gradient step plus SVD
  split (:meth:`tnborn.SweepTrainer.update_bond`) at the centre of the chain,
- exact sampling of 100 configurations (their log-probabilities, and the
  agreement with ``log_prob`` of the drawn samples),
- moving the canonical centre from one end of the chain to the other and
  back (``log Z`` stays 0, ``log_prob`` unchanged);

and records the float32 - float64 difference of ``log_prob`` for the same
state. The float32 model is the float64 one cast (the same state), so the
difference is float32 rounding only.

Memory: a bond-500 chain of 784 binary sites holds about 383 M numbers
(bond dimensions are capped at ``2^k`` near the ends), 3.1 GB in float64 and
1.5 GB in float32; the float64 model is freed before the float32 one is made
(the float32 one is built from the float64 arrays, so the peak is ~4.6 GB).

Usage::

    python benchmarks/stability_784.py                      # N=784, D=500, both dtypes
    python benchmarks/stability_784.py --n 784 --bond 20    # a quick run

writes ``benchmarks/results/stability_784.json`` (``--out`` to change).
Data: ``mnist1k_train_thr50.npy`` from ``$TNBORN_SHARED_DATA`` (default
``../shared/data`` next to the repository); random binary images when absent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tnborn
from tnborn.environments import EnvironmentCache

__all__ = ["load_images", "check_model", "run"]

ROOT = Path(__file__).resolve().parents[1]


def load_images(n_vars: int, count: int) -> tuple[np.ndarray, str]:
    """Return ``count`` binary images of ``n_vars`` pixels and where they came from.

    Parameters
    ----------
    n_vars : int
        Pixels per image.
    count : int
        Number of images.

    Returns
    -------
    images : numpy.ndarray
        ``(count, n_vars)`` int64 0/1.
    source : str
        Description of the data.
    """
    shared = Path(os.environ.get("TNBORN_SHARED_DATA", ROOT.parent / "shared" / "data"))
    path = shared / "mnist1k_train_thr50.npy"
    if path.exists():
        x = tnborn.load_binary(path, limit=count)
        if x.shape[1] >= n_vars:
            return np.ascontiguousarray(x[:, :n_vars]), f"{path.name} (first {count} images, {n_vars} pixels)"
    return tnborn.random_binary(count, n_vars, seed=0).astype(np.int64), "random binary images"


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def check_model(model: tnborn.MPSBornMachine, x: np.ndarray, num_samples: int = 100, seed: int = 0) -> dict[str, Any]:
    """Run every stability check on ``model`` (modified: centre moves, one bond update).

    Parameters
    ----------
    model : MPSBornMachine
        A normalised model with a known centre.
    x : numpy.ndarray
        Images ``(batch, N)``.
    num_samples : int
        Samples to draw.
    seed : int
        Seed of the sampler.

    Returns
    -------
    dict
        Figures and booleans (``ok`` is True when every check passed).
    """
    out: dict[str, Any] = {"dtype": str(model.dtype).replace("torch.", ""),
                           "num_parameters": model.num_parameters(), "max_bond": model.max_bond}
    n = model.num_variables

    t0 = time.perf_counter()
    lp = model.log_prob(x)
    out["log_prob_seconds"] = time.perf_counter() - t0
    out["log_prob_finite"] = _finite(lp)
    out["log_prob_min"], out["log_prob_max"] = float(lp.min()), float(lp.max())
    out["log_prob_mean"] = float(lp.double().mean())
    out["log_norm"] = float(model.log_norm())
    out["log_prob"] = lp.double().tolist()

    t0 = time.perf_counter()
    samples, slp = model.sample(num_samples, seed=seed)
    out["sample_seconds"] = time.perf_counter() - t0
    recomputed = model.log_prob(samples)
    out["sample_log_prob_finite"] = _finite(slp) and _finite(recomputed)
    out["sample_log_prob_min"] = float(slp.min())
    out["sample_log_prob_mean"] = float(slp.double().mean())
    out["sample_vs_log_prob_max_abs"] = float((slp.double() - recomputed.double()).abs().max())

    # canonicalisation: centre to site 0, then to site N-1
    t0 = time.perf_counter()
    model.move_center(0)
    lz0 = float(model.log_norm())
    lp0 = model.log_prob(x)
    model.move_center(n - 1)
    lz1 = float(model.log_norm())
    lp1 = model.log_prob(x)
    out["move_center_seconds"] = time.perf_counter() - t0
    out["move_center_finite"] = all(_finite(a) for a in model.arrays()) and _finite(lp0) and _finite(lp1)
    out["move_center_log_norm"] = [lz0, lz1]
    out["move_center_log_prob_change"] = float(torch.maximum((lp0 - lp).abs().max(), (lp1 - lp).abs().max()))

    # one two-site gradient step + split at the middle bond, with the images' environments
    mid = n // 2
    model.move_center(mid)
    trainer = tnborn.SweepTrainer(model, progress=False, lr=1e-3, descent_steps=1, cutoff=0.0,
                                  max_bond=model.max_bond)
    xt = model.as_configurations(x)
    t0 = time.perf_counter()
    cache = EnvironmentCache(model, xt)
    info = trainer.update_bond(cache, mid, mid - 1)
    out["update_bond_seconds"] = time.perf_counter() - t0
    out["environment_bytes"] = cache.nbytes()
    del cache
    lp2 = model.log_prob(x)
    out["gradient_step_finite"] = all(_finite(model.node_tensor(k).data) for k in (mid - 1, mid)) and _finite(lp2)
    out["gradient_step_bond_dim"] = info["bond_dim"]
    out["gradient_step_nll_change"] = float(-(lp2.double().mean() - lp.double().mean()))
    out["gradient_step_log_norm"] = float(model.log_norm())
    out["ok"] = bool(out["log_prob_finite"] and out["sample_log_prob_finite"] and out["move_center_finite"]
                     and out["gradient_step_finite"] and out["log_prob_max"] < 0
                     and all(abs(v) < 1e-3 for v in out["move_center_log_norm"]))
    return out


def run(n: int, bond: int, dtypes: list[str], images: int, seed: int = 0) -> dict[str, Any]:
    """Build the float64 chain, check it, then check its float32 cast.

    Parameters
    ----------
    n : int
        Number of sites.
    bond : int
        Bond dimension.
    dtypes : list of str
        Subset of ``["float64", "float32"]`` (float64 is always built first).
    images : int
        Number of images for ``log_prob`` and the gradient step.
    seed : int
        Seed of the initialisation.

    Returns
    -------
    dict
        The results per dtype and the float32 - float64 comparison.
    """
    x, source = load_images(n, images)
    result: dict[str, Any] = {"n": n, "bond": bond, "images": images, "data": source,
                              "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "tnborn": tnborn.__version__, "machine": platform.machine(),
                              "python": platform.python_version()}
    t0 = time.perf_counter()
    m64 = tnborn.MPSBornMachine.random(n, bond_dim=bond, seed=seed, dtype="float64")
    result["init_seconds"] = time.perf_counter() - t0
    lp64 = m64.log_prob(x).double()
    m32 = None
    if "float32" in dtypes:  # the same state, cast (built before the float64 checks move the centre)
        m32 = tnborn.MPSBornMachine.from_arrays([a.to(torch.float32) for a in m64.arrays()], m64.config())
        m32._center = m64.center
    if "float64" in dtypes:
        result["float64"] = check_model(m64, x, seed=seed)
        result["float64"]["peak_rss_gb"] = _rss_gb()
    del m64
    if m32 is not None:
        lp32 = m32.log_prob(x).double()
        diff = (lp32 - lp64).abs()
        result["float32_vs_float64"] = {"max_abs_log_prob_diff": float(diff.max()),
                                        "mean_abs_log_prob_diff": float(diff.mean()),
                                        "max_rel_log_prob_diff": float((diff / lp64.abs()).max())}
        result["float32"] = check_model(m32, x, seed=seed)
        result["float32"]["peak_rss_gb"] = _rss_gb()
    result["ok"] = all(result[d]["ok"] for d in dtypes if d in result)
    return result


def main() -> None:
    """Parse arguments, run, write JSON and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=784)
    parser.add_argument("--bond", type=int, default=500)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stability_784.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = run(args.n, args.bond, args.dtypes.split(","), args.images)
    result["total_seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for d in ("float64", "float32"):
        if d in result:
            r = result[d]
            print(f"{d}: ok={r['ok']} log_prob in [{r['log_prob_min']:.2f}, {r['log_prob_max']:.2f}], "
                  f"samples mean log P {r['sample_log_prob_mean']:.2f}, "
                  f"centre-move log Z {r['move_center_log_norm']}, "
                  f"step NLL change {r['gradient_step_nll_change']:.3g}, peak RSS {r['peak_rss_gb']:.1f} GB")
    if "float32_vs_float64" in result:
        print("float32 - float64 log_prob:", result["float32_vs_float64"])
    print(f"written {out} ({result['total_seconds']:.0f} s)")
    if not math.isfinite(result["total_seconds"]) or not result["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
