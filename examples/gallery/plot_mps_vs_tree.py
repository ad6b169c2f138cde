"""
MPS or tree?
============

A matrix product state flattens an image into a chain, so pixels that are
vertical neighbours end up a whole row apart. A tree tensor network (Cheng,
Wang, Xiang and Zhang, PRB 99, 155131, 2019) merges neighbouring pixels in
both directions first. Both have an exact canonical form, so both train with
the same two-site sweep and sample exactly. This example trains both on 4 x 4
bars-and-stripes with the bond dimension capped at 2, 4, 8 and 16, and
compares the likelihood they reach.

Both geometries are looked up by name in the registry
(:func:`tnborn.get_geometry`). The example runs only when tnborn has a
``"tree"`` geometry; otherwise it says so and stops.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

import tnborn
from tnborn.plotting import plot_comparison

torch.set_num_threads(2)

HAS_TREE = "tree" in tnborn.available_geometries()
print("geometries:", tnborn.available_geometries())
if not HAS_TREE:
    print("NOTE: this version of tnborn has no tree geometry; the comparison is skipped.")

data = tnborn.bars_and_stripes(4)

# %%
# Train each geometry with the authors' settings, capping the bond dimension.
if HAS_TREE:
    makers = {
        "MPS": lambda: tnborn.get_geometry("mps").random(16, bond_dim=2, seed=0),
        "tree": lambda: tnborn.get_geometry("tree").random(16, bond_dim=2, seed=0, image_shape=(4, 4)),
    }
    caps = [2, 4, 8, 16]
    results = {name: {"nll": [], "parameters": []} for name in makers}
    for name, make in makers.items():
        for cap in caps:
            model = make()
            tnborn.SweepTrainer(model, cutoff=5e-5, max_bond=cap, progress=False).fit(data, loops=3)
            results[name]["nll"].append(model.nll(data))
            results[name]["parameters"].append(model.num_parameters())
        print(name, "NLL:", np.round(results[name]["nll"], 3).tolist(),
              "parameters:", results[name]["parameters"])
    print(f"ln 30 = {np.log(30):.3f}")

# %%
# NLL against the bond-dimension cap. At the same cap the tree gets closer to
# ``ln 30``: its bonds cut the image into compact blocks, and a compact block
# of a bars-and-stripes image has a short boundary.
if HAS_TREE:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, marker in (("MPS", "o"), ("tree", "s")):
        ax.plot(caps, results[name]["nll"], marker=marker, label=name)
    ax.axhline(np.log(30), color="k", ls=":", label="ln 30")
    ax.set_xscale("log", base=2)
    ax.set_xticks(caps, [str(c) for c in caps])
    ax.set_xlabel("max_bond")
    ax.set_ylabel("training NLL (nats)")
    ax.set_title("4 x 4 bars and stripes, 3 loops")
    ax.legend()
    fig.tight_layout()
    plt.show()

# %%
# The two models at ``max_bond = 4`` side by side.
if HAS_TREE:
    at4 = {name: {"train_nll": results[name]["nll"][caps.index(4)]} for name in results}
    fig_compare = plot_comparison(at4, title="max_bond = 4")
