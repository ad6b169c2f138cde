"""Data-parallel training (tnborn.distributed): 2 gloo processes on loopback equal 1 process.

The 2-process runs are made once per module by running this file as a script
in two subprocesses (``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` as
torchrun sets them, a free port found by binding to port 0), with a timeout
after which the children are killed. The single-process references are
computed in the test process with the same data and seeds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tnborn
from tnborn.checkpoint import load_trainer_state
from tnborn.distributed import (
    Communicator,
    LocalCommunicator,
    free_port,
    model_checksum,
    shard_batches,
)
from tnborn.errors import ConfigError

from conftest import all_configs, chain_log_prob_bound, record_cutoff_margins, record_guard_margins
from tolerances import rounding_bound

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 45


# --------------------------------------------------------------------------- #
# the runs (executed both in the workers and, with one process, in the tests)
# --------------------------------------------------------------------------- #
def _data() -> np.ndarray:
    """23 random 10-bit strings (odd count: the shards have 11 and 12 rows)."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 2, size=(23, 10))


def _mps_trainer(comm=None) -> tnborn.SweepTrainer:
    model = tnborn.MPSBornMachine.random(10, bond_dim=2, seed=3)
    # batch 8 x 3 steps = 24 > 23 rows: each bond crosses an epoch (reshuffle) of the global stream
    return tnborn.SweepTrainer(model, lr=0.01, descent_steps=3, batch_size=8, cutoff=1e-10,
                               max_bond=6, seed=11, progress=False, communicator=comm)


def _tree_trainer(comm=None) -> tnborn.SweepTrainer:
    model = tnborn.TreeBornMachine.random(10, bond_dim=2, seed=4)
    return tnborn.SweepTrainer(model, lr=0.05, descent_steps=2, batch_size=None, cutoff=1e-8,
                               max_bond=5, progress=False, communicator=comm)


def _rule_trainer(comm=None) -> tnborn.SweepTrainer:
    """The authors' norm0.25 rule with the step guard at a learning rate where both act."""
    model = tnborn.MPSBornMachine.random(10, bond_dim=2, seed=6)
    return tnborn.SweepTrainer(model, lr=0.05, descent_steps=3, batch_size=8, cutoff=1e-10, max_bond=6, seed=1,
                               gradient_rescale="norm0.25", max_nll_rise=0.0, progress=False, communicator=comm)


def _gradient_trainer(comm=None) -> tnborn.GradientTrainer:
    model = tnborn.MPSBornMachine.random(10, bond_dim=3, seed=5)
    return tnborn.GradientTrainer(model, lr=0.05, batch_size=7, seed=2, progress=False, communicator=comm)


def _arrays(model) -> list[np.ndarray]:
    return [model.node_tensor(n).data.detach().cpu().numpy() for n in model.nodes()]


def _save_arrays(path: Path, model) -> None:
    np.savez(path, *_arrays(model))


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _worker(out: Path) -> None:
    """One rank of the 2-process runs (joins the group from the environment)."""
    torch.set_num_threads(1)
    comm, _ = tnborn.distributed.init_from_env("cpu")
    r = comm.rank
    x = _data()
    try:
        tr = _mps_trainer(comm)
        tr.fit(x, loops=1)
        _save_arrays(out / f"mps1_r{r}.npz", tr.model)
        tr.save_checkpoint(out / "mps1.tnb")  # rank 0 writes, the others wait
        tr.fit(x, loops=1)
        _save_arrays(out / f"mps2_r{r}.npz", tr.model)
        (out / f"mps_hist_r{r}.json").write_text(json.dumps([h["train_nll"] for h in tr.history]))

        tr = _tree_trainer(comm)
        tr.fit(x, loops=1)
        _save_arrays(out / f"tree_r{r}.npz", tr.model)

        tr = _rule_trainer(comm)
        tr.fit(x, loops=1)
        _save_arrays(out / f"rule_r{r}.npz", tr.model)
        (out / f"rule_stats_r{r}.json").write_text(json.dumps(dataclasses.asdict(tr.step_stats)))

        tr = _gradient_trainer(comm)
        tr.fit(x, epochs=3)
        _save_arrays(out / f"grad_r{r}.npz", tr.model)
        (out / f"grad_hist_r{r}.json").write_text(json.dumps([h["train_nll"] for h in tr.history]))
        (out / f"comm_r{r}.json").write_text(json.dumps({"calls": comm.comm_calls}))
    finally:
        comm.close()


