"""Compare an MPS with a tree tensor network Born machine on the paper's MNIST images.

Both geometries are trained by the same two-site sweep with the same schedule
on ``mnist1k_train_thr50.npy`` and evaluated on ``mnist1k_other_thr50.npy``:
a start loop at cutoff 0.3, lr 0.05, batches of 100, then cutoff 5e-5, lr 1e-3,
10 steps per bond, as in ``reproduce_mnist.py``, but with batches of 200
instead of the authors' 50 in the main loops (``--batch-size``).

With batches of 50 the tree's training diverges (its NLL rises in the second
or third loop, then ``psi = 0`` for a training image). Its canonical form and
cached environments stay exact (``tests/test_tree.py``); the cause is the step
size. The per-image terms ``F^T R / psi`` of the block gradient are far larger
in the tree's merged blocks (up to four virtual legs, no physical one) than in
the MPS's, so at lr 1e-3 a step on 50 images over-fits them and pushes other
images to tiny amplitudes, which enlarges their terms further. The tree is
stable at batches of 50 with lr 3e-4, or at lr 1e-3 with batches of 200 or the
full set; the MPS reaches the same NLL with batches of 50 or 200.

The tree (Cheng, Wang, Xiang, Zhang, PRB 99, 155131 (2019)) follows the 2-D
pixel hierarchy (``layout="image"``). Its nodes have three bonds, so its
parameter count grows as ``D^3`` against ``D^2`` for the MPS: unless
``--mps-max-bond`` is given, the MPS cap is chosen so that the two models
have about the same number of parameters at full bond dimension; the
parameter counts actually reached are reported.

Usage::

    python examples/compare_geometries.py --out runs/compare              # tree Dmax 8, 10 loops
    python examples/compare_geometries.py --tree-max-bond 6 --loops 6
    python examples/compare_geometries.py --quick                          # 300 images, small bonds
    python examples/compare_geometries.py --batch-size 50                  # the authors' batches: tree diverges

Outputs in ``--out``: ``comparison.json``, ``comparison.md``,
``comparison.png`` (train and held-out NLL per model), ``samples_<geometry>.png``
and ``history_<geometry>.png``. A geometry that is not registered, or whose
training fails, is reported with its error instead of numbers.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

__all__ = ["build_model", "full_rank_parameters", "matched_mps_bond", "build_parser", "main"]

SCRIPT = "compare_geometries"
N_PIXELS = 784
IMAGE_SHAPE = (28, 28)


def build_model(geometry: str, bond_dim: int, seed: int, env: dict[str, Any]) -> Any:
    """A random model of ``geometry`` for 28x28 images.

    Parameters
    ----------
    geometry : str
        ``"mps"`` or ``"tree"`` (any registered geometry whose ``random``
        takes the MPS arguments).
    bond_dim : int
        Initial bond dimension.
    seed : int
        Initialisation seed.
    env : dict
        ``device`` and ``dtype``.

    Returns
    -------
    tnborn.BornMachine
        The model.
    """
    import tnborn

    cls = tnborn.get_geometry(geometry)
    kwargs: dict[str, Any] = {"bond_dim": bond_dim, "seed": seed, "dtype": env["dtype"], "device": env["device"]}
    if geometry == "tree":
        kwargs.update(layout="image", image_shape=IMAGE_SHAPE)
    return cls.random(N_PIXELS, **kwargs)


def full_rank_parameters(geometry: str, bond_dim: int) -> int:
    """Parameters of a model whose bonds are all at ``bond_dim`` (or their exact maximum).

    Parameters
    ----------
    geometry : str
        Geometry name.
    bond_dim : int
        Bond dimension.

    Returns
    -------
    int
        ``num_parameters()`` of such a model.
    """
    if geometry == "mps":  # closed form: bond k is capped by min(D, d^(k+1), d^(N-k-1))
        d = 2
        dims = [1] + [min(bond_dim, d ** min(k + 1, N_PIXELS - k - 1, 62)) for k in range(N_PIXELS - 1)] + [1]
        return int(sum(dims[k] * d * dims[k + 1] for k in range(N_PIXELS)))
    import torch

    env = {"dtype": torch.float64, "device": "cpu"}
    return int(build_model(geometry, bond_dim, 0, env).num_parameters())


def matched_mps_bond(target_parameters: int, largest: int = 512) -> int:
    """The MPS bond dimension whose full-rank parameter count is closest to a target.

    Parameters
    ----------
    target_parameters : int
        Parameter count to match.
    largest : int
        Largest bond dimension considered.

    Returns
    -------
    int
        The bond dimension.
    """
    lo, hi = 1, largest
    while lo < hi:  # smallest D with count >= target (counts grow with D)
        mid = (lo + hi) // 2
        if full_rank_parameters("mps", mid) >= target_parameters:
            hi = mid
        else:
            lo = mid + 1
    candidates = [d for d in (lo - 1, lo) if d >= 1]
    return min(candidates, key=lambda d: abs(full_rank_parameters("mps", d) - target_parameters))


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of this script.

    Returns
    -------
    argparse.ArgumentParser
        The parser.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree-max-bond", type=int, default=None, help="tree bond cap (full 8, quick 4, smoke 2)")
    p.add_argument("--mps-max-bond", type=int, default=None,
                   help="MPS bond cap (default: matched to the tree's full-rank parameter count)")
    p.add_argument("--loops", type=int, default=None, help="loops, the start loop included (full 10, quick 2)")
    p.add_argument("--n-train", type=int, default=None, help="training images (full 1000, quick 300)")
    p.add_argument("--n-test", type=int, default=None, help="held-out images (full 1000, quick 300)")
    p.add_argument("--batch-size", type=int, default=200,
                   help="mini-batch size after the start loop (default 200; the authors' MPS runs use 50, "
                        "at which the tree diverges at lr 1e-3)")
    p.add_argument("--geometries", nargs="+", default=["mps", "tree"], help="geometries to compare")
    p.add_argument("--samples", type=int, default=16, help="samples per geometry in the figures")
    return C.add_common_arguments(p, SCRIPT)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    mode = C.mode_of(args)
    tree_d, loops, n_train, n_test = {"smoke": (2, 1, 100, 100), "quick": (4, 2, 300, 300),
                                      "full": (8, 10, None, None)}[mode]
    tree_d = args.tree_max_bond or tree_d
    n_train = args.n_train or n_train
    n_test = args.n_test or n_test
    start_batch, batch = 100, args.batch_size
    if n_train is not None:
        start_batch, batch = min(start_batch, n_train), min(batch, n_train)
    return {
        "mode": mode,
        "tree_max_bond": tree_d,
        "mps_max_bond": args.mps_max_bond,  # resolved in main
        "loops": args.loops or loops,
        "n_train": n_train,
        "n_test": n_test,
        "init_bond": 2,
        "min_bond": 2,
        "descent_steps": 10,
        "start": {"loops": 1, "cutoff": 0.3, "lr": 0.05, "batch_size": start_batch},
        "main": {"cutoff": 5e-5, "lr": 1e-3, "batch_size": batch},
        "seed": args.seed,
    }


def _train(geometry: str, max_bond: int, train: np.ndarray, test: np.ndarray, s: dict[str, Any],
           env: dict[str, Any], progress: bool, holder: dict[str, Any]) -> tuple[Any, Any]:
    import tnborn

    model = build_model(geometry, s["init_bond"], s["seed"], env)
    schedule = model.sweep_schedule()
    steps_per_loop = sum(len(h) for h in schedule)
    bar = C.BondProgress(s["loops"] * steps_per_loop, f"{geometry} Dmax={max_bond}", enabled=progress)
    st, mn = s["start"], s["main"]
    # the authors' two phases as per-loop schedules: the start loop(s), then the main values
    schedule = {key: [st[key]] * st["loops"] + [mn[key]] for key in ("lr", "cutoff", "batch_size")}
    trainer = tnborn.SweepTrainer(model, descent_steps=s["descent_steps"], max_bond=max_bond,
                                  min_bond=s["min_bond"], seed=s["seed"], progress=False, callbacks=[bar],
                                  **schedule)
    holder["trainer"] = trainer  # lets the caller report how far a failed run got
    try:
        trainer.fit(train, s["loops"], test_data=test)
    finally:
        bar.close()
    return model, trainer


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns the exit code (0 unless the inputs are missing).

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit code.
    """
    args = build_parser().parse_args(argv)
    env = C.setup_torch(args)
    s = _settings(args)
    try:
        data_dir = C.resolve_data_dir(args.data_dir)
        train = C.load_set(data_dir, "mnist1k_train_thr50.npy", limit=s["n_train"])
        test = C.load_set(data_dir, "mnist1k_other_thr50.npy", limit=s["n_test"])
    except C.MissingDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = C.prepare_output(args.out)
    import tnborn
    from tnborn import plotting

    available = tnborn.available_geometries()
    caps: dict[str, int] = {}
    if "tree" in available:
        caps["tree"] = s["tree_max_bond"]
        target = full_rank_parameters("tree", s["tree_max_bond"])
    else:
        target = None
    if s["mps_max_bond"] is None:
        s["mps_max_bond"] = matched_mps_bond(target) if target is not None else 2 * s["tree_max_bond"]
        s["mps_max_bond_rule"] = ("matched to the tree's full-rank parameter count" if target is not None
                                  else "twice the tree cap (no tree registered)")
    caps["mps"] = s["mps_max_bond"]

    results: dict[str, dict[str, Any]] = {}
    for geometry in args.geometries:
        if geometry not in available:
            results[geometry] = {"error": f"geometry {geometry!r} is not registered (available: {available})"}
            print(f"{geometry}: not registered, skipped")
            continue
        d = caps.get(geometry, s["mps_max_bond"])
        clock = C.Stopwatch()
        holder: dict[str, Any] = {}
        try:
            model, trainer = _train(geometry, d, train, test, s, env, progress=not args.no_progress,
                                    holder=holder)
        except tnborn.TnbornError as exc:
            done = holder["trainer"].history if "trainer" in holder else []
            results[geometry] = {"max_bond_cap": d, "error": f"{type(exc).__name__}: {exc}",
                                 "failed_after_half_sweeps": len(done),
                                 "history_before_failure": [{k: r.get(k) for k in ("loop", "train_nll", "test_nll",
                                                                                   "max_bond")} for r in done],
                                 "traceback": traceback.format_exc(limit=3)}
            print(f"{geometry}: training failed: {exc}")
            continue
        seconds = clock()
        history = trainer.history
        loops = C.per_loop(history)
        half = [float(r["seconds"]) for r in history]
        samples, _ = model.sample(args.samples, seed=args.seed)
        plotting.plot_samples(samples.cpu().numpy(), image_shape=IMAGE_SHAPE,
                              title=f"{geometry}, max bond {d}", path=out / f"samples_{geometry}.png")
        plotting.plot_history(history, path=out / f"history_{geometry}.png", title=f"{geometry}, max bond {d}")
        results[geometry] = {
            "max_bond_cap": d,
            "max_bond": model.max_bond,
            "num_parameters": model.num_parameters(),
            "full_rank_parameters": full_rank_parameters(geometry, d),
            "train_nll": loops[-1]["train_nll"],
            "test_nll": loops[-1]["test_nll"],
            "seconds": seconds,
            "median_half_sweep_seconds": float(np.median(half)),
            "seconds_per_loop": float(np.mean([r["seconds"] for r in loops])),
            "bond_updates_per_loop": sum(len(h) for h in model.sweep_schedule()),
            "per_loop": loops,
        }
        print(f"{geometry}: train NLL {results[geometry]['train_nll']:.3f}, held-out "
              f"{results[geometry]['test_nll']:.3f}, {results[geometry]['num_parameters']} parameters")

    ok = {k: v for k, v in results.items() if "error" not in v}
    if ok:
        plotting.plot_comparison({f"{k} (D<={v['max_bond_cap']}, {v['num_parameters'] / 1e3:.0f}k par.)": v
                                  for k, v in ok.items()},
                                 path=out / "comparison.png",
                                 title=f"MNIST 1k thr50, {s['loops']} loops, {train.shape[0]} training images")
    rows = []
    for k, v in results.items():
        if "error" in v:
            rows.append([k, v.get("max_bond_cap"), None, None, None, None, None,
                         f"error after {v.get('failed_after_half_sweeps', 0)} half-sweeps: " + v["error"][:80]])
        else:
            rows.append([k, v["max_bond_cap"], v["num_parameters"], v["train_nll"], v["test_nll"],
                         v["median_half_sweep_seconds"], v["seconds_per_loop"], "ok"])
    table = C.markdown_table(["geometry", "max bond", "parameters", "train NLL", "held-out NLL",
                              "s/half-sweep (median)", "s/loop", "status"], rows)
    text = (f"# MPS vs tree ({s['mode']} mode)\n\n{train.shape[0]} training images, {test.shape[0]} held-out, "
            f"{s['loops']} loops (start loop included), same sweep settings for both: start loop cutoff 0.3, "
            f"lr 0.05, batch {s['start']['batch_size']}; then cutoff 5e-5, lr 1e-3, batch {s['main']['batch_size']}, "
            "10 steps per bond. A tree loop has a different number of bond updates than an MPS loop.\n\n" + table)
    summary = {
        "script": SCRIPT,
        "experiment": "MPS vs tree Born machine on MNIST 1k thr50 (same two-site sweep)",
        "settings": s,
        "data": {"train": "mnist1k_train_thr50.npy", "test": "mnist1k_other_thr50.npy",
                 "n_train": int(train.shape[0]), "n_test": int(test.shape[0])},
        "available_geometries": available,
        "results": results,
        "machine": C.machine_info(env["device"], env["dtype"], env["threads"]),
    }
    C.write_json(out / "comparison.json", summary)
    C.write_text(out / "comparison.md", text)
    print(text)
    print(f"outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
