"""Reconstruct MNIST images with half of the pixels removed (Han et al., PRX 8, 031012, Fig. 5).

A trained MPS Born machine samples the removed half exactly from
``P(removed | kept)``, for images of the training set and for images it never
saw (``mnist1k_other_thr50.npy``), with the left, right, top or bottom half
removed (mask ``True`` = known pixel).

Besides several samples per image, each figure shows a "most likely"
completion: the most probable of ``--best-of`` exact conditional samples
(by their exact ``log P(completion | kept)``). That is an approximation of
the true argmax, not the argmax itself, and is labelled so in the figures and
in the JSON.

Metrics per set and mask: the mean exact ``log P(completion | kept)`` of the
samples and of the best-of-K completion, ``log P(original half | kept)``,
and the pixel accuracy of the completions on the removed half (with, for
scale, the accuracy of filling the removed half with background).
The kept pixels' log-marginal ``log P(kept)`` is recovered for every sample as
``log P(completion) - log P(completion | kept)``; its spread across the
samples of one image checks the conditional sampler (it should be ~1e-12).

Usage::

    python examples/reproduce_inpainting.py --checkpoint runs/reproduce_mnist/model.tnb --out runs/inpainting
    python examples/reproduce_inpainting.py --quick     # trains a small model first

Outputs in ``--out``: ``inpainting.json``, ``inpainting.md`` and
``inpaint_<set>_<mask>.png`` for the sets ``train``/``unseen`` and the masks
``left``/``right``/``top``/``bottom`` (the half that is removed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

__all__ = ["MASKS", "half_mask", "build_parser", "inpaint", "main"]

#: The halves that can be removed.
MASKS: tuple[str, ...] = ("left", "right", "top", "bottom")
SCRIPT = "reproduce_inpainting"


def half_mask(removed: str, shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """Boolean mask (``True`` = known) with one half of the image removed.

    Parameters
    ----------
    removed : str
        ``"left"``, ``"right"``, ``"top"`` or ``"bottom"``: the half that is unknown.
    shape : tuple of int
        Image shape ``(h, w)``.

    Returns
    -------
    numpy.ndarray
        ``(h * w,)`` boolean, row-major.
    """
    h, w = shape
    known = np.ones((h, w), dtype=bool)
    if removed == "left":
        known[:, : w // 2] = False
    elif removed == "right":
        known[:, w // 2:] = False
    elif removed == "top":
        known[: h // 2, :] = False
    elif removed == "bottom":
        known[h // 2:, :] = False
    else:
        raise ValueError(f"removed must be one of {MASKS}, got {removed!r}")
    return known.reshape(-1)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of this script.

    Returns
    -------
    argparse.ArgumentParser
        The parser.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="trained model (e.g. reproduce_mnist.py's model.tnb); default: train a quick one")
    p.add_argument("--images", type=int, default=None, help="images per set (default 8; smoke 3)")
    p.add_argument("--samples", type=int, default=None, help="samples shown per image (default 4; smoke 2)")
    p.add_argument("--best-of", type=int, default=None,
                   help="exact samples per image among which the most probable is shown (default 64; smoke 8)")
    p.add_argument("--masks", nargs="+", choices=MASKS, default=list(MASKS), help="halves to remove")
    return C.add_common_arguments(p, SCRIPT)


def inpaint(model: Any, images: np.ndarray, known: np.ndarray, samples: int, best_of: int,
            seed: int) -> dict[str, Any]:
    """Complete ``images`` given the pixels where ``known`` is True.

    Parameters
    ----------
    model : tnborn.BornMachine
        The trained model.
    images : numpy.ndarray
        ``(b, N)`` original images.
    known : numpy.ndarray
        ``(N,)`` boolean mask, ``True`` = known.
    samples : int
        Completions kept for the figure (the first ``samples`` draws).
    best_of : int
        Exact draws per image; the most probable one is the "best of K".
    seed : int
        Sampler seed.

    Returns
    -------
    dict
        ``completions`` (b, samples, N), ``best`` (b, N) and the metrics.
    """
    import torch

    k = max(samples, best_of)
    gen = torch.Generator(device=model.device)
    gen.manual_seed(int(seed))
    draws, logp = [], []
    for start in range(0, images.shape[0], 4):  # bounded memory: 4 * k rows at a time
        d, lp = model.sample_conditional(images[start:start + 4], known, num_samples=k, generator=gen)
        draws.append(d.cpu().numpy())
        logp.append(lp.cpu().numpy())
    draws_np, logp_np = np.concatenate(draws), np.concatenate(logp)
    b, n = images.shape
    joint = model.score_samples(draws_np.reshape(b * k, n)).reshape(b, k)
    log_marginal = joint - logp_np                       # log P(kept), one value per image
    spread = float(np.max(log_marginal.max(axis=1) - log_marginal.min(axis=1)))
    log_kept = np.median(log_marginal, axis=1)
    truth = model.score_samples(images) - log_kept       # log P(original half | kept)
    best_idx = np.argmax(logp_np, axis=1)
    rows = np.arange(b)
    best, best_lp = draws_np[rows, best_idx], logp_np[rows, best_idx]
    free = ~known
    shown = draws_np[:, :samples]
    acc_samples = (shown[:, :, free] == images[:, None, free]).mean()
    acc_best = (best[:, free] == images[:, free]).mean()
    acc_background = (images[:, free] == 0).mean()
    preserved = bool(np.all(draws_np[:, :, known] == images[:, None, known]))
    return {
        "completions": shown,
        "best": best,
        "metrics": {
            "images": int(b),
            "samples_shown": int(samples),
            "best_of": int(k),
            "mean_logp_completion_given_kept": float(logp_np[:, :samples].mean()),
            "mean_logp_best_of_k": float(best_lp.mean()),
            "mean_logp_original_given_kept": float(truth.mean()),
            "pixel_accuracy_samples": float(acc_samples),
            "pixel_accuracy_best_of_k": float(acc_best),
            "pixel_accuracy_background_fill": float(acc_background),
            "known_pixels_preserved": preserved,
            "log_marginal_spread": spread,
            "removed_pixels": int(free.sum()),
        },
    }


def _model(args: argparse.Namespace, env: dict[str, Any], data_dir: Path, out: Path) -> tuple[Any, dict[str, Any]]:
    """Load ``--checkpoint`` or train a quick model (``reproduce_mnist``'s quick or smoke settings)."""
    import tnborn

    if args.checkpoint is not None:
        model = tnborn.load(args.checkpoint, device=env["device"], dtype=env["dtype"])
        return model, {"checkpoint": str(Path(args.checkpoint).resolve()),
                       "info": tnborn.checkpoint_info(args.checkpoint)}
    import reproduce_mnist as M

    sub = ["--smoke"] if args.smoke else ["--quick"]
    s = M.settings_from(M.build_parser().parse_args(sub + ["--seed", str(args.seed)]))
    train = C.load_set(data_dir, "mnist1k_train_thr50.npy", limit=s["n_train"])
    model, trainer = M.train_mnist(train, None, s, env, progress=not args.no_progress)
    path = tnborn.save(out / "model.tnb", model, trainer=trainer, extra={"script": SCRIPT, "settings": s})
    return model, {"checkpoint": str(path), "trained_here": s,
                   "train_nll": trainer.history[-1]["train_nll"]}


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; returns the exit code (0 unless the inputs are missing).

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
    mode = C.mode_of(args)
    small = mode == "smoke"
    n_images = args.images or (3 if small else 8)
    n_samples = args.samples or (2 if small else 4)
    best_of = args.best_of or (8 if small else 64)
    try:
        data_dir = C.resolve_data_dir(args.data_dir)
        sets = {"train": C.load_set(data_dir, "mnist1k_train_thr50.npy"),
                "unseen": C.load_set(data_dir, "mnist1k_other_thr50.npy")}
    except C.MissingDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = C.prepare_output(args.out)
    from tnborn import plotting

    clock = C.Stopwatch()
    model, origin = _model(args, env, data_dir, out)
    rng = np.random.default_rng(args.seed)
    picks = {name: np.sort(rng.choice(x.shape[0], size=n_images, replace=False)) for name, x in sets.items()}
    results = []
    for si, (name, x) in enumerate(sets.items()):
        images = x[picks[name]]
        for mi, removed in enumerate(args.masks):
            known = half_mask(removed)
            res = inpaint(model, images, known, n_samples, best_of, seed=args.seed + 100 * si + mi)
            title = (f"{'training' if name == 'train' else 'unseen'} images, {removed} half removed\n"
                     f"'most likely' = best of {res['metrics']['best_of']} exact samples")
            fig_path = out / f"inpaint_{name}_{removed}.png"
            plotting.plot_inpainting(images, known, res["completions"], image_shape=(28, 28),
                                     most_likely=res["best"], title=title, path=fig_path)
            results.append({"set": name, "removed": removed, "figure": fig_path.name,
                            "image_indices": picks[name], **res["metrics"]})
    rows = [[r["set"], r["removed"], r["mean_logp_completion_given_kept"], r["mean_logp_best_of_k"],
             r["mean_logp_original_given_kept"], r["pixel_accuracy_samples"], r["pixel_accuracy_best_of_k"],
             r["pixel_accuracy_background_fill"]] for r in results]
    table = C.markdown_table(["set", "removed", "log P(sample|kept)", f"log P(best of {best_of}|kept)",
                              "log P(original|kept)", "pixel acc. samples", "pixel acc. best",
                              "pixel acc. background"], rows)
    text = (f"# Inpainting ({mode} mode)\n\nModel: max bond {model.max_bond}, {model.num_parameters()} "
            f"parameters ({origin['checkpoint']}). 'best' is the most probable of {best_of} exact "
            "conditional samples, not the exact most likely completion. Log-probabilities in nats, "
            "mean over images (and samples).\n\n" + table)
    summary = {
        "script": SCRIPT,
        "experiment": "Han et al. PRX 8 031012 (2018), reconstruction of MNIST images with half removed",
        "mode": mode,
        "model": {"max_bond": model.max_bond, "num_parameters": model.num_parameters(),
                  "geometry": model.geometry, **origin},
        "most_likely_method": f"best of {best_of} exact conditional samples by exact log P(completion | kept) "
                              "(an approximation of the argmax, not the exact argmax)",
        "mask_convention": "True = known pixel; 'removed' names the unknown half",
        "results": results,
        "all_known_pixels_preserved": all(r["known_pixels_preserved"] for r in results),
        "max_log_marginal_spread": max(r["log_marginal_spread"] for r in results),
        "total_seconds": clock(),
        "machine": C.machine_info(env["device"], env["dtype"], env["threads"]),
    }
    C.write_json(out / "inpainting.json", summary)
    C.write_text(out / "inpainting.md", text)
    print(text)
    print(f"known pixels preserved: {summary['all_known_pixels_preserved']}; "
          f"log P(kept) spread across samples: {summary['max_log_marginal_spread']:.2e}")
    print(f"outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
