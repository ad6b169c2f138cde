"""Tests of the low-level checkpoint format and atomic writing (tnborn.io)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import queue
import random
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

from tnborn import io as tio
from tnborn.errors import CheckpointError, ConfigError
from tnborn.io import (
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_ENTRY,
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    load_arrays,
    read_header,
    save_arrays,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    return {
        "c128": z.astype(np.complex128),
        "c64": z.astype(np.complex64),
        "f64": np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, 1.0 / 3.0]),
        "f32": rng.standard_normal((2, 3, 2)).astype(np.float32),
        "i64": np.array([np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max], dtype=np.int64),
        "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "bool": np.array([[True, False], [False, True]]),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 3), dtype=np.float64),
        "big_endian": np.arange(5, dtype=">f8"),
        "name with/slash and ünïcode": np.arange(3, dtype=np.int64),
    }


def _sample_metadata() -> dict:
    return {
        "model": {"kind": "mps", "bond_dim": 8, "sites": [1, 2, 3], "nested": {"a": None}},
        "loss": 1.2345678901234567,
        "tiny": 5e-324,
        "history": [0.5, 0.25, {"step": 3, "ok": True}],
        "note": "ünïcode ✓ \"quotes\"",
        "nothing": None,
        "flag": False,
        "empty": {},
    }


def _save_sample(path: pathlib.Path) -> pathlib.Path:
    return save_arrays(path, _sample_arrays(), _sample_metadata())


def _rewrite(
    src: pathlib.Path, dst: pathlib.Path, *, header_fn=None, drop=(), add=None, replace=None
) -> pathlib.Path:
    """Copy the zip `src` to `dst`, editing the header and entries on the way."""
    with zipfile.ZipFile(src) as zin:
        items = [(info.filename, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(dst, "w") as zout:
        for name, data in items:
            if name in drop:
                continue
            if name == HEADER_ENTRY and header_fn is not None:
                data = json.dumps(header_fn(json.loads(data))).encode("utf-8")
            if replace and name in replace:
                data = replace[name]
            zout.writestr(name, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def _entry_of(header: dict, name: str) -> dict:
    return next(rec for rec in header["arrays"] if rec["name"] == name)


def _resign(header: dict) -> dict:
    header["checksum"] = tio._header_checksum(header["arrays"], header["metadata"])
    return header


@pytest.fixture
def good(tmp_path: pathlib.Path) -> pathlib.Path:
    return _save_sample(tmp_path / "good.tnb")


# ---------------------------------------------------------------------------
# round trip
# ---------------------------------------------------------------------------


def test_round_trip_is_bit_exact(good: pathlib.Path) -> None:
    arrays, meta = load_arrays(good)
    expected = _sample_arrays()
    assert list(arrays) == list(expected)
    for name, ref in expected.items():
        got = arrays[name]
        assert got.dtype == ref.dtype and got.dtype.str == ref.dtype.str, name
        assert got.shape == ref.shape, name
        assert got.tobytes() == ref.tobytes(), name
    assert meta == _sample_metadata()
    assert list(meta) == list(_sample_metadata())  # key order preserved


def test_metadata_normalisation_and_special_floats(tmp_path: pathlib.Path) -> None:
    meta = {"t": (1, 2, [3, (4,)]), "nan": math.nan, "inf": -math.inf, "npf": np.float64(0.1)}
    path = save_arrays(tmp_path / "m.tnb", {}, meta)
    arrays, got = load_arrays(path)
    assert arrays == {}
    assert got["t"] == [1, 2, [3, [4]]]
    assert math.isnan(got["nan"]) and got["inf"] == -math.inf
    assert type(got["npf"]) is float and got["npf"] == 0.1


def test_non_contiguous_arrays_are_stored_in_c_order(tmp_path: pathlib.Path) -> None:
    a = np.arange(24, dtype=np.complex128).reshape(4, 6)
    views = {"T": a.T, "strided": a[::2, 1::3], "fortran": np.asfortranarray(a)}
    arrays, _ = load_arrays(save_arrays(tmp_path / "v.tnb", views, {}))
    for name, ref in views.items():
        assert arrays[name].flags.c_contiguous
        np.testing.assert_array_equal(arrays[name], ref)


def test_read_header_and_layout(good: pathlib.Path) -> None:
    header = read_header(good)
    assert header["format"] == FORMAT_NAME
    assert header["format_version"] == FORMAT_VERSION
    assert header["created_utc"].endswith("+00:00")
    assert header["metadata"] == _sample_metadata()
    rec = _entry_of(header, "c128")
    assert rec["dtype"] == "<c16" and rec["shape"] == [3, 4] and len(rec["sha256"]) == 64
    with zipfile.ZipFile(good) as zf:
        names = zf.namelist()
        assert names[0] == HEADER_ENTRY
        # every array entry is a plain .npy file readable without pickle
        for rec in header["arrays"]:
            with zf.open(rec["entry"]) as fh:
                arr = np.lib.format.read_array(fh, allow_pickle=False)
            assert arr.shape == tuple(rec["shape"])


def test_compressed_round_trip(tmp_path: pathlib.Path) -> None:
    path = save_arrays(tmp_path / "c.tnb", _sample_arrays(), {"x": 1}, compress=True)
    arrays, _ = load_arrays(path)
    for name, ref in _sample_arrays().items():
        assert arrays[name].tobytes() == ref.tobytes()


def test_save_creates_parents_and_overwrites(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a" / "b" / "c.tnb"
    assert save_arrays(str(path), {"x": np.ones(2)}, {"v": 1}) == path
    save_arrays(path, {"x": np.zeros(3)}, {"v": 2})
    arrays, meta = load_arrays(path)
    assert meta == {"v": 2} and arrays["x"].shape == (3,)
    assert sorted(os.listdir(path.parent)) == ["c.tnb"]


# ---------------------------------------------------------------------------
# refusing what cannot be stored
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"o": np.array([1, None], dtype=object)}, "dtype object"),
        ({"s": np.array(["a", "b"])}, "cannot be stored"),
        ({"rec": np.zeros(2, dtype=[("a", "f8")])}, "cannot be stored"),
        ({"l": [1.0, 2.0]}, "must be a numpy.ndarray"),
        ({"": np.zeros(1)}, "non-empty str"),
        ({3: np.zeros(1)}, "non-empty str"),
    ],
)
def test_save_rejects_unstorable_arrays(tmp_path, arrays, match) -> None:
    path = tmp_path / "x.tnb"
    with pytest.raises(CheckpointError, match=match):
        save_arrays(path, arrays, {})
    assert not path.exists() and os.listdir(tmp_path) == []


def _circular() -> dict:
    d: dict = {"a": 1}
    d["self"] = d
    return d


@pytest.mark.parametrize(
    "meta, match",
    [
        ({"s": {1, 2}}, r"metadata\['s'\] has type builtins.set"),
        ({"a": np.zeros(2)}, r"not JSON-serialisable.*tolist"),
        ({"deep": [{"x": object()}]}, r"metadata\['deep'\]\[0\]\['x'\]"),
        ({1: "int key"}, "keys must be str"),
        (_circular(), "circular reference"),
        ({"b": b"bytes"}, "not JSON-serialisable"),
    ],
)
def test_save_rejects_non_json_metadata(tmp_path, meta, match) -> None:
    with pytest.raises(CheckpointError, match=match):
        save_arrays(tmp_path / "x.tnb", {"a": np.zeros(1)}, meta)
    assert os.listdir(tmp_path) == []


def test_save_rejects_non_mapping_metadata(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="metadata must be a mapping"):
        save_arrays(tmp_path / "x.tnb", {}, [1, 2])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# bad files
# ---------------------------------------------------------------------------


def test_missing_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nope.tnb"
    with pytest.raises(CheckpointError, match=r"not found: .*nope\.tnb"):
        load_arrays(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_header(path)


def test_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(CheckpointError, match="is a directory"):
        load_arrays(tmp_path)


def test_truncated_file(good: pathlib.Path) -> None:
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"not a tnborn checkpoint \(not a readable archive"):
        load_arrays(good)
    with pytest.raises(CheckpointError, match="not a readable archive"):
        read_header(good)


def _data_offset(path: pathlib.Path, entry: str) -> tuple[int, int]:
    """Offset and size of the stored data of `entry` inside the zip file."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(entry)
        assert info.compress_type == zipfile.ZIP_STORED
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def test_flipped_byte_in_array_data(good: pathlib.Path) -> None:
    entry = _entry_of(read_header(good), "u8")["entry"]
    start, size = _data_offset(good, entry)
    raw = bytearray(good.read_bytes())
    raw[start + size - 7] ^= 0x01  # inside the array payload, after the .npy header
    good.write_bytes(bytes(raw))
    read_header(good)  # header itself is intact
    with pytest.raises(CheckpointError, match=r"array 'u8' is corrupted"):
        load_arrays(good)


