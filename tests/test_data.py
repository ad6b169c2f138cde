"""Tests of tnborn.data: generators, validation, binarisation and loaders."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from tnborn import data
from tnborn.data import (
    DATASETS,
    bars_and_stripes,
    binarize,
    even_parity,
    get_dataset,
    image_shape_for,
    is_bars_and_stripes,
    load_binary,
    load_idx,
    random_binary,
    register_dataset,
    train_test_split,
    validate_binary,
)
from tnborn.errors import ConfigError, DataError

SHARED_DATA = Path(
    os.environ.get(
        "TNBORN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)


def _as_int(x: np.ndarray) -> np.ndarray:
    """Integer code x @ 2**arange(N) of each binary row (N < 63)."""
    return x.astype(np.int64) @ (2 ** np.arange(x.shape[1], dtype=np.int64))


def _idx_bytes(arr: np.ndarray, type_code: int = 0x08, magic: bytes | None = None) -> bytes:
    """Encode ``arr`` as an IDX file, big-endian, written with struct."""
    fmt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    head = magic if magic is not None else struct.pack(">BBBB", 0, 0, type_code, arr.ndim)
    dims = struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + dims + arr.astype(fmt[type_code]).tobytes()


# ---------------------------------------------------------------- generators


@pytest.mark.parametrize(
    "rows, cols, count",
    [(1, 1, 2), (1, 3, 8), (2, 2, 6), (2, 3, 10), (3, 4, 22), (4, 3, 22), (4, 4, 30), (5, 5, 62)],
)
def test_bars_and_stripes_count_valid_distinct_sorted(rows, cols, count):
    x = bars_and_stripes(rows, cols)
    assert count == 2**rows + 2**cols - 2
    assert x.shape == (count, rows * cols)
    assert x.dtype == np.uint8
    assert x.flags.c_contiguous
    assert set(np.unique(x)) <= {0, 1}
    codes = _as_int(x)
    assert len(set(codes.tolist())) == count  # distinct
    assert np.all(np.diff(codes) > 0)  # sorted by integer code
    assert is_bars_and_stripes(x, rows, cols).all()


def test_bars_and_stripes_2x2_exact():
    expected = [
        [0, 0, 0, 0],
        [1, 1, 0, 0],  # top row on (stripe)
        [1, 0, 1, 0],  # left column on (bar)
        [0, 1, 0, 1],  # right column on (bar)
        [0, 0, 1, 1],  # bottom row on (stripe)
        [1, 1, 1, 1],
    ]
    np.testing.assert_array_equal(bars_and_stripes(2), np.array(expected, dtype=np.uint8))


def test_bars_and_stripes_default_and_cols_none():
    np.testing.assert_array_equal(bars_and_stripes(), bars_and_stripes(4, 4))
    np.testing.assert_array_equal(bars_and_stripes(3), bars_and_stripes(3, 3))


def test_bars_and_stripes_is_complete_3x3():
    """Brute force: every 3x3 image that is bars-or-stripes is in the list."""
    all_images = ((np.arange(512)[:, None] >> np.arange(9)) & 1).astype(np.uint8)
    mask = is_bars_and_stripes(all_images, 3)
    np.testing.assert_array_equal(all_images[mask], bars_and_stripes(3))


def test_bars_and_stripes_matches_shared_file():
    path = SHARED_DATA / "bas4x4.npz"
    if not path.is_file():
        pytest.skip(f"shared data file not found: {path}")
    with np.load(path, allow_pickle=False) as f:
        ref, ind = f["data"], f["ind"]
    assert ref.shape == (30, 16)
    np.testing.assert_array_equal(_as_int(ref), ind)
    ours = bars_and_stripes(4, 4)
    assert set(map(bytes, ours)) == set(map(bytes, ref.astype(np.uint8)))
    np.testing.assert_array_equal(_as_int(ours), np.sort(ind))


def test_is_bars_and_stripes_rejects_other_images():
    x = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_array_equal(is_bars_and_stripes(x, 2, 2), [False, False, True, True])
    assert is_bars_and_stripes([1, 0, 1, 0], 2).tolist() == [True]


@pytest.mark.parametrize("n", [1, 2, 3, 6, 10])
def test_even_parity_all_strings(n):
    x = even_parity(n)
    assert x.shape == (2 ** (n - 1), n)
    assert x.dtype == np.uint8
    assert np.all(x.sum(axis=1) % 2 == 0)
    codes = _as_int(x)
    assert np.all(np.diff(codes) > 0)
    # complete: exactly the even-popcount integers below 2**n
    expected = [k for k in range(2**n) if bin(k).count("1") % 2 == 0]
    assert codes.tolist() == expected


def test_even_parity_sampled_reproducible():
    a = even_parity(12, n_samples=500, seed=3)
    b = even_parity(12, n_samples=500, seed=3)
    c = even_parity(12, n_samples=500, seed=4)
    assert a.shape == (500, 12) and a.dtype == np.uint8
    assert np.all(a.sum(axis=1) % 2 == 0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # every variable is a fair coin (even the last one)
    assert np.all(np.abs(a.mean(axis=0) - 0.5) < 0.1)


def test_random_binary_seeded():
    a = random_binary(200, 10, seed=7)
    assert a.shape == (200, 10) and a.dtype == np.uint8
    assert set(np.unique(a)) == {0, 1}
    np.testing.assert_array_equal(a, random_binary(200, 10, seed=7))
    assert not np.array_equal(a, random_binary(200, 10, seed=8))
    assert random_binary(3, 4, seed=None).shape == (3, 4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bars_and_stripes(0), "rows must be an integer >= 1, got 0"),
        (lambda: bars_and_stripes(2.0), "rows must be an integer"),
        (lambda: bars_and_stripes(2, -1), "cols must be an integer >= 1"),
        (lambda: random_binary(0, 3), "n_samples must be an integer >= 1"),
        (lambda: even_parity(30), "n_vars must be <= 20"),
        (lambda: even_parity(True), "n_vars must be an integer"),
    ],
)
def test_generator_bad_arguments(call, match):
    with pytest.raises(DataError, match=match):
        call()


# ---------------------------------------------------------------- validation


def test_validate_binary_accepts_and_converts():
    out = validate_binary([[0, 1], [1, 0]])
    assert out.dtype == np.int64 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(validate_binary(np.array([[True, False]])), [[1, 0]])
    np.testing.assert_array_equal(validate_binary(np.array([[1.0, 0.0]])), [[1, 0]])
    np.testing.assert_array_equal(validate_binary(np.array([1, 0, 1]), allow_1d=True), [[1, 0, 1]])
    # non-contiguous input comes back contiguous
    view = np.zeros((4, 6), dtype=np.uint8)[:, ::2]
    assert validate_binary(view).flags.c_contiguous
    # higher physical dimension
    np.testing.assert_array_equal(validate_binary([[0, 2, 1]], phys_dim=3), [[0, 2, 1]])


def test_validate_binary_torch_tensor():
    torch = pytest.importorskip("torch")
    t = torch.tensor([[0, 1, 1]], dtype=torch.float32, requires_grad=True)
    out = validate_binary(t, n_vars=3)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[0, 1, 1]])
    np.testing.assert_array_equal(validate_binary(torch.tensor([[True, False]])), [[1, 0]])


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        pytest.param(np.zeros(16), {}, r"must be a 2-D array .* got a 1-D array", id="1d"),
        pytest.param(np.zeros((2, 2, 2)), {}, r"must be a 2-D array .* got a 3-D", id="3d"),
        pytest.param(np.zeros((3, 15)), {"n_vars": 16},
                     r"data must have 16 columns \(one per variable\), got 15", id="wrong-length"),
        pytest.param(np.array([[0, 1, 0, 0, 0, 0], [0] * 6, [0] * 6, [0, 0, 0, 0, 0, 2]]), {},
                     r"data values must be in \{0, 1\}, found 2 at row 3, column 5", id="value-2"),
        pytest.param(np.array([[0, -1]]), {}, r"must be in \{0, 1\}, found -1 at row 0, column 1",
                     id="negative"),
        pytest.param(np.array([[0.0, 0.5]]), {}, r"must be integers .* found 0\.5 at row 0, column 1",
                     id="half"),
        pytest.param(np.array([[0.0, np.nan]]), {}, r"data contains NaN", id="nan"),
        pytest.param(np.array([[np.inf, 0.0]]), {}, r"data contains inf", id="inf"),
        pytest.param(np.zeros((0, 4)), {}, r"at least one row .* got shape \(0, 4\)", id="empty-rows"),
        pytest.param(np.zeros((3, 0)), {}, r"at least one column .* got shape \(3, 0\)",
                     id="empty-cols"),
        pytest.param(np.array([["a", "b"]]), {}, r"must hold numbers .* got dtype", id="strings"),
        pytest.param([[0, 1], [1]], {}, r"rectangular array", id="ragged"),
        pytest.param(np.array([[0, 3]]), {"phys_dim": 3, "name": "batch"},
                     r"batch values must be in \{0, 1, 2\}, found 3", id="phys-dim"),
    ],
)
def test_validate_binary_bad_input(x, kwargs, match):
    with pytest.raises(DataError, match=match):
        validate_binary(x, **kwargs)


def test_data_error_is_value_error():
    with pytest.raises(ValueError):
        validate_binary(np.zeros(3))


# ---------------------------------------------------------------- binarisation


def test_binarize_threshold_semantics():
    pixels = np.array([0, 50, 51, 127, 128, 255], dtype=np.uint8)
    np.testing.assert_array_equal(binarize(pixels, 50), [0, 0, 1, 1, 1, 1])  # thr50: > 50
    np.testing.assert_array_equal(binarize(pixels, 127.5), [0, 0, 0, 0, 1, 1])  # thr127: > 127.5
    out = binarize(pixels.reshape(2, 3), 127.5)
    assert out.dtype == np.uint8 and out.shape == (2, 3)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), "50", None])
def test_binarize_bad_threshold(threshold):
    with pytest.raises(DataError, match="threshold must be"):
        binarize(np.array([1, 2]), threshold)


def test_binarize_matches_shared_mnist():
    """thr127 and thr50 reproduce the paper's binarised t10k images exactly."""
    names = ["mnist_t10k_shared_images.npy", "mnist_t10k_shared_index.npy",
             "mnist1k_capacity_thr127.npz", "mnist1k_train_thr50.npy",
             "mnist1k_train_thr50_meta.npz"]
    if not all((SHARED_DATA / n).is_file() for n in names):
        pytest.skip(f"shared MNIST files not found in {SHARED_DATA}")
    grey = np.load(SHARED_DATA / names[0])
    pos = {int(k): i for i, k in enumerate(np.load(SHARED_DATA / names[1]))}
    with np.load(SHARED_DATA / names[2]) as cap:
        rows, idx = cap["data_test"], cap["std_index_test"]
    keep = [i for i, k in enumerate(idx) if int(k) in pos]
    assert keep
    grey_rows = grey[[pos[int(idx[i])] for i in keep]]
    np.testing.assert_array_equal(binarize(grey_rows, 127.5), rows[keep])
    train = np.load(SHARED_DATA / names[3])
    with np.load(SHARED_DATA / names[4]) as meta:
        split, sidx = meta["std_split"], meta["std_index"]
    keep = [i for i in range(len(train)) if split[i] == 1 and int(sidx[i]) in pos]
    assert keep
    grey_rows = grey[[pos[int(sidx[i])] for i in keep]]
    np.testing.assert_array_equal(binarize(grey_rows, 50), train[keep])


