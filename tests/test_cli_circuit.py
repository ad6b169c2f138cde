"""Tests of ``tnborn circuit`` (tnborn/cli_commands/circuit.py): modes, JSON, NLL, help.

References: the written OpenQASM is parsed back and simulated as a state vector
by quimb; the NLL is recomputed from that state vector by enumeration.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import tnborn
from conftest import dense_psi
from tnborn.circuit import compile_mps, parse_qasm, simulate_circuit
from tnborn.cli import main
from tolerances import rounding_bound

N = 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("circuit_cli")
    model = tnborn.MPSBornMachine.random(N, bond_dim=4, seed=3)
    return model, tnborn.save(folder / "m.tnb", model), folder


def _state(model) -> np.ndarray:
    psi = dense_psi(model).to(torch.complex128).numpy()
    return psi / np.linalg.norm(psi)


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_optimize_json_matches_the_written_qasm(checkpoint, capsys, tmp_path):
    model, path, _ = checkpoint
    data = tnborn.random_binary(20, N, seed=1)
    np.save(tmp_path / "x.npy", data)
    out = tmp_path / "c.qasm"
    code, text, err = _run(capsys, "circuit", path, "--layers", "2", "--optimize", "--sweeps", "4", "--tol", "0",
                           "--out", out, "--data", tmp_path / "x.npy", "--json")
    assert code == 0, err
    summary = json.loads(text)
    assert summary["mode"] == "optimized" and summary["layers"] == 2 and summary["two_qubit_gates"] == 14
    rows = summary["table"]
    assert [r["layers"] for r in rows] == [1, 2]
    # the layers are grown: before and after per row, never below Ran's analytical layers,
    # never decreasing with depth
    assert all(r["sweeps"] == 4 and r["seconds"] > 0 for r in rows)
    analytical = compile_mps(model, layers=2).fidelities
    tol = rounding_bound(torch.float64, 16 * 14 * N)
    assert abs(rows[0]["fidelity_before"] - analytical[0]) <= tol  # layer 1 starts analytical
    for row, ana in zip(rows, analytical):
        assert abs(row["fidelity_analytical"] - ana) <= tol
        assert row["fidelity"] >= max(row["fidelity_before"], ana) - tol
    assert rows[1]["fidelity"] >= rows[0]["fidelity"] - tol
    # the written program prepares the reported state
    psi = simulate_circuit(parse_qasm(out.read_text()))
    fid = float(abs(np.vdot(_state(model), psi)) ** 2)
    assert abs(fid - summary["fidelity"]) <= tol and summary["fidelities"][-1] == summary["fidelity"]
    assert abs(summary["log_fidelity"] - math.log(fid)) <= tol / fid
    # NLL of the data under |<x|C|0>|^2, by enumeration of the state vector
    idx = data @ (1 << np.arange(N - 1, -1, -1))
    nll = -np.mean(np.log(np.abs(psi[idx]) ** 2))
    assert abs(summary["nll"] - nll) <= np.mean(4 * tol / np.abs(psi[idx]))
    assert abs(summary["model_nll"] - model.nll(data)) < 1e-9
    assert summary["data"].endswith("x.npy")


def test_auto_grows_until_the_target(checkpoint, capsys, tmp_path):
    model, path, _ = checkpoint
    code, text, err = _run(capsys, "circuit", path, "--layers", "auto", "--target-fidelity", "1",
                           "--max-layers", "3", "--sweeps", "3", "--out", tmp_path / "c.qasm", "--json")
    assert code == 0, err
    summary = json.loads(text)
    rows = summary["table"]
    assert summary["mode"] == "auto" and [r["layers"] for r in rows] == [1, 2, 3]
    fids = [r["fidelity"] for r in rows]
    assert all(b >= a - 1e-12 for a, b in zip(fids, fids[1:])), fids
    assert summary["reached"] == (fids[-1] >= 1.0)
    for r in rows:
        assert r["fidelity"] <= r["schmidt_bound"] + 1e-12 and {"fidelity_before", "truncation_fidelity"} <= set(r)
    # a reachable target stops early: one layer holds 0.5, and the text output lists the rows
    code, text, err = _run(capsys, "circuit", path, "--layers", "auto", "--target-fidelity", "0.5",
                           "--out", tmp_path / "d.qasm", "--dataset", "random", "--rows", "2", "--cols", "4")
    assert code == 0, err
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["layers", "analytic", "before", "after"]
    assert lines[1].split()[0] == "1" and "NLL" in lines[1]
    assert "target fidelity 0.5 reached with 1 layers" in text
    assert len(parse_qasm((tmp_path / "d.qasm").read_text()).gates) == N - 1


def test_analytical_mode_is_unchanged(checkpoint, capsys, tmp_path):
    model, path, _ = checkpoint
    code, text, _ = _run(capsys, "circuit", path, "--layers", "3", "--out", tmp_path / "c.qasm", "--json")
    assert code == 0
    summary = json.loads(text)
    ref = compile_mps(model, layers=3).fidelities
    assert summary["mode"] == "analytical" and np.allclose(summary["fidelities"], ref, rtol=0, atol=1e-10)
    assert summary["nll"] is None and summary["target_fidelity"] is None


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["circuit", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "--layers auto --target-fidelity" in text and "--optimize" in text


@pytest.mark.parametrize("args, message", [
    (["--layers", "auto"], r"--layers auto needs --target-fidelity F"),
    (["--target-fidelity", "0.9"], r"--target-fidelity applies to --layers auto only"),
    (["--layers", "auto", "--target-fidelity", "0"], r"must be a number in \(0, 1\], got '0'"),
    (["--layers", "auto", "--target-fidelity", "1.01"], r"must be a number in \(0, 1\], got '1.01'"),
    (["--layers", "2", "--max-layers", "3"], r"--max-layers applies to --layers auto only"),
    (["--layers", "2", "--sweeps", "3"], r"--sweeps applies with --optimize or --layers auto only"),
    (["--layers", "0"], r"--layers: must be an integer >= 1 or 'auto'"),
    (["--layers", "2", "--optimize", "--tol", "-1"], r"--tol: must be >= 0"),
])
def test_bad_options_exit_2_before_any_work(checkpoint, capsys, tmp_path, args, message):
    _, path, _ = checkpoint
    out = tmp_path / "never.qasm"
    try:
        code = main(["circuit", str(path), "--out", str(out), *args])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    import re

    assert re.search(message, err), err
    assert not out.exists()


# --------------------------------------------------------------------------- #
# acceptance: the default bars-and-stripes model of `tnborn train`
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def default_bas(tmp_path_factory):
    """``tnborn train`` with no model options: 4x4 bars and stripes, 4 loops, seed 0."""
    folder = tmp_path_factory.mktemp("bas_default")
    assert main(["train", "--out", str(folder / "run"), "--quiet", "--threads", "1"]) == 0
    path = folder / "run" / "model.tnb"
    model = tnborn.load(path)
    assert abs(model.nll(tnborn.bars_and_stripes(4)) - math.log(30)) < 1e-3
    return model, path, folder


def _qasm_fidelity(model, qasm_path) -> float:
    """``|<psi|C|0>|^2`` from the written program, by the independent u3/cx interpreter of
    tests/test_circuit.py (a dense state vector, nothing of tnborn.circuit)."""
    from test_circuit import _run_qasm

    return float(abs(np.vdot(_state(model), _run_qasm(qasm_path.read_text()))) ** 2)


def _compile_default(default_bas, capsys, *args):
    model, path, folder = default_bas
    out = folder / ("c_" + "_".join(str(a) for a in args) + ".qasm")
    code, text, err = _run(capsys, "circuit", path, *args, "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(text)
    fid = _qasm_fidelity(model, out)
    # 16 qubits, gates of 3 cx and 8 u3 each: the reported fidelity is that of the program
    assert abs(fid - summary["fidelity"]) <= rounding_bound(torch.float64, 16 * 11 * summary["two_qubit_gates"])
    return summary, fid


def test_default_bas_four_optimised_layers(default_bas, capsys):
    summary, fid = _compile_default(default_bas, capsys, "--layers", "4", "--optimize", "--sweeps", "3")
    assert summary["layers"] == 4 and summary["table"][-1]["fidelity_before"] < fid
    assert fid >= 0.65


@pytest.mark.slow
def test_default_bas_eight_optimised_layers_and_growth(default_bas, capsys):
    summary, fid = _compile_default(default_bas, capsys, "--layers", "8", "--optimize", "--sweeps", "30",
                                    "--tol", "1e-6")
    assert summary["layers"] == 8 and fid >= 0.95
    # layer growth to 0.95: never decreasing, every row above Ran's analytical layers
    summary, fid = _compile_default(default_bas, capsys, "--layers", "auto", "--target-fidelity", "0.95",
                                    "--sweeps", "30", "--tol", "1e-6")
    rows = summary["table"]
    fids = [r["fidelity"] for r in rows]
    assert all(b >= a - 1e-12 for a, b in zip(fids, fids[1:])), fids
    assert all(r["fidelity"] >= r["fidelity_analytical"] - 1e-12 for r in rows)
    assert summary["reached"] and fid >= 0.95 and len(rows) <= 8
