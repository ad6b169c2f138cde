"""Transactional two-site updates: a failed update leaves the model and the trainer as they were.

Failures are forced by monkeypatching the decomposition (quimb's
``array_split`` for the MPS fast path, ``quimb.tensor.tensor_split`` for the
generic split of the tree) and the gradient steps
(:func:`tnborn.training.sweep.block_gradient_steps`):

- an SVD that never converges: the trainer tries the other SVD method (and,
  for float32 models, a float64 SVD), then stops with a NumericalError; the
  model's arrays, index names and centre and the trainer's whole state
  (counters, batch stream, generator, history) are bit-identical;
- an SVD that fails once: the retry recovers, the run is the same run as
  without the failure, and the fallback is reported (WARNING on the
  ``tnborn`` logger and a ``fallbacks`` count in the history);
- NaN in the environments or ``psi(x) = 0``: the learning rate is halved up
  to three times, then a NumericalError; never NaN in the network;
- out of memory: no retry, the error propagates, the model is untouched;
- :meth:`BornMachine.split` refuses non-finite halves without writing them.

Also: the :class:`~tnborn.errors.PrecisionWarning` for float32 cutoffs, and
a long-chain stability check (slow) that runs the benchmark's checks on a
small bond dimension.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import quimb.tensor as qtn
import quimb.tensor.decomp as qdecomp
import torch

import tnborn
import tnborn.training.sweep as sweep_module
from tnborn import MPSBornMachine, SweepTrainer, TreeBornMachine
from tnborn.environments import EnvironmentCache
from tnborn.errors import NumericalError, PrecisionWarning

from tolerances import rounding_bound

ROOT = Path(__file__).resolve().parents[1]
LR = 0.01


@pytest.fixture(autouse=True)
def _plain_path(monkeypatch):
    """These tests inject failures into the plain torch path (its SVD, its gradient steps), so
    they run it: the compiled kernels (tnborn.kernels) decline on any failure and hand over to
    this path, which is what raises and retries (tests/test_kernels.py checks the declining)."""
    monkeypatch.setenv("TNBORN_KERNELS", "torch")



def _state(model) -> list:
    return [(tuple(model.node_tensor(n).inds), model.node_tensor(n).data.clone()) for n in model.nodes()] + [
        model.center]


def assert_bit_identical(model, before) -> None:
    after = _state(model)
    assert after[-1] == before[-1], "centre moved"
    assert len(after) == len(before)
    for (ia, da), (ib, db) in zip(after[:-1], before[:-1]):
        assert ia == ib
        assert da.dtype == db.dtype and da.shape == db.shape and torch.equal(da, db)


def assert_finite(model) -> None:
    for a in model.arrays():
        assert torch.isfinite(a).all()


def _make(geometry: str, dtype: str = "float64"):
    if geometry == "mps":
        return MPSBornMachine.random(9, 2, seed=0, dtype=dtype), tnborn.bars_and_stripes(3)
    return TreeBornMachine.random(8, 2, seed=1, layout="binary", dtype=dtype), tnborn.random_binary(13, 8, seed=5)


def _trainer(model, **kw):
    settings = dict(lr=LR, descent_steps=3, batch_size=5, cutoff=1e-5, max_bond=6, seed=2)
    settings.update(kw)
    return SweepTrainer(model, progress=False, **settings)


class SVDPatch:
    """Replace both split entry points; ``fail(call_number, dtype, method)`` says when to raise."""

    def __init__(self, monkeypatch, fail, error=None, same_method=False, poison=False):
        self.calls: list[tuple[str, torch.dtype]] = []
        self.fail, self.error, self.same_method, self.poison = fail, error, same_method, poison
        orig_array, orig_tensor = qdecomp.array_split, qtn.tensor_split

        def array_split(x, *args, **kw):
            return self._call(orig_array, x, x.dtype, args, kw)

        def tensor_split(t, *args, **kw):
            return self._call(orig_tensor, t, t.dtype, args, kw)

        monkeypatch.setattr(qdecomp, "array_split", array_split)
        monkeypatch.setattr(qtn, "tensor_split", tensor_split)

    def _call(self, orig, x, dtype, args, kw):
        self.calls.append((kw.get("method"), dtype))
        if self.fail(len(self.calls), dtype, kw.get("method")):
            if self.poison:
                out = list(orig(x, *args, **kw))
                first = out[0]
                out[0] = first * float("nan") if isinstance(first, torch.Tensor) else \
                    qtn.Tensor(first.data * float("nan"), inds=first.inds)
                return tuple(out)
            raise self.error or torch.linalg.LinAlgError("forced: the algorithm failed to converge")
        if self.same_method:
            kw = dict(kw, method="svd")
        return orig(x, *args, **kw)


# --------------------------------------------------------------------------- #
# SVD failures
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("geometry,dtype", [("mps", "float64"), ("mps", "float32"), ("tree", "float64"),
                                            ("tree", "float32")])
def test_always_failing_svd_leaves_everything_unchanged(monkeypatch, geometry, dtype):
    model, data = _make(geometry, dtype)
    trainer = _trainer(model)
    trainer.fit(data, loops=1)  # a non-trivial state: bonds grown, batch stream mid-epoch
    before, state = _state(model), trainer.state_dict()
    patch = SVDPatch(monkeypatch, lambda k, dt, m: True)
    with pytest.raises(NumericalError, match=r"did not converge.*unchanged by this update"):
        trainer.fit(data, loops=1)
    assert_bit_identical(model, before)
    assert trainer.state_dict() == state
    # the other method, then (float32 only) a float64 SVD
    methods = [m for m, _ in patch.calls]
    expected = ["svd", "svd:eig"] + (["svd"] if dtype == "float32" else [])
    assert methods == expected
    if dtype == "float32":
        assert [dt for _, dt in patch.calls] == [torch.float32, torch.float32, torch.float64]
    # nothing is poisoned: training goes on once the SVD works again
    monkeypatch.undo()
    trainer.fit(data, loops=1)
    assert_finite(model)
    assert np.isfinite(trainer.history[-1]["train_nll"])


@pytest.mark.parametrize("geometry", ["mps", "tree"])
def test_once_failing_svd_recovers_and_is_the_same_run(monkeypatch, caplog, geometry):
    """The retry sees the same block, batches and generator state: with the fallback method made
    numerically equal to the first, the run is bit-identical to an unperturbed one."""
    ref_model, data = _make(geometry)
    ref = _trainer(ref_model)
    ref.fit(data, loops=2)

    model, _ = _make(geometry)
    trainer = _trainer(model)
    patch = SVDPatch(monkeypatch, lambda k, dt, m: k == 3, same_method=True)
    with caplog.at_level(logging.WARNING, logger="tnborn"):
        trainer.fit(data, loops=2)
    assert [m for m, _ in patch.calls[2:4]] == ["svd", "svd:eig"]
    assert trainer.fallbacks == 1
    assert [r["fallbacks"] for r in trainer.history] == [1, 0, 0, 0]
    assert any("svd:eig" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    for (ia, a), (ib, b) in zip(_state(model)[:-1], _state(ref_model)[:-1]):
        assert a.shape == b.shape and torch.equal(a, b)
    strip = lambda s: {k: v for k, v in s.items() if k not in ("history", "fallbacks")}  # noqa: E731
    assert strip(trainer.state_dict()) == strip(ref.state_dict())
    assert [r["train_nll"] for r in trainer.history] == [r["train_nll"] for r in ref.history]


@pytest.mark.parametrize("geometry", ["mps", "tree"])
def test_float32_model_falls_back_to_a_float64_svd(monkeypatch, geometry):
    model, data = _make(geometry, "float32")
    trainer = _trainer(model)
    patch = SVDPatch(monkeypatch, lambda k, dt, m: dt == torch.float32)
    trainer.fit(data, loops=1)
    steps = sum(len(h) for h in model.sweep_schedule())
    assert trainer.fallbacks == 2 * steps  # svd:eig in float32, then svd in float64, on every bond
    assert sum(1 for _, dt in patch.calls if dt == torch.float64) == steps
    assert all(a.dtype == torch.float32 for a in model.arrays())
    assert_finite(model)
    assert abs(float(model.log_norm())) < 1e-5


def test_failure_in_the_middle_of_a_half_sweep_keeps_the_earlier_updates(monkeypatch):
    model, data = _make("mps")
    trainer = _trainer(model)
    reference, _ = _make("mps")
    ref = _trainer(reference)
    # the reference stops after 3 updates (by a failure of everything after them)
    SVDPatch(monkeypatch, lambda k, dt, m: k > 3)
    with pytest.raises(NumericalError):
        trainer.fit(data, loops=1)
    assert_finite(model)
    assert trainer.half_sweeps_done == 0 and trainer.history == []
    # the model is the state after exactly three successful updates, canonical around the last target
    monkeypatch.undo()
    monkeypatch.setenv("TNBORN_KERNELS", "torch")  # (undo() removed it too) the same path as above
    cache = EnvironmentCache(reference, reference.as_configurations(data))
    for source, target in reference.sweep_schedule()[0][:3]:
        ref.update_bond(cache, source, target)
    for (ia, a), (ib, b) in zip(_state(model)[:-1], _state(reference)[:-1]):
        assert torch.equal(a, b)
    assert model.center == reference.center
    # log Z from the centre against the transfer-matrix contraction: a sum of squares (condition
    # number 1), each path a few rounded steps per entry of the transfer matrices
    ops = sum(d * d for d in model.bond_dims()) + model.num_variables
    exact = float(tnborn.BornMachine.log_norm(model))
    assert abs(float(model.log_norm()) - exact) <= rounding_bound(torch.float64, ops)
    assert ref.state_dict()["pointer"] == trainer.state_dict()["pointer"]


# --------------------------------------------------------------------------- #
# non-finite values, zero amplitudes, out of memory
# --------------------------------------------------------------------------- #
class StepPatch:
    """Wrap block_gradient_steps: record the lr and put NaN into the features when ``bad(call)``."""

    def __init__(self, monkeypatch, bad):
        self.lrs: list[float] = []
        orig = sweep_module.block_gradient_steps

        def steps(matrix, feats, last, batches, lr, **kwargs):
            self.lrs.append(lr)
            if bad(len(self.lrs)):
                feats = feats.clone()
                feats[0] = float("nan")
            return orig(matrix, feats, last, batches, lr, **kwargs)

        monkeypatch.setattr(sweep_module, "block_gradient_steps", steps)


@pytest.mark.parametrize("geometry", ["mps", "tree"])
def test_nan_environment_halves_lr_three_times_then_stops(monkeypatch, geometry):
    model, data = _make(geometry)
    trainer = _trainer(model)
    trainer.fit(data, loops=1)
    before, state = _state(model), trainer.state_dict()
    patch = StepPatch(monkeypatch, lambda k: True)
    with pytest.raises(NumericalError, match=r"zero or non-finite.*lr halved 3 times.*max_nll_rise=0"):
        trainer.fit(data, loops=1)
    assert patch.lrs == [LR, LR / 2, LR / 4, LR / 8]
    assert_bit_identical(model, before)
    assert trainer.state_dict() == state


def test_transient_nan_recovers_with_half_the_lr(monkeypatch, caplog):
    model, data = _make("mps")
    trainer = _trainer(model)
    patch = StepPatch(monkeypatch, lambda k: k == 2)
    with caplog.at_level(logging.WARNING, logger="tnborn"):
        trainer.fit(data, loops=1)
    assert patch.lrs[:4] == [LR, LR, LR / 2, LR]  # only the failed update is retried at lr / 2
    assert trainer.settings.lr == LR and trainer.fallbacks == 1
    assert any("lr" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert_finite(model)


def test_zero_amplitude_training_sample_stops_cleanly():
    model = MPSBornMachine.random(6, 2, seed=0)
    t = model.node_tensor(0)
    data = t.data.clone()
    data.select(t.inds.index(model.variable_index(0)), 1).zero_()
    t.modify(data=data)
    model.drop_center()
    model.move_center(5)  # canonical again; psi(x) = 0 whenever x_0 = 1
    x = np.ones((3, 6), dtype=np.int64)
    assert not torch.isfinite(model.log_prob(x)).any()
    trainer = SweepTrainer(model, progress=False)
    before, state = _state(model), trainer.state_dict()
    with pytest.raises(NumericalError, match=r"probability is zero.*lr halved 3 times"):
        trainer.fit(x, loops=1)
    assert_bit_identical(model, before)
    assert trainer.state_dict()["pointer"] == state["pointer"] and trainer.history == []


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                                "can't allocate memory: you tried to allocate 4096 bytes. "
                                                "Error code 12 (out of memory)")])
def test_out_of_memory_is_raised_without_retry(monkeypatch, error):
    model, data = _make("mps")
    trainer = _trainer(model)
    trainer.fit(data, loops=1)
    before, state = _state(model), trainer.state_dict()
    patch = SVDPatch(monkeypatch, lambda k, dt, m: True, error=error)
    with pytest.raises(RuntimeError, match="out of memory"):
        trainer.fit(data, loops=1)
    assert len(patch.calls) == 1
    assert_bit_identical(model, before)
    assert trainer.state_dict() == state


# --------------------------------------------------------------------------- #
# split itself
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("geometry", ["mps", "tree"])
def test_split_refuses_non_finite_halves(monkeypatch, geometry):
    model, _ = _make(geometry)
    (u, v) = model.sweep_schedule()[0][0]
    model.move_center(u)
    block = model.merge(u, v)
    before = _state(model)
    SVDPatch(monkeypatch, lambda k, dt, m: True, poison=True)
    with pytest.raises(NumericalError, match="non-finite"):
        model.split(block, target=v)
    assert_bit_identical(model, before)


@pytest.mark.parametrize("geometry", ["mps", "tree"])
def test_split_wraps_a_failed_svd(monkeypatch, geometry):
    model, _ = _make(geometry)
    (u, v) = model.sweep_schedule()[0][0]
    model.move_center(u)
    block = model.merge(u, v)
    before = _state(model)
    SVDPatch(monkeypatch, lambda k, dt, m: True)
    with pytest.raises(NumericalError, match="did not converge"):
        model.split(block, target=v)
    assert_bit_identical(model, before)


# --------------------------------------------------------------------------- #
# float32 precision
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype,cutoff,warns", [
    ("float32", 1e-7, True), ("float32", 1e-8, True), ("complex64", 1e-7, True),
    ("float32", 5e-5, False), ("float32", 0.0, False), ("float64", 1e-7, False), ("float64", 1e-14, False),
])
def test_precision_warning_for_float32_cutoffs(dtype, cutoff, warns):
    model = MPSBornMachine.random(6, 2, seed=0, dtype=dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SweepTrainer(model, cutoff=cutoff, progress=False)
    hits = [w for w in caught if issubclass(w.category, PrecisionWarning)]
    assert len(hits) == (1 if warns else 0)
    if warns:
        assert "noise" in str(hits[0].message) and "1.2e-06" in str(hits[0].message)


def test_precision_warning_once_per_setting_and_on_fit_overrides():
    model = MPSBornMachine.random(6, 2, seed=0, dtype="float32")
    data = tnborn.random_binary(10, 6, seed=0)
    trainer = SweepTrainer(model, progress=False)  # default cutoff 5e-5: fine
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(data, loops=1, cutoff=1e-7)
        trainer.fit(data, loops=1)
    assert sum(issubclass(w.category, PrecisionWarning) for w in caught) == 1


# --------------------------------------------------------------------------- #
# long chains (the benchmark's checks at a small bond dimension)
# --------------------------------------------------------------------------- #
def _stability_module():
    spec = importlib.util.spec_from_file_location("stability_784", ROOT / "benchmarks" / "stability_784.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_long_chain_is_numerically_stable():
    stability = _stability_module()
    result = stability.run(784, 12, ["float64", "float32"], images=20)
    for dtype in ("float64", "float32"):
        r = result[dtype]
        assert r["ok"], r
        assert r["sample_vs_log_prob_max_abs"] < (1e-8 if dtype == "float64" else 5e-2)
        assert r["move_center_log_prob_change"] < (1e-9 if dtype == "float64" else 5e-2)
    assert result["float32_vs_float64"]["max_rel_log_prob_diff"] < 1e-4
