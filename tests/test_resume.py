"""A resumed run is the same run, to the bit (CPU), and a crash during a save loses nothing.

- Sweep training (MPS and tree, mini-batches with shuffling, a batch stream
  that does not divide the data, bond dimensions adapting) and gradient
  training (Adam, mini-batches) are checkpointed after every half-sweep /
  epoch of one uninterrupted run. Resuming from the checkpoint after
  half-sweep ``k`` (also in the middle of a loop) and training on reaches
  exactly the uninterrupted run's arrays, centre, counters, batch stream,
  generator state and history (the ``seconds`` of each record aside).
- A training process that saves a checkpoint after every half-sweep is
  killed with SIGKILL while a save is in progress (the temporary file
  ``.model.tnb.*.tmp`` exists): the previous checkpoint still loads, and
  resuming from it reproduces the uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tnborn
from tnborn import Callback, GradientTrainer, MPSBornMachine, PEPSBornMachine, SweepTrainer, TreeBornMachine
from tnborn.checkpoint import load_trainer_state

from conftest import canonical_arrays

ROOT = Path(__file__).resolve().parents[1]


class SaveEvery(Callback):
    """Save ``<folder>/h<k>.tnb`` after every half-sweep (or epoch) ``k``."""

    def __init__(self, folder: Path):
        self.folder = folder

    def on_half_sweep_end(self, trainer, record):
        done = getattr(trainer, "half_sweeps_done", None) or trainer.epochs_done
        trainer.save_checkpoint(self.folder / f"h{done}.tnb")


class StopAt(Callback):
    """Stop the fit once ``count`` half-sweeps (or epochs) are done."""

    def __init__(self, count: int):
        self.count = count

    def on_half_sweep_end(self, trainer, record):
        done = getattr(trainer, "half_sweeps_done", None) or trainer.epochs_done
        if done >= self.count:
            trainer.stop_training = True


def assert_same_model(a, b) -> None:
    """Same centre, bond dimensions and node arrays to the bit (index names may differ)."""
    assert type(a) is type(b) and a.center == b.center and a.bond_dims() == b.bond_dims()
    ca, cb = canonical_arrays(a), canonical_arrays(b)
    assert len(ca) == len(cb)
    for da, db in zip(ca, cb):
        assert da.dtype == db.dtype and da.shape == db.shape
        assert torch.equal(da, db)


def _without_seconds(state: dict) -> dict:
    state = dict(state)
    state["history"] = [{k: v for k, v in r.items() if k != "seconds"} for r in state["history"]]
    return state


def _resume(path: Path, trainer_cls, **kw):
    model = tnborn.load(path)
    trainer = trainer_cls(model, progress=False, **kw)
    trainer.load_state_dict(load_trainer_state(path)["state"])
    return model, trainer


# --------------------------------------------------------------------------- #
# sweep trainer
# --------------------------------------------------------------------------- #
SWEEP_CASES = {
    # 14 rows, 4 x 3 rows per bond: the batch stream crosses epochs mid-update
    "mps": (lambda: MPSBornMachine.random(9, 2, seed=0), lambda: tnborn.bars_and_stripes(3),
            dict(batch_size=4, descent_steps=3, lr=0.01, cutoff=1e-6, max_bond=6, seed=11)),
    "tree": (lambda: TreeBornMachine.random(8, 2, seed=1, layout="binary"),
             lambda: tnborn.random_binary(13, 8, seed=5),
             dict(batch_size=5, descent_steps=2, lr=0.05, cutoff=1e-4, max_bond=5, seed=12)),
}


@pytest.fixture(scope="module", params=sorted(SWEEP_CASES))
def sweep_run(request, tmp_path_factory):
    """One uninterrupted 3-loop run with a checkpoint after every half-sweep."""
    make_model, make_data, kw = SWEEP_CASES[request.param]
    folder = tmp_path_factory.mktemp(f"resume_{request.param}")
    model, data = make_model(), make_data()
    trainer = SweepTrainer(model, progress=False, callbacks=[SaveEvery(folder)], **kw)
    trainer.fit(data, loops=3)
    return request.param, folder, model, trainer, data, kw


def test_sweep_resume_reaches_the_uninterrupted_end(sweep_run):
    """Resume after loop 1 and train 2 more loops == 3 uninterrupted loops, to the bit."""
    name, folder, model, trainer, data, kw = sweep_run
    per_loop = len(model.sweep_schedule())
    resumed, rt = _resume(folder / f"h{per_loop}.tnb", SweepTrainer)
    rt.fit(data, loops=2)
    assert_same_model(resumed, model)
    assert _without_seconds(rt.state_dict()) == _without_seconds(trainer.state_dict())


@pytest.mark.parametrize("k", [1, 3])
def test_sweep_resume_from_the_middle_of_a_loop(sweep_run, k):
    """Resume after half-sweep k (not a loop boundary): the next half-sweeps continue the schedule."""
    name, folder, model, trainer, data, kw = sweep_run
    per_loop = len(model.sweep_schedule())
    resumed, rt = _resume(folder / f"h{k}.tnb", SweepTrainer)
    rt.fit(data, loops=1)  # one loop's worth of half-sweeps, starting where the run stopped
    assert rt.half_sweeps_done == k + per_loop
    reference_path = folder / f"h{k + per_loop}.tnb"
    assert_same_model(resumed, tnborn.load(reference_path))
    assert _without_seconds(rt.state_dict()) == _without_seconds(load_trainer_state(reference_path)["state"])


def test_sweep_fit_in_pieces_is_one_run(sweep_run):
    """fit(1 loop) then fit(2 loops) on the same trainer == fit(3 loops)."""
    name, folder, model, trainer, data, kw = sweep_run
    make_model, _, _ = SWEEP_CASES[name]
    m2 = make_model()
    t2 = SweepTrainer(m2, progress=False, **kw)
    t2.fit(data, loops=1)
    t2.fit(data, loops=2)
    assert_same_model(m2, model)
    assert _without_seconds(t2.state_dict()) == _without_seconds(trainer.state_dict())


def test_checkpoint_holds_everything_needed(sweep_run):
    """Model, counters, RNG state, batch stream, history and settings are in the file; no pickle."""
    name, folder, model, trainer, data, kw = sweep_run
    path = folder / "h2.tnb"
    state = load_trainer_state(path)
    assert state["class"] == "SweepTrainer"
    assert {"settings", "half_sweeps_done", "pointer", "perm", "generator_state", "history"} <= set(state["state"])
    assert state["state"]["half_sweeps_done"] == 2 and len(state["state"]["history"]) == 2
    for key, value in kw.items():
        assert state["state"]["settings"][key] == value
    import zipfile

    with zipfile.ZipFile(path) as zf:  # readable without pickle: JSON header and .npy arrays
        names = zf.namelist()
    assert names[0] == "header.json" and all(n.endswith(".npy") for n in names[1:])
    info = tnborn.io.read_header(path)
    assert info["format_version"] == tnborn.io.FORMAT_VERSION and len(info["checksum"]) == 64


def test_resume_with_new_data_restarts_the_batch_stream(sweep_run):
    """A resumed trainer keeps its batch stream for the same data and restarts it for other data."""
    name, folder, model, trainer, data, kw = sweep_run
    _, rt = _resume(folder / "h1.tnb", SweepTrainer)
    state = rt.state_dict()
    other = np.ascontiguousarray(data[::-1][: data.shape[0] - 1])
    rt.fit(other, loops=1)
    assert rt.state_dict()["perm"] is None or len(rt.state_dict()["perm"]) == other.shape[0]
    assert state["perm"] is None or len(state["perm"]) == data.shape[0]


# --------------------------------------------------------------------------- #
# gradient trainer
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("geometry", ["peps", "mps"])
def test_gradient_trainer_resume_is_bit_identical(tmp_path, geometry):
    data = tnborn.random_binary(11, 6, seed=3)
    make = {"peps": lambda: PEPSBornMachine.random(6, 2, seed=2),
            "mps": lambda: MPSBornMachine.random(6, 3, seed=2)}[geometry]
    kw = dict(lr=0.05, batch_size=4, seed=5)
    model = make()
    trainer = GradientTrainer(model, progress=False, callbacks=[SaveEvery(tmp_path)], **kw)
    trainer.fit(data, epochs=4)
    resumed, rt = _resume(tmp_path / "h2.tnb", GradientTrainer)
    rt.fit(data, epochs=2)
    assert_same_model(resumed, model)
    assert _without_seconds(rt.state_dict()) == _without_seconds(trainer.state_dict())


# --------------------------------------------------------------------------- #
# SIGKILL during a save
# --------------------------------------------------------------------------- #
CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import torch
    torch.set_num_threads(1)
    import tnborn

    # Slow every array write down, so that a save takes a measurable time and the
    # parent can kill the process while the temporary file is being written.
    _write = np.lib.format.write_array
    def slow_write(fh, array, *args, **kwargs):
        time.sleep(0.03)
        return _write(fh, array, *args, **kwargs)
    np.lib.format.write_array = slow_write

    path = sys.argv[1]
    data = tnborn.bars_and_stripes(4)
    model = tnborn.MPSBornMachine.random(16, 2, seed=0)
    trainer = tnborn.SweepTrainer(model, progress=False, batch_size=7, descent_steps=2, lr=0.02,
                                  cutoff=1e-5, max_bond=8, seed=4,
                                  callbacks=[tnborn.PeriodicCheckpoint(path, every=1)])
    trainer.fit(data, loops=1000)
    """
)
CHILD_KW = dict(batch_size=7, descent_steps=2, lr=0.02, cutoff=1e-5, max_bond=8, seed=4)