def test_modified_array_data_with_valid_zip_crc(good: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # re-zipping gives a valid CRC, so only tnborn's own sha256 can catch it
    rec = _entry_of(read_header(good), "f32")
    with zipfile.ZipFile(good) as zf:
        raw = bytearray(zf.read(rec["entry"]))
    raw[-1] ^= 0x80
    bad = _rewrite(good, tmp_path / "bad.tnb", replace={rec["entry"]: bytes(raw)})
    with pytest.raises(CheckpointError, match=r"array 'f32' is corrupted \(sha256 checksum mismatch"):
        load_arrays(bad)


def test_plain_npz_is_foreign(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.arange(3), b=np.ones(2))
    with pytest.raises(CheckpointError, match=r"not a tnborn checkpoint.*NumPy \.npz"):
        load_arrays(path)
    with pytest.raises(CheckpointError, match="not a tnborn checkpoint"):
        read_header(path)


def test_torch_like_zip_is_foreign(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("archive/version", b"3\n")
    with pytest.raises(CheckpointError, match=r"not a tnborn checkpoint.*PyTorch"):
        load_arrays(path)


def test_random_bytes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "random.tnb"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match=r"not a tnborn checkpoint \(not a readable archive"):
        load_arrays(path)


def test_empty_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.tnb"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"not a tnborn checkpoint \(not a readable archive, 0 bytes"):
        load_arrays(path)


def test_text_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "notes.tnb"
    path.write_text("step,loss\n1,0.5\n2,0.25\n")
    with pytest.raises(CheckpointError, match=r"not a tnborn checkpoint \(not a readable archive"):
        load_arrays(path)


def test_newer_format_version(good: pathlib.Path, tmp_path: pathlib.Path) -> None:
    def bump(h):
        h["format_version"] = 999
        h["arrays"] = "something a future tnborn understands"
        return h

    bad = _rewrite(good, tmp_path / "future.tnb", header_fn=bump)
    msg = r"written by a newer tnborn \(format version 999 > 1\); upgrade tnborn"
    with pytest.raises(CheckpointError, match=msg):
        load_arrays(bad)
    with pytest.raises(CheckpointError, match=msg):
        read_header(bad)


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True, None])
def test_invalid_format_version(good, tmp_path, version) -> None:
    def edit(h):
        h["format_version"] = version
        return h

    with pytest.raises(CheckpointError, match="invalid checkpoint format version"):
        read_header(_rewrite(good, tmp_path / "v.tnb", header_fn=edit))


