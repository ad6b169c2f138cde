"""Run the reproduction scripts of ``examples/`` in their ``--smoke`` mode and check their outputs.

Each script runs in-process (``main(argv)``) on tiny settings; the checks are
on what the scripts promise: the files they write, JSON that parses, the
acceptance rows they report, and exact relations (known pixels kept by the
inpainting, ``log P(kept)`` identical across the samples of one image). The
tests are skipped when the shared MNIST data is absent.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHARED_DATA = Path(os.environ.get("TNBORN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
NEEDED = ["mnist1k_train_thr50.npy", "mnist1k_other_thr50.npy", "mnist1k_capacity_thr127.npz"]

pytestmark = pytest.mark.skipif(
    not all((SHARED_DATA / f).is_file() for f in NEEDED),
    reason=f"shared MNIST data not found in {SHARED_DATA} (set TNBORN_SHARED_DATA)",
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def examples():
    """Import the example scripts as modules (they live outside the package)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import _common
        import compare_geometries
        import reproduce_capacity
        import reproduce_inpainting
        import reproduce_mnist

        yield {"common": _common, "capacity": reproduce_capacity, "mnist": reproduce_mnist,
               "inpainting": reproduce_inpainting, "compare": compare_geometries}
    finally:
        sys.path.remove(str(EXAMPLES))


def _common_args(out: Path) -> list[str]:
    return ["--smoke", "--no-progress", "--out", str(out), "--data-dir", str(SHARED_DATA), "--threads", "1"]


def _load(path: Path) -> dict:
    assert path.is_file(), f"{path} was not written"
    return json.loads(path.read_text())


def _assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == PNG_MAGIC


# --------------------------------------------------------------------------- helpers
def test_half_masks_remove_exactly_one_half(examples):
    half_mask = examples["inpainting"].half_mask
    grid = np.arange(784).reshape(28, 28)
    for removed, unknown in {"left": grid[:, :14], "right": grid[:, 14:], "top": grid[:14], "bottom": grid[14:]}.items():
        m = half_mask(removed)
        assert m.dtype == bool and m.shape == (784,)
        assert set(np.flatnonzero(~m)) == set(unknown.ravel())
    with pytest.raises(ValueError):
        half_mask("middle")


def test_product_state_nll_matches_enumeration(examples):
    """The best product state's NLL equals the NLL of the fitted independent-pixel model on the data."""
    rng = np.random.default_rng(0)
    x = (rng.random((50, 6)) < [0.1, 0.5, 0.9, 0.0, 1.0, 0.3]).astype(np.int64)
    p = x.mean(axis=0)
    with np.errstate(divide="ignore"):
        logp = np.where(x == 1, np.log(p), np.log1p(-p))
    expected = -logp.sum(axis=1).mean()
    assert examples["capacity"].product_state_nll(x) == pytest.approx(expected, rel=1e-12)


def test_mps_parameter_count_closed_form(examples):
    import tnborn

    g = examples["compare"]
    for d in (1, 3, 8):
        assert g.full_rank_parameters("mps", d) == tnborn.MPSBornMachine.random(784, bond_dim=d).num_parameters()


def test_to_jsonable_and_table(examples):
    c = examples["common"]
    obj = c.to_jsonable({"a": np.float64(1.5), "b": np.arange(3), "c": float("nan"), "d": (1, Path("x"))})
    assert obj == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": [1, "x"]}
    table = c.markdown_table(["x", "y"], [[1, 0.123456], [None, 5e-5]])
    assert table.splitlines() == ["| x | y |", "|---|---|", "| 1 | 0.12 |", "| - | 5e-05 |"]
    assert c.pass_fail(1.0, 1.0) == "PASS" and c.pass_fail(1.1, 1.0) == "FAIL" and c.pass_fail(None, 1.0) == "FAIL"


def test_per_loop_condenses_half_sweeps(examples):
    hist = [{"loop": 0.5, "train_nll": 9.0, "seconds": 1.0, "settings": {"lr": 0.1, "cutoff": 0.3}},
            {"loop": 1.0, "train_nll": 8.0, "seconds": 2.0, "max_bond": 3, "settings": {"lr": 0.1, "cutoff": 0.3}},
            {"loop": 1.5, "train_nll": 7.0, "seconds": 4.0, "settings": {"lr": 0.01, "cutoff": 1e-5}},
            {"loop": 2.0, "train_nll": 6.0, "seconds": 8.0, "max_bond": 4, "settings": {"lr": 0.01, "cutoff": 1e-5}}]
    rows = examples["common"].per_loop(hist)
    assert [(r["loop"], r["train_nll"], r["seconds"], r["max_bond"], r["lr"]) for r in rows] == [
        (1, 8.0, 3.0, 3, 0.1), (2, 6.0, 12.0, 4, 0.01)]


def test_data_dir_resolution(examples, tmp_path, monkeypatch):
    c = examples["common"]
    assert c.resolve_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv(c.DATA_ENV, str(tmp_path))
    assert c.resolve_data_dir() == tmp_path
    with pytest.raises(c.MissingDataError, match="does not exist"):
        c.resolve_data_dir(tmp_path / "absent")


def test_missing_data_gives_exit_code_2(examples, tmp_path, capsys):
    code = examples["capacity"].main(["--smoke", "--no-progress", "--out", str(tmp_path / "o"),
                                      "--data-dir", str(tmp_path)])
    assert code == 2
    assert "not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- scripts (smoke mode)
