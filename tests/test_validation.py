"""Every bad input at every public entry point, as one table.

Each row of :data:`CASES` names an entry point, the bad input, a callable that
makes the bad call, the exception it must raise (or ``"exit 2"`` for the
command line) and a regular expression its message must match. Every row is
run against fresh models and a fixed set of files, and afterwards

- every model (MPS, tree, PEPS, complex MPS) has bit-identical node arrays,
  index names and canonical centre,
- the trainers' ``state_dict()`` is unchanged,
- every file in the fixture folder has the same SHA-256 as before.

The table of ``docs/reliability.md`` is generated from :data:`CASES`
(``python tests/test_validation.py --write-docs``) and
:func:`test_docs_table_is_in_sync` keeps the two equal.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import tnborn
from tnborn import (
    GradientTrainer,
    MPSBornMachine,
    PEPSBornMachine,
    SweepSettings,
    SweepTrainer,
    TreeBornMachine,
)
from tnborn.errors import CheckpointError, ConfigError, DataError, DeviceError
from tnborn.io import HEADER_ENTRY, load_arrays, save_arrays

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_io import forge_deep_header, forge_huge_checkpoint, forge_zip_bomb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
N = 6  # variables of every fixture model
EXIT2 = "exit 2"


# --------------------------------------------------------------------------- #
# fixtures: models (fresh per row) and files (built once)
# --------------------------------------------------------------------------- #
class Ctx:
    """Fresh models and trainers for one row, plus the shared bad files."""

    def __init__(self, files: dict[str, Path], scratch: Path):
        self.mps = MPSBornMachine.random(N, bond_dim=3, seed=1)
        self.tree = TreeBornMachine.random(N, bond_dim=3, seed=2)
        self.peps = PEPSBornMachine.random(N, bond_dim=2, seed=3)
        self.cmps = MPSBornMachine.random(N, bond_dim=2, seed=4, dtype="complex128")
        self.x = tnborn.random_binary(8, N, seed=0)
        self.sweep = SweepTrainer(self.mps, progress=False)
        self.tree_sweep = SweepTrainer(self.tree, progress=False, batch_size=4)
        self.grad = GradientTrainer(self.peps, progress=False)
        self.files = files
        self.scratch = scratch

    def f(self, name: str) -> str:
        return str(self.files[name])

    def models(self):
        return [self.mps, self.tree, self.peps, self.cmps]

    def trainers(self):
        return [self.sweep, self.tree_sweep, self.grad]


def _model_state(model) -> list:
    return [(tuple(model.node_tensor(n).inds), model.node_tensor(n).data.detach().clone())
            for n in model.nodes()] + [model.center]


def _same_model_state(a: list, b: list) -> bool:
    if len(a) != len(b) or a[-1] != b[-1]:
        return False
    return all(ia == ib and da.dtype == db.dtype and da.shape == db.shape and torch.equal(da, db)
               for (ia, da), (ib, db) in zip(a[:-1], b[:-1]))


def _sha256_tree(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _rewrite_header(src: Path, dst: Path, edit: Callable[[dict], None]) -> None:
    """Copy a checkpoint archive, passing its header through ``edit`` (checksum not updated)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            raw = zin.read(info.filename)
            if info.filename == HEADER_ENTRY:
                header = json.loads(raw)
                edit(header)
                raw = json.dumps(header).encode()
            zout.writestr(info.filename, raw)


def _resave(src: Path, dst: Path, edit: Callable[[dict, dict], None]) -> None:
    """Load a checkpoint's arrays and metadata, edit them and save with fresh checksums."""
    arrays, meta = load_arrays(src)
    edit(arrays, meta)
    save_arrays(dst, arrays, meta)