def test_other_format_name(good: pathlib.Path, tmp_path: pathlib.Path) -> None:
    def rename(h):
        h["format"] = "someone-elses-checkpoint"
        return h

    bad = _rewrite(good, tmp_path / "other.tnb", header_fn=rename)
    with pytest.raises(CheckpointError, match=r"not a tnborn checkpoint \(header format is 'someone-elses"):
        load_arrays(bad)


def test_missing_header(good: pathlib.Path, tmp_path: pathlib.Path) -> None:
    bad = _rewrite(good, tmp_path / "nohdr.tnb", drop={HEADER_ENTRY})
    with pytest.raises(CheckpointError, match=r"not a tnborn checkpoint \(archive has no 'header.json'"):
        load_arrays(bad)


@pytest.mark.parametrize("payload", [b"{not json", b"\xff\xfe\x00", b"[1, 2]"])
def test_header_not_json_object(good, tmp_path, payload) -> None:
    bad = _rewrite(good, tmp_path / "h.tnb", replace={HEADER_ENTRY: payload})
    with pytest.raises(CheckpointError, match=r"not a tnborn checkpoint \(header.json (is not valid|must hold)"):
        load_arrays(bad)


def test_edited_header_fails_checksum(good: pathlib.Path, tmp_path: pathlib.Path) -> None:
    def edit(h):
        h["metadata"]["loss"] = 0.0
        return h

    bad = _rewrite(good, tmp_path / "edited.tnb", header_fn=edit)
    with pytest.raises(CheckpointError, match="header checksum mismatch"):
        read_header(bad)
    with pytest.raises(CheckpointError, match="header checksum mismatch"):
        load_arrays(bad)


