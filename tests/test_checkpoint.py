"""Checkpoints of models and trainers (tnborn.save / load / checkpoint_info), and bad files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import tnborn
from tnborn import MPSBornMachine, SweepTrainer
from tnborn.checkpoint import load_trainer_state
from tnborn.errors import CheckpointError, DataError, DeviceError
from tnborn.io import save_arrays

from conftest import all_configs, assert_unchanged, canonical_arrays, exact_log_probs, snapshot
from tolerances import tol


def _trained(loops: int = 1, **kw):
    data = tnborn.bars_and_stripes(3)
    model = MPSBornMachine.random(9, 2, seed=0)
    trainer = SweepTrainer(model, progress=False, **kw)
    trainer.fit(data, loops=loops)
    return model, trainer, data


def test_round_trip_model_and_trainer(tmp_path):
    model, trainer, data = _trained(loops=1)
    model.move_center(5)  # an interior centre, after splits reordered the indices
    path = tmp_path / "sub" / "model.tnb"
    written = tnborn.save(path, model, trainer=trainer)
    assert written == path and path.exists()
    loaded = tnborn.load(path)
    assert type(loaded) is MPSBornMachine
    assert loaded.center == 5
    assert loaded.bond_dims() == model.bond_dims()
    assert loaded.dtype == torch.float64
    x = all_configs(9)
    assert torch.equal(loaded.log_prob(x), model.log_prob(x))
    for a, b in zip(canonical_arrays(loaded), canonical_arrays(model)):
        assert torch.equal(a, b)
    # the restored centre is real: log Z from it equals the full contraction
    assert abs(float(loaded.log_norm() - tnborn.BornMachine.log_norm(loaded))) < 1e-12
    state = load_trainer_state(path)
    assert state["class"] == "SweepTrainer"
    assert state["state"]["history"] == trainer.history


def test_checkpoint_info_summary(tmp_path):
    model, trainer, data = _trained(loops=1)
    path = tnborn.save(tmp_path / "m.tnb", model, trainer=trainer, extra={"note": "x"})
    info = tnborn.checkpoint_info(path)
    assert info["geometry"] == "mps"
    assert info["config"]["num_variables"] == 9
    assert info["dtype"] == "float64"
    assert info["bond_dims"] == model.bond_dims()
    assert info["max_bond"] == model.max_bond
    assert info["num_parameters"] == model.num_parameters()
    assert info["center"] == model.center
    assert info["trainer"] == "SweepTrainer"
    assert info["records"] == len(trainer.history) == 2
    assert info["first_train_nll"] == trainer.history[0]["train_nll"]
    assert info["last_train_nll"] == trainer.history[-1]["train_nll"]
    assert info["loops"] == trainer.history[-1]["loop"]
    assert set(info["versions"]) >= {"tnborn", "quimb", "torch", "numpy"}
    # without a trainer
    bare = tnborn.checkpoint_info(tnborn.save(tmp_path / "bare.tnb", model))
    assert bare["trainer"] is None and bare["records"] == 0


def test_resume_is_bit_identical(tmp_path):
    """Train 1 loop, save, load model + trainer, train 1 more == 2 uninterrupted loops."""
    kw = dict(batch_size=5, descent_steps=3, lr=0.01, seed=3)
    full, full_trainer, data = _trained(loops=2, **kw)
    half, half_trainer, _ = _trained(loops=1, **kw)
    path = tnborn.save(tmp_path / "half.tnb", half, trainer=half_trainer)
    resumed = tnborn.load(path)
    trainer = SweepTrainer(resumed, progress=False)
    trainer.load_state_dict(load_trainer_state(path)["state"])
    trainer.fit(data, loops=1)
    assert resumed.bond_dims() == full.bond_dims()
    for a, b in zip(canonical_arrays(resumed), canonical_arrays(full)):
        assert torch.equal(a, b)
    assert [r["train_nll"] for r in trainer.history] == [r["train_nll"] for r in full_trainer.history]


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
def test_load_casts_dtype(tmp_path, dtype):
    model, _, _ = _trained(loops=1)
    path = tnborn.save(tmp_path / "m.tnb", model)
    loaded = tnborn.load(path, dtype=dtype)
    assert loaded.dtype == getattr(torch, dtype)
    assert loaded.center == model.center
    x = all_configs(9)
    exact = exact_log_probs(model)
    p = model.log_prob(x)
    typical = exact > -12  # away from near-cancellations, where float32 loses relative precision
    err = float((loaded.log_prob(x).double() - p)[typical].abs().max())
    assert err < tol(getattr(torch, dtype)), err
    # and the stored dtype is what the file says
    assert tnborn.checkpoint_info(path)["dtype"] == "float64"
    assert tnborn.load(tnborn.save(tmp_path / "c.tnb", loaded)).dtype == getattr(torch, dtype)


@pytest.mark.parametrize("geometry", tnborn.available_geometries())
def test_round_trip_every_geometry(tmp_path, geometry):
    cls = tnborn.get_geometry(geometry)
    model = cls.random(6, 2, seed=1)
    loaded = tnborn.load(tnborn.save(tmp_path / f"{geometry}.tnb", model))
    assert type(loaded) is cls and loaded.center == model.center
    x = all_configs(6)
    assert torch.equal(loaded.log_prob(x), model.log_prob(x))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_load_to_absent_cuda_raises(tmp_path):
    path = tnborn.save(tmp_path / "m.tnb", MPSBornMachine.random(5, 2, seed=0))
    with pytest.raises(DeviceError, match="CUDA"):
        tnborn.load(path, device="cuda")


# --------------------------------------------------------------------------- #
# corrupt and foreign files
# --------------------------------------------------------------------------- #
@pytest.fixture
def good_file(tmp_path):
    return tnborn.save(tmp_path / "good.tnb", MPSBornMachine.random(6, 3, seed=0))


def test_truncated_checkpoint(tmp_path, good_file):
    raw = good_file.read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 5):
        bad = tmp_path / f"trunc{cut}.tnb"
        bad.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match="truncated|corrupt"):
            tnborn.load(bad)
        with pytest.raises(CheckpointError):
            tnborn.checkpoint_info(bad)


def test_random_bytes_checkpoint(tmp_path):
    bad = tmp_path / "random.tnb"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a tnborn checkpoint"):
        tnborn.load(bad)


def test_plain_npz_checkpoint(tmp_path):
    bad = tmp_path / "plain.npz"
    np.savez(bad, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="npz"):
        tnborn.load(bad)


def test_flipped_byte_in_array_data(tmp_path, good_file):
    raw = bytearray(good_file.read_bytes())
    # flip bytes in the middle of the archive (array payloads), one at a time
    caught = 0
    for pos in range(len(raw) // 4, len(raw) // 2, max(1, len(raw) // 40)):
        bad = tmp_path / f"flip{pos}.tnb"
        data = bytearray(raw)
        data[pos] ^= 0xFF
        bad.write_bytes(bytes(data))
        try:
            loaded = tnborn.load(bad)
        except CheckpointError:
            caught += 1
            continue
        # a flip that went unnoticed must not have changed the model
        ref = tnborn.load(good_file)
        for a, b in zip(canonical_arrays(loaded), canonical_arrays(ref)):
            assert torch.equal(a, b)
    assert caught > 0


def test_io_archive_without_model_metadata(tmp_path):
    path = save_arrays(tmp_path / "other.tnb", {"x": np.zeros(3)}, {"purpose": "not a model"})
    with pytest.raises(CheckpointError, match="not a tnborn model checkpoint"):
        tnborn.load(path)
    with pytest.raises(CheckpointError, match="not a tnborn model checkpoint"):
        tnborn.checkpoint_info(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        tnborn.load(tmp_path / "nothing.tnb")


def test_failed_save_leaves_model_unchanged(tmp_path):
    model = MPSBornMachine.random(5, 2, seed=0)
    before = snapshot(model)
    with pytest.raises(Exception):
        tnborn.save(tmp_path / "m.tnb", model, extra={"bad": object()})
    assert_unchanged(model, before)
    assert not (tmp_path / "m.tnb").exists()


# --------------------------------------------------------------------------- #
# data files (tnborn.load_binary): unknown file / key
# --------------------------------------------------------------------------- #
def test_load_binary_unknown_file(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        tnborn.load_binary(tmp_path / "missing.npy")


def test_load_binary_unknown_key(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, data=np.zeros((2, 4), dtype=np.uint8), other=np.ones((2, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="no array 'nope'.*available keys"):
        tnborn.load_binary(path, key="nope")
    with pytest.raises(DataError, match="key"):
        tnborn.load_binary(path)  # several arrays: a key is required
    assert tnborn.load_binary(path, key="other").sum() == 8


def test_load_binary_wrong_kind_of_file(tmp_path, good_file):
    with pytest.raises(DataError, match="expected a name ending in"):
        tnborn.load_binary(good_file)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(os.urandom(100))
    with pytest.raises(DataError):
        tnborn.load_binary(bad)


def test_bad_trainer_state_raises_data_error():
    model = MPSBornMachine.random(6, 2, seed=0)
    trainer = SweepTrainer(model, progress=False)
    with pytest.raises(DataError, match="invalid trainer state"):
        trainer.load_state_dict({"history": []})