def _temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".model.tnb.*.tmp"))


def test_sigkill_during_save_keeps_the_previous_checkpoint(tmp_path):
    ckpt = tmp_path / "model.tnb"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), str(ckpt)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 25
    killed_during_save = False
    try:
        # wait for a complete checkpoint, then for the next save to start
        while time.monotonic() < deadline and proc.poll() is None and not ckpt.exists():
            time.sleep(0.005)
        while time.monotonic() < deadline and proc.poll() is None:
            if _temp_files(tmp_path):
                time.sleep(0.1)  # a few arrays into the save
                if _temp_files(tmp_path):
                    proc.send_signal(signal.SIGKILL)
                    killed_during_save = True
                    break
            time.sleep(0.002)
    finally:
        if proc.poll() is None and not killed_during_save:
            proc.kill()
        proc.wait(timeout=10)
    assert killed_during_save, f"no save caught in progress; child stderr: {proc.stderr.read().decode()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    # the interrupted save left its temporary file, never a partial checkpoint
    assert _temp_files(tmp_path)
    model = tnborn.load(ckpt)
    state = load_trainer_state(ckpt)["state"]
    k = state["half_sweeps_done"]
    assert k >= 1 and len(state["history"]) == k

    # resume for one loop (2 half-sweeps), saving again next to the orphaned temporary file
    trainer = SweepTrainer(model, progress=False, callbacks=[tnborn.PeriodicCheckpoint(ckpt, every=1)])
    trainer.load_state_dict(state)
    data = tnborn.bars_and_stripes(4)
    trainer.fit(data, loops=1)
    assert trainer.half_sweeps_done == k + 2
    assert load_trainer_state(ckpt)["state"]["half_sweeps_done"] == k + 2

    # ... which is the uninterrupted run
    ref = MPSBornMachine.random(16, 2, seed=0)
    ref_trainer = SweepTrainer(ref, progress=False, callbacks=[StopAt(k + 2)], **CHILD_KW)
    ref_trainer.fit(data, loops=1000)
    assert ref_trainer.half_sweeps_done == k + 2
    assert_same_model(model, ref)
    assert _without_seconds(trainer.state_dict()) == _without_seconds(ref_trainer.state_dict())