# ---------------------------------------------------------------- loaders


@pytest.fixture
def grey_images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 3, 4), dtype=np.uint8)


def test_load_npy_binary_roundtrip(tmp_path):
    x = random_binary(7, 9, seed=1)
    np.save(tmp_path / "x.npy", x)
    out = load_binary(tmp_path / "x.npy")
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(load_binary(str(tmp_path / "x.npy"), n_vars=9, limit=3), x[:3])


def test_load_npy_3d_and_threshold(tmp_path, grey_images):
    np.save(tmp_path / "g.npy", grey_images)
    out = load_binary(tmp_path / "g.npy", threshold=127.5)
    np.testing.assert_array_equal(out, (grey_images.reshape(5, 12) > 127.5).astype(np.int64))
    # 3-D binary arrays are flattened row-major too
    b = bars_and_stripes(3, 4).reshape(-1, 3, 4)
    np.save(tmp_path / "b.npy", b)
    np.testing.assert_array_equal(load_binary(tmp_path / "b.npy"), bars_and_stripes(3, 4))


def test_load_npz_keys(tmp_path):
    a, b = random_binary(4, 6, seed=1), random_binary(3, 6, seed=2)
    np.savez(tmp_path / "one.npz", only=a)
    np.testing.assert_array_equal(load_binary(tmp_path / "one.npz"), a)
    np.savez_compressed(tmp_path / "two.npz", train=a, test=b)
    np.testing.assert_array_equal(load_binary(tmp_path / "two.npz", key="test"), b)
    np.testing.assert_array_equal(load_binary(tmp_path / "two.npz", key="train", limit=2), a[:2])


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_images_roundtrip(tmp_path, grey_images, compress):
    raw = _idx_bytes(grey_images)
    name = "t-images-idx3-ubyte"
    if compress:
        raw, name = gzip.compress(raw), name + ".gz"
    (tmp_path / name).write_bytes(raw)
    np.testing.assert_array_equal(load_idx(tmp_path / name), grey_images)
    out = load_binary(tmp_path / name, threshold=50, limit=4)
    np.testing.assert_array_equal(out, (grey_images[:4].reshape(4, 12) > 50).astype(np.int64))


