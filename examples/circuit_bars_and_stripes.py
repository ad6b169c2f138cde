"""Compile a trained 4x4 bars-and-stripes MPS Born machine into quantum circuits.

Trains an MPS on the 30 bars-and-stripes patterns with the authors' settings
(lr 0.1, 10 steps per bond, full batch, cutoff 5e-5), which reaches the
lowest possible NLL ln 30 with bond dimensions up to 16, then compiles it
with :func:`tnborn.circuit.compile_mps` into 1..K layers of neighbouring
two-qubit gates (each layer a staircase of 15 gates, 3 CNOTs each in the
emitted OpenQASM). For every number of layers it reports

* the fidelity ``|<psi|circuit|0>|^2`` with the trained state, and
* the NLL of the 30 patterns under the circuit's Born distribution
  ``|<x|circuit|0>|^2`` (ln 30 = 3.4012 is the best possible).

Usage::

    python examples/circuit_bars_and_stripes.py --layers 6 --out runs/circuit_bas
    python examples/circuit_bars_and_stripes.py --dtype complex128

Outputs in ``--out``: ``circuit_bas.json`` (the table and settings),
``circuit_bas.png`` (fidelity and NLL against layers) and ``circuit.qasm``
(the K-layer circuit, OpenQASM 2 with u3 and cx gates).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # many tiny linear-algebra calls: threads only cost

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any


__all__ = ["build_parser", "run", "plot", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the example.

    Returns
    -------
    argparse.ArgumentParser
        The parser.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=6, help="largest number of layers K (default 6)")
    p.add_argument("--dtype", default="float64", choices=("float64", "complex128"),
                   help="dtype of the trained MPS (default float64)")
    p.add_argument("--loops", type=int, default=2, help="training loops (default 2)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.add_argument("--max-bond-sim", type=int, default=None,
                   help="bond limit of the residual simulation (default: exact)")
    p.add_argument("--out", default="runs/circuit_bas", help="output folder (default runs/circuit_bas)")
    return p


def run(layers: int, dtype: str = "float64", loops: int = 2, seed: int = 0,
        max_bond_sim: int | None = None) -> dict[str, Any]:
    """Train, compile and score; return the results as a JSON-ready dict.

    Parameters
    ----------
    layers : int
        Largest number of layers.
    dtype : str
        Dtype of the MPS.
    loops : int
        Training loops.
    seed : int
        Initialisation seed.
    max_bond_sim : int, optional
        Bond limit of the residual simulation.

    Returns
    -------
    dict
        Settings, the trained model's NLL and bond dimensions, and ``table``:
        one row per number of layers with ``layers``, ``gates``,
        ``fidelity``, ``nll``.
    """
    import torch

    import tnborn
    from tnborn.circuit import circuit_fidelity, circuit_nll, compile_mps

    torch.set_num_threads(1)
    data = tnborn.bars_and_stripes(4)
    model = tnborn.MPSBornMachine.random(16, bond_dim=2, seed=seed, dtype=dtype)
    t0 = time.perf_counter()
    trainer = tnborn.SweepTrainer(model, lr=0.1, descent_steps=10, cutoff=5e-5, progress=False)
    trainer.fit(data, loops=loops)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    circuit = compile_mps(model, layers=layers, max_bond_sim=max_bond_sim)
    compile_s = time.perf_counter() - t0
    table = []
    for k in range(1, layers + 1):
        sub = circuit.with_layers(k)
        table.append({
            "layers": k,
            "gates": len(sub.gates),
            "cx": 3 * len(sub.gates),
            "fidelity": circuit.fidelities[k - 1],
            "fidelity_check": circuit_fidelity(model, sub),  # exact, independent simulation
            "nll": circuit_nll(sub, data),
        })
    return {
        "settings": {"layers": layers, "dtype": dtype, "loops": loops, "seed": seed,
                     "max_bond_sim": max_bond_sim, "lr": 0.1, "descent_steps": 10, "cutoff": 5e-5},
        "model_nll": model.nll(data),
        "ln30": math.log(30),
        "bond_dims": model.bond_dims(),
        "train_seconds": train_s,
        "compile_seconds": compile_s,
        "table": table,
        "_circuit": circuit,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Fidelity and NLL against the number of layers, written to ``path``.

    Parameters
    ----------
    result : dict
        From :func:`run`.
    path : Path
        The PNG file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["table"]
    ks = [r["layers"] for r in rows]
    fig = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ks, [r["fidelity"] for r in rows], "o-")
    ax1.set_xlabel("layers")
    ax1.set_ylabel(r"fidelity $|\langle\psi|C|0\rangle|^2$")
    ax1.set_ylim(0, 1.02)
    ax1.grid(alpha=0.3)
    ax2.plot(ks, [r["nll"] for r in rows], "o-", label="circuit")
    ax2.axhline(result["model_nll"], color="k", ls="--", label=f"MPS ({result['model_nll']:.3f})")
    ax2.axhline(result["ln30"], color="g", ls=":", label="ln 30")
    ax2.set_xlabel("layers")
    ax2.set_ylabel("NLL of the 30 patterns (nats)")
    ax2.set_yscale("log")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.suptitle(f"4x4 bars-and-stripes MPS ({result['settings']['dtype']}, max bond "
                 f"{max(result['bond_dims'])}) compiled into staircase layers")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    """Run the example from the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    args = build_parser().parse_args(argv)
    if args.layers < 1:
        print("--layers must be >= 1", file=sys.stderr)
        return 2
    from tnborn.circuit import to_qasm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run(args.layers, args.dtype, args.loops, args.seed, args.max_bond_sim)
    circuit = result.pop("_circuit")
    (out / "circuit.qasm").write_text(to_qasm(circuit, version=2, measure=True))
    (out / "circuit_bas.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "circuit_bas.png")
    print(f"trained MPS: NLL {result['model_nll']:.4f} (ln 30 = {result['ln30']:.4f}), "
          f"max bond {max(result['bond_dims'])}, compile {result['compile_seconds']:.2f} s")
    print(f"{'layers':>6} {'gates':>6} {'cx':>5} {'fidelity':>10} {'NLL':>9}")
    for r in result["table"]:
        print(f"{r['layers']:>6} {r['gates']:>6} {r['cx']:>5} {r['fidelity']:>10.6f} {r['nll']:>9.4f}")
    print(f"wrote {out}/circuit_bas.json, circuit_bas.png, circuit.qasm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