# --------------------------------------------------------------------------- #
# determinism on the CPU
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", sorted(SWEEP_CASES))
def test_two_identical_runs_are_bit_identical(name):
    """Same seeds, same settings: the same arrays, history and samples, to the bit."""
    make_model, make_data, kw = SWEEP_CASES[name]
    runs = []
    for _ in range(2):
        model = make_model()
        trainer = SweepTrainer(model, progress=False, **kw)
        trainer.fit(make_data(), loops=2)
        samples, logp = model.sample(50, seed=9)
        runs.append((model, trainer, samples, logp))
    (m1, t1, s1, l1), (m2, t2, s2, l2) = runs
    assert_same_model(m1, m2)
    for a, b in zip(m1.arrays(), m2.arrays()):
        assert torch.equal(a, b)
    assert _without_seconds(t1.state_dict()) == _without_seconds(t2.state_dict())
    assert torch.equal(s1, s2) and torch.equal(l1, l2)


def test_two_identical_gradient_runs_are_bit_identical():
    data = tnborn.random_binary(11, 6, seed=3)
    runs = []
    for _ in range(2):
        model = PEPSBornMachine.random(6, 2, seed=2)
        GradientTrainer(model, progress=False, lr=0.05, batch_size=4, seed=5).fit(data, epochs=3)
        runs.append(model)
    for a, b in zip(runs[0].arrays(), runs[1].arrays()):
        assert torch.equal(a, b)
