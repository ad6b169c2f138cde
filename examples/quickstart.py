"""Quickstart: train an MPS Born machine on 4x4 bars-and-stripes, sample, inpaint, save and load.

This is the Python example of README.md as a script::

    python examples/quickstart.py                 # writes bas.tnb into a temporary folder
    python examples/quickstart.py --out runs/qs   # or into this folder

With the authors' settings (Han et al., PRX 8, 031012: lr 0.1, 10 gradient
steps per bond, full batch, cutoff 5e-5) the training NLL reaches
ln 30 = 3.4012, the entropy of the 30 patterns, in two loops.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

import tnborn


def main(out: Path) -> float:
    """Run the quickstart, writing ``bas.tnb`` into ``out``; return the final NLL.

    Parameters
    ----------
    out : pathlib.Path
        Folder for the checkpoint.

    Returns
    -------
    float
        The training NLL after two loops.
    """
    data = tnborn.bars_and_stripes(4)                 # the 30 patterns of a 4x4 grid, (30, 16) uint8
    model = tnborn.MPSBornMachine.random(16, bond_dim=2, seed=0)
    trainer = tnborn.SweepTrainer(model, lr=0.1, descent_steps=10, cutoff=5e-5, progress=False)
    history = trainer.fit(data, loops=2)              # one record per half-sweep
    print(f"NLL {history[-1]['train_nll']:.4f} (ln 30 = {math.log(30):.4f})")
    print("bond dimensions:", model.bond_dims())      # 2 4 8 16 16 ... 16 15 8 4 2

    samples, log_prob = model.sample(8, seed=1)       # exact, independent samples
    print(samples[0].reshape(4, 4))

    mask = np.zeros(16, dtype=bool)
    mask[:8] = True                                   # keep the top half, resample the bottom half
    completions, _ = model.sample_conditional(data[:3], mask, num_samples=2, seed=0)
    print("completions:", tuple(completions.shape))   # (images, samples, pixels)

    path = tnborn.save(out / "bas.tnb", model, trainer=trainer)  # model + trainer state, atomically
    again = tnborn.load(path)
    assert abs(again.nll(data) - model.nll(data)) < 1e-12
    print(f"saved and reloaded {path}")
    return history[-1]["train_nll"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for bas.tnb (default: a temporary folder)")
    args = parser.parse_args()
    if args.out is None:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        main(args.out)
