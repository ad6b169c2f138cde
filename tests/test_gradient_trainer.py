"""The gradient trainer: exact gradients, bars-and-stripes on every geometry, determinism, resume.

Gradients are checked against central finite differences of the enumerated
loss; the acceptance runs stop as soon as the training NLL is within 0.05 of
its lower bound ``ln |data|`` and fail if that takes more than a fixed budget
of epochs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import tnborn
from tnborn import ConfigError, DataError, GradientSettings, GradientTrainer, NumericalError
from tnborn.checkpoint import load_trainer_state
from tnborn.interface import BornMachine
from tnborn.training.callbacks import Callback, EarlyStopping
from tnborn.training.gradient import batch_nll, rescale_to_unit_norm

from conftest import (all_configs, amplitude_condition, chain_log_prob_bound, config_index, dense_psi,
                      generic_log_prob_bound, norm_condition, norm_operations)
from contract import _gradient_scale, _operations, log_prob_bound, make_model
from tolerances import rounding_bound

GEOMETRIES = tnborn.available_geometries()


class StopBelow(Callback):
    """Stop once the training NLL is below ``target``."""

    def __init__(self, target: float):
        self.target = target

    def on_half_sweep_end(self, trainer, record):
        if record["train_nll"] < self.target:
            trainer.stop_training = True


class Recorder(Callback):
    """Record every hook call."""

    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer, total_steps):
        self.calls.append(("start", total_steps))

    def on_step_end(self, trainer, info):
        self.calls.append(("step", dict(info)))

    def on_half_sweep_end(self, trainer, record):
        self.calls.append(("epoch", dict(record)))

    def on_fit_end(self, trainer):
        self.calls.append(("end", None))


def _dense_nll(model, data: torch.Tensor) -> float:
    psi = dense_psi(model).detach().to(torch.float64)
    logw = torch.log(psi.abs() ** 2)
    return float(torch.logsumexp(logw, 0) - logw[config_index(data)].mean())


# --------------------------------------------------------------------------- #
# gradients
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", GEOMETRIES)
def test_batch_nll_gradient_matches_finite_differences(name):
    model = make_model(name, 6, bond_dim=2, seed=11)
    data = torch.as_tensor(np.random.default_rng(0).integers(0, 2, size=(8, 6)), dtype=torch.int64)
    nodes = model.nodes()
    rows = config_index(data)
    # before the swap (the bounds read the arrays): each NLL value within the rows' log P
    # bounds plus the mean of B terms; the gradient's rounding as contract.check_gradient
    value_eps = float(log_prob_bound(model)[rows].mean()) + rounding_bound(torch.float64, data.shape[0])
    scale = _gradient_scale(model, data)
    own, ref_ops = _operations(model)
    leaves = []
    for nd in nodes:
        p = model.node_tensor(nd).data.detach().clone().requires_grad_(True)
        model.node_tensor(nd).modify(data=p)
        leaves.append(p)
    loss = batch_nll(model, data)
    assert abs(float(loss.detach()) - _dense_nll(model, data)) <= value_eps
    grads = torch.autograd.grad(loss, leaves)
    gen = torch.Generator().manual_seed(1)
    directions = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in leaves]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, directions))
    analytic_eps = sum(float((sc * d.abs()).sum()) for sc, d in zip(scale, directions))
    analytic_eps *= rounding_bound(torch.float64, own + ref_ops)
    h = 1e-5

    def third_derivative(t0: float) -> float:
        # f(t) = dense NLL at A + t d, differentiated three times by autograd
        t = torch.tensor(t0, dtype=torch.float64, requires_grad=True)
        for nd, p, d in zip(nodes, leaves, directions):
            model.node_tensor(nd).modify(data=p.detach() + t * d)
        psi = dense_psi(model).to(torch.float64)
        logw = torch.log(psi.abs() ** 2)
        f = torch.logsumexp(logw, 0) - logw[rows].mean()
        (g1,) = torch.autograd.grad(f, t, create_graph=True)
        (g2,) = torch.autograd.grad(g1, t, create_graph=True)
        (g3,) = torch.autograd.grad(g2, t)
        return abs(float(g3))

    # central differences: truncation h^2/6 |f'''(xi)|, xi in [-h, h] (f''' sampled at the ends
    # and the middle, doubled for its variation on so short an interval), plus each value's
    # rounding over 2h (the two values' errors taken independent)
    f3 = max(third_derivative(t0) for t0 in (-h, 0.0, h))
    fd_eps = h**2 / 6 * 2 * f3 + value_eps / h + analytic_eps
    values = []
    for sign in (1.0, -1.0):
        for nd, p, d in zip(nodes, leaves, directions):
            model.node_tensor(nd).modify(data=(p + sign * h * d).detach())
        values.append(_dense_nll(model, data))
    numeric = (values[0] - values[1]) / (2 * h)
    assert abs(analytic - numeric) <= fd_eps, (analytic, numeric, fd_eps)


def test_generic_contraction_path_is_differentiable():
    """Autograd through contract_log_scaled (the base-class path) equals the MPS fast path."""
    model = tnborn.MPSBornMachine.random(7, bond_dim=3, seed=2)
    model.drop_center()
    x = all_configs(7)[::5]
    # gradient rounding per entry (contract.check_gradient): both paths are tnborn's (forward
    # and backward each), scaled by the conditioning of the amplitudes and of Z
    own, _ = _operations(model)
    gamma = rounding_bound(torch.float64, 4 * own)
    scale = _gradient_scale(model, x)
    leaves = []
    for nd in model.nodes():
        p = model.node_tensor(nd).data.detach().clone().requires_grad_(True)
        model.node_tensor(nd).modify(data=p)
        leaves.append(p)
    fast = model.log_norm() - 2 * model.log_amplitude(x)[0].mean()
    generic = BornMachine.log_norm(model) - 2 * BornMachine.log_amplitude(model, x)[0].mean()
    # -mean log P over the rows: each row within the chain's conditioning bound, the mean
    # of B terms within rounding_bound(B) of its size
    bound = float(chain_log_prob_bound(model)[::5].mean().detach()) + rounding_bound(torch.float64, x.shape[0], abs(float(fast.detach())))
    assert abs(float(fast.detach()) - float(generic.detach())) <= bound
    g_fast = torch.autograd.grad(fast, leaves)
    g_generic = torch.autograd.grad(generic, leaves)
    for a, b, sc in zip(g_fast, g_generic, scale):
        assert bool(((a - b).abs() <= gamma * sc).all())


def test_batch_nll_ignores_the_centre_shortcut():
    """With a centre, log_norm reads one tensor; batch_nll must still differentiate the true log Z."""
    model = tnborn.MPSBornMachine.random(5, bond_dim=2, seed=0)
    assert model.center is not None
    data = all_configs(5)[:6]
    p = model.node_tensor(0).data.detach().clone().requires_grad_(True)
    model.node_tensor(0).modify(data=p)
    model.set_center(model.num_variables - 1)  # same values: declare the (unchanged) canonical form
    (g,) = torch.autograd.grad(batch_nll(model, data), [p])
    assert model.center is not None  # restored
    # reference: the same loss with the centre forgotten for good
    model.drop_center()
    (ref,) = torch.autograd.grad(model.log_norm() - 2 * model.log_amplitude(data)[0].mean(), [p])
    # the same loss through the same generic paths on the same tensors (centre hidden by
    # batch_nll, dropped here): a deterministic re-run, so bit-identical
    assert torch.equal(g, ref)


def test_sgd_step_is_minus_lr_times_gradient():
    model = tnborn.MPSBornMachine.random(6, bond_dim=2, seed=3)
    data = tnborn.bars_and_stripes(2, 3)
    before = [a.clone() for a in model.arrays()]
    leaves = [a.clone().requires_grad_(True) for a in before]
    for nd, p in zip(model.nodes(), leaves):
        model.node_tensor(nd).modify(data=p)
    grads = torch.autograd.grad(batch_nll(model, torch.as_tensor(data, dtype=torch.int64)), leaves)
    # the trainer may visit the rows in another order: its mean over B rows of
    # grad log|psi_b|^2 may differ by rounding_bound(B) times the sum of their sizes
    x = torch.as_tensor(data, dtype=torch.int64)
    spread = [torch.zeros_like(a) for a in before]
    for row in x:
        for s_, g_ in zip(spread, torch.autograd.grad(2 * model.log_amplitude(row[None])[0].sum(), leaves)):
            s_ += g_.abs()
    for nd, a in zip(model.nodes(), before):
        model.node_tensor(nd).modify(data=a.clone())

    seen = {}

    class Grab(Callback):
        def on_step_end(self, trainer, info):
            seen["arrays"] = [a.detach().clone() for a in trainer.model.arrays()]

    GradientTrainer(model, optimizer="sgd", lr=0.05, callbacks=[Grab()], progress=False).fit(data, epochs=1)
    for a, g, s_, after in zip(before, grads, spread, seen["arrays"]):
        # one SGD update (a product and a sum, each rounded, here and in the optimiser)
        bound = rounding_bound(torch.float64, 2) * (a.abs() + 0.05 * g.abs())
        bound = bound + 0.05 * rounding_bound(torch.float64, x.shape[0]) * s_ / x.shape[0]
        assert bool(((after - (a - 0.05 * g)).abs() <= bound).all())


def test_grad_clip_bounds_the_step():
    data = tnborn.bars_and_stripes(2, 3)
    steps = {}
    for clip in (None, 1e-3):
        model = tnborn.MPSBornMachine.random(6, bond_dim=2, seed=3)
        before = [a.clone() for a in model.arrays()]

        class Grab(Callback):
            def on_step_end(self, trainer, info):
                steps[clip] = (info["grad_norm"], [a.detach().clone() for a in trainer.model.arrays()])

        GradientTrainer(model, optimizer="sgd", lr=0.1, grad_clip=clip, callbacks=[Grab()],
                        progress=False).fit(data, epochs=1)
        grad_norm, after = steps[clip]
        moved = math.sqrt(sum(float(((x - y) ** 2).sum()) for x, y in zip(after, before)))
        size = math.sqrt(sum(float((y ** 2).sum()) for y in before))
        entries = sum(y.numel() for y in before)
        steps[clip] = (grad_norm, moved, size, entries)

    def bound(step, size, entries):
        # each entry of after - before carries the rounding of a - lr g and of the
        # difference (2u (|a| + |step|)), and both norms are sums of squares (condition one)
        return rounding_bound(torch.float64, 3, size + step) + rounding_bound(torch.float64, entries + 2, 2 * step)

    grad_norm, moved, size, entries = steps[None]
    assert grad_norm > 1e-2 and abs(moved - 0.1 * grad_norm) <= bound(0.1 * grad_norm, size, entries)
    _, moved, size, entries = steps[1e-3]
    # clipped: the gradient scaled by clip / norm (two more roundings)
    assert abs(moved - 0.1 * 1e-3) <= bound(0.1 * 1e-3, size, entries + 2)


# --------------------------------------------------------------------------- #
# bars and stripes
# --------------------------------------------------------------------------- #
# geometry -> (bond_dim, lr, epoch budget) for 4x4 bars and stripes (full batch, Adam, seed 0).
# Measured on one CPU thread: mps 298 epochs (~10 s), tree 141 (~2 s), peps 30 (~2 s);
# the budgets leave room for platform differences in the floating-point trajectory.
BAS4 = {"mps": (32, 0.03, 600), "tree": (16, 0.03, 400), "peps": (3, 0.1, 150)}


def _bas_run(name, rows, settings):
    if name not in settings:
        pytest.skip(f"no bars-and-stripes settings for geometry {name!r}")
    bond_dim, lr, budget = settings[name]
    data = tnborn.bars_and_stripes(rows)
    target = math.log(data.shape[0]) + 0.05
    model = make_model(name, rows * rows, bond_dim=bond_dim, seed=0)
    dims = model.bond_dims()
    trainer = GradientTrainer(model, lr=lr, callbacks=[StopBelow(target)], progress=False)
    history = trainer.fit(data, epochs=budget)
    assert history[-1]["train_nll"] < target, (
        f"{name}: NLL {history[-1]['train_nll']:.4f} after {len(history)} epochs, target {target:.4f}"
    )
    # exact against enumeration, bond dimensions untouched, Z = 1, centre unknown
    x = torch.as_tensor(data, dtype=torch.int64)
    # the rows' log P bounds plus the mean of B terms
    eps = float(log_prob_bound(model)[config_index(x)].mean()) + rounding_bound(torch.float64, x.shape[0])
    assert abs(_dense_nll(model, x) - history[-1]["train_nll"]) <= eps
    assert model.bond_dims() == dims
    # the rescale's log Z and this one: the doubled network, twice, at Z_abs / Z
    eps_z = 2 * rounding_bound(model.dtype, norm_operations(model)) * norm_condition(model)
    assert model.center is None and abs(float(model.log_norm())) <= eps_z
    assert not any(a.requires_grad for a in model.arrays())
    return history


@pytest.mark.parametrize("name", GEOMETRIES)
def test_bars_and_stripes_4x4_within_005_of_ln30(name):
    _bas_run(name, 4, BAS4)


# --------------------------------------------------------------------------- #
# determinism, callbacks, state
# --------------------------------------------------------------------------- #
def _mps_run(seed=0, epochs=3, **kw):
    model = tnborn.MPSBornMachine.random(9, bond_dim=3, seed=1)
    trainer = GradientTrainer(model, lr=0.05, batch_size=4, seed=seed, progress=False, **kw)
    trainer.fit(tnborn.bars_and_stripes(3), epochs=epochs)
    return model, trainer


def test_deterministic_for_a_seed():
    m1, t1 = _mps_run(seed=5)
    m2, t2 = _mps_run(seed=5)
    for a, b in zip(m1.arrays(), m2.arrays()):
        assert torch.equal(a, b)
    assert [r["train_nll"] for r in t1.history] == [r["train_nll"] for r in t2.history]
    m3, _ = _mps_run(seed=6)
    assert not all(torch.equal(a, b) for a, b in zip(m1.arrays(), m3.arrays()))


@pytest.mark.parametrize("name", GEOMETRIES)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_checkpoint_resume_equals_uninterrupted_run(name, optimizer, tmp_path):
    data = tnborn.bars_and_stripes(2, 3)
    kw = dict(optimizer=optimizer, lr=0.05, batch_size=4, momentum=0.5 if optimizer == "sgd" else 0.0,
              seed=3, progress=False)
    full = make_model(name, 6, bond_dim=2, seed=0)
    GradientTrainer(full, **kw).fit(data, epochs=4)

    part = make_model(name, 6, bond_dim=2, seed=0)
    trainer = GradientTrainer(part, **kw)
    trainer.fit(data, epochs=2)
    json.dumps(trainer.state_dict())  # JSON-serialisable, optimiser state included
    path = trainer.save_checkpoint(tmp_path / "run.tnb")
    loaded = tnborn.load(path)
    stored = load_trainer_state(path)
    assert stored["class"] == "GradientTrainer"
    resumed = GradientTrainer(loaded, progress=False)
    resumed.load_state_dict(stored["state"])
    assert resumed.settings == trainer.settings and resumed.epochs_done == 2
    history = resumed.fit(data, epochs=2)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    x = all_configs(6)
    # the checkpoint round trip is lossless and training is deterministic, so the resumed
    # run repeats the uninterrupted one operation for operation: the same tensors
    assert all(torch.equal(a, b) for a, b in zip(loaded.arrays(), full.arrays()))


@pytest.mark.parametrize("dtype", ["complex128", "float32"])
def test_state_dict_json_roundtrip_other_dtypes(dtype):
    data = tnborn.bars_and_stripes(2, 3)
    model = make_model("peps", 6, bond_dim=2, seed=0, dtype=dtype)
    trainer = GradientTrainer(model, lr=0.05, batch_size=3, progress=False)
    trainer.fit(data, epochs=2)
    state = json.loads(json.dumps(trainer.state_dict()))
    twin = model.copy()
    resumed = GradientTrainer(twin, progress=False)
    resumed.load_state_dict(state)
    a = trainer.fit(data, epochs=2)[-1]["train_nll"]
    b = resumed.fit(data, epochs=2)[-1]["train_nll"]
    assert a == b and twin.dtype == model.dtype
    for x, y in zip(model.arrays(), twin.arrays()):
        assert torch.equal(x, y)


def test_resume_from_a_mid_epoch_checkpoint(tmp_path):
    data = tnborn.bars_and_stripes(3)  # 14 rows, batches of 4: 4 steps per epoch
    full = tnborn.MPSBornMachine.random(9, bond_dim=2, seed=0)
    GradientTrainer(full, lr=0.05, batch_size=4, progress=False).fit(data, epochs=2)

    class SaveAtStep(Callback):
        def on_step_end(self, trainer, info):
            if info["step"] == 6:
                trainer.save_checkpoint(tmp_path / "mid.tnb")

    part = tnborn.MPSBornMachine.random(9, bond_dim=2, seed=0)
    GradientTrainer(part, lr=0.05, batch_size=4, callbacks=[SaveAtStep()], progress=False).fit(data, epochs=2)
    loaded = tnborn.load(tmp_path / "mid.tnb")
    resumed = GradientTrainer(loaded, progress=False)
    resumed.load_state_dict(load_trainer_state(tmp_path / "mid.tnb")["state"])
    assert resumed.steps_done == 6
    resumed.fit(data, epochs=1)  # finishes the interrupted second epoch
    assert resumed.steps_done == 8 and resumed.epochs_done == 2
    x = all_configs(9)
    # the resumed run repeats the uninterrupted one operation for operation (lossless
    # checkpoint, deterministic training): the same tensors
    assert all(torch.equal(a, b) for a, b in zip(loaded.arrays(), full.arrays()))


def test_callbacks_history_and_stop_training():
    data = tnborn.bars_and_stripes(3)
    rec = Recorder()
    model = tnborn.MPSBornMachine.random(9, bond_dim=2, seed=0)
    trainer = GradientTrainer(model, lr=0.05, batch_size=5, callbacks=[rec], progress=False)
    history = trainer.fit(data, epochs=2, test_data=data[:4])
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["start"] + ["step"] * 3 + ["epoch"] + ["step"] * 3 + ["epoch"] + ["end"]
    assert rec.calls[0][1] == 6
    assert [c[1]["step"] for c in rec.calls if c[0] == "step"] == [1, 2, 3, 4, 5, 6]
    assert len(history) == 2
    for k, r in enumerate(history, start=1):
        assert {"epoch", "loop", "train_nll", "test_nll", "max_bond", "bond_dims", "seconds"} <= set(r)
        assert r["epoch"] == k and r["loop"] == k and r["bond_dims"] == model.bond_dims()
        assert r["max_bond"] == max(model.bond_dims())
    # the recorded NLL and model.nll may take different paths: per row the chain's
    # conditioning bound, plus the rounding of the mean of B terms
    per_row = chain_log_prob_bound(model)[config_index(torch.as_tensor(data, dtype=torch.int64))]
    for key, rows in (("train_nll", slice(None)), ("test_nll", slice(0, 4))):
        nll = model.nll(data[rows])
        bound = float(per_row[rows].mean()) + rounding_bound(torch.float64, len(per_row[rows]), abs(nll))
        assert abs(history[-1][key] - nll) <= bound
    json.dumps(history)

    class StopNow(Callback):
        def on_half_sweep_end(self, trainer, record):
            trainer.stop_training = True

    h = GradientTrainer(model, lr=0.05, callbacks=[StopNow()], progress=False).fit(data, epochs=10)
    assert len(h) == 1
    es = EarlyStopping(min_delta=10.0, patience=1, every=1)
    h = GradientTrainer(model, lr=0.05, callbacks=[es], progress=False).fit(data, epochs=10)
    assert len(h) == 2


def test_fit_continues_and_keeps_bond_dims_and_works_with_other_paths():
    data = tnborn.bars_and_stripes(3)
    model = tnborn.MPSBornMachine.random(9, bond_dim=3, seed=0)
    dims = model.bond_dims()
    trainer = GradientTrainer(model, lr=0.05, progress=False)
    trainer.fit(data, epochs=2)
    trainer.fit(data, epochs=2, lr=0.02)
    assert [r["epoch"] for r in trainer.history] == [1, 2, 3, 4]
    assert trainer.history[-1]["settings"]["lr"] == 0.02
    assert model.bond_dims() == dims and model.center is None
    # the model still samples exactly and the sweep trainer accepts it
    samples, lp = model.sample(50, seed=0)
    # sampler vs log_prob: per-node quadratic forms (their entries) plus the chain's conditioning
    extra = sum(model.node_tensor(v).data.numel() for v in model.nodes())
    bound = chain_log_prob_bound(model, extra)[config_index(samples)]
    assert bool(((lp - model.log_prob(samples)).abs() <= bound).all())
    tnborn.SweepTrainer(model, progress=False).fit(data, loops=1)


def test_float32_training_runs():
    model = tnborn.MPSBornMachine.random(9, bond_dim=4, seed=0, dtype="float32")
    h = GradientTrainer(model, lr=0.05, progress=False).fit(tnborn.bars_and_stripes(3), epochs=5)
    assert model.dtype == torch.float32 and h[-1]["train_nll"] < h[0]["train_nll"]


def test_rescale_to_unit_norm_keeps_the_distribution():
    model = tnborn.get_geometry("peps").random(6, bond_dim=2, seed=0, image_shape=(2, 3))
    x = all_configs(6)
    before = model.log_prob(x)
    for nd in model.nodes():
        t = model.node_tensor(nd)
        t.modify(data=t.data * 3.0)
    log_z = rescale_to_unit_norm(model)
    # log Z of the doubled network errs by gamma Z_abs / Z per evaluation (random()'s
    # normalisation, this one); each scaling rounds every entry (2N per term of Z)
    n = model.num_variables
    cond_z = norm_condition(model)
    z_err = rounding_bound(torch.float64, norm_operations(model)) * cond_z
    assert abs(log_z - 12 * math.log(3.0)) <= 2 * z_err + rounding_bound(torch.float64, 4 * n + 1)
    assert abs(float(model.log_norm())) <= 2 * z_err + rounding_bound(torch.float64, 6 * n + 2)
    # two evaluations of log P, plus the two rescalings of every entry (4N relative per amplitude)
    bound = 2 * generic_log_prob_bound(model) + rounding_bound(torch.float64, 4 * n) * (2 * amplitude_condition(model) + cond_z)
    assert bool(((model.log_prob(x) - before).abs() <= bound).all())


def test_zero_probability_sample_raises():
    arrays = [a.clone() for a in tnborn.MPSBornMachine.random(4, bond_dim=2, seed=0).site_arrays()]
    arrays[0][:, 1, :] = 0.0  # psi(x) = 0 whenever x_0 = 1
    model = tnborn.MPSBornMachine(arrays)
    data = np.array([[1, 0, 0, 0], [0, 1, 0, 1]])
    with pytest.raises(NumericalError, match="psi"):
        GradientTrainer(model, progress=False).fit(data, epochs=1)
    assert not any(a.requires_grad for a in model.arrays())


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kwargs", [
    {"optimizer": "lbfgs"}, {"optimizer": None}, {"lr": 0}, {"lr": -1.0}, {"lr": float("nan")},
    {"lr": float("inf")}, {"lr": "0.1"}, {"batch_size": 0}, {"batch_size": 2.5}, {"grad_clip": 0.0},
    {"grad_clip": -1}, {"momentum": 1.0}, {"momentum": -0.1}, {"seed": "a"}, {"seed": 1.5},
    {"learning_rate": 0.1},
])
def test_bad_settings_raise_config_error(kwargs):
    model = tnborn.MPSBornMachine.random(4, bond_dim=2, seed=0)
    with pytest.raises(ConfigError):
        GradientTrainer(model, progress=False, **kwargs)


def test_bad_fit_arguments():
    model = tnborn.MPSBornMachine.random(4, bond_dim=2, seed=0)
    trainer = GradientTrainer(model, progress=False)
    data = all_configs(4)[:5]
    with pytest.raises(ConfigError, match="batch_size"):
        trainer.fit(data, epochs=1, batch_size=6)
    with pytest.raises(ConfigError, match="epochs"):
        trainer.fit(data, epochs=-1)
    with pytest.raises(ConfigError, match="epochs"):
        trainer.fit(data, epochs=1.5)
    with pytest.raises(ConfigError, match="unknown"):
        trainer.fit(data, epochs=1, steps=3)
    with pytest.raises(DataError):
        trainer.fit(np.array([[0, 1, 2, 0]]), epochs=1)
    with pytest.raises(DataError):
        trainer.fit(np.zeros((3, 5), dtype=int), epochs=1)
    with pytest.raises(ConfigError):
        GradientTrainer("not a model")
    with pytest.raises(ConfigError):
        GradientTrainer(model, settings={"lr": 0.1})
    with pytest.raises(DataError):
        trainer.load_state_dict({"settings": {}})
    assert GradientSettings().validate() == GradientSettings()
