"""
MNIST: samples and inpainting
=============================

Train a small matrix product state on 100 binarised MNIST digits (the first
100 of the paper's 1000 training images, thresholded at 50), draw exact
samples, and complete digits whose bottom half was removed, by sampling the
missing pixels exactly from ``P(bottom | top)``: once for training images and
once for images the model never saw.

The model here is tiny (bond dimension at most 12, two loops, a few seconds of
training) so that the example runs in well under a minute; the paper trains
bond dimensions up to 800 for many loops (see :doc:`../reproducing`). Its
samples are blurry and its completions plausible rather than faithful, but
every number below is exact.

The images are read from the project's shared data folder: the environment
variable ``TNBORN_SHARED_DATA``, else ``../shared/data`` beside the
repository. Without it, the example says so and stops.
"""

import os
from pathlib import Path

import numpy as np
import torch

import tnborn
from tnborn.plotting import plot_history, plot_inpainting, plot_samples

torch.set_num_threads(2)


def find_shared_data() -> Path | None:
    """The shared data folder, or None when it is not there."""
    candidates = []
    if os.environ.get("TNBORN_SHARED_DATA"):
        candidates.append(Path(os.environ["TNBORN_SHARED_DATA"]))
    try:
        here = Path(__file__).resolve().parent
    except NameError:  # run interactively
        here = Path.cwd()
    candidates += [parent.parent / "shared" / "data" for parent in [here, *here.parents]
                   if (parent / "tnborn").is_dir()]
    for folder in candidates:
        if (folder / "mnist1k_train_thr50.npy").is_file():
            return folder
    return None


DATA = find_shared_data()
if DATA is None:
    print("NOTE: the shared MNIST files were not found (set TNBORN_SHARED_DATA to the folder "
          "holding mnist1k_train_thr50.npy); this example is skipped.")

# %%
# Load 100 training images (thr50: ``pixel > 50`` on the grey values) and 100
# images of the "other 1000", which share no image with the training set.
if DATA is not None:
    train = tnborn.load_binary(DATA / "mnist1k_train_thr50.npy", limit=100)
    unseen = tnborn.load_binary(DATA / "mnist1k_other_thr50.npy", limit=100)
    print(train.shape, unseen.shape, f"mean pixel {train.mean():.3f}")

# %%
# Train: 784 sites, at most 12 kept singular values per bond, two loops. The
# learning rate is larger than the authors' ``1e-3`` so that two loops get
# somewhere.
if DATA is not None:
    model = tnborn.MPSBornMachine.random(784, bond_dim=2, seed=0)
    trainer = tnborn.SweepTrainer(model, lr=0.05, descent_steps=4, cutoff=1e-2, max_bond=12,
                                  progress=False)
    history = trainer.fit(train, loops=2, test_data=unseen)
    for record in history:
        print(f"loop {record['loop']:.1f}: train NLL {record['train_nll']:6.1f}, "
              f"unseen images {record['test_nll']:6.1f}, max bond {record['max_bond']}")
    fig_history = plot_history(history, title="100 MNIST digits, max bond 12")

# %%
# The training NLL falls towards its floor ``ln 100 = 4.6`` while the NLL of
# the unseen images rises after the first half-sweep: with 100 images, the
# bonds spend their capacity on those images. The paper reports training NLL
# only; the held-out NLL is the honest measure of generalisation, and it needs
# far more data than this example uses.

# %%
# Exact samples from the model.
if DATA is not None:
    samples, _ = model.sample(24, seed=0)
    fig_samples = plot_samples(samples.numpy(), image_shape=(28, 28), ncols=8, title="exact samples")

# %%
# Inpainting: the top half of each image is known (``mask`` is True there),
# the bottom half is sampled exactly from ``P(bottom | top)``; three
# completions per image.
if DATA is not None:
    mask = np.zeros(784, dtype=bool)
    mask[: 14 * 28] = True
    seen_images = train[:4]
    completions, log_cond = model.sample_conditional(seen_images, mask, num_samples=3, seed=1)
    fig_seen = plot_inpainting(seen_images, mask, completions.numpy(), image_shape=(28, 28),
                               title="training images: bottom half resampled")

# %%
# The same for images the model never saw.
if DATA is not None:
    new_images = unseen[:4]
    completions, log_cond = model.sample_conditional(new_images, mask, num_samples=3, seed=2)
    fig_unseen = plot_inpainting(new_images, mask, completions.numpy(), image_shape=(28, 28),
                                 title="unseen images: bottom half resampled")
    print("log P(bottom | top) of the completions:")
    print(np.round(log_cond.numpy(), 1))