@pytest.mark.parametrize("type_code, dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                              (0x0C, np.int32), (0x0D, np.float32),
                                              (0x0E, np.float64)])
def test_load_idx_types(tmp_path, type_code, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if type_code == 0x08:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(arr, type_code))
    out = load_idx(tmp_path / "a.idx")
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


def test_load_idx_labels(tmp_path):
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    (tmp_path / "t-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
    np.testing.assert_array_equal(load_idx(tmp_path / "t-labels-idx1-ubyte"), labels)
    with pytest.raises(DataError, match="load_idx"):
        load_binary(tmp_path / "t-labels-idx1-ubyte")


def _write_bad(tmp_path: Path, kind: str) -> tuple[Path, dict]:
    """Create a bad data file of the given kind; return its path and kwargs."""
    x = random_binary(4, 6, seed=0)
    if kind == "missing":
        return tmp_path / "absent.npy", {}
    if kind == "extension":
        p = tmp_path / "x.csv"
        p.write_text("0,1\n")
        return p, {}
    if kind in ("npz-key", "npz-no-key"):
        p = tmp_path / "x.npz"
        np.savez(p, train=x, test=x)
        return p, ({"key": "valid"} if kind == "npz-key" else {})
    if kind == "truncated-npy":
        p = tmp_path / "x.npy"
        np.save(p, x)
        p.write_bytes(p.read_bytes()[:-5])
        return p, {}
    if kind == "idx-magic":
        p = tmp_path / "x-idx3-ubyte"
        p.write_bytes(_idx_bytes(x.reshape(4, 2, 3), magic=b"\x01\x02\x08\x03"))
        return p, {}
    if kind == "idx-size":
        p = tmp_path / "x-idx3-ubyte"
        p.write_bytes(_idx_bytes(x.reshape(4, 2, 3))[:-1])
        return p, {}
    if kind == "non-binary":
        p = tmp_path / "g.npy"
        np.save(p, np.array([[0, 255], [3, 0]], dtype=np.uint8))
        return p, {}
    if kind == "wrong-n-vars":
        p = tmp_path / "x.npy"
        np.save(p, x)
        return p, {"n_vars": 16}
    if kind == "pickle":
        p = tmp_path / "o.npy"
        np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        return p, {}
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, match",
    [
        ("missing", r"no such data file: .*absent\.npy"),
        ("extension", r"unsupported data file .*\.npy.*\.npz.*idx3-ubyte.*got 'x\.csv'"),
        ("npz-key", r"no array 'valid' .*available keys: \['train', 'test'\]"),
        ("npz-no-key", r"holds 2 arrays: \['train', 'test'\]; pass key="),
        ("truncated-npy", r"could not read .*x\.npy.*truncated"),
        ("idx-magic", r"bad IDX magic number .* got 0x01020803"),
        ("idx-size", r"corrupt IDX file .* needs 24 data bytes, found 23"),
        ("non-binary", r"not binary: expected values in \{0, 1\}, found values in \[0, 255\]; "
                       r"pass threshold="),
        ("wrong-n-vars", r"must have 16 columns \(one per variable\), got 6"),
        ("pickle", r"could not read .*o\.npy"),
    ],
)
def test_load_binary_bad_files(tmp_path, kind, match):
    path, kwargs = _write_bad(tmp_path, kind)
    with pytest.raises(DataError, match=match):
        load_binary(path, **kwargs)