def test_capacity_smoke(examples, tmp_path):
    assert examples["capacity"].main(_common_args(tmp_path)) == 0
    summary = _load(tmp_path / "capacity.json")
    (row,) = summary["results"]
    assert row["max_bond"] == 4 and row["reached_max_bond"] <= 4
    # smoke bound: below the best product state on the same 200 images
    assert row["bound"] == pytest.approx(summary["data"]["product_state_nll"])
    assert row["verdict"] == "PASS" and row["train_nll"] < row["bound"]
    assert math.log(200) < row["train_nll"] < row["initial_nll"]
    assert len(row["per_loop"]) == row["loops"] <= 2
    for name in ("capacity.png", "samples_D4.png", "history_D4.png"):
        _assert_png(tmp_path / name)
    assert "| 4 |" in (tmp_path / "capacity.md").read_text()
    assert (tmp_path / "model_D4.tnb").is_file()


@pytest.fixture(scope="module")
def mnist_run(examples, tmp_path_factory):
    """One smoke run of reproduce_mnist.py, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("mnist")
    assert examples["mnist"].main(_common_args(out)) == 0
    return out


def test_mnist_smoke(mnist_run):
    import tnborn

    out = mnist_run
    summary = _load(out / "mnist.json")
    res = summary["result"]
    assert res["verdict"] == "PASS" and res["max_bond"] <= 4
    assert [r["loop"] for r in summary["per_loop"]] == [1, 2]
    assert summary["per_loop"][0]["cutoff"] == 0.3 and summary["per_loop"][1]["cutoff"] == 5e-5
    assert len(summary["bond_dims"]) == 783 and len(summary["entanglement_entropies"]) == 783
    assert max(summary["entanglement_entropies"]) <= math.log(4) + 1e-9  # S <= ln D
    for name in ("history.png", "samples.png", "bond_dims.png", "entanglement.png"):
        _assert_png(out / name)
    model = tnborn.load(out / "model.tnb")
    x = tnborn.load_binary(SHARED_DATA / "mnist1k_train_thr50.npy", limit=100)
    assert model.nll(x) == pytest.approx(res["train_nll"], rel=1e-9)


def test_inpainting_from_checkpoint(examples, mnist_run, tmp_path):
    argv = _common_args(tmp_path) + ["--checkpoint", str(mnist_run / "model.tnb"), "--masks", "left", "bottom",
                                     "--images", "2"]
    assert examples["inpainting"].main(argv) == 0
    summary = _load(tmp_path / "inpainting.json")
    assert summary["all_known_pixels_preserved"] is True
    assert summary["max_log_marginal_spread"] < 1e-8
    assert "best of 8" in summary["most_likely_method"] and "not the exact argmax" in summary["most_likely_method"]
    assert {(r["set"], r["removed"]) for r in summary["results"]} == {
        (s, m) for s in ("train", "unseen") for m in ("left", "bottom")}
    for r in summary["results"]:
        assert r["removed_pixels"] == 392
        assert r["mean_logp_best_of_k"] >= r["mean_logp_completion_given_kept"] - 1e-9
        assert r["mean_logp_completion_given_kept"] < 0
        for key in ("pixel_accuracy_samples", "pixel_accuracy_best_of_k", "pixel_accuracy_background_fill"):
            assert 0.0 <= r[key] <= 1.0
        _assert_png(tmp_path / r["figure"])


def test_inpainting_trains_its_own_model(examples, tmp_path):
    argv = _common_args(tmp_path) + ["--masks", "top", "--images", "1", "--samples", "1", "--best-of", "2"]
    assert examples["inpainting"].main(argv) == 0
    summary = _load(tmp_path / "inpainting.json")
    assert summary["model"]["trained_here"]["max_bond"] == 4
    assert (tmp_path / "model.tnb").is_file()
    assert summary["all_known_pixels_preserved"] is True


def test_compare_geometries_smoke(examples, tmp_path):
    import tnborn

    argv = _common_args(tmp_path) + ["--n-train", "60", "--n-test", "40"]
    assert examples["compare"].main(argv) == 0
    summary = _load(tmp_path / "comparison.json")
    mps = summary["results"]["mps"]
    assert "error" not in mps and mps["max_bond"] <= mps["max_bond_cap"]
    assert mps["num_parameters"] <= mps["full_rank_parameters"]
    _assert_png(tmp_path / "samples_mps.png")
    if "tree" in tnborn.available_geometries():
        # the MPS cap is the one whose full-rank parameter count is closest to the tree's (cap 2 in smoke mode)
        g = examples["compare"]
        target = g.full_rank_parameters("tree", 2)
        best = min(range(1, 9), key=lambda d: abs(g.full_rank_parameters("mps", d) - target))
        assert mps["max_bond_cap"] == best
        tree = summary["results"]["tree"]
        if "error" not in tree:
            assert tree["max_bond"] <= 2
            _assert_png(tmp_path / "comparison.png")
    assert "| mps |" in (tmp_path / "comparison.md").read_text()


def test_capacity_quick_mode_max_bond_10(examples, tmp_path):
    """The capacity curve's quick mode (Dmax 10, all 1000 images) meets its stated bound."""
    args = ["--quick", "--no-progress", "--out", str(tmp_path), "--data-dir", str(SHARED_DATA),
            "--threads", "1"]
    assert examples["capacity"].main(args) == 0
    summary = _load(tmp_path / "capacity.json")
    (row,) = summary["results"]
    assert row["max_bond"] == 10
    assert row["bound"] == pytest.approx(examples["capacity"].QUICK_BOUND)
    assert row["verdict"] == "PASS" and row["train_nll"] <= row["bound"]
