"""Fidelity of optimised circuits against the number of layers, for a trained Born machine.

Trains an MPS Born machine with ``tnborn train`` and compiles it into 1..K
staircase layers of neighbouring two-qubit gates three ways:

* **analytical**: Ran's layers (:func:`tnborn.circuit.compile_mps`), each the
  best bond-2 approximation of what the previous ones left;
* **optimised**: layer growth (:func:`tnborn.circuit.grow_circuit`, the
  ``tnborn circuit --layers auto`` of the command line): a new analytical
  layer in front of the optimised ``L``-layer circuit, then polar sweeps over
  all gates; never lower than ``L`` layers;
* two **reference lines** at the circuit's bond dimension ``2^L``: the
  fidelity of the model truncated to that bond dimension by SVD (quimb), and
  the bound no state of that bond dimension can exceed (per bond, the weight
  of the ``2^L`` largest squared Schmidt values).

Models (``--model``):

``bas``
    4 x 4 bars and stripes, the defaults of ``tnborn train`` (30 patterns,
    lr 0.1, 10 steps per bond, full batch, cutoff 5e-5, 4 loops, seed 0).
``mnist14``
    The paper's 1000 MNIST training images (thr50) max-pooled 2 x 2 to
    14 x 14 = 196 pixels, ``tnborn train --max-bond 10`` for 2 loops.

Usage::

    python examples/circuit_layers.py --model bas --layers 8 --out examples/results/circuit_layers
    python examples/circuit_layers.py --model mnist14 --layers 5 --max-bond-sim 64 \\
        --out examples/results/circuit_layers
    python examples/circuit_layers.py --model bas --smoke --out /tmp/c   # seconds (tests)

Outputs in ``--out``: ``<model>.json`` (settings, machine, the table),
``<model>.md`` (the table) and ``<model>.png`` (fidelity and NLL against
layers). The training run goes to ``--work`` (default ``runs/circuit_layers``;
the downsampled MNIST images are written there, never next to the results).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # many tiny linear-algebra calls: threads only cost

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

__all__ = ["build_parser", "downsample", "train", "run", "plot", "main"]

SCRIPT = "circuit_layers"
MODELS = ("bas", "mnist14")


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the script.

    Returns
    -------
    argparse.ArgumentParser
        The parser.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="bas", help="which model to train (default bas)")
    p.add_argument("--layers", type=int, default=None,
                   help="largest number of layers (default 8 for bas, 5 for mnist14)")
    p.add_argument("--sweeps", type=int, default=None,
                   help="most polar sweeps per layer count (default 30 for bas, 10 for mnist14)")
    p.add_argument("--tol", type=float, default=1e-6, help="stop rule on the log-fidelity gain (default 1e-6)")
    p.add_argument("--max-bond-sim", type=int, default=None,
                   help="bond limit of the simulated C_after^dagger|psi> (default: exact); the "
                        "reported fidelities are exact either way")
    p.add_argument("--work", type=Path, default=Path("runs") / SCRIPT,
                   help="folder for the training run and the downsampled data (default %(default)s)")
    C.add_common_arguments(p, SCRIPT)
    return p


def downsample(images: np.ndarray, side: int = 28, factor: int = 2) -> np.ndarray:
    """Max-pool binary square images by ``factor`` (a pixel is ink if any of its block is).

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, side * side)`` 0/1 images, row-major.
    side : int
        Image side.
    factor : int
        Block side; must divide ``side``.

    Returns
    -------
    numpy.ndarray
        ``(n, (side // factor) ** 2)`` uint8 images.
    """
    s = side // factor
    blocks = np.asarray(images).reshape(-1, s, factor, s, factor)
    return blocks.max(axis=(2, 4)).reshape(-1, s * s).astype(np.uint8)


def train(model: str, work: Path, data_dir: Path | None, smoke: bool, seed: int) -> tuple[Path, np.ndarray, str]:
    """Train with ``tnborn train`` and return the checkpoint, the data and a description.

    Parameters
    ----------
    model : str
        ``"bas"`` or ``"mnist14"``.
    work : pathlib.Path
        Folder for the run (``<work>/<model>``, replaced if it exists).
    data_dir : pathlib.Path, optional
        Shared data folder (for MNIST).
    smoke : bool
        Tiny settings: 3 x 3 bars and stripes, or 100 images for 1 loop at bond 4.
    seed : int
        Seed of the initialisation.

    Returns
    -------
    tuple
        Checkpoint path, the training data, and the ``tnborn train`` arguments used.
    """
    import tnborn
    from tnborn.cli import main as cli

    run_dir = work / model
    work.mkdir(parents=True, exist_ok=True)
    common = ["--out", str(run_dir), "--overwrite", "--quiet", "--threads", "1", "--seed", str(seed)]
    if model == "bas":
        rows = 3 if smoke else 4
        args = ["--dataset", "bars-and-stripes", "--rows", str(rows)] + (["--loops", "2"] if smoke else [])
        data = tnborn.bars_and_stripes(rows)
    else:
        images = C.load_set(C.resolve_data_dir(data_dir), "mnist1k_train_thr50.npy",
                            limit=100 if smoke else None)
        data = downsample(images)
        path = work / ("mnist14_smoke.npy" if smoke else "mnist14.npy")
        np.save(path, data)
        args = ["--data", str(path), "--rows", "14", "--max-bond", "4" if smoke else "10",
                "--loops", "1" if smoke else "2"]
    code = cli(["train", *args, *common])
    if code != 0:
        raise RuntimeError(f"tnborn train {' '.join(args)} exited with {code}")
    return run_dir / "model.tnb", np.asarray(data), "tnborn train " + " ".join(args + ["--seed", str(seed)])


def run(model_name: str, layers: int, sweeps: int, tol: float, max_bond_sim: int | None,
        work: Path, data_dir: Path | None = None, smoke: bool = False, seed: int = 0) -> dict[str, Any]:
    """Train, compile 1..``layers`` layers analytically and by growth, and score.

    Parameters
    ----------
    model_name : str
        ``"bas"`` or ``"mnist14"``.
    layers : int
        Largest number of layers.
    sweeps, tol, max_bond_sim
        Settings of the optimisation (:func:`tnborn.circuit.grow_circuit`).
    work : pathlib.Path
        Folder for the training run.
    data_dir : pathlib.Path, optional
        Shared data folder.
    smoke : bool
        Tiny settings.
    seed : int
        Initialisation seed.

    Returns
    -------
    dict
        Settings, the model's NLL and bond dimensions, and ``table``: one row
        per layer count with ``fidelity_analytical``, ``fidelity`` (optimised),
        ``log_fidelity``, ``fidelity_per_qubit``, ``truncation_fidelity``,
        ``schmidt_bound``, ``nll`` (the data under the optimised circuit),
        ``nll_analytical``, ``sweeps`` and ``seconds``.
    """
    import tnborn
    from tnborn.circuit import circuit_nll, compile_mps, grow_circuit

    t0 = time.perf_counter()
    checkpoint, data, command = train(model_name, work, data_dir, smoke, seed)
    train_seconds = time.perf_counter() - t0
    model = tnborn.load(checkpoint)
    n = model.num_variables
    t0 = time.perf_counter()
    analytical = compile_mps(model, layers=layers, max_bond_sim=max_bond_sim, cutoff_sim=1e-14)  # as grow_circuit
    analytical_seconds = time.perf_counter() - t0
    table: list[dict[str, Any]] = []

    def on_layer(row: dict[str, Any], circuit: Any) -> None:
        k = row["layers"]
        row = {key: value for key, value in row.items() if key != "history"}
        row["nll"] = circuit_nll(circuit, data)
        row["nll_analytical"] = circuit_nll(analytical.with_layers(k), data)
        row["cx"] = 3 * row["gates"]
        table.append(row)
        print(f"layers {k}: analytical {row['fidelity_analytical']:.6g}, optimised {row['fidelity']:.6g} "
              f"(per qubit {row['fidelity_per_qubit']:.6f}), truncation {row['truncation_fidelity']:.6g}, "
              f"bound {row['schmidt_bound']:.6g}, NLL {row['nll']:.4f}, {row['sweeps']} sweeps, "
              f"{row['seconds']:.1f} s", flush=True)

    t0 = time.perf_counter()
    grow_circuit(model, max_layers=layers, sweeps=sweeps, tol=tol, max_bond_sim=max_bond_sim, progress=on_layer)
    return {
        "script": SCRIPT,
        "model": model_name,
        "settings": {"layers": layers, "sweeps": sweeps, "tol": tol, "max_bond_sim": max_bond_sim,
                     "smoke": smoke, "seed": seed, "train": command},
        "num_qubits": n,
        "num_samples": int(data.shape[0]),
        "model_nll": float(model.nll(data)),
        "data_entropy_bound": math.log(len(np.unique(data, axis=0))),
        "bond_dims": model.bond_dims(),
        "train_seconds": train_seconds,
        "analytical_seconds": analytical_seconds,
        "optimise_seconds": time.perf_counter() - t0,
        "table": table,
        "machine": C.machine_info(threads=1),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Fidelity (left) and NLL (right) against the number of layers, written to ``path``.

    Parameters
    ----------
    result : dict
        From :func:`run`.
    path : pathlib.Path
        The PNG file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["table"]
    ks = [r["layers"] for r in rows]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ks, [r["schmidt_bound"] for r in rows], "k:", marker=".", label=r"bound at bond $2^L$")
    ax1.plot(ks, [r["truncation_fidelity"] for r in rows], "--", color="gray", marker="s",
             label=r"MPS truncated to bond $2^L$")
    ax1.plot(ks, [r["fidelity"] for r in rows], "o-", label="optimised layers")
    ax1.plot(ks, [r["fidelity_analytical"] for r in rows], "^-", label="analytical layers (Ran)")
    ax1.set_xlabel("layers $L$")
    ax1.set_ylabel(r"fidelity $|\langle\psi|C|0\rangle|^2$")
    if min(r["fidelity_analytical"] for r in rows) < 0.05:
        ax1.set_yscale("log")
    else:
        ax1.set_ylim(0, 1.02)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.plot(ks, [r["nll"] for r in rows], "o-", label="optimised")
    ax2.plot(ks, [r["nll_analytical"] for r in rows], "^-", label="analytical")
    ax2.axhline(result["model_nll"], color="k", ls="--", label=f"the MPS ({result['model_nll']:.2f})")
    ax2.set_xlabel("layers $L$")
    ax2.set_ylabel(f"NLL of the {result['num_samples']} training samples (nats)")
    ax2.set_yscale("log")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(f"{result['model']}: {result['num_qubits']} qubits, max bond {max(result['bond_dims'])}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(result: dict[str, Any]) -> str:
    """The table of a result as markdown (fidelities with 4 significant digits).

    Parameters
    ----------
    result : dict
        From :func:`run`.

    Returns
    -------
    str
        A markdown table.
    """
    head = ("| layers | cx | analytical | optimised | per qubit | truncation to 2^L | bound | NLL optimised | "
            "NLL analytical | sweeps | s |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['layers']} | {r['cx']} | {r['fidelity_analytical']:.4g} | {r['fidelity']:.4g} | "
             f"{r['fidelity_per_qubit']:.4f} | {r['truncation_fidelity']:.4g} | {r['schmidt_bound']:.4g} | "
             f"{r['nll']:.3f} | {r['nll_analytical']:.3f} | {r['sweeps']} | {r['seconds']:.0f} |"
             for r in result["table"]]
    return (f"# {result['model']}: {result['num_qubits']} qubits, max bond {max(result['bond_dims'])}, "
            f"model NLL {result['model_nll']:.3f}\n\n" + head + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the script from the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status (2 when the data are missing).
    """
    args = build_parser().parse_args(argv)
    smoke = args.smoke
    layers = args.layers or (2 if smoke else (8 if args.model == "bas" else 5))
    sweeps = args.sweeps or (2 if smoke else (30 if args.model == "bas" else 10))
    out = C.prepare_output(args.out)
    try:
        result = run(args.model, layers, sweeps, args.tol, args.max_bond_sim, args.work, args.data_dir,
                     smoke, args.seed)
    except C.MissingDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = result["model"] + ("_smoke" if smoke else "")
    C.write_json(out / f"{name}.json", result)
    C.write_text(out / f"{name}.md", markdown(result))
    plot(result, out / f"{name}.png")
    print(markdown(result))
    print(f"wrote {out}/{name}.json, {name}.md, {name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