def _launch(out: Path, nproc: int = 2) -> None:
    """Run :func:`_worker` in ``nproc`` subprocesses; kill them all after TIMEOUT_S."""
    port = free_port()
    procs = []
    for rank in range(nproc):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        procs.append(subprocess.Popen([sys.executable, __file__, str(out)], env=env, cwd=str(ROOT),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = []
    try:
        for p in procs:
            stdout, _ = p.communicate(timeout=TIMEOUT_S)
            logs.append(stdout.decode(errors="replace"))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        pytest.fail(f"the {nproc}-process run did not finish within {TIMEOUT_S} s")
    for rank, p in enumerate(procs):
        assert p.returncode == 0, f"rank {rank} failed:\n{logs[rank][-3000:]}"


@pytest.fixture(scope="module")
def two_proc(tmp_path_factory) -> Path:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("dist")
    _launch(out)
    return out


def _assert_same(got: list[np.ndarray], want: list[np.ndarray], tol: float) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=tol)


def _keep_snapshots(tr, mp) -> None:
    """Keep a copy of the model at each history record in ``tr.snapshots`` (to bound that record's NLL)."""
    if not hasattr(tr, "snapshots"):
        tr.snapshots = []
    real = tr._record

    def record(*args, **kwargs):
        out = real(*args, **kwargs)
        tr.snapshots.append(tr.model.copy())
        return out

    mp.setattr(tr, "_record", record)


def _reference_fit(tr, **fit_kwargs) -> tuple[list[float], list[tuple[float, float]]]:
    """Fit ``tr`` in this process on the update path the ranks take (torch kernel, no compiled run).

    The shard sums of the 2-process run add the same terms in another order, so
    the two runs agree only up to rounding; their discrete outcomes (kept
    dimensions, guard decisions) are then the same on any machine only where
    they are not within rounding of their thresholds. Returns every split's
    cutoff margin and every guard decision's ``(margin, bound)``
    (conftest.record_cutoff_margins / record_guard_margins).
    """
    import tnborn.kernels as kernels
    import tnborn.training.sweep as sweep_module

    kernels.set_kernels("torch")
    try:
        with pytest.MonkeyPatch.context() as mp:
            _keep_snapshots(tr, mp)
            mp.setattr(sweep_module, "compiled_updates", lambda *args: [])
            cut = record_cutoff_margins(mp)
            guard = record_guard_margins(mp)
            tr.fit(_data(), **fit_kwargs)
    finally:
        kernels.set_kernels(None)
    return cut, guard


def _sweep_operations(tr, updates: int, rows: int, block: int) -> float:
    """Rounded steps a site passes through in ``updates`` two-site updates (steps over ``rows`` rows, ``block`` entries summed)."""
    return updates * tr.settings.descent_steps * (rows + block)


def _assert_decisions_stable(cut, guard, ops: float, rank: int) -> None:
    """Every split's kept dimension and every guard decision is outside the run's rounding.

    Blocks have unit norm, so ``s_0 >= 1 / sqrt(rank)`` and the two runs'
    singular values differ by at most ``rounding_bound(ops) sqrt(rank)``
    relative to ``s_0`` (Weyl).
    """
    rel = rounding_bound(torch.float64, ops) * rank ** 0.5
    assert cut, "the reference run made no split"
    assert min(cut) > rel, f"a singular value lies {min(cut):.3g} from the cutoff (bound {rel:.3g})"
    assert all(abs(d) > b for d, b in guard)


def _assert_same_distribution(got, want, operations: float) -> None:
    """Same kept dimensions and the same ``log P`` of every configuration, within its conditioning.

    The site arrays themselves come out of SVDs (signs, rotations of close
    singular values) and are not compared. ``chain_log_prob_bound`` charges
    each amplitude ``operations`` rounded steps of training on top of its
    contraction, times its condition number.
    """
    assert got.bond_dims() == want.bond_dims()
    configs = all_configs(want.num_variables)
    diff = (got.log_prob(configs) - want.log_prob(configs)).abs()
    bound = chain_log_prob_bound(want, extra_operations=operations)
    assert bool((diff <= bound).all()), f"log P differs by {float((diff - bound).max()):.3g} beyond its bound"


def _nll_bound(model, operations: float) -> float:
    """Bound on the difference of two runs' NLL of the data: the mean of the per-row bounds."""
    from conftest import config_index

    x = torch.as_tensor(_data())
    return float(chain_log_prob_bound(model, extra_operations=operations)[config_index(x)].mean().detach())


# --------------------------------------------------------------------------- #
# tests
# --------------------------------------------------------------------------- #
def test_ranks_hold_identical_models(two_proc):
    for name in ("mps1", "mps2", "tree", "rule", "grad"):
        a, b = _load_arrays(two_proc / f"{name}_r0.npz"), _load_arrays(two_proc / f"{name}_r1.npz")
        _assert_same(a, b, tol=0.0)


def _with_arrays(model, arrays: list[np.ndarray]):
    """A copy of ``model`` holding ``arrays`` (a rank's saved site arrays; same shapes checked)."""
    out = model.copy()
    for node, a in zip(out.nodes(), arrays):
        t = out.node_tensor(node)
        assert tuple(t.data.shape) == a.shape
        t.modify(data=torch.from_numpy(a))
    return out


def test_sweep_mps_two_processes_equal_one(two_proc):
    tr = _mps_trainer()
    cut, guard = _reference_fit(tr, loops=1)
    want1 = tr.model.copy()
    assert max(tr.model.bond_dims()) > 2  # bonds grew: the SVD truncation is exercised
    ops1 = _sweep_operations(tr, len(cut), 8, 4 * 6**2)
    _assert_decisions_stable(cut, guard, ops1, 2 * 6)
    _assert_same_distribution(_with_arrays(want1, _load_arrays(two_proc / "mps1_r0.npz")), want1, ops1)
    more, guard2 = _reference_fit(tr, loops=1)
    ops2 = ops1 + _sweep_operations(tr, len(more), 8, 4 * 6**2)
    _assert_decisions_stable(cut + more, guard + guard2, ops2, 2 * 6)
    _assert_same_distribution(_with_arrays(tr.model, _load_arrays(two_proc / "mps2_r0.npz")), tr.model, ops2)
    # one record per half-sweep, each bounded by the conditioning of the model it was taken of
    hist = json.loads((two_proc / "mps_hist_r1.json").read_text())
    assert len(hist) == len(tr.history) == len(tr.snapshots) == 4
    for got, h, m in zip(hist, tr.history, tr.snapshots):
        assert abs(got - h["train_nll"]) <= _nll_bound(m, ops2)


def test_sweep_tree_two_processes_equal_one(two_proc):
    tr = _tree_trainer()
    cut, guard = _reference_fit(tr, loops=1)
    # full batches (23 rows); a two-node block of the tree sums up to 4 D^4 entries (two outer bonds per side)
    ops = _sweep_operations(tr, len(cut), 23, 4 * 5**4)
    _assert_decisions_stable(cut, guard, ops, 2 * 5**2)
    _assert_same_distribution(_with_arrays(tr.model, _load_arrays(two_proc / "tree_r0.npz")), tr.model, ops)


def test_norm025_rule_and_step_guard_two_processes_equal_one(two_proc):
    """norm0.25 and the step guard run data-parallel: same model, same guard decisions as 1 process."""
    tr = _rule_trainer()
    cut, guard = _reference_fit(tr, loops=1)
    stats = dataclasses.asdict(tr.step_stats)
    assert stats["shrunk"] + stats["rejected"] > 0  # the guard acted in this run
    # the guard's decisions are outside rounding (so equal counts are implied on any machine)
    ops = _sweep_operations(tr, len(cut), 8, 4 * 6**2)
    assert guard
    _assert_decisions_stable(cut, guard, ops, 2 * 6)
    assert json.loads((two_proc / "rule_stats_r1.json").read_text()) == stats
    _assert_same_distribution(_with_arrays(tr.model, _load_arrays(two_proc / "rule_r0.npz")), tr.model, ops)
    other = tnborn.SweepTrainer(tnborn.MPSBornMachine.random(10, bond_dim=2, seed=6), lr=0.05, descent_steps=3,
                                batch_size=8, cutoff=1e-10, max_bond=6, seed=1, max_nll_rise=0.0, progress=False)
    other.fit(_data(), loops=1)
    configs = all_configs(10)
    # the rule changed the distribution (log P, gauge-free), by far more than rounding
    assert float((other.model.log_prob(configs) - tr.model.log_prob(configs)).abs().max()) > 1e-3


def test_resume_two_process_checkpoint_in_one_process(two_proc):
    """The 2-process checkpoint (global trainer state) continues identically in 1 process."""
    model = tnborn.load(two_proc / "mps1.tnb")
    _assert_same(_arrays(model), _load_arrays(two_proc / "mps1_r0.npz"), tol=0.0)  # a bit-exact round trip
    tr = tnborn.SweepTrainer(model, progress=False)
    tr.load_state_dict(load_trainer_state(two_proc / "mps1.tnb")["state"])
    cut, guard = _reference_fit(tr, loops=1)
    # the start is the same model; the continuation's rounding, and the first loop's (the rank's
    # checkpoint came out of the 2-process run, whose agreement with one process is tested above)
    ops = 2 * _sweep_operations(tr, len(cut), 8, 4 * 6**2)
    _assert_decisions_stable(cut, guard, ops, 2 * 6)
    _assert_same_distribution(_with_arrays(tr.model, _load_arrays(two_proc / "mps2_r0.npz")), tr.model, ops)


def _adam_gains(tr) -> list[float]:
    """Fit ``tr`` for 3 epochs, recording each Adam step's gain ``2 lr max|g| / min(sqrt(v_hat) + eps)``.

    Adam divides by the root of the second moment: a gradient entry's relative
    rounding error reaches the parameters multiplied by at most this gain (large
    only where some entry's second moment is near 0, i.e. a cancelling gradient).
    """
    gains = []
    real = tr._step

    def step(x, rows):
        out = real(x, rows)
        group = tr._optimizer.param_groups[0]
        (b1, b2), eps = group["betas"], group["eps"]
        den, g = float("inf"), 0.0
        for p in tr._params:
            state = tr._optimizer.state[p]
            v_hat = state["exp_avg_sq"] / (1 - b2 ** float(state["step"]))
            den = min(den, float(v_hat.sqrt().min()) + eps)
            g = max(g, float(p.grad.abs().max()))
        gains.append(2 * group["lr"] * g / den)
        return out

    tr._step = step
    with pytest.MonkeyPatch.context() as mp:
        _keep_snapshots(tr, mp)
        tr.fit(_data(), epochs=3)
    return gains


def test_gradient_trainer_two_processes_equal_one(two_proc):
    tr = _gradient_trainer()
    gains = _adam_gains(tr)
    assert len(gains) == 3 * 4  # batches of 7 from 23 rows: 4 steps per epoch
    # each step's gradient sums 7 rows of chain contractions (sum of bond dims + N products); times Adam's gain
    ops = sum((7 + sum(tr.model.bond_dims()) + 10) * max(1.0, gain) for gain in gains)
    _assert_same_distribution(_with_arrays(tr.model, _load_arrays(two_proc / "grad_r0.npz")), tr.model, ops)
    hist = json.loads((two_proc / "grad_hist_r1.json").read_text())
    assert len(hist) == len(tr.history) == len(tr.snapshots) == 3
    for got, h, m in zip(hist, tr.history, tr.snapshots):
        assert abs(got - h["train_nll"]) <= _nll_bound(m, ops)


def test_collectives_were_used(two_proc):
    """The workers really communicated (one all-reduce per descent step at least)."""
    calls = json.loads((two_proc / "comm_r1.json").read_text())["calls"]
    assert calls > 2 * 9 * 3


def test_cli_nproc_two_equals_one(tmp_path):
    """``tnborn train --nproc 2`` (spawned gloo processes) writes the model of ``--nproc 1``."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    from tnborn.cli import main

    args = ["train", "--rows", "3", "--loops", "1", "--batch-size", "5", "--lr", "0.02", "--steps", "3",
            "--cutoff", "1e-10", "--threads", "1", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("WORLD_SIZE", None)
    # own process group, so that a timeout kills the spawned ranks too
    proc = subprocess.Popen([sys.executable, "-m", "tnborn", *args, "--nproc", "2", "--out", str(tmp_path / "two")],
                            env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"tnborn train --nproc 2 did not finish within {TIMEOUT_S} s")
    assert proc.returncode == 0, stderr[-3000:]
    assert stdout == ""  # --quiet on every rank
    import tnborn.kernels as kernels
    import tnborn.training.sweep as sweep_module

    kernels.set_kernels("torch")  # the update path of the ranks, every split's margin recorded
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sweep_module, "compiled_updates", lambda *a: [])
            cut, guard = record_cutoff_margins(mp), record_guard_margins(mp)
            assert main([*args, "--out", str(tmp_path / "one")]) == 0
    finally:
        kernels.set_kernels(None)
    two, one = tnborn.load(tmp_path / "two" / "model.tnb"), tnborn.load(tmp_path / "one" / "model.tnb")
    d = max(one.bond_dims())
    ops = len(cut) * 3 * (5 + 4 * d**2)  # 3 steps of batch 5 per update, a 4 D^2 block
    _assert_decisions_stable(cut, guard, ops, 2 * d)
    _assert_same_distribution(two, one, ops)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["processes"] == 2
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


# ---------------------------------------------------------------- local pieces
class _FakeRank(Communicator):
    def __init__(self, rank: int, world: int):
        super().__init__()
        self._r, self._w = rank, world

    @property
    def rank(self) -> int:
        return self._r

    @property
    def world_size(self) -> int:
        return self._w


def test_shards_partition_rows():
    for n in (3, 10, 23):
        for world in (1, 2, 3):
            if n < world:
                continue
            parts = [_FakeRank(r, world).shard(n) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


def test_shard_batches_reassemble_global_batches():
    g = torch.Generator().manual_seed(0)
    rows = torch.cat([torch.randperm(23, generator=g), torch.randperm(23, generator=g)])[:30]
    world = 3
    got = [[] for _ in range(6)]
    for r in range(world):
        shard = _FakeRank(r, world).shard(23)
        local, batches = shard_batches(rows, 5, 6, shard)
        assert all(0 <= int(v) < shard[1] - shard[0] for v in local)
        for k, sl in enumerate(batches):
            got[k] += (local[sl] + shard[0]).tolist()
    for k in range(6):
        assert sorted(got[k]) == sorted(rows[5 * k : 5 * (k + 1)].tolist())


def test_local_communicator_and_bad_communicator():
    comm = LocalCommunicator()
    assert (comm.rank, comm.world_size, comm.is_main, comm.shard(7)) == (0, 1, True, (0, 7))
    t = torch.arange(3.0)
    assert comm.all_reduce_sum(t) is t and torch.equal(t, torch.arange(3.0))
    model = tnborn.MPSBornMachine.random(4, bond_dim=2, seed=0)
    assert model_checksum(model).shape == (16,)
    with pytest.raises(ConfigError, match="Communicator"):
        tnborn.SweepTrainer(model, progress=False, communicator="gloo")


def test_init_from_env_without_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    comm, dev = tnborn.distributed.init_from_env("cpu")
    assert isinstance(comm, LocalCommunicator) and dev.type == "cpu"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ConfigError, match="RANK"):
        tnborn.distributed.init_from_env("cpu")


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