def test_shape_in_header_does_not_match_data(good: pathlib.Path, tmp_path: pathlib.Path) -> None:
    def edit(h):
        _entry_of(h, "c128")["shape"] = [4, 3]  # same number of bytes, other shape
        return _resign(h)

    bad = _rewrite(good, tmp_path / "shape.tnb", header_fn=edit)
    with pytest.raises(CheckpointError, match=r"array 'c128' has shape \(3, 4\).*expects shape \(4, 3\)"):
        load_arrays(bad)


def test_dtype_in_header_does_not_match_data(good: pathlib.Path, tmp_path: pathlib.Path) -> None:
    def edit(h):
        _entry_of(h, "i64")["dtype"] = "<f8"
        return _resign(h)

    bad = _rewrite(good, tmp_path / "dtype.tnb", header_fn=edit)
    with pytest.raises(CheckpointError, match=r"array 'i64' has dtype '<i8'.*expects '<f8'"):
        load_arrays(bad)


def test_missing_array_entry(good: pathlib.Path, tmp_path: pathlib.Path) -> None:
    entry = _entry_of(read_header(good), "bool")["entry"]
    bad = _rewrite(good, tmp_path / "missing.tnb", drop={entry})
    read_header(bad)
    with pytest.raises(CheckpointError, match=r"array\(s\) 'bool' .* listed in the header are missing"):
        load_arrays(bad)


def test_unlisted_array_entry(good: pathlib.Path, tmp_path: pathlib.Path) -> None:
    bad = _rewrite(good, tmp_path / "extra.tnb", add={"arrays/999999.npy": b"x"})
    with pytest.raises(CheckpointError, match=r"entries \['arrays/999999.npy'\] are not listed"):
        load_arrays(bad)


def test_truncated_array_entry(good: pathlib.Path, tmp_path: pathlib.Path) -> None:
    rec = _entry_of(read_header(good), "c128")
    with zipfile.ZipFile(good) as zf:
        raw = zf.read(rec["entry"])
    bad = _rewrite(good, tmp_path / "short.tnb", replace={rec["entry"]: raw[:-16]})
    with pytest.raises(CheckpointError, match=r"array 'c128' is truncated or corrupted"):
        load_arrays(bad)


def test_malformed_header_records(good: pathlib.Path, tmp_path: pathlib.Path) -> None:
    def edit(h):
        _entry_of(h, "u8")["dtype"] = "|O"
        return _resign(h)

    bad = _rewrite(good, tmp_path / "obj.tnb", header_fn=edit)
    with pytest.raises(CheckpointError, match=r"malformed checkpoint header: array 'u8' has unsupported dtype"):
        load_arrays(bad)


# ---------------------------------------------------------------------------
# atomic writing
# ---------------------------------------------------------------------------


