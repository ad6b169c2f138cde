"""Tests of the ``tnborn`` command line (tnborn/cli.py and tnborn/cli_commands/).

Most tests call :func:`tnborn.cli.main` in-process on a 2 x 3 bars-and-stripes
run (10 patterns, trained to NLL ln 10 in 2 loops); start-up and ``--help``
are checked in a subprocess, where the imported modules can be seen.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tnborn
from tnborn.cli import TRAIN_OPTIONS, main
from tnborn.cli_commands.tools import half_mask
from tnborn.data import bars_and_stripes, is_bars_and_stripes

ROOT = Path(__file__).resolve().parents[1]
ROWS, COLS = 2, 3
N_PATTERNS = 2**ROWS + 2**COLS - 2  # 10
TRAIN_ARGS = ["--dataset", "bars-and-stripes", "--rows", str(ROWS), "--cols", str(COLS),
              "--threads", "1", "--quiet"]


def run_cli(*args: str, capsys=None) -> tuple[int, str, str]:
    """Call ``main`` and return (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err


def python_m(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tnborn", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Output folder of `tnborn train` on 2 x 3 bars-and-stripes, 2 loops."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TRAIN_ARGS, "--loops", "2", "--out", str(out)]) == 0
    return out


# --------------------------------------------------------------------------- start-up and help
def test_cli_module_imports_no_heavy_library():
    code = ("import sys, tnborn.cli; tnborn.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'quimb', 'matplotlib') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_python_m_help_and_version():
    res = python_m("--help")
    assert res.returncode == 0
    for command in ("train", "sample", "evaluate", "info", "inpaint"):
        assert command in res.stdout
    res = python_m("--version")
    assert res.returncode == 0 and tnborn.__version__ in res.stdout


def test_no_command_prints_usage_and_fails():
    res = python_m()
    assert res.returncode == 2
    assert "usage: tnborn" in res.stderr


@pytest.mark.parametrize("command", ["train", "sample", "evaluate", "info", "inpaint"])
def test_subcommand_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"tnborn {command}" in out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--lr", "abc"])
    assert exc.value.code == 2
    assert "--lr" in capsys.readouterr().err


# --------------------------------------------------------------------------- train
def test_train_writes_outputs(trained):
    for name in ("model.tnb", "samples.png", "nll.png", "history.json", "summary.json"):
        assert (trained / name).is_file(), name
    history = json.loads((trained / "history.json").read_text())
    assert [r["half_sweep"] for r in history] == [1, 2, 3, 4]
    assert history[-1]["train_nll"] == pytest.approx(math.log(N_PATTERNS), abs=1e-3)
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["train_nll"] == history[-1]["train_nll"]
    assert summary["reference_nll"] == pytest.approx(math.log(N_PATTERNS), abs=1e-12)


def test_train_checkpoint_loads_and_matches_history(trained):
    model = tnborn.load(trained / "model.tnb")
    assert model.num_variables == ROWS * COLS
    history = json.loads((trained / "history.json").read_text())
    assert model.nll(bars_and_stripes(ROWS, COLS)) == pytest.approx(history[-1]["train_nll"], abs=1e-9)
    state = tnborn.checkpoint.load_trainer_state(trained / "model.tnb")
    assert state["class"] == "SweepTrainer" and len(state["state"]["history"]) == 4


def test_train_quiet_prints_nothing(tmp_path, capsys):
    code, out, err = run_cli("train", *TRAIN_ARGS, "--loops", "0", "--out", tmp_path / "q", capsys=capsys)
    assert code == 0 and out == "" and err == ""
    assert (tmp_path / "q" / "model.tnb").is_file()


def test_train_summary_printed(tmp_path, capsys):
    args = [a for a in TRAIN_ARGS if a != "--quiet"]
    code, out, _ = run_cli("train", *args, "--loops", "1", "--out", tmp_path / "v", capsys=capsys)
    assert code == 0
    assert "train NLL" in out and "max bond" in out and str(tmp_path / "v") in out


def test_resume_continues_history(trained, tmp_path):
    out = tmp_path / "more"
    assert main(["train", "--resume", str(trained / "model.tnb"), "--loops", "1", "--threads", "1",
                 "--quiet", "--out", str(out)]) == 0
    before = json.loads((trained / "history.json").read_text())
    after = json.loads((out / "history.json").read_text())
    assert len(after) == len(before) + 2
    assert after[: len(before)] == before
    # the data spec stored in the checkpoint was reused: still 6 variables
    assert tnborn.load(out / "model.tnb").num_variables == ROWS * COLS


def test_checkpoint_every_and_max_bond(tmp_path):
    out = tmp_path / "d2"
    assert main(["train", *TRAIN_ARGS, "--loops", "1", "--max-bond", "2", "--checkpoint-every", "1",
                 "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert max(history[-1]["bond_dims"]) == 2


# --------------------------------------------------------------------------- trainers
PEPS_ARGS = ["--geometry", "peps", "--rows", "2", "--cols", "2", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def peps_run(tmp_path_factory) -> Path:
    """Output folder of `tnborn train --geometry peps` on 2 x 2 bars-and-stripes, 30 epochs."""
    out = tmp_path_factory.mktemp("cli-peps") / "run"
    assert main(["train", *PEPS_ARGS, "--lr", "0.1", "--epochs", "30", "--out", str(out)]) == 0
    return out


def test_train_help_lists_trainer_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--trainer", "--optimizer", "--epochs", "--geometry peps"):
        assert flag in out, flag


def test_train_peps_uses_the_gradient_trainer(peps_run):
    for name in ("model.tnb", "samples.png", "nll.png", "history.json", "summary.json"):
        assert (peps_run / name).is_file(), name
    model = tnborn.load(peps_run / "model.tnb")
    assert model.geometry == "peps" and model.num_variables == 4
    state = tnborn.checkpoint.load_trainer_state(peps_run / "model.tnb")
    assert state["class"] == "GradientTrainer"
    history = json.loads((peps_run / "history.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, 31))
    assert history[-1]["settings"]["optimizer"] == "adam" and history[-1]["settings"]["lr"] == 0.1
    data = bars_and_stripes(2, 2)
    assert model.nll(data) == pytest.approx(history[-1]["train_nll"], abs=1e-9)
    # 6 patterns: from about ln 16 (near-uniform start) to within 0.15 nats of ln 6
    assert history[0]["train_nll"] > math.log(6) + 0.5
    assert history[-1]["train_nll"] < math.log(6) + 0.15
    summary = json.loads((peps_run / "summary.json").read_text())
    assert summary["trainer"] == "GradientTrainer" and summary["epochs"] == 30


def test_gradient_resume_matches_one_run(peps_run, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", *PEPS_ARGS, "--lr", "0.1", "--epochs", "20", "--out", str(first)]) == 0
    assert main(["train", "--resume", str(first / "model.tnb"), "--epochs", "10", "--threads", "1",
                 "--quiet", "--out", str(second)]) == 0
    resumed = json.loads((second / "history.json").read_text())
    full = json.loads((peps_run / "history.json").read_text())
    assert [r["train_nll"] for r in resumed] == [r["train_nll"] for r in full]  # bit-identical


def test_gradient_trainer_on_mps_with_sgd_and_batches(tmp_path):
    out = tmp_path / "g"
    assert main(["train", *TRAIN_ARGS, "--trainer", "gradient", "--optimizer", "sgd", "--lr", "0.05",
                 "--batch-size", "5", "--epochs", "2", "--seed", "3", "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2 and history[-1]["step"] == 4  # 10 patterns in batches of 5
    assert history[-1]["settings"] == {"optimizer": "sgd", "lr": 0.05, "batch_size": 5, "momentum": 0.0,
                                       "grad_clip": None, "seed": 3}
    assert tnborn.checkpoint.load_trainer_state(out / "model.tnb")["class"] == "GradientTrainer"


@pytest.mark.parametrize(
    "args, words",
    [(["--trainer", "sweep", *PEPS_ARGS], ["--trainer sweep", "tree", "'peps'", "--trainer gradient"]),
     ([*PEPS_ARGS, "--loops", "2"], ["--loops", "sweep trainer", "gradient trainer"]),
     ([*TRAIN_ARGS, "--epochs", "2"], ["--epochs", "gradient trainer", "sweep trainer"]),
     ([*TRAIN_ARGS, "--trainer", "gradient", "--max-bond", "4"], ["--max-bond", "sweep trainer"])],
)
def test_trainer_option_conflicts_exit_2(args, words, tmp_path, capsys):
    code, _, err = run_cli("train", *args, "--out", tmp_path / "never", capsys=capsys)
    assert code == 2 and err.startswith("tnborn: error:"), err
    assert all(w in err for w in words), err
    assert not (tmp_path / "never").exists()


def test_bad_trainer_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--trainer", "lbfgs"])
    assert exc.value.code == 2
    assert "--trainer" in capsys.readouterr().err


def test_resume_with_the_other_trainer_is_refused(trained, tmp_path, capsys):
    code, _, err = run_cli("train", "--resume", trained / "model.tnb", "--trainer", "gradient",
                           "--quiet", "--out", tmp_path / "never", capsys=capsys)
    assert code == 2 and "contradicts" in err and "SweepTrainer" in err


def test_config_trainer_keys(tmp_path, capsys):
    cfg = tmp_path / "peps.toml"
    cfg.write_text('geometry = "peps"\nrows = 2\ncols = 2\ntrainer = "gradient"\noptimizer = "sgd"\n'
                   "epochs = 3\nlr = 0.05\nquiet = true\nthreads = 1\n")
    out = tmp_path / "cfg"
    assert main(["train", "--config", str(cfg), "--epochs", "2", "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2 and history[-1]["settings"]["optimizer"] == "sgd"  # --epochs 2 overrode 3
    cfg.write_text('optimizer = "lbfgs"\n')
    code, _, err = run_cli("train", "--config", cfg, capsys=capsys)
    assert code == 2 and "optimizer" in err and "adam, sgd" in err


# --------------------------------------------------------------------------- config files
def test_config_values_and_flag_override(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = "bars-and-stripes"\nrows = 2\ncols = 3\nmax_bond = 2\nloops = 1\n'
                   'quiet = true\nthreads = 1\n')
    out = tmp_path / "cfg"
    assert main(["train", "--config", str(cfg), "--loops", "2", "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 4  # --loops 2 overrode loops = 1
    assert max(max(r["bond_dims"]) for r in history) == 2  # max_bond from the file
    assert history[-1]["settings"]["max_bond"] == 2


def test_config_unknown_key_lists_valid_keys(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("max_bond = 4\nmaxbond = 4\n")
    code, _, err = run_cli("train", "--config", cfg, "--out", tmp_path / "never", capsys=capsys)
    assert code == 2
    assert err.startswith("tnborn: error:") and "maxbond" in err
    assert all(key in err for key in TRAIN_OPTIONS)
    assert not (tmp_path / "never").exists()


def test_config_wrong_type_and_bad_toml(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('lr = "fast"\n')
    code, _, err = run_cli("train", "--config", cfg, capsys=capsys)
    assert code == 2 and "key 'lr' of" in err and "must be a number" in err and "--lr" not in err
    cfg.write_text("lr = = 1\n")
    code, _, err = run_cli("train", "--config", cfg, capsys=capsys)
    assert code == 2 and "not valid TOML" in err


# --------------------------------------------------------------------------- errors
def test_missing_data_file_is_a_clean_error(tmp_path, capsys):
    missing = tmp_path / "nope.npy"
    code, out, err = run_cli("train", "--data", missing, "--quiet", capsys=capsys)
    assert code == 2
    assert err.startswith("tnborn: error:") and "nope.npy" in err and "Traceback" not in err


def test_missing_checkpoint_in_subprocess_has_no_traceback(tmp_path):
    res = python_m("info", str(tmp_path / "missing.tnb"))
    assert res.returncode == 2
    assert res.stderr.startswith("tnborn: error:") and "Traceback" not in res.stderr


def test_data_and_dataset_are_exclusive(tmp_path, capsys):
    code, _, err = run_cli("train", "--data", "x.npy", "--dataset", "parity", capsys=capsys)
    assert code == 2 and "not both" in err


def test_evaluate_rejects_data_of_wrong_width(trained, capsys):
    code, _, err = run_cli("evaluate", trained / "model.tnb", "--dataset", "bars-and-stripes",
                           "--rows", "4", capsys=capsys)
    assert code == 2 and "16 variables" in err and "6" in err


# --------------------------------------------------------------------------- info, sample, evaluate
def test_info_text_and_json(trained, capsys):
    code, out, _ = run_cli("info", trained / "model.tnb", capsys=capsys)
    assert code == 0
    assert "geometry" in out and "mps" in out and "2 x 3" in out
    code, out, _ = run_cli("info", trained / "model.tnb", "--json", capsys=capsys)
    info = json.loads(out)
    assert info["geometry"] == "mps" and info["records"] == 4
    assert info["extra"]["image_shape"] == [ROWS, COLS]


def test_sample_writes_valid_patterns(trained, tmp_path, capsys):
    path, png = tmp_path / "s.npy", tmp_path / "s.png"
    code, out, _ = run_cli("sample", trained / "model.tnb", "-n", 50, "--out", path, "--png", png,
                           "--seed", 3, capsys=capsys)
    assert code == 0 and png.is_file() and "50 samples" in out
    x = np.load(path)
    assert x.shape == (50, ROWS * COLS) and x.dtype == np.uint8
    # the model reached NLL ln 10 on the 10 patterns: all its mass is on them
    assert is_bars_and_stripes(x, ROWS, COLS).all()
    assert main(["sample", str(trained / "model.tnb"), "-n", "50", "--out", str(tmp_path / "t.npy"),
                 "--seed", "3", "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), x)


def test_evaluate_matches_model_nll(trained, tmp_path, capsys):
    data = bars_and_stripes(ROWS, COLS)[::2]
    np.save(tmp_path / "half.npy", data)
    expected = tnborn.load(trained / "model.tnb").nll(data)
    code, out, _ = run_cli("evaluate", trained / "model.tnb", "--data", tmp_path / "half.npy", "--json",
                           capsys=capsys)
    assert code == 0
    result = json.loads(out)
    assert result["nll"] == pytest.approx(expected, abs=1e-12)
    assert result["num_samples"] == data.shape[0]
    code, out, _ = run_cli("evaluate", trained / "model.tnb", "--data", tmp_path / "half.npy", capsys=capsys)
    assert f"{expected:.6f}" in out


# --------------------------------------------------------------------------- inpaint
@pytest.mark.parametrize(
    "side, known",
    [("left", [0, 1, 1, 0, 1, 1]), ("right", [1, 1, 0, 1, 1, 0]),
     ("top", [0, 0, 0, 1, 1, 1]), ("bottom", [1, 1, 1, 0, 0, 0])],
)
def test_half_mask(side, known):
    np.testing.assert_array_equal(half_mask(side, (2, 3)), np.array(known, dtype=bool))


def test_inpaint_keeps_known_pixels_and_completes_patterns(trained, tmp_path, capsys):
    out = tmp_path / "inp"
    code, stdout, _ = run_cli("inpaint", trained / "model.tnb", "--dataset", "bars-and-stripes",
                              "--remove", "bottom", "--num-images", 5, "--num-samples", 3, "--out", out,
                              capsys=capsys)
    assert code == 0 and (out / "inpainting.png").is_file()
    comp, mask, orig = (np.load(out / f) for f in ("completions.npy", "mask.npy", "originals.npy"))
    assert comp.shape == (5, 3, ROWS * COLS) and mask.shape == (5, ROWS * COLS)
    np.testing.assert_array_equal(orig, bars_and_stripes(ROWS, COLS)[:5])
    known = mask[:, None, :].repeat(3, axis=1)
    np.testing.assert_array_equal(comp[known], np.broadcast_to(orig[:, None, :], comp.shape)[known])
    assert is_bars_and_stripes(comp.reshape(-1, ROWS * COLS), ROWS, COLS).all()


def test_inpaint_mask_file_of_wrong_shape(trained, tmp_path, capsys):
    np.save(tmp_path / "m.npy", np.ones(5, dtype=bool))
    code, _, err = run_cli("inpaint", trained / "model.tnb", "--dataset", "bars-and-stripes",
                           "--mask", tmp_path / "m.npy", "--out", tmp_path / "o", capsys=capsys)
    assert code == 2 and "(6,)" in err


# --------------------------------------------------------------------------- README and quickstart
def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    import re

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["history"][-1]["train_nll"] == pytest.approx(math.log(30), abs=1e-3)
    assert (tmp_path / "bas.tnb").is_file()


def test_readme_and_ci_run_the_same_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = ci.split("TEST_COMMAND='", 1)[1].split("'", 1)[0]
    assert command in (ROOT / "README.md").read_text()
    assert "python -m pytest" in command


def test_quickstart_script(tmp_path, capsys):
    import runpy

    module = runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="quickstart")
    nll = module["main"](tmp_path)
    assert nll == pytest.approx(math.log(30), abs=1e-3)
    assert tnborn.load(tmp_path / "bas.tnb").num_variables == 16


def test_resuming_a_tree_passed_through_from_quimb_uses_the_sweep(tmp_path):
    """The trainer is chosen by the model's own network (a tree), not by its geometry class."""
    net = tnborn.NetworkBornMachine.random(ROWS * COLS, bond_dim=2, seed=1)
    assert net.geometry == "network" and net.is_tree and not type(net).is_tree
    tnborn.save(tmp_path / "net.tnb", net)
    np.save(tmp_path / "bas.npy", bars_and_stripes(ROWS, COLS))
    out = tmp_path / "run"
    assert main(["train", "--resume", str(tmp_path / "net.tnb"), "--data", str(tmp_path / "bas.npy"),
                 "--loops", "1", "--threads", "1", "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trainer"] == "SweepTrainer" and summary["half_sweeps"] >= 1
