"""Tests for tnborn.plotting (figures from plain numpy data)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from tnborn import plotting  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO_ROOT = Path(__file__).resolve().parents[1]


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > len(PNG_SIGNATURE)
    assert data[:8] == PNG_SIGNATURE
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ---------------------------------------------------------------- import


def test_import_does_not_import_matplotlib() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    out = subprocess.run(
        [sys.executable, "-c", "import sys, tnborn.plotting; print('matplotlib' in sys.modules)"],
        capture_output=True, text=True, env=env, cwd=str(REPO_ROOT), timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_public_api() -> None:
    for name in plotting.__all__:
        assert callable(getattr(plotting, name)) or name == "DEFAULT_DPI"


# ---------------------------------------------------------------- samples


def test_plot_samples_square_images(tmp_path: Path, rng: np.random.Generator) -> None:
    samples = rng.integers(0, 2, size=(5, 16))
    out = tmp_path / "samples.png"
    fig = plotting.plot_samples(samples, title="BAS", path=out)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5
    for ax, sample in zip(fig.axes, samples):
        assert len(ax.images) == 1
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), sample.reshape(4, 4))
        assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0
    image = fig.axes[0].images[0]
    assert image.get_cmap().name == "gray_r"
    assert image.get_clim() == (0.0, 1.0)
    assert_png(out)


def test_plot_samples_shapes_and_defaults(rng: np.random.Generator) -> None:
    # Not a perfect square: default (1, N).
    samples = rng.integers(0, 2, size=(3, 12))
    fig = plotting.plot_samples(samples)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), samples[0].reshape(1, 12))
    # Explicit shape and ncols; a single 1-D sample.
    fig = plotting.plot_samples(samples, image_shape=(3, 4), ncols=2)
    assert len(fig.axes) == 3
    np.testing.assert_array_equal(fig.axes[2].images[0].get_array(), samples[2].reshape(3, 4))
    fig = plotting.plot_samples(np.ones(9, dtype=bool))
    assert len(fig.axes) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"samples": np.zeros((2, 3, 4))},
        {"samples": np.zeros((0, 4))},
        {"samples": np.full((2, 4), 2)},
        {"samples": np.zeros((2, 16)), "image_shape": (3, 5)},
        {"samples": np.zeros((2, 16)), "ncols": 0},
    ],
)
def test_plot_samples_rejects_bad_input(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        plotting.plot_samples(**kwargs)


# ---------------------------------------------------------------- history


def make_history(n: int = 6) -> list[dict]:
    records = []
    for i in range(n):
        record = {"step": i, "loop": i / 2, "train_nll": 5.0 - 0.3 * i,
                  "max_bond": 2 + i, "seconds": 0.1 * i}
        if i % 2:
            record["test_nll"] = 5.2 - 0.25 * i
        records.append(record)
    return records


def test_plot_history(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "history.png"
    fig = plotting.plot_history(make_history(), path=out, title="training",
                                reference={"ln 30": 3.4012})
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # NLL axes + max-bond twin axes
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "train NLL" in labels and "held-out NLL" in labels and "ln 30" in labels
    train = next(line for line in ax.get_lines() if line.get_label() == "train NLL")
    np.testing.assert_allclose(train.get_xdata(), np.arange(6) / 2)
    test = next(line for line in ax.get_lines() if line.get_label() == "held-out NLL")
    assert len(test.get_xdata()) == 3
    assert_png(out)


def test_plot_history_minimal_records() -> None:
    fig = plotting.plot_history([{"train_nll": 3.0}, {"train_nll": 2.5}])
    assert len(fig.axes) == 1
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), [0, 1])


@pytest.mark.parametrize(
    "history",
    [[], [{"step": 0}], [{"train_nll": "abc"}], ["not a dict"], {"train_nll": 1.0}],
)
def test_plot_history_rejects_bad_input(history) -> None:
    with pytest.raises(ValueError):
        plotting.plot_history(history)


# ---------------------------------------------------------------- bonds / entanglement


def test_plot_bond_dimensions(tmp_path: Path) -> None:
    out = tmp_path / "bonds.png"
    dims = [2, 4, 8, 8, 4, 2]
    fig = plotting.plot_bond_dimensions(dims, path=out, title="bonds", max_bond=8)
    assert len(fig.axes) == 1
    heights = [patch.get_height() for patch in fig.axes[0].patches]
    assert heights == dims
    assert_png(out)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bond_dims": []},
        {"bond_dims": [[1, 2], [3, 4]]},
        {"bond_dims": [1, 0, 2]},
        {"bond_dims": [1, 2.5]},
        {"bond_dims": [1, 2], "max_bond": 0},
    ],
)
def test_plot_bond_dimensions_rejects_bad_input(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        plotting.plot_bond_dimensions(**kwargs)


def test_plot_entanglement_line_only(tmp_path: Path) -> None:
    out = tmp_path / "ent.png"
    s = np.log(2) * np.minimum(np.arange(1, 16), np.arange(15, 0, -1)) / 4
    fig = plotting.plot_entanglement(s, path=out)
    assert len(fig.axes) == 1
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), s)
    assert_png(out)


def test_plot_entanglement_with_image_map(tmp_path: Path) -> None:
    out = tmp_path / "ent_map.png"
    s = np.linspace(0.0, 1.0, 15)
    fig = plotting.plot_entanglement(s, image_shape=(4, 4), path=out, title="S")
    assert len(fig.axes) == 3  # line, image map, colour bar
    grid = np.asarray(fig.axes[1].images[0].get_array(), dtype=float)
    assert grid.shape == (4, 4)
    np.testing.assert_allclose(grid.ravel()[:-1], s)
    assert np.isnan(grid[-1, -1]) or np.ma.is_masked(fig.axes[1].images[0].get_array()[-1, -1])
    assert_png(out)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"entropies": np.zeros((3, 3))},
        {"entropies": []},
        {"entropies": [0.1, np.nan]},
        {"entropies": np.zeros(15), "image_shape": (4, 5)},
        {"entropies": np.zeros(15), "image_shape": (16,)},
    ],
)
def test_plot_entanglement_rejects_bad_input(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        plotting.plot_entanglement(**kwargs)


# ---------------------------------------------------------------- inpainting


def test_plot_inpainting(tmp_path: Path, rng: np.random.Generator) -> None:
    n_images, n_samples, n = 2, 3, 16
    originals = rng.integers(0, 2, size=(n_images, n))
    masks = np.zeros((n_images, n), dtype=bool)
    masks[:, :8] = True  # top half known
    completions = rng.integers(0, 2, size=(n_images, n_samples, n))
    best = rng.integers(0, 2, size=(n_images, n))
    out = tmp_path / "inpaint.png"
    fig = plotting.plot_inpainting(originals, masks, completions, path=out,
                                   title="inpainting", most_likely=best)
    ncols = 2 + n_samples + 1
    assert len(fig.axes) == n_images * ncols
    masked = np.asarray(fig.axes[1].images[0].get_array())
    expected = np.where(masks[0], originals[0], 0.5).reshape(4, 4)
    np.testing.assert_array_equal(masked, expected)
    np.testing.assert_array_equal(fig.axes[2].images[0].get_array(), completions[0, 0].reshape(4, 4))
    np.testing.assert_array_equal(fig.axes[ncols - 1].images[0].get_array(), best[0].reshape(4, 4))
    np.testing.assert_array_equal(fig.axes[ncols].images[0].get_array(), originals[1].reshape(4, 4))
    assert fig.axes[ncols - 1].get_title() == "most likely"
    assert_png(out)


def test_plot_inpainting_shared_mask_and_no_best(rng: np.random.Generator) -> None:
    originals = rng.integers(0, 2, size=(2, 12))
    mask = np.arange(12) < 6
    completions = rng.integers(0, 2, size=(2, 1, 12))
    fig = plotting.plot_inpainting(originals, mask, completions, image_shape=(3, 4))
    assert len(fig.axes) == 2 * 3


@pytest.mark.parametrize(
    "which",
    ["mask_shape", "mask_values", "completions_images", "completions_pixels",
     "most_likely_shape", "image_shape"],
)
def test_plot_inpainting_rejects_bad_input(which: str) -> None:
    originals = np.zeros((2, 16))
    masks = np.ones((2, 16), dtype=bool)
    completions = np.zeros((2, 2, 16))
    kwargs: dict = {}
    if which == "mask_shape":
        masks = np.ones((3, 16), dtype=bool)
    elif which == "mask_values":
        masks = np.full((2, 16), 0.5)
    elif which == "completions_images":
        completions = np.zeros((3, 2, 16))
    elif which == "completions_pixels":
        completions = np.zeros((2, 2, 9))
    elif which == "most_likely_shape":
        kwargs["most_likely"] = np.zeros((1, 16))
    elif which == "image_shape":
        kwargs["image_shape"] = (2, 7)
    with pytest.raises(ValueError):
        plotting.plot_inpainting(originals, masks, completions, **kwargs)


# ---------------------------------------------------------------- capacity / comparison


def test_plot_capacity(tmp_path: Path) -> None:
    out = tmp_path / "capacity.png"
    bonds = [2, 4, 8, 16]
    nll = [20.0, 15.0, 12.0, 11.0]
    fig = plotting.plot_capacity(bonds, nll, paper_nll=[np.nan, 14.5, np.nan, 10.8],
                                 test_nll=[21.0, 16.0, 13.5, 13.0], path=out, title="capacity")
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    paper = next(line for line in ax.get_lines() if line.get_label() == "paper")
    np.testing.assert_allclose(paper.get_xdata(), [4, 16])
    assert_png(out)
    # Paper values as a mapping, unsorted bonds.
    fig = plotting.plot_capacity([8, 2, 4], [12.0, 20.0, 15.0], paper_nll={10: 11.5})
    train = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(train.get_xdata(), [2, 4, 8])
    np.testing.assert_allclose(train.get_ydata(), [20.0, 15.0, 12.0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_bonds": [2, 4], "nll": [1.0]},
        {"max_bonds": [0, 4], "nll": [1.0, 2.0]},
        {"max_bonds": [2, 4], "nll": [1.0, 2.0], "test_nll": [1.0]},
        {"max_bonds": [2, 4], "nll": [1.0, 2.0], "paper_nll": [1.0, 2.0, 3.0]},
    ],
)
def test_plot_capacity_rejects_bad_input(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        plotting.plot_capacity(**kwargs)


def test_plot_comparison(tmp_path: Path) -> None:
    out = tmp_path / "comparison.png"
    results = {
        "MPS D=10": {"train_nll": 101.5, "test_nll": 103.2},
        "MPS D=100": {"train_nll": 84.0, "test_nll": 101.4, "seconds": 12.0},
        "RBM": {"train_nll": 88.0},
    }
    fig = plotting.plot_comparison(results, path=out)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(results)
    assert len(ax.patches) == 6
    assert_png(out)


@pytest.mark.parametrize(
    "results",
    [{}, {"a": {"seconds": 1.0}}, {"a": 3.0}, {"a": {"train_nll": "x"}}, [("a", {})]],
)
def test_plot_comparison_rejects_bad_input(results) -> None:
    with pytest.raises(ValueError):
        plotting.plot_comparison(results)


# ---------------------------------------------------------------- saving


def test_save_overwrites_atomically_and_checks_suffix(tmp_path: Path) -> None:
    out = tmp_path / "fig.png"
    out.write_bytes(b"old")
    plotting.plot_bond_dimensions([1, 2, 1], path=out)
    assert_png(out)
    fig = plotting.plot_bond_dimensions([1, 2, 1], path=tmp_path / "fig.svg")
    assert (tmp_path / "fig.svg").read_bytes().lstrip().startswith(b"<?xml")
    with pytest.raises(ValueError):
        plotting.save_figure(fig, tmp_path / "fig.jpeg2000")
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