def _flip_array_byte(src: Path, dst: Path) -> None:
    """Flip one byte of the last array's payload (inside the archive entry's data)."""
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = [i for i in zf.infolist() if i.filename != HEADER_ENTRY][-1]
    # local header: 30 bytes + name + extra field, then the stored data
    name_len = int.from_bytes(raw[info.header_offset + 26: info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.compress_size - 3] ^= 0x5A
    dst.write_bytes(bytes(raw))


def build_files(folder: Path) -> dict[str, Path]:
    """Write every good and bad file the table refers to."""
    f: dict[str, Path] = {}
    model = MPSBornMachine.random(N, bond_dim=3, seed=5)
    trainer = SweepTrainer(model, progress=False)
    trainer.fit(tnborn.random_binary(8, N, seed=1), loops=1)
    f["good"] = tnborn.save(folder / "good.tnb", model, trainer=trainer)
    raw = f["good"].read_bytes()
    for name, content in {
        "truncated": raw[: len(raw) // 2],
        "truncated_tail": raw[:-7],
        "empty": b"",
        "random_bytes": np.random.default_rng(0).bytes(2048),
    }.items():
        f[name] = folder / f"{name}.tnb"
        f[name].write_bytes(content)
    f["corrupt_array"] = folder / "corrupt_array.tnb"
    _flip_array_byte(f["good"], f["corrupt_array"])
    f["edited_header"] = folder / "edited_header.tnb"
    _rewrite_header(f["good"], f["edited_header"], lambda h: h["metadata"].update(center=0))
    f["newer_format"] = folder / "newer_format.tnb"
    _rewrite_header(f["good"], f["newer_format"], lambda h: h.update(format_version=99))
    f["foreign_format"] = folder / "foreign_format.tnb"
    _rewrite_header(f["good"], f["foreign_format"], lambda h: h.update(format="other-library"))
    f["newer_model"] = folder / "newer_model.tnb"
    _resave(f["good"], f["newer_model"], lambda a, m: m.update(model_format=99))
    f["not_a_model"] = save_arrays(folder / "not_a_model.tnb", {"w": np.eye(2)}, {"step": 1})
    f["foreign_npz"] = folder / "foreign.npz"
    np.savez(f["foreign_npz"], a=np.zeros(3))
    f["foreign_torch"] = folder / "foreign.pt"
    torch.save({"a": torch.zeros(2)}, f["foreign_torch"])
    f["foreign_zip"] = folder / "foreign.zip"
    with zipfile.ZipFile(f["foreign_zip"], "w") as zf:
        zf.writestr("readme.txt", "hello")
    f["wrong_shape"] = folder / "wrong_shape.tnb"
    _resave(f["good"], f["wrong_shape"], lambda a, m: a.update({"node/2": a["node/2"][..., :1].copy()}))
    f["missing_array"] = folder / "missing_array.tnb"
    _resave(f["good"], f["missing_array"], lambda a, m: a.pop(f"node/{N - 1}"))
    f["extra_dims"] = folder / "extra_dims.tnb"
    _resave(f["good"], f["extra_dims"], lambda a, m: a.update({"node/1": a["node/1"][..., None].copy()}))
    f["wrong_dtype"] = folder / "wrong_dtype.tnb"
    _resave(f["good"], f["wrong_dtype"], lambda a, m: m.update(dtype="float32"))
    f["int_arrays"] = folder / "int_arrays.tnb"
    _resave(f["good"], f["int_arrays"], lambda a, m: a.update({k: np.ones(v.shape, np.int64) for k, v in a.items()}))
    f["nan_array"] = folder / "nan_array.tnb"
    _resave(f["good"], f["nan_array"], lambda a, m: a["node/0"].__setitem__((0, 0), np.nan))
    f["wrong_bonds"] = folder / "wrong_bonds.tnb"
    _resave(f["good"], f["wrong_bonds"], lambda a, m: m.update(bond_dims=[7] * (N - 1)))
    f["bad_center"] = folder / "bad_center.tnb"
    _resave(f["good"], f["bad_center"], lambda a, m: m.update(center=99))
    f["unknown_geometry"] = folder / "unknown_geometry.tnb"
    _resave(f["good"], f["unknown_geometry"], lambda a, m: m.update(geometry="moebius"))
    f["bad_model_format"] = folder / "bad_model_format.tnb"
    _resave(f["good"], f["bad_model_format"], lambda a, m: m.update(model_format="one"))
    f["complex"] = tnborn.save(folder / "complex.tnb", MPSBornMachine.random(N, 2, seed=6, dtype="complex128"))
    f["directory"] = folder / "a_folder.tnb"
    f["directory"].mkdir()
    f["missing"] = folder / "does_not_exist.tnb"
    # data files
    f["data_good"] = folder / "good.npy"
    np.save(f["data_good"], tnborn.random_binary(8, N, seed=2))
    f["data_missing"] = folder / "no_data.npy"
    f["data_grey"] = folder / "grey.npy"
    np.save(f["data_grey"], np.full((4, N), 0.5))
    f["data_nan"] = folder / "nan.npy"
    np.save(f["data_nan"], np.full((4, N), np.nan))
    f["data_empty"] = folder / "empty.npy"
    np.save(f["data_empty"], np.zeros((0, N), np.uint8))
    f["data_1d"] = folder / "one_dim.npy"
    np.save(f["data_1d"], np.zeros(N, np.uint8))
    f["data_4d"] = folder / "four_dim.npy"
    np.save(f["data_4d"], np.zeros((2, 1, 2, 3), np.uint8))
    f["data_garbage"] = folder / "garbage.npy"
    f["data_garbage"].write_bytes(b"\x93NUMPY garbage that is not an array")
    f["data_pickle"] = folder / "pickle.npy"
    np.save(f["data_pickle"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    f["data_txt"] = folder / "data.txt"
    f["data_txt"].write_text("0 1 0 1 0 1\n")
    f["data_two_keys"] = folder / "two_keys.npz"
    np.savez(f["data_two_keys"], a=np.zeros((2, N), np.uint8), b=np.ones((2, N), np.uint8))
    f["data_bad_gz"] = folder / "t10k-images-idx3-ubyte.gz"
    f["data_bad_gz"].write_bytes(b"\x1f\x8b\x08\x00corrupt")
    f["data_wide"] = folder / "wide.npy"
    np.save(f["data_wide"], np.zeros((3, N + 1), np.uint8))
    f["forged_huge"] = forge_huge_checkpoint(folder / "forged_huge.tnb")
    f["zip_bomb"] = forge_zip_bomb(folder / "zip_bomb.tnb", inflated=16 * 2**20)
    f["deep_header"] = forge_deep_header(folder / "deep_header.tnb")
    f["bad_history"] = folder / "bad_history.tnb"
    _resave(f["good"], f["bad_history"], lambda a, m: m["trainer"]["state"].update(history="oops"))
    f["data_random_npy"] = folder / "random.npy"
    f["data_random_npy"].write_bytes(np.random.default_rng(1).bytes(512))
    f["toml_latin1"] = folder / "latin1.toml"
    f["toml_latin1"].write_bytes("data = 'caf\u00e9.npy'\n".encode("latin-1"))
    f["mask_wrong"] = folder / "mask_wrong.npy"
    np.save(f["mask_wrong"], np.ones(N + 2, bool))
    return f


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return build_files(tmp_path_factory.mktemp("validation_files"))


# --------------------------------------------------------------------------- #
# the command line, in process
# --------------------------------------------------------------------------- #
def run_cli(*args: str) -> tuple[int, str]:
    """Run ``tnborn.cli.main`` and return (exit status, standard error)."""
    from tnborn.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return int(code), err.getvalue()


def _circuit_api(name: str) -> Any:
    import tnborn.circuit

    return getattr(tnborn.circuit, name)


def _train(c: Ctx, *args: str) -> tuple[int, str]:
    source = () if "--data" in args else ("--dataset", "bars-and-stripes", "--rows", "2", "--cols", "3")
    return run_cli("train", *source, "--loops", "1", "--threads", "1", "--quiet",
                   "--out", str(c.scratch / "run"), *args)


def _unchanged_after(paths, fn):
    """Run ``fn`` and assert that every path in ``paths`` kept its kind and content."""
    def state(p):
        p = Path(p)
        if not os.path.lexists(p):
            return None
        st = os.lstat(p)
        data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
        return (st.st_mode, st.st_ino, st.st_rdev, os.readlink(p) if p.is_symlink() else None, data)

    before = [state(p) for p in paths]
    result = fn()
    assert [state(p) for p in paths] == before, "an output path was changed"
    return result


def _fifo(c: Ctx) -> Path:
    path = c.scratch / "pipe.npy"
    os.mkfifo(path)
    return path


def _link_to_fifo(c: Ctx) -> Path:
    link = c.scratch / "link.npy"
    link.symlink_to(_fifo(c))
    return link


def _device_or_fifo(c: Ctx, name: str) -> Path:
    dev = Path(name)
    if dev.exists() and stat.S_ISCHR(os.stat(dev).st_mode):
        return dev
    return _fifo(c)  # no such device here: a FIFO is refused the same way


def _nonempty_run(c: Ctx) -> Path:
    run = c.scratch / "run"
    run.mkdir()
    (run / "model.tnb").write_bytes(b"an earlier run")
    return run


def _locked_run(c: Ctx, *args: str):
    import fcntl

    run = c.scratch / "run"
    run.mkdir()
    fd = os.open(run / ".tnborn-train.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a concurrent run holds the lock
    try:
        return _train(c, *args)
    finally:
        os.close(fd)


def _no_folder(c: Ctx, *args: str):
    out = _train(c, *args)
    assert not (c.scratch / "run").exists(), "a failed run left a folder"
    return out


# --------------------------------------------------------------------------- #
# the table
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Case:
    """One bad call: where, what, how, and the error it must get."""

    entry: str
    bad: str
    call: Callable[[Ctx], Any]
    error: Any  # exception class or EXIT2
    match: str


def _bad_x(c: Ctx, which: str) -> Any:
    return {
        "1-D of wrong length": np.zeros(N - 1, np.int64),
        "3-D array": np.zeros((2, 1, N), np.int64),
        "wrong number of columns": np.zeros((3, N + 1), np.int64),
        "value 2 (binary model)": np.full((2, N), 2),
        "negative value": np.full((2, N), -1),
        "non-integer value 0.5": np.full((2, N), 0.5),
        "NaN": np.full((2, N), np.nan),
        "inf": np.full((2, N), np.inf),
        "empty (0 rows)": np.zeros((0, N), np.int64),
        "strings": np.array([["a"] * N]),
        "None": None,
        "int64 tensor with value 2": torch.full((2, N), 2, dtype=torch.int64),
        "int64 tensor of wrong width": torch.zeros((2, N + 1), dtype=torch.int64),
    }[which]


_X_MESSAGES = {
    "1-D of wrong length": rf"must have {N} columns .*got {N - 1}",
    "3-D array": r"must be a 2-D array .*3-D",
    "wrong number of columns": rf"must have {N} columns .*got {N + 1}",
    "value 2 (binary model)": r"values must be in \{0, 1\}, found 2 at row 0, column 0",
    "negative value": r"values must be in \{0, 1\}, found -1",
    "non-integer value 0.5": r"must be integers in \{0, 1\}, found 0.5",
    "NaN": r"contains NaN",
    "inf": r"contains inf",
    "empty (0 rows)": r"at least one row",
    "strings": r"must hold numbers",
    "None": r"must hold numbers",
    "int64 tensor with value 2": r"values must be in \{0, 1\}, found 2",
    "int64 tensor of wrong width": rf"must have {N} columns .*got {N + 1}",
}


def _data_cases() -> list[Case]:
    cases = []
    entries = {
        "MPSBornMachine.log_prob": lambda c, x: c.mps.log_prob(x),
        "TreeBornMachine.log_prob": lambda c, x: c.tree.log_prob(x),
        "PEPSBornMachine.log_prob": lambda c, x: c.peps.log_prob(x),
        "BornMachine.nll": lambda c, x: c.mps.nll(x),
        "BornMachine.score_samples": lambda c, x: c.tree.score_samples(x),
        "BornMachine.sample_conditional (x)": lambda c, x: c.mps.sample_conditional(x, np.ones(N, bool)),
        "SweepTrainer.fit (data)": lambda c, x: c.sweep.fit(x, loops=1),
        "SweepTrainer.fit (test_data)": lambda c, x: c.sweep.fit(c.x, loops=1, test_data=x),
        "GradientTrainer.fit (data)": lambda c, x: c.grad.fit(x, epochs=1),
    }
    full = {"MPSBornMachine.log_prob", "SweepTrainer.fit (data)"}
    for entry, fn in entries.items():
        kinds = list(_X_MESSAGES) if entry in full else [
            "wrong number of columns", "value 2 (binary model)", "NaN", "empty (0 rows)"]
        for kind in kinds:
            cases.append(Case(entry, f"data: {kind}",
                              (lambda fn, kind: lambda c: fn(c, _bad_x(c, kind)))(fn, kind),
                              DataError, _X_MESSAGES[kind]))
    return cases


CASES: list[Case] = [
    # ---------------------------------------------------------------- constructors
    Case("MPSBornMachine.random", "num_variables = 1", lambda c: MPSBornMachine.random(1), ConfigError,
         r"num_variables must be an integer >= 2, got 1"),
    Case("MPSBornMachine.random", "num_variables = 2.5", lambda c: MPSBornMachine.random(2.5), ConfigError,
         r"num_variables must be an integer >= 2, got 2.5"),
    Case("MPSBornMachine.random", "num_variables = '4'", lambda c: MPSBornMachine.random("4"), ConfigError,
         r"num_variables must be an integer"),
    Case("MPSBornMachine.random", "num_variables = None", lambda c: MPSBornMachine.random(None), ConfigError,
         r"num_variables must be an integer"),
    Case("MPSBornMachine.random", "bond_dim = 0", lambda c: MPSBornMachine.random(4, bond_dim=0), ConfigError,
         r"bond_dim must be an integer >= 1, got 0"),
    Case("MPSBornMachine.random", "bond_dim = 1.5", lambda c: MPSBornMachine.random(4, bond_dim=1.5),
         ConfigError, r"bond_dim must be an integer"),
    Case("MPSBornMachine.random", "bond_dim = True", lambda c: MPSBornMachine.random(4, bond_dim=True),
         ConfigError, r"bond_dim must be an integer .*bool"),
    Case("MPSBornMachine.random", "phys_dim = 1", lambda c: MPSBornMachine.random(4, phys_dim=1), ConfigError,
         r"phys_dim must be an integer >= 2"),
    Case("MPSBornMachine.random", "seed = -1", lambda c: MPSBornMachine.random(4, seed=-1), ConfigError,
         r"seed must be an integer >= 0"),
    Case("MPSBornMachine.random", "seed = 'a'", lambda c: MPSBornMachine.random(4, seed="a"), ConfigError,
         r"seed must be an integer"),
    Case("MPSBornMachine.random", "dtype = 'int32'", lambda c: MPSBornMachine.random(4, dtype="int32"),
         DeviceError, r"dtype must be one of .*float64.*got 'int32'"),
    Case("MPSBornMachine.random", "dtype = torch.float16", lambda c: MPSBornMachine.random(4, dtype=torch.float16),
         DeviceError, r"dtype must be one of"),
    Case("MPSBornMachine.random", "device = 'tpu'", lambda c: MPSBornMachine.random(4, device="tpu"),
         DeviceError, r"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got 'tpu'"),
    Case("MPSBornMachine.random", "device = 7", lambda c: MPSBornMachine.random(4, device=7),
         DeviceError, r"device must be"),
    Case("TreeBornMachine.random", "num_variables = 1", lambda c: TreeBornMachine.random(1), ConfigError,
         r"num_variables must be an integer >= 2"),
    Case("TreeBornMachine.random", "num_variables = 4.0", lambda c: TreeBornMachine.random(4.0), ConfigError,
         r"num_variables must be an integer >= 2"),
    Case("TreeBornMachine.random", "bond_dim = 0", lambda c: TreeBornMachine.random(4, bond_dim=0), ConfigError,
         r"bond_dim must be an integer >= 1"),
    Case("TreeBornMachine.random", "phys_dim = 2.5", lambda c: TreeBornMachine.random(4, phys_dim=2.5),
         ConfigError, r"phys_dim must be an integer >= 2"),
    Case("TreeBornMachine.random", "layout = 'spiral'", lambda c: TreeBornMachine.random(4, layout="spiral"),
         ConfigError, r"layout must be one of"),
    Case("TreeBornMachine.random", "image_shape (3, 3) for 4 variables",
         lambda c: TreeBornMachine.random(4, image_shape=(3, 3)), ConfigError, r"image_shape"),
    Case("TreeBornMachine.random", "dtype = 'float16'", lambda c: TreeBornMachine.random(4, dtype="float16"),
         DeviceError, r"dtype must be one of"),
    Case("PEPSBornMachine.random", "num_variables = 1", lambda c: PEPSBornMachine.random(1), ConfigError,
         r"num_variables must be an integer >= 2"),
    Case("PEPSBornMachine.random", "bond_dim = 0", lambda c: PEPSBornMachine.random(4, bond_dim=0), ConfigError,
         r"bond_dim must be an integer >= 1"),
    Case("PEPSBornMachine.random", "image_shape (3, 3) for 4 variables",
         lambda c: PEPSBornMachine.random(4, image_shape=(3, 3)), ConfigError, r"image_shape"),
    Case("PEPSBornMachine.random", "noise = -1", lambda c: PEPSBornMachine.random(4, noise=-1), ConfigError,
         r"noise must be a finite number >= 0"),
    Case("PEPSBornMachine.random", "device = 'gpu'", lambda c: PEPSBornMachine.random(4, device="gpu"),
         DeviceError, r"device must be"),
    Case("get_geometry", "unknown name", lambda c: tnborn.get_geometry("moebius"), ConfigError,
         r"unknown geometry 'moebius'; registered geometries: .*mps"),
    Case("get_geometry(name).random", "tree, num_variables = 0",
         lambda c: tnborn.get_geometry("tree").random(0), ConfigError, r"num_variables must be an integer >= 2"),
    Case("get_geometry(name).random", "mps, bond_dim = -3",
         lambda c: tnborn.get_geometry("mps").random(4, bond_dim=-3), ConfigError, r"bond_dim must be an integer >= 1"),
    # ---------------------------------------------------------------- moving a model
    Case("BornMachine.to", "dtype = 'int8'", lambda c: c.mps.to(dtype="int8"), DeviceError, r"dtype must be one of"),
    Case("BornMachine.to", "complex model to float64", lambda c: c.cmps.to(dtype="float64"), ConfigError,
         r"would drop the phases"),
    Case("BornMachine.to", "device = 'tpu'", lambda c: c.tree.to(device="tpu"), DeviceError, r"device must be"),
    # ---------------------------------------------------------------- evaluation and sampling
    Case("BornMachine.nll", "batch_size = 0", lambda c: c.mps.nll(c.x, batch_size=0), ConfigError,
         r"batch_size must be an integer >= 1"),
    Case("BornMachine.sample", "num_samples = 0", lambda c: c.mps.sample(0), ConfigError,
         r"num_samples must be an integer >= 1, got 0"),
    Case("BornMachine.sample", "num_samples = -5", lambda c: c.tree.sample(-5), ConfigError,
         r"num_samples must be an integer >= 1, got -5"),
    Case("BornMachine.sample", "num_samples = 2.5", lambda c: c.peps.sample(2.5), ConfigError,
         r"num_samples must be an integer >= 1, got 2.5"),
    Case("BornMachine.sample", "num_samples = True", lambda c: c.mps.sample(True), ConfigError,
         r"num_samples must be an integer"),
    Case("BornMachine.sample", "seed = 1.5", lambda c: c.mps.sample(3, seed=1.5), ConfigError,
         r"seed must be an integer"),
    Case("BornMachine.sample", "generator not a torch.Generator", lambda c: c.mps.sample(3, generator=42),
         ConfigError, r"generator must be a torch.Generator"),
    Case("BornMachine.sample_conditional", "num_samples = 0",
         lambda c: c.mps.sample_conditional(c.x, np.ones(N, bool), num_samples=0), ConfigError,
         r"num_samples must be an integer >= 1"),
    Case("BornMachine.sample_conditional", "mask of wrong length",
         lambda c: c.mps.sample_conditional(c.x, np.ones(N - 1, bool)), DataError,
         rf"mask must have {N} entries \(one per variable\), got {N - 1}"),
    Case("BornMachine.sample_conditional", "mask with wrong number of rows",
         lambda c: c.tree.sample_conditional(c.x, np.ones((3, N), bool)), DataError,
         rf"mask must have shape \({N},\) or \(8, {N}\), got \(3, {N}\)"),
    Case("BornMachine.sample_conditional", "3-D mask",
         lambda c: c.mps.sample_conditional(c.x, np.ones((1, 1, N), bool)), DataError, r"mask must be 1-D or 2-D"),
    Case("BornMachine.sample_conditional", "mask values not 0/1",
         lambda c: c.mps.sample_conditional(c.x, np.full(N, 2)), DataError, r"mask must be boolean"),
    Case("BornMachine.sample_conditional", "mask with NaN",
         lambda c: c.peps.sample_conditional(c.x, np.full(N, np.nan)), DataError, r"mask must be boolean"),
    Case("BornMachine.sample_conditional", "mask = None",
         lambda c: c.mps.sample_conditional(c.x, None), DataError, r"mask must be boolean"),
    # ---------------------------------------------------------------- sweep trainer
    Case("SweepTrainer", "lr = 0", lambda c: SweepTrainer(c.mps, lr=0, progress=False), ConfigError,
         r"lr must be a positive finite number, got 0"),
    Case("SweepTrainer", "lr = -0.1", lambda c: SweepTrainer(c.mps, lr=-0.1, progress=False), ConfigError,
         r"lr must be a positive finite number"),
    Case("SweepTrainer", "lr = NaN", lambda c: SweepTrainer(c.mps, lr=float("nan"), progress=False), ConfigError,
         r"lr must be a positive finite number, got nan"),
    Case("SweepTrainer", "lr = True", lambda c: SweepTrainer(c.mps, lr=True, progress=False), ConfigError,
         r"lr must be a positive finite number, got True"),
    Case("SweepTrainer", "descent_steps = 0", lambda c: SweepTrainer(c.mps, descent_steps=0, progress=False),
         ConfigError, r"descent_steps must be an integer >= 1, got 0"),
    Case("SweepTrainer", "descent_steps = True",
         lambda c: SweepTrainer(c.mps, descent_steps=True, progress=False), ConfigError,
         r"descent_steps must be an integer >= 1, got True"),
    Case("SweepTrainer", "batch_size = 0", lambda c: SweepTrainer(c.mps, batch_size=0, progress=False),
         ConfigError, r"batch_size must be an integer >= 1 or None, got 0"),
    Case("SweepTrainer", "cutoff = 1", lambda c: SweepTrainer(c.mps, cutoff=1.0, progress=False), ConfigError,
         r"cutoff must be in \[0, 1\), got 1.0"),
    Case("SweepTrainer", "cutoff = -1e-3", lambda c: SweepTrainer(c.mps, cutoff=-1e-3, progress=False),
         ConfigError, r"cutoff must be in \[0, 1\)"),
    Case("SweepTrainer", "cutoff = NaN", lambda c: SweepTrainer(c.mps, cutoff=float("nan"), progress=False),
         ConfigError, r"cutoff must be in \[0, 1\), got nan"),
    Case("SweepTrainer", "max_bond < min_bond", lambda c: SweepTrainer(c.mps, max_bond=2, min_bond=3, progress=False),
         ConfigError, r"max_bond \(2\) must be >= min_bond \(3\)"),
    Case("SweepTrainer", "max_bond = 0", lambda c: SweepTrainer(c.mps, max_bond=0, progress=False), ConfigError,
         r"max_bond must be an integer >= 1 or None"),
    Case("SweepTrainer", "max_bond = True", lambda c: SweepTrainer(c.mps, max_bond=True, progress=False),
         ConfigError, r"max_bond must be an integer >= 1 or None, got True"),
    Case("SweepTrainer", "min_bond = 0", lambda c: SweepTrainer(c.mps, min_bond=0, progress=False), ConfigError,
         r"min_bond must be an integer >= 1"),
    Case("SweepTrainer", "svd_method = 'qr'", lambda c: SweepTrainer(c.mps, svd_method="qr", progress=False),
         ConfigError, r"svd_method must be 'svd' or 'svd:eig', got 'qr'"),
    Case("SweepTrainer", "seed = 1.5", lambda c: SweepTrainer(c.mps, seed=1.5, progress=False), ConfigError,
         r"seed must be an integer"),
    Case("SweepTrainer", "unknown setting", lambda c: SweepTrainer(c.mps, learning_rate=0.1, progress=False),
         ConfigError, r"unknown setting\(s\) \['learning_rate'\]; valid settings: .*'lr'"),
    Case("SweepTrainer", "settings of the wrong type", lambda c: SweepTrainer(c.mps, settings={"lr": 0.1}, progress=False),
         ConfigError, r"settings must be a SweepSettings"),
    Case("SweepTrainer", "model is not a Born machine", lambda c: SweepTrainer("model.tnb", progress=False),
         ConfigError, r"model must be a tnborn BornMachine, got str"),
    Case("SweepTrainer", "PEPS (not a tree)", lambda c: SweepTrainer(c.peps, progress=False), ConfigError,
         r"geometry 'peps' is not a tree.*GradientTrainer"),
    Case("SweepSettings.validate", "batch_size larger than the data",
         lambda c: SweepSettings(batch_size=9).validate(8), ConfigError,
         r"batch_size \(9\) is larger than the training set \(8\)"),
    Case("SweepTrainer.fit", "batch_size larger than the data",
         lambda c: SweepTrainer(c.mps, batch_size=9, progress=False).fit(c.x, loops=1), ConfigError,
         r"batch_size \(9\) is larger than the training set \(8\)"),
    Case("SweepTrainer.fit", "override batch_size larger than the data",
         lambda c: c.tree_sweep.fit(c.x, loops=1, batch_size=100), ConfigError,
         r"batch_size \(100\) is larger than the training set \(8\)"),
    Case("SweepTrainer.fit", "override lr = 0", lambda c: c.sweep.fit(c.x, loops=1, lr=0), ConfigError,
         r"lr must be a positive finite number"),
    Case("SweepTrainer.fit", "override cutoff = 1.5", lambda c: c.tree_sweep.fit(c.x, loops=1, cutoff=1.5),
         ConfigError, r"cutoff must be in \[0, 1\)"),
    Case("SweepTrainer.fit", "override max_bond < min_bond",
         lambda c: c.sweep.fit(c.x, loops=1, max_bond=1, min_bond=2), ConfigError, r"max_bond \(1\) must be >= min_bond \(2\)"),
    Case("SweepTrainer.fit", "unknown override", lambda c: c.sweep.fit(c.x, loops=1, steps=3), ConfigError,
         r"unknown setting\(s\) \['steps'\]"),
    Case("SweepTrainer.fit", "loops = -1", lambda c: c.sweep.fit(c.x, loops=-1), ConfigError,
         r"loops must be a non-negative integer, got -1"),
    Case("SweepTrainer.fit", "loops = 1.5", lambda c: c.sweep.fit(c.x, loops=1.5), ConfigError,
         r"loops must be a non-negative integer, got 1.5"),
    Case("SweepTrainer.load_state_dict", "state without counters",
         lambda c: c.sweep.load_state_dict({"settings": {"lr": 0.5}}), DataError, r"invalid trainer state"),
    # ---------------------------------------------------------------- gradient trainer
    Case("GradientTrainer", "lr = 0", lambda c: GradientTrainer(c.peps, lr=0, progress=False), ConfigError,
         r"lr must be a positive finite number, got 0"),
    Case("GradientTrainer", "lr = -1", lambda c: GradientTrainer(c.mps, lr=-1, progress=False), ConfigError,
         r"lr must be a positive finite number"),
    Case("GradientTrainer", "optimizer = 'lbfgs'", lambda c: GradientTrainer(c.peps, optimizer="lbfgs", progress=False),
         ConfigError, r"optimizer must be one of \['adam', 'sgd'\], got 'lbfgs'"),
    Case("GradientTrainer", "batch_size = 0", lambda c: GradientTrainer(c.peps, batch_size=0, progress=False),
         ConfigError, r"batch_size must be an integer >= 1 or None, got 0"),
    Case("GradientTrainer", "momentum = 1", lambda c: GradientTrainer(c.peps, momentum=1.0, progress=False),
         ConfigError, r"momentum must be in \[0, 1\)"),
    Case("GradientTrainer", "grad_clip = 0", lambda c: GradientTrainer(c.peps, grad_clip=0, progress=False),
         ConfigError, r"grad_clip must be a positive finite number or None"),
    Case("GradientTrainer", "unknown setting", lambda c: GradientTrainer(c.peps, descent_steps=3, progress=False),
         ConfigError, r"unknown setting\(s\) \['descent_steps'\]"),
    Case("GradientTrainer", "model is not a Born machine", lambda c: GradientTrainer([1, 2], progress=False),
         ConfigError, r"model must be a tnborn BornMachine, got list"),
    Case("GradientTrainer.fit", "batch_size larger than the data",
         lambda c: GradientTrainer(c.peps, batch_size=9, progress=False).fit(c.x, epochs=1), ConfigError,
         r"batch_size \(9\) is larger than the training set \(8\)"),
    Case("GradientTrainer.fit", "epochs = -1", lambda c: c.grad.fit(c.x, epochs=-1), ConfigError,
         r"epochs must be a non-negative integer, got -1"),
    Case("GradientTrainer.fit", "override lr = 0", lambda c: c.grad.fit(c.x, epochs=1, lr=0), ConfigError,
         r"lr must be a positive finite number"),
    # ---------------------------------------------------------------- checkpoints
    Case("tnborn.load", "file does not exist", lambda c: tnborn.load(c.f("missing")), CheckpointError,
         r"checkpoint file not found"),
    Case("tnborn.load", "a folder", lambda c: tnborn.load(c.f("directory")), CheckpointError,
         r"is a directory, expected a tnborn checkpoint file"),
    Case("tnborn.load", "empty file", lambda c: tnborn.load(c.f("empty")), CheckpointError,
         r"not a tnborn checkpoint \(not a readable archive, 0 bytes"),
    Case("tnborn.load", "truncated to half", lambda c: tnborn.load(c.f("truncated")), CheckpointError,
         r"not a readable archive.*truncated, corrupted or of another type"),
    Case("tnborn.load", "last bytes missing", lambda c: tnborn.load(c.f("truncated_tail")), CheckpointError,
         r"not a readable archive.*truncated"),
    Case("tnborn.load", "random bytes", lambda c: tnborn.load(c.f("random_bytes")), CheckpointError,
         r"not a tnborn checkpoint"),
    Case("tnborn.load", "one array byte flipped", lambda c: tnborn.load(c.f("corrupt_array")), CheckpointError,
         r"array 'node/\d' is corrupted"),
    Case("tnborn.load", "header edited (checksum mismatch)", lambda c: tnborn.load(c.f("edited_header")),
         CheckpointError, r"header checksum mismatch"),
    Case("tnborn.load", "newer file format version", lambda c: tnborn.load(c.f("newer_format")), CheckpointError,
         r"written by a newer tnborn \(format version 99 > 1\)"),
    Case("tnborn.load", "newer model format", lambda c: tnborn.load(c.f("newer_model")), CheckpointError,
         r"model format 99 > 1: written by a newer tnborn"),
    Case("tnborn.load", "model format not an integer", lambda c: tnborn.load(c.f("bad_model_format")),
         CheckpointError, r"model format must be an integer"),
    Case("tnborn.load", "another library's zip format field", lambda c: tnborn.load(c.f("foreign_format")),
         CheckpointError, r"header format is 'other-library'"),
    Case("tnborn.load", "NumPy .npz archive", lambda c: tnborn.load(c.f("foreign_npz")), CheckpointError,
         r"not a tnborn checkpoint .*looks like a NumPy \.npz archive"),
    Case("tnborn.load", "PyTorch checkpoint", lambda c: tnborn.load(c.f("foreign_torch")), CheckpointError,
         r"not a tnborn checkpoint .*looks like a PyTorch checkpoint"),
    Case("tnborn.load", "other zip archive", lambda c: tnborn.load(c.f("foreign_zip")), CheckpointError,
         r"archive has no 'header.json'"),
    Case("tnborn.load", "tnborn arrays file without a model", lambda c: tnborn.load(c.f("not_a_model")),
         CheckpointError, r"not a tnborn model checkpoint"),
    Case("tnborn.load", "array shape does not fit the model", lambda c: tnborn.load(c.f("wrong_shape")),
         CheckpointError, r"arrays do not match the stored mps metadata"),
    Case("tnborn.load", "array listed in the metadata is missing", lambda c: tnborn.load(c.f("missing_array")),
         CheckpointError, rf"array 'node/{N - 1}' listed in the metadata is missing"),
    Case("tnborn.load", "array with more dimensions than indices", lambda c: tnborn.load(c.f("extra_dims")),
         CheckpointError, r"has 4 dimensions but the metadata names 3 indices"),
    Case("tnborn.load", "array dtype differs from the metadata", lambda c: tnborn.load(c.f("wrong_dtype")),
         CheckpointError, r"has dtype float64 but the metadata says float32"),
    Case("tnborn.load", "integer arrays", lambda c: tnborn.load(c.f("int_arrays")), CheckpointError,
         r"has dtype int64 but the metadata says float64"),
    Case("tnborn.load", "NaN in an array", lambda c: tnborn.load(c.f("nan_array")), CheckpointError,
         r"array 'node/0' holds NaN or inf"),
    Case("tnborn.load", "bond dimensions differ from the metadata", lambda c: tnborn.load(c.f("wrong_bonds")),
         CheckpointError, r"bond dimensions do not match the metadata"),
    Case("tnborn.load", "centre is not a node", lambda c: tnborn.load(c.f("bad_center")), CheckpointError,
         r"stored centre 99 is not a node"),
    Case("tnborn.load", "unknown geometry", lambda c: tnborn.load(c.f("unknown_geometry")), CheckpointError,
         r"unknown geometry 'moebius'"),
    Case("tnborn.load", "device = 'tpu'", lambda c: tnborn.load(c.f("good"), device="tpu"), DeviceError,
         r"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'"),
    Case("tnborn.load", "dtype = 'int8'", lambda c: tnborn.load(c.f("good"), dtype="int8"), DeviceError,
         r"dtype must be one of"),
    Case("tnborn.load", "complex checkpoint as float64", lambda c: tnborn.load(c.f("complex"), dtype="float64"),
         ConfigError, r"complex \(complex128\) model; loading it as torch.float64 would drop the phases"),
    Case("tnborn.checkpoint_info", "truncated file", lambda c: tnborn.checkpoint_info(c.f("truncated")),
         CheckpointError, r"not a readable archive"),
    Case("tnborn.checkpoint_info", "newer file format version", lambda c: tnborn.checkpoint_info(c.f("newer_format")),
         CheckpointError, r"newer tnborn"),
    # ---------------------------------------------------------------- data files
    Case("tnborn.load_binary", "file does not exist", lambda c: tnborn.load_binary(c.f("data_missing")), DataError,
         r"no such data file"),
    Case("tnborn.load_binary", "a folder named .npy", lambda c: tnborn.load_binary(c.f("directory")), DataError,
         r"data path must be a file"),
    Case("tnborn.load_binary", "grey values without threshold", lambda c: tnborn.load_binary(c.f("data_grey")),
         DataError, r"is not binary: expected values in \{0, 1\}.*pass threshold="),
    Case("tnborn.load_binary", "NaN values", lambda c: tnborn.load_binary(c.f("data_nan")), DataError,
         r"contains NaN"),
    Case("tnborn.load_binary", "NaN values with a threshold", lambda c: tnborn.load_binary(c.f("data_nan"), threshold=0.5),
         DataError, r"contains NaN"),
    Case("tnborn.load_binary", "no rows", lambda c: tnborn.load_binary(c.f("data_empty")), DataError,
         r"at least one row"),
    Case("tnborn.load_binary", "1-D array", lambda c: tnborn.load_binary(c.f("data_1d")), DataError,
         r"must be a 2-D array .*1-D"),
    Case("tnborn.load_binary", "4-D array", lambda c: tnborn.load_binary(c.f("data_4d")), DataError,
         r"must be a 2-D array .*4-D"),
    Case("tnborn.load_binary", "not a .npy file inside", lambda c: tnborn.load_binary(c.f("data_garbage")),
         DataError, r"could not read .* as a \.npy file"),
    Case("tnborn.load_binary", "pickled object array", lambda c: tnborn.load_binary(c.f("data_pickle")),
         DataError, r"could not read .*allow_pickle=False"),
    Case("tnborn.load_binary", "unsupported file name", lambda c: tnborn.load_binary(c.f("data_txt")),
         DataError, r"unsupported data file .*expected a name ending in one of"),
    Case("tnborn.load_binary", ".npz with two arrays and no key", lambda c: tnborn.load_binary(c.f("data_two_keys")),
         DataError, r"holds 2 arrays: \['a', 'b'\]; pass key="),
    Case("tnborn.load_binary", "unknown key", lambda c: tnborn.load_binary(c.f("data_two_keys"), key="c"),
         DataError, r"no array 'c' .*available keys"),
    Case("tnborn.load_binary", "corrupt gzip IDX file", lambda c: tnborn.load_binary(c.f("data_bad_gz")),
         DataError, r"corrupt gzip-compressed IDX file"),
    Case("tnborn.load_binary", "wrong number of variables", lambda c: tnborn.load_binary(c.f("data_good"), n_vars=N + 1),
         DataError, rf"must have {N + 1} columns"),
    Case("tnborn.load_binary", "limit = 0", lambda c: tnborn.load_binary(c.f("data_good"), limit=0), DataError,
         r"limit must be an integer >= 1"),
    Case("tnborn.load_binary", "threshold = NaN", lambda c: tnborn.load_binary(c.f("data_grey"), threshold=float("nan")),
         DataError, r"threshold must be a finite real number"),
    # ---------------------------------------------------------------- command line
    Case("tnborn train", "--lr 0", lambda c: _train(c, "--lr", "0"), EXIT2, r"lr must be a positive finite number"),
    Case("tnborn train", "--lr -1", lambda c: _train(c, "--lr", "-1"), EXIT2, r"--lr must be a positive finite number"),
    Case("tnborn train", "--steps 0", lambda c: _train(c, "--steps", "0"), EXIT2, r"--steps.*integer >= 1"),
    Case("tnborn train", "--cutoff 1", lambda c: _train(c, "--cutoff", "1"), EXIT2, r"cutoff must be in \[0, 1\)"),
    Case("tnborn train", "--max-bond 2 --min-bond 3", lambda c: _train(c, "--max-bond", "2", "--min-bond", "3"),
         EXIT2, r"--max-bond \(2\) must be >= --min-bond \(3\)"),
    Case("tnborn train", "--batch-size larger than the data", lambda c: _train(c, "--batch-size", "1000"), EXIT2,
         r"--batch-size \(1000\) is larger than the training set \(10\)"),
    Case("tnborn train", "--batch-size 0", lambda c: _train(c, "--batch-size", "0"), EXIT2, r"--batch-size"),
    Case("tnborn train", "--device cuda (absent)", lambda c: _train(c, "--device", "cuda"), EXIT2,
         r"CUDA is not available"),
    Case("tnborn train", "--device tpu", lambda c: _train(c, "--device", "tpu"), EXIT2, r"device must be"),
    Case("tnborn train", "--dtype float16", lambda c: _train(c, "--dtype", "float16"), EXIT2,
         r"--dtype.*must be one of"),
    Case("tnborn train", "--data missing file", lambda c: _train(c, "--data", c.f("data_missing")), EXIT2,
         r"no such data file"),
    Case("tnborn train", "--data grey values", lambda c: _train(c, "--data", c.f("data_grey")), EXIT2,
         r"is not binary"),
    Case("tnborn train", "--resume truncated checkpoint", lambda c: _train(c, "--resume", c.f("truncated")), EXIT2,
         r"not a readable archive"),
    Case("tnborn train", "--resume foreign file", lambda c: _train(c, "--resume", c.f("foreign_torch")), EXIT2,
         r"looks like a PyTorch checkpoint"),
    Case("tnborn sample", "-n 0", lambda c: run_cli("sample", c.f("good"), "-n", "0", "--out", str(c.scratch / "s.npy")),
         EXIT2, r"--num-samples.*integer >= 1"),
    Case("tnborn sample", "newer checkpoint", lambda c: run_cli("sample", c.f("newer_format"), "--out",
                                                                str(c.scratch / "s.npy")),
         EXIT2, r"newer tnborn"),
    Case("tnborn evaluate", "data of the wrong width",
         lambda c: run_cli("evaluate", c.f("good"), "--data", c.f("data_wide")), EXIT2,
         rf"have {N + 1} variables per row, but the model has {N}"),
    Case("tnborn evaluate", "corrupt checkpoint",
         lambda c: run_cli("evaluate", c.f("corrupt_array"), "--data", c.f("data_good")), EXIT2, r"corrupted"),
    Case("tnborn info", "checkpoint missing", lambda c: run_cli("info", c.f("missing")), EXIT2,
         r"checkpoint file not found"),
    Case("tnborn inpaint", "mask of the wrong shape",
         lambda c: run_cli("inpaint", c.f("good"), "--data", c.f("data_good"), "--mask", c.f("mask_wrong"),
                           "--out", str(c.scratch / "inp"), "--quiet"), EXIT2, r"mask .*has shape"),
    # ---------------------------------------------------------------- outputs never destroy anything
    Case("tnborn sample", "--out is the input checkpoint", lambda c: run_cli("sample", c.f("good"), "--out", c.f("good")),
         EXIT2, r"--out .* is the input file .*choose another output path"),
    Case("tnborn sample", "--out is a hard link to the input",
         lambda c: (os.link(c.f("good"), c.scratch / "hard.tnb"),
                    run_cli("sample", c.f("good"), "--out", str(c.scratch / "hard.tnb")))[1],
         EXIT2, r"is the input file"),
    Case("tnborn circuit", "--out is the input checkpoint (symlink)",
         lambda c: ((c.scratch / "soft.tnb").symlink_to(c.f("good")),
                    run_cli("circuit", c.f("good"), "--out", str(c.scratch / "soft.tnb")))[1],
         EXIT2, r"is the input file .*choose another output path"),
    Case("tnborn sample", "--out is a FIFO", lambda c: (lambda p: _unchanged_after(
        [p], lambda: run_cli("sample", c.f("good"), "--out", str(p))))(_fifo(c)),
         EXIT2, r"it is a FIFO \(named pipe\), not a regular file"),
    Case("tnborn sample", "--out is a symlink to a FIFO", lambda c: (lambda p: _unchanged_after(
        [p, p.resolve()], lambda: run_cli("sample", c.f("good"), "--out", str(p))))(_link_to_fifo(c)),
         EXIT2, r"the target of the link .*it is a FIFO"),
    Case("tnborn sample", "--out /dev/full (a FIFO where absent)", lambda c: (lambda p: _unchanged_after(
        [p], lambda: run_cli("sample", c.f("good"), "--out", str(p))))(_device_or_fifo(c, "/dev/full")),
         EXIT2, r"it is a (character device|FIFO \(named pipe\)), not a regular file"),
    Case("tnborn circuit", "--out /dev/null (a FIFO where absent)", lambda c: (lambda p: _unchanged_after(
        [p], lambda: run_cli("circuit", c.f("good"), "--out", str(p))))(_device_or_fifo(c, "/dev/null")),
         EXIT2, r"not a regular file"),
    # ---------------------------------------------------------------- optimised circuits
    Case("tnborn circuit", "--layers auto without --target-fidelity",
         lambda c: run_cli("circuit", c.f("good"), "--layers", "auto", "--out", str(c.scratch / "c.qasm")),
         EXIT2, r"--layers auto needs --target-fidelity F, a number in \(0, 1\]"),
    Case("tnborn circuit", "--target-fidelity 0", lambda c: run_cli(
        "circuit", c.f("good"), "--layers", "auto", "--target-fidelity", "0", "--out", str(c.scratch / "c.qasm")),
         EXIT2, r"--target-fidelity: must be a number in \(0, 1\], got '0'"),
    Case("tnborn circuit", "--target-fidelity 1.5", lambda c: run_cli(
        "circuit", c.f("good"), "--layers", "auto", "--target-fidelity", "1.5", "--out", str(c.scratch / "c.qasm")),
         EXIT2, r"--target-fidelity: must be a number in \(0, 1\], got '1.5'"),
    Case("tnborn circuit", "--target-fidelity without --layers auto", lambda c: run_cli(
        "circuit", c.f("good"), "--layers", "2", "--target-fidelity", "0.9", "--out", str(c.scratch / "c.qasm")),
         EXIT2, r"--target-fidelity applies to --layers auto only; got --layers 2"),
    Case("tnborn circuit", "--sweeps without --optimize", lambda c: run_cli(
        "circuit", c.f("good"), "--sweeps", "5", "--out", str(c.scratch / "c.qasm")),
         EXIT2, r"--sweeps applies with --optimize or --layers auto only"),
    Case("tnborn circuit", "--layers two", lambda c: run_cli(
        "circuit", c.f("good"), "--layers", "two", "--out", str(c.scratch / "c.qasm")),
         EXIT2, r"--layers: must be an integer >= 1 or 'auto', got 'two'"),
    Case("tnborn circuit", "--optimize with data of the wrong width", lambda c: run_cli(
        "circuit", c.f("good"), "--optimize", "--data", c.f("data_wide"), "--out", str(c.scratch / "c.qasm")),
         EXIT2, rf"have {N + 1} variables per row, but the model has {N}"),
    Case("tnborn.circuit.grow_circuit", "target_fidelity=0", lambda c: _circuit_api("grow_circuit")(
        c.mps, target_fidelity=0), ConfigError, r"target_fidelity must be a number in \(0, 1\], got 0"),
    Case("tnborn.circuit.grow_circuit", "max_layers=0", lambda c: _circuit_api("grow_circuit")(
        c.mps, max_layers=0), ConfigError, r"max_layers must be an integer >= 1, got 0"),
    Case("tnborn.circuit.optimize_circuit", "sweeps=0", lambda c: _circuit_api("optimize_circuit")(
        c.mps, _circuit_api("compile_mps")(c.mps), sweeps=0), ConfigError, r"sweeps must be an integer >= 1, got 0"),
    Case("tnborn.circuit.optimize_circuit", "tol=-1", lambda c: _circuit_api("optimize_circuit")(
        c.mps, _circuit_api("compile_mps")(c.mps), tol=-1), ConfigError, r"tol must be a finite number >= 0, got -1"),
    Case("tnborn.circuit.truncation_fidelity", "max_bond=0", lambda c: _circuit_api("truncation_fidelity")(
        c.mps, 0), ConfigError, r"max_bond must be an integer >= 1, got 0"),
    Case("tnborn.circuit.compile_checkpoint", "layers='auto' without a target", lambda c: _circuit_api(
        "compile_checkpoint")(c.f("good"), layers="auto"), ConfigError, r"layers='auto' needs a target fidelity"),
    Case("tnborn train", "--out holds an earlier run", lambda c: (lambda r: _unchanged_after(
        [r / "model.tnb"], lambda: _train(c)))(_nonempty_run(c)),
         EXIT2, r"--out .*run is not empty \(model.tnb\).*pass --overwrite"),
    Case("tnborn train", "--out locked by a concurrent run", lambda c: _locked_run(c), EXIT2,
         r"another tnborn train is writing to .*run"),
    Case("tnborn train", "--batch-size 31 on 10 rows (no folder created)", lambda c: _no_folder(c, "--batch-size", "31"),
         EXIT2, r"--batch-size \(31\) is larger than the training set \(10\)"),
    Case("tnborn train", "--lr 1e300 (no folder left)", lambda c: _no_folder(c, "--lr", "1e300"),
         EXIT2, r"update of bond .* failed"),
    # ---------------------------------------------------------------- loading is bounded
    Case("tnborn.load", "forged 8 TiB shape and zip64 size", lambda c: tnborn.load(c.f("forged_huge")),
         CheckpointError, r"declares 8796093022208 bytes of arrays, more than the limit"),
    Case("tnborn.load", "zip bomb (16 MiB of zeros in a small entry)", lambda c: tnborn.load(c.f("zip_bomb")),
         CheckpointError, r"archive entry declares \d+ bytes, but the header says 32 bytes"),
    Case("tnborn info", "/dev/zero (a FIFO where absent)",
         lambda c: run_cli("info", str(_device_or_fifo(c, "/dev/zero"))), EXIT2,
         r"is a (character device|FIFO \(named pipe\)), not a regular file"),
    Case("tnborn info", "header nested 100,000 levels deep", lambda c: run_cli("info", c.f("deep_header")), EXIT2,
         r"JSON nested more than 100 levels deep"),
    Case("tnborn info", "trainer history of the wrong type (checksummed)",
         lambda c: run_cli("info", c.f("bad_history")), EXIT2, r"malformed trainer metadata"),
    Case("tnborn train", "--config file not UTF-8", lambda c: _no_folder(c, "--config", c.f("toml_latin1")), EXIT2,
         r"is not UTF-8 text"),
    Case("tnborn sample", "-n 100000000000", lambda c: run_cli("sample", c.f("good"), "-n", "100000000000", "--out",
                                                               str(c.scratch / "s.npy")),
         EXIT2, r"--num-samples 100000000000 needs about .* GiB"),
    # ---------------------------------------------------------------- messages in command-line spelling
    Case("tnborn evaluate", "grey data: the hint names --threshold",
         lambda c: run_cli("evaluate", c.f("good"), "--data", c.f("data_grey")), EXIT2, r"pass --threshold to binarize"),
    Case("tnborn train", "--device cuda:1 (absent) is named as given", lambda c: _no_folder(c, "--device", "cuda:1"),
         EXIT2, r"device 'cuda:1' was asked for .*use --device cpu or auto"),
    Case("tnborn.load_binary", "random bytes named .npy", lambda c: tnborn.load_binary(c.f("data_random_npy")),
         DataError, r"is not a valid \.npy file"),
    Case("tnborn evaluate", "random bytes named .npy", lambda c: run_cli("evaluate", c.f("good"), "--data",
                                                                         c.f("data_random_npy")),
         EXIT2, r"is not a valid \.npy file"),
] + _data_cases()


def _case_id(case: Case) -> str:
    return re.sub(r"[^A-Za-z0-9_.=<>-]+", "_", f"{case.entry}-{case.bad}")


# --------------------------------------------------------------------------- #
# the test
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(case: Case, files, tmp_path):
    ctx = Ctx(files, tmp_path)
    folder = files["good"].parent
    models_before = [_model_state(m) for m in ctx.models()]
    trainers_before = [json.dumps(t.state_dict(), sort_keys=True) for t in ctx.trainers()]
    files_before = _sha256_tree(folder)

    if case.error == EXIT2:
        code, err = case.call(ctx)
        assert code == 2, f"exit status {code}, stderr: {err}"
        assert re.search(case.match, err), err
        assert "Traceback" not in err
    else:
        with pytest.raises(case.error, match=case.match) as info:
            case.call(ctx)
        assert isinstance(info.value, tnborn.TnbornError)

    for model, before in zip(ctx.models(), models_before):
        assert _same_model_state(_model_state(model), before), f"{type(model).__name__} was modified"
    for trainer, before in zip(ctx.trainers(), trainers_before):
        assert json.dumps(trainer.state_dict(), sort_keys=True) == before, f"{type(trainer).__name__} state changed"
    assert _sha256_tree(folder) == files_before


def test_table_covers_every_entry_point():
    entries = {c.entry.split(" (")[0] for c in CASES}
    wanted = {
        "MPSBornMachine.random", "TreeBornMachine.random", "PEPSBornMachine.random", "get_geometry(name).random",
        "MPSBornMachine.log_prob", "TreeBornMachine.log_prob", "PEPSBornMachine.log_prob", "BornMachine.nll",
        "BornMachine.score_samples", "BornMachine.sample", "BornMachine.sample_conditional", "SweepTrainer",
        "SweepTrainer.fit", "GradientTrainer", "GradientTrainer.fit", "tnborn.load", "tnborn.load_binary",
        "tnborn train", "tnborn sample", "tnborn evaluate", "tnborn info", "tnborn inpaint",
    }
    assert wanted <= entries, sorted(wanted - entries)
    assert all(c.error == EXIT2 or issubclass(c.error, tnborn.TnbornError) for c in CASES)


def test_good_inputs_of_the_fixture_work(files):
    """The bad rows differ from working calls only in the bad input."""
    ctx = Ctx(files, files["good"].parent)
    assert tnborn.load(files["good"]).num_variables == N
    assert tnborn.load_binary(files["data_good"]).shape == (8, N)
    assert torch.isfinite(ctx.mps.log_prob(ctx.x)).all()
    ctx.mps.sample_conditional(ctx.x, np.ones(N, bool))
    assert tnborn.load(files["complex"], dtype="complex64").dtype == torch.complex64


# --------------------------------------------------------------------------- #
# the documentation table
# --------------------------------------------------------------------------- #
START = "<!-- validation-table:start (generated by tests/test_validation.py --write-docs) -->"
END = "<!-- validation-table:end -->"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table() -> str:
    """The table of every bad input and its error, in Markdown."""
    lines = ["| entry point | bad input | error | message matches |", "|---|---|---|---|"]
    for c in CASES:
        err = "exit status 2" if c.error == EXIT2 else f"`{c.error.__name__}`"
        lines.append(f"| `{_md(c.entry)}` | {_md(c.bad)} | {err} | `{_md(c.match)}` |")
    return "\n".join(lines)


def test_docs_table_is_in_sync():
    text = DOC.read_text()
    assert START in text and END in text
    table = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert table == markdown_table(), "run: python tests/test_validation.py --write-docs"


def write_docs() -> None:
    """Replace the table between the markers of docs/reliability.md."""
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{markdown_table()}\n{END}{tail}")


if __name__ == "__main__":  # pragma: no cover
    if "--write-docs" in sys.argv:
        write_docs()
    else:
        print(markdown_table())
