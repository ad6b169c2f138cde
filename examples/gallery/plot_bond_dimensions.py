"""
Bond dimensions and entanglement
================================

The two-site sweep chooses every bond dimension itself: after each update it
keeps the singular values ``s_i >= cutoff * s_0`` of the merged tensor (at
most ``max_bond`` of them). This example trains the same model on 4 x 4
bars-and-stripes with several cutoffs and compares the bond dimensions they
give, the likelihood they reach, and the entanglement entropy across every
bond, which measures how much information the model carries across each cut
of the chain.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

import tnborn
from tnborn.plotting import plot_entanglement

torch.set_num_threads(2)

data = tnborn.bars_and_stripes(4)
cutoffs = [0.3, 0.1, 0.03, 1e-2, 1e-3, 5e-5]
models, results = {}, {}
for cutoff in cutoffs:
    model = tnborn.MPSBornMachine.random(16, bond_dim=2, seed=0)
    trainer = tnborn.SweepTrainer(model, lr=0.1, descent_steps=10, cutoff=cutoff, progress=False)
    trainer.fit(data, loops=2)
    models[cutoff] = model
    results[cutoff] = {"nll": model.nll(data), "bond_dims": model.bond_dims(),
                       "parameters": model.num_parameters()}
    print(f"cutoff {cutoff:g}: NLL {results[cutoff]['nll']:.4f}, "
          f"bond dimensions {results[cutoff]['bond_dims']}")

# %%
# Bond dimension along the chain, for every cutoff. Bond ``k`` joins sites
# ``k`` and ``k + 1``; the dotted line is the exact bound
# ``min(2^(k+1), 2^(15-k))`` beyond which a larger bond cannot help.
fig, ax = plt.subplots(figsize=(7, 4))
bonds = np.arange(15)
for cutoff in cutoffs:
    ax.plot(bonds, results[cutoff]["bond_dims"], marker="o", label=f"cutoff {cutoff:g}")
ax.plot(bonds, np.minimum(2.0 ** (bonds + 1), 2.0 ** (15 - bonds)), "k:", label="exact bound")
ax.set_yscale("log", base=2)
ax.set_ylim(0.8, 40)
ax.set_xlabel("bond k (between sites k and k+1)")
ax.set_ylabel("bond dimension")
ax.set_title("bars and stripes 4 x 4: bond dimensions after two loops")
ax.legend(fontsize="small", ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.17))
fig.tight_layout()
plt.show()

# %%
# Likelihood against size: a larger cutoff gives a smaller model and a higher
# NLL. Only the smallest cutoffs reach ``ln 30``.
fig, ax = plt.subplots(figsize=(7, 4))
nll = [results[c]["nll"] for c in cutoffs]
ax.semilogx(cutoffs, nll, marker="o", color="C0")
ax.axhline(np.log(30), color="k", ls=":", label="ln 30 (entropy of the data)")
ax.set_xlabel("cutoff")
ax.set_ylabel("training NLL (nats)", color="C0")
ax.invert_xaxis()
ax2 = ax.twinx()
ax2.semilogx(cutoffs, [results[c]["parameters"] for c in cutoffs], marker="s", color="C1")
ax2.set_ylabel("number of parameters", color="C1")
ax.legend(loc="upper center")
ax.set_title("smaller cutoff: larger model, lower NLL")
fig.tight_layout()
plt.show()

# %%
# Entanglement entropy across every bond of the most accurate model, as a
# curve and as a map on the image (bond ``k`` drawn at pixel ``k``). A
# bond of dimension ``D`` carries at most ``ln D`` nats.
best = models[5e-5]
entropies = best.entanglement_entropies()
print([round(s, 3) for s in entropies])
fig_entropy = plot_entanglement(entropies, image_shape=(4, 4), title="entanglement entropy (cutoff 5e-5)")

# %%
# The entropy never exceeds ``ln D`` of its bond, and the sweep found bond
# dimensions close to what the entropies need.
dims = np.array(best.bond_dims())
assert np.all(np.array(entropies) <= np.log(dims) + 1e-9)
print("ln D:", np.round(np.log(dims), 3).tolist())
