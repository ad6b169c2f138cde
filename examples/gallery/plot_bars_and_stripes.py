"""
Bars and stripes
================

Train a matrix product state Born machine on the 30 bars-and-stripes patterns
of a 4 x 4 grid, with the settings of Han et al. (PRX 8, 031012): learning
rate 0.1, 10 gradient steps per bond, the whole data set in every step and a
relative singular-value cutoff of ``5e-5``. Two loops bring the negative
log-likelihood to ``ln 30``, the entropy of the data: the model has learned
the uniform distribution over the 30 patterns, and nothing else.
"""

import numpy as np
import torch

import tnborn
from tnborn.plotting import plot_bond_dimensions, plot_history, plot_samples

torch.set_num_threads(2)

# %%
# The data: every 4 x 4 image whose rows are all constant (stripes) or whose
# columns are all constant (bars), flattened row by row.
data = tnborn.bars_and_stripes(4)
print(data.shape)
fig_data = plot_samples(data, image_shape=(4, 4), ncols=10, title="the 30 patterns")

# %%
# Train: a random MPS with bond dimension 2 (the authors' start), two loops of
# the two-site sweep. Each half-sweep adds a record to the history.
model = tnborn.MPSBornMachine.random(16, bond_dim=2, seed=0)
trainer = tnborn.SweepTrainer(model, lr=0.1, descent_steps=10, cutoff=5e-5, progress=False)
history = trainer.fit(data, loops=2)

for record in history:
    print(f"loop {record['loop']:.1f}: NLL {record['train_nll']:.4f}, max bond {record['max_bond']}")
print(f"ln 30 = {np.log(30):.4f}")

# %%
# The NLL after every half-sweep, with the entropy of the data as reference
# and the largest bond dimension on the right axis.
fig_nll = plot_history(history, reference={"ln 30": float(np.log(30))}, title="training")

# %%
# The bond dimensions the sweep chose: 2, 4, 8, then 16 (the most that any
# distribution over 30 patterns can need is 30, and the exact bound is
# ``min(2^(k+1), 2^(N-k-1))``).
print(model.bond_dims())
fig_bonds = plot_bond_dimensions(model.bond_dims(), title="bond dimensions after training")

# %%
# Exact samples: every one is an independent draw from the model. All of them
# are bars or stripes, in roughly equal numbers.
samples, log_prob = model.sample(1000, seed=0)
samples = samples.numpy()
valid = tnborn.data.is_bars_and_stripes(samples, rows=4)
patterns, counts = np.unique(samples, axis=0, return_counts=True)
print(f"{valid.mean():.1%} valid, {len(patterns)} distinct patterns, "
      f"counts between {counts.min()} and {counts.max()} (1000/30 = 33.3)")
fig_samples = plot_samples(samples[:40], image_shape=(4, 4), ncols=10, title="40 exact samples")