def test_load_binary_bad_arguments(tmp_path):
    np.save(tmp_path / "x.npy", random_binary(3, 4))
    with pytest.raises(DataError, match="limit must be an integer >= 1"):
        load_binary(tmp_path / "x.npy", limit=0)
    with pytest.raises(DataError, match="key is only meaningful for .npz"):
        load_binary(tmp_path / "x.npy", key="data")
    with pytest.raises(DataError, match="must be a file"):
        load_binary(tmp_path)
    with pytest.raises(DataError, match="no such data file"):
        load_idx(tmp_path / "nothing-idx3-ubyte")


# ---------------------------------------------------------------- utilities


@pytest.mark.parametrize("n, shape", [(784, (28, 28)), (16, (4, 4)), (1, (1, 1)), (15, None),
                                      (17, None), (12, None)])
def test_image_shape_for(n, shape):
    assert image_shape_for(n) == shape


def test_train_test_split_seeded_partition():
    x = np.arange(20).reshape(10, 2)
    train, test = train_test_split(x, 0.3, seed=5)
    assert train.shape == (7, 2) and test.shape == (3, 2)
    rows = sorted(map(tuple, np.concatenate([train, test]).tolist()))
    assert rows == sorted(map(tuple, x.tolist()))  # a partition
    train2, test2 = train_test_split(x, 0.3, seed=5)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(test, test2)
    # tiny fraction still leaves a non-empty test set
    assert train_test_split(x, 0.01)[1].shape == (1, 2)


