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

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 45
TOL = 1e-10


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


def _assert_same(got: list[np.ndarray], want: list[np.ndarray], tol: float = TOL) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=tol)


# --------------------------------------------------------------------------- #
# tests
# --------------------------------------------------------------------------- #
def test_ranks_hold_identical_models(two_proc):
    for name in ("mps1", "mps2", "tree", "rule", "grad"):
        a, b = _load_arrays(two_proc / f"{name}_r0.npz"), _load_arrays(two_proc / f"{name}_r1.npz")
        _assert_same(a, b, tol=0.0)


def test_sweep_mps_two_processes_equal_one(two_proc):
    tr = _mps_trainer()
    tr.fit(_data(), loops=1)
    want1 = _arrays(tr.model)
    assert max(tr.model.bond_dims()) > 2  # bonds grew: the SVD truncation is exercised
    _assert_same(_load_arrays(two_proc / "mps1_r0.npz"), want1)
    tr.fit(_data(), loops=1)
    _assert_same(_load_arrays(two_proc / "mps2_r0.npz"), _arrays(tr.model))
    hist = json.loads((two_proc / "mps_hist_r1.json").read_text())
    np.testing.assert_allclose(hist, [h["train_nll"] for h in tr.history], rtol=0, atol=TOL)


def test_sweep_tree_two_processes_equal_one(two_proc):
    tr = _tree_trainer()
    tr.fit(_data(), loops=1)
    _assert_same(_load_arrays(two_proc / "tree_r0.npz"), _arrays(tr.model))


def test_norm025_rule_and_step_guard_two_processes_equal_one(two_proc):
    """norm0.25 and the step guard run data-parallel: same model, same guard decisions as 1 process."""
    tr = _rule_trainer()
    tr.fit(_data(), loops=1)
    stats = dataclasses.asdict(tr.step_stats)
    assert stats["shrunk"] + stats["rejected"] > 0  # the guard acted in this run
    assert json.loads((two_proc / "rule_stats_r1.json").read_text()) == stats
    _assert_same(_load_arrays(two_proc / "rule_r0.npz"), _arrays(tr.model))
    other = tnborn.SweepTrainer(tnborn.MPSBornMachine.random(10, bond_dim=2, seed=6), lr=0.05, descent_steps=3,
                                batch_size=8, cutoff=1e-10, max_bond=6, seed=1, max_nll_rise=0.0, progress=False)
    other.fit(_data(), loops=1)
    diff = max(np.abs(a - b).max() if a.shape == b.shape else np.inf
               for a, b in zip(_arrays(other.model), _arrays(tr.model)))
    assert diff > 1e-3  # the rule changed the result


def test_resume_two_process_checkpoint_in_one_process(two_proc):
    """The 2-process checkpoint (global trainer state) continues identically in 1 process."""
    model = tnborn.load(two_proc / "mps1.tnb")
    _assert_same(_arrays(model), _load_arrays(two_proc / "mps1_r0.npz"), tol=0.0)
    tr = tnborn.SweepTrainer(model, progress=False)
    tr.load_state_dict(load_trainer_state(two_proc / "mps1.tnb")["state"])
    tr.fit(_data(), loops=1)
    _assert_same(_arrays(tr.model), _load_arrays(two_proc / "mps2_r0.npz"))


def test_gradient_trainer_two_processes_equal_one(two_proc):
    tr = _gradient_trainer()
    tr.fit(_data(), epochs=3)
    _assert_same(_load_arrays(two_proc / "grad_r0.npz"), _arrays(tr.model))
    hist = json.loads((two_proc / "grad_hist_r1.json").read_text())
    np.testing.assert_allclose(hist, [h["train_nll"] for h in tr.history], rtol=0, atol=TOL)


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
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    two, one = tnborn.load(tmp_path / "two" / "model.tnb"), tnborn.load(tmp_path / "one" / "model.tnb")
    _assert_same(_arrays(two), _arrays(one))
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