def test_failed_replace_keeps_previous_file(good: pathlib.Path, monkeypatch) -> None:
    before = good.read_bytes()

    def broken_replace(src, dst):
        raise OSError("simulated failure in os.replace")

    monkeypatch.setattr(tio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated failure"):
        save_arrays(good, {"other": np.zeros(1000)}, {"new": True})
    monkeypatch.undo()
    assert good.read_bytes() == before
    assert os.listdir(good.parent) == [good.name]
    load_arrays(good)


def test_failure_while_writing_keeps_previous_file(good: pathlib.Path, monkeypatch) -> None:
    before = good.read_bytes()
    real_write = np.lib.format.write_array
    calls = []

    def failing_write(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            fp.write(b"partial garbage")
            raise RuntimeError("disk on fire")
        return real_write(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _save_sample(good)
    assert good.read_bytes() == before
    assert os.listdir(good.parent) == [good.name]


def test_atomic_open_cleans_up_on_error(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target) as fh:
            fh.write(b"new content")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_open_temp_file_lives_next_to_target(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "sub" / "hist.json"
    with atomic_open(target, "w") as fh:
        tmp = pathlib.Path(fh.name)
        assert tmp.parent == target.parent
        assert tmp.name.startswith(".hist.json.") and tmp.name.endswith(".tmp")
        assert not target.exists()
        fh.write("{}")
    assert target.read_text() == "{}" and not tmp.exists()


def test_atomic_open_rejects_bad_mode(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="mode must be"):
        with atomic_open(tmp_path / "x", "ab"):
            pass
    assert os.listdir(tmp_path) == []


def test_atomic_write_helpers(tmp_path: pathlib.Path) -> None:
    png = atomic_write_bytes(tmp_path / "fig" / "plot.png", b"\x89PNG\r\n\x1a\n")
    assert png.read_bytes() == b"\x89PNG\r\n\x1a\n"
    txt = atomic_write_text(tmp_path / "h.json", 'line1\r\nünï "x"\n')
    assert txt.read_bytes() == 'line1\r\nünï "x"\n'.encode("utf-8")
    atomic_write_text(txt, "second")
    assert txt.read_text() == "second"
    assert sorted(os.listdir(tmp_path)) == ["fig", "h.json"]
    with pytest.raises(TypeError):
        atomic_write_text(tmp_path / "b.txt", b"bytes")  # type: ignore[arg-type]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_write_permissions(tmp_path: pathlib.Path) -> None:
    fresh = atomic_write_bytes(tmp_path / "fresh", b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~mask
    existing = tmp_path / "existing"
    existing.write_bytes(b"old")
    existing.chmod(0o640)
    atomic_write_bytes(existing, b"new")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640


_WRITER_SCRIPT = r"""
import sys
import numpy as np
import tnborn.io as tio

path, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
real_write = np.lib.format.write_array

def announcing_write(fp, array, *args, **kwargs):
    if array.size == n:
        print(f"writing {array[-1]:.0f}", flush=True)
    return real_write(fp, array, *args, **kwargs)

np.lib.format.write_array = announcing_write
sys.stdin.readline()  # wait for "go": imports are paid before the trial starts
big = np.arange(n, dtype=np.float64)
i = first
while True:
    big[-1] = i
    print(f"start {i}", flush=True)
    tio.save_arrays(path, {"big": big, "tag": np.array([i])}, {"version": i})
    print(f"done {i}", flush=True)
    i += 1
"""


def _expected_big(n: int, version: int) -> np.ndarray:
    big = np.arange(n, dtype=np.float64)
    big[-1] = version
    return big


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_save_never_leaves_a_broken_checkpoint(tmp_path: pathlib.Path) -> None:
    n = 50 * 2**20 // 8  # 50 MiB of float64
    trials = 5
    path = tmp_path / "big.tnb"
    save_arrays(path, {"big": _expected_big(n, 0), "tag": np.array([0])}, {"version": 0})

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    # start every writer now so that interpreter start-up and imports overlap
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER_SCRIPT, str(path), str(100 * (t + 1)), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for t in range(trials)
    ]
    rng = random.Random(20240521)
    deadline = time.monotonic() + 30.0
    killed_mid_write = 0
    try:
        for proc in procs:
            lines: queue.Queue = queue.Queue()

            def pump(stream=proc.stdout, out=lines):
                for line in stream:
                    out.put(line.strip())
                out.put(None)

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            seen: list[str] = []

            def wait_for(expected: str) -> float:
                while True:
                    remaining = deadline - time.monotonic()
                    assert remaining > 0, f"timed out waiting for {expected!r}; got {seen}"
                    try:
                        line = lines.get(timeout=remaining)
                    except queue.Empty:
                        continue
                    if line is None:
                        raise AssertionError(
                            f"writer exited early; stdout {seen}, stderr {proc.stderr.read()}"
                        )
                    seen.append(line)
                    if line == expected:
                        return time.monotonic()

            proc.stdin.write("go\n")
            proc.stdin.flush()
            first = int(proc.args[4])
            # one complete save, to time the writing phase on this machine
            t0 = wait_for(f"writing {first}")
            write_time = wait_for(f"done {first}") - t0
            wait_for(f"start {first + 1}")
            wait_for(f"writing {first + 1}")
            time.sleep(rng.uniform(0.0, 0.8) * write_time)
            proc.kill()
            proc.wait(timeout=10)
            reader.join(timeout=10)
            while True:  # collect what was printed before the kill
                try:
                    line = lines.get_nowait()
                except queue.Empty:
                    break
                if line is not None:
                    seen.append(line)

            leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
            assert all(name.startswith(".big.tnb.") and name.endswith(".tmp") for name in leftovers)
            if leftovers:
                killed_mid_write += 1
                for name in leftovers:
                    (tmp_path / name).unlink()

            started = {int(s.split()[1]) for s in seen if s.startswith("start ")}
            finished = [int(s.split()[1]) for s in seen if s.startswith("done ")]
            arrays, meta = load_arrays(path)  # must always be a complete checkpoint
            version = meta["version"]
            assert version in started and version >= max(finished)
            assert arrays["tag"].tolist() == [version]
            assert np.array_equal(arrays["big"], _expected_big(n, version))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                stream.close()
    # the test is only meaningful if some kills hit a save in progress
    assert killed_mid_write >= 1


# ---------------------------------------------------------------------------
# what an atomic write may replace
# ---------------------------------------------------------------------------


def test_symlink_is_followed_and_kept(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target.name)
    atomic_write_text(link, "new")
    assert link.is_symlink() and os.readlink(link) == target.name
    assert target.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["link.txt", "real.txt"]


def test_chain_of_links_and_dangling_link(tmp_path: pathlib.Path) -> None:
    (tmp_path / "sub").mkdir()
    end = tmp_path / "sub" / "end.bin"
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(end)  # dangling: end does not exist yet
    atomic_write_bytes(tmp_path / "l1", b"abc")
    assert end.read_bytes() == b"abc"
    assert (tmp_path / "l1").is_symlink() and (tmp_path / "l2").is_symlink()


def test_fifo_is_refused_and_kept(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"is a FIFO \(named pipe\), not a regular file"):
        atomic_write_bytes(fifo, b"x")
    link = tmp_path / "to_pipe"
    link.symlink_to(fifo)
    with pytest.raises(ConfigError, match=r"the target of the link .*is a FIFO"):
        save_arrays(link, {"a": np.zeros(2)}, {})
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["pipe", "to_pipe"]  # no temporary file left


def test_directory_is_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match=r"is a directory, not a regular file"):
        atomic_write_text(tmp_path / "d", "x")
    assert os.listdir(tmp_path / "d") == []


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
def test_device_node_is_never_replaced(device: str) -> None:
    if not os.path.exists(device) or not stat.S_ISCHR(os.stat(device).st_mode):
        pytest.skip(f"{device} is not a character device here")
    before = os.stat(device)
    with pytest.raises(ConfigError, match=r"is a character device, not a regular file"):
        atomic_write_bytes(device, b"x")
    after = os.stat(device)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino


def test_check_not_input_sees_links_and_spellings(tmp_path: pathlib.Path, monkeypatch) -> None:
    src = tmp_path / "model.tnb"
    src.write_bytes(b"data")
    hard = tmp_path / "hard.tnb"
    os.link(src, hard)
    soft = tmp_path / "soft.tnb"
    soft.symlink_to(src)
    monkeypatch.chdir(tmp_path)
    for out in (src, hard, soft, "./model.tnb", "sub/../model.tnb"):
        with pytest.raises(ConfigError, match=r"is the input file"):
            tio.check_not_input(out, [None, src], what="--out")
    tio.check_not_input(tmp_path / "other.tnb", [src, None])  # a new path
    (tmp_path / "copy.tnb").write_bytes(b"data")  # equal content, another file
    tio.check_not_input(tmp_path / "copy.tnb", [src])


# ---------------------------------------------------------------------------
# bounded reading: forged sizes, zip bombs, special files, deep headers
# ---------------------------------------------------------------------------


def _npy_header(shape, descr="<f8") -> bytes:
    import io as _io

    buf = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def forge_huge_checkpoint(path: pathlib.Path, *, side: int = 2**20) -> pathlib.Path:
    """A checkpoint whose header (validly checksummed), ``.npy`` header and zip64 sizes all
    declare a ``side x side`` float64 array (8 TiB for the default) that the file does not hold."""
    shape = [side, side]
    nbytes = side * side * 8
    header_npy = _npy_header(tuple(shape))
    table = [{"name": "w", "entry": "arrays/000000.npy", "dtype": "<f8", "shape": shape,
              "nbytes": nbytes, "sha256": "0" * 64}]
    meta = {"step": 1}
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created_utc": "2026-01-01T00:00:00+00:00",
              "metadata": meta, "arrays": table, "checksum": tio._header_checksum(table, meta)}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(HEADER_ENTRY, json.dumps(header))
        zf.writestr("arrays/000000.npy", header_npy + b"\0" * 64)
        zf.filelist[-1].file_size = nbytes + len(header_npy)  # the central directory (zip64) lies
    return path


def forge_zip_bomb(path: pathlib.Path, *, inflated: int = 64 * 2**20, honest_size: bool = True) -> pathlib.Path:
    """A checkpoint whose header declares a (2, 2) float64 array, but whose deflated entry
    inflates to `inflated` bytes of zeros (a ``.npy`` declaring that many bytes).

    With ``honest_size`` the archive directory states the inflated size; without it, it
    states the size the header expects (so only the entry's own ``.npy`` header tells)."""
    rows = inflated // 8
    header_npy = _npy_header((rows,))
    small = np.zeros((2, 2))
    table = [{"name": "w", "entry": "arrays/000000.npy", "dtype": "<f8", "shape": [2, 2],
              "nbytes": 32, "sha256": tio._array_sha256(small)}]
    meta = {"step": 1}
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created_utc": "2026-01-01T00:00:00+00:00",
              "metadata": meta, "arrays": table, "checksum": tio._header_checksum(table, meta)}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(HEADER_ENTRY, json.dumps(header))
        with zf.open(zipfile.ZipInfo("arrays/000000.npy"), "w", force_zip64=True) as member:
            member._compress_type = zipfile.ZIP_DEFLATED  # noqa: SLF001 - set before any byte is written
            member._compressor = zipfile._get_compressor(zipfile.ZIP_DEFLATED)  # noqa: SLF001
            member._zinfo.compress_type = zipfile.ZIP_DEFLATED  # noqa: SLF001
            member.write(header_npy)
            chunk = bytes(2**20)
            for _ in range(inflated // len(chunk)):
                member.write(chunk)
        if not honest_size:
            zf.filelist[-1].file_size = 32 + len(header_npy)
    return path


def forge_deep_header(path: pathlib.Path, depth: int = 100_000) -> pathlib.Path:
    """A checkpoint archive whose header.json nests `depth` lists."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(HEADER_ENTRY, "[" * depth + "]" * depth)
    return path


def test_forged_huge_sizes_are_refused_before_allocating(tmp_path: pathlib.Path) -> None:
    bad = forge_huge_checkpoint(tmp_path / "huge.tnb")
    assert bad.stat().st_size < 4096
    with pytest.raises(CheckpointError, match=r"declares 8796093022208 bytes of arrays, more than the limit"):
        load_arrays(bad)
    # under a large enough limit, the archive's own sizes give it away
    with pytest.raises(CheckpointError, match=r"the archive directory is corrupted or forged"):
        load_arrays(bad, max_bytes=2**50)


def test_memory_limit_default_and_override(monkeypatch) -> None:
    monkeypatch.delenv("TNBORN_MAX_LOAD_BYTES", raising=False)
    assert tio.memory_limit() > 2**20
    monkeypatch.setenv("TNBORN_MAX_LOAD_BYTES", "123")
    assert tio.memory_limit() == 123


def test_limit_applies_to_a_good_file(good: pathlib.Path) -> None:
    total = sum(rec["nbytes"] for rec in read_header(good)["arrays"])
    load_arrays(good, max_bytes=total)
    with pytest.raises(CheckpointError, match=rf"declares {total} bytes of arrays, more than the limit of {total - 1}"):
        load_arrays(good, max_bytes=total - 1)


def test_zip_bomb_is_not_inflated(tmp_path: pathlib.Path) -> None:
    import tracemalloc

    honest = forge_zip_bomb(tmp_path / "bomb.tnb", inflated=64 * 2**20)
    lying = forge_zip_bomb(tmp_path / "bomb2.tnb", inflated=64 * 2**20, honest_size=False)
    assert honest.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"entry declares \d+ bytes, but the header says 32 bytes"):
            load_arrays(honest)
        # zipfile stops at the (forged) declared size, and the CRC-32 then fails
        with pytest.raises(CheckpointError, match=r"array 'w' is corrupted \(archive integrity check failed"):
            load_arrays(lying)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, peak  # 64 MiB would be inflated by a whole read


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_special_files_are_refused_unopened(tmp_path: pathlib.Path, kind: str) -> None:
    if kind == "fifo":
        path = tmp_path / "pipe.tnb"
        os.mkfifo(path)  # opening it for reading would block
        match = r"is a FIFO \(named pipe\), not a regular file"
    else:
        path = pathlib.Path("/dev/zero")
        if not path.exists():
            pytest.skip("no /dev/zero")
        match = r"is a character device, not a regular file"
    with pytest.raises(CheckpointError, match=match):
        read_header(path)
    with pytest.raises(CheckpointError, match=match):
        load_arrays(path)


def test_deeply_nested_header(tmp_path: pathlib.Path) -> None:
    for depth in (100_000, tio.MAX_HEADER_DEPTH + 1):
        bad = forge_deep_header(tmp_path / f"deep{depth}.tnb", depth)
        with pytest.raises(CheckpointError, match=r"JSON nested more than 100 levels deep"):
            read_header(bad)


def test_header_over_the_size_cap(good: pathlib.Path, monkeypatch) -> None:
    size = zipfile.ZipFile(good).getinfo(HEADER_ENTRY).file_size
    monkeypatch.setattr(tio, "MAX_HEADER_BYTES", size - 1)
    with pytest.raises(CheckpointError, match=rf"header declares {size} bytes, more than the limit"):
        read_header(good)
    monkeypatch.setattr(tio, "MAX_HEADER_BYTES", size)
    read_header(good)


def test_object_dtype_inside_an_entry_is_refused(good: pathlib.Path, tmp_path: pathlib.Path) -> None:
    rec = _entry_of(read_header(good), "u8")
    obj = _npy_header((16, 16), descr="|O") + b"\0" * 256
    bad = _rewrite(good, tmp_path / "obj.tnb", replace={rec["entry"]: obj})
    with pytest.raises(CheckpointError, match=r"declares an object \(pickled\) dtype"):
        load_arrays(bad)