@pytest.mark.parametrize("x, frac, match", [(np.zeros((1, 3)), 0.5, "at least 2 rows"),
                                            (np.zeros((4, 3)), 0.0, "strictly between 0 and 1"),
                                            (np.zeros((4, 3)), 1.0, "strictly between 0 and 1")])
def test_train_test_split_bad(x, frac, match):
    with pytest.raises(DataError, match=match):
        train_test_split(x, frac)


# ---------------------------------------------------------------- registry


def test_get_dataset_builtin():
    np.testing.assert_array_equal(get_dataset("bars-and-stripes", rows=3, cols=2),
                                  bars_and_stripes(3, 2))
    np.testing.assert_array_equal(get_dataset("random", n_samples=5, n_vars=3, seed=2),
                                  random_binary(5, 3, seed=2))
    np.testing.assert_array_equal(get_dataset("parity", n_vars=4), even_parity(4))
    assert {"bars-and-stripes", "random", "parity"} <= set(DATASETS)


def test_get_dataset_unknown_and_bad_kwargs():
    with pytest.raises(ConfigError, match=r"unknown dataset 'mnist'; valid names: .*"
                                          r"bars-and-stripes.*parity.*random"):
        get_dataset("mnist")
    with pytest.raises(ConfigError, match=r"accepted keyword arguments: rows, cols"):
        get_dataset("bars-and-stripes", size=3)


def test_register_dataset(monkeypatch):
    monkeypatch.setattr(data, "DATASETS", dict(data.DATASETS))
    register_dataset("ones", lambda n_vars=3: np.ones((1, n_vars), dtype=np.uint8))
    np.testing.assert_array_equal(get_dataset("ones", n_vars=2), [[1, 1]])
    with pytest.raises(ConfigError, match="already registered"):
        register_dataset("ones", lambda: None)
    register_dataset("ones", lambda: np.zeros((1, 1), dtype=np.uint8), overwrite=True)
    np.testing.assert_array_equal(get_dataset("ones"), [[0]])
    with pytest.raises(ConfigError, match="callable"):
        register_dataset("x", 3)
    assert "ones" not in DATASETS  # the module-level registry was not touched
