"""Compiling MPS Born machines into circuits of two-qubit gates (tnborn.circuit).

References: dense state vectors from quimb's contraction of the model
(``conftest.dense_psi``) and from quimb's circuit simulator, and an
independent line-by-line interpreter of the emitted OpenQASM written here.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import tnborn
from conftest import chain_log_prob_bound, dense_psi
from tnborn import MPSBornMachine, SweepTrainer
from tnborn.circuit import (
    CompiledCircuit,
    circuit_fidelity,
    circuit_nll,
    compile_checkpoint,
    compile_mps,
    decompose_two_qubit,
    gates_from_ops,
    parse_qasm,
    simulate_circuit,
    to_qasm,
)
from tnborn.circuit.simulate import _circuit_arrays
from tolerances import rounding_bound

X = np.array([[0, 1], [1, 0]], dtype=complex)
Y = np.array([[0, -1j], [1j, 0]])
Z = np.diag([1.0, -1.0]).astype(complex)


def _haar(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d)))
    return q * (np.diag(r) / np.abs(np.diag(r)))


def _canonical_gate(a: float, b: float, c: float) -> np.ndarray:
    h = a * np.kron(X, X) + b * np.kron(Y, Y) + c * np.kron(Z, Z)
    w, v = np.linalg.eigh(h)
    return (v * np.exp(1j * w)) @ v.conj().T


def _model_state(model) -> np.ndarray:
    psi = dense_psi(model).to(torch.complex128).numpy()
    return psi / np.linalg.norm(psi)


def _fid(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(np.vdot(a, b)) ** 2)


# --------------------------------------------------------------------------- #
# exact two-qubit decomposition
# --------------------------------------------------------------------------- #
def _unitaries() -> list[np.ndarray]:
    rng = np.random.default_rng(2024)
    cx = np.eye(4)[[0, 1, 3, 2]]
    swap = np.eye(4)[[0, 2, 1, 3]]
    out = [np.eye(4), cx, swap, swap @ cx @ swap, np.kron(X, Z), 1j * np.eye(4), np.diag([1, 1, 1, -1]),
           np.diag([1, 1j, 1, 1]), np.kron(_haar(rng, 2), _haar(rng, 2))]
    out += [_haar(rng, 4) for _ in range(40)]
    out += [np.linalg.qr(rng.normal(size=(4, 4)))[0] for _ in range(10)]  # real orthogonal
    for a, b, c in [(0, 0, 0), (math.pi / 4, 0, 0), (math.pi / 4, math.pi / 4, 0),
                    (math.pi / 4, math.pi / 4, math.pi / 4), (0.3, 0.3, 0.3), (0.2, 0.2, -0.1), (1e-9, 0, 0)]:
        k1 = np.kron(_haar(rng, 2), _haar(rng, 2))
        k2 = np.kron(_haar(rng, 2), _haar(rng, 2))
        out.append(k1 @ _canonical_gate(a, b, c) @ k2)  # degenerate spectra of the KAK matrix
    return out


def test_decompose_two_qubit_exact():
    for u in _unitaries():
        ops, phase = decompose_two_qubit(u)
        assert sum(1 for name, _, _ in ops if name == "cx") <= 3
        assert all(name in ("u3", "cx") for name, _, _ in ops)
        assert np.abs(gates_from_ops(ops, phase) - u).max() < 1e-10
        # without the phase: equal up to a global phase
        v = gates_from_ops(ops)
        assert abs(abs(np.trace(v.conj().T @ u)) / 4 - 1) < 1e-12


def test_decompose_refuses_non_unitary():
    with pytest.raises(tnborn.NumericalError):
        decompose_two_qubit(np.ones((4, 4)))
    with pytest.raises(tnborn.ConfigError):
        decompose_two_qubit(np.eye(3))


# --------------------------------------------------------------------------- #
# bond dimension 2: one exact layer
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_bond_two_is_exact(dtype):
    model = MPSBornMachine.random(10, bond_dim=2, seed=5, dtype=dtype)
    circuit = compile_mps(model, layers=1)
    assert circuit.num_qubits == 10 and len(circuit.gates) == 9 and circuit.num_layers == 1
    assert [w for w, _ in circuit.gates] == [(k, k + 1) for k in range(9)]
    for _, u in circuit.gates:
        assert np.abs(u.conj().T @ u - np.eye(4)).max() < 1e-12
    state = simulate_circuit(circuit, method="dense")  # quimb's Circuit
    target = _model_state(model)
    assert _fid(target, state) >= 1 - 1e-10
    assert circuit.fidelities[0] >= 1 - 1e-10
    # amplitudes agree up to one global phase
    k = int(np.argmax(np.abs(target)))
    phase = state[k] / target[k]
    assert np.abs(state - phase * target).max() < 1e-10
    assert circuit_fidelity(model, circuit) >= 1 - 1e-10


@pytest.mark.parametrize("n, bond_dim", [(2, 2), (3, 2), (7, 1), (8, 2)])
def test_small_and_product_states_are_exact(n, bond_dim):
    model = MPSBornMachine.random(n, bond_dim=bond_dim, seed=n, dtype="complex128")
    circuit = compile_mps(model)
    assert _fid(_model_state(model), simulate_circuit(circuit)) >= 1 - 1e-10


def test_bond_one_sites_inside_the_chain():
    """Bonds of dimension 1 between bond-2 parts (padded isometries)."""
    a = MPSBornMachine.random(4, bond_dim=2, seed=1, dtype="complex128").site_arrays()
    b = MPSBornMachine.random(4, bond_dim=2, seed=2, dtype="complex128").site_arrays()
    model = MPSBornMachine([t.clone() for t in a + b])  # bond 3-4 has dimension 1
    assert model.bond_dims()[3] == 1
    assert _fid(_model_state(model), simulate_circuit(compile_mps(model))) >= 1 - 1e-10


# --------------------------------------------------------------------------- #
# larger bond dimensions: layers
# --------------------------------------------------------------------------- #
def test_reported_fidelities_are_exact():
    model = MPSBornMachine.random(8, bond_dim=4, seed=3, dtype="complex128")
    circuit = compile_mps(model, layers=3)
    assert circuit.num_layers == 3 and len(circuit.fidelities) == 3
    target = _model_state(model)
    for k in (1, 2, 3):
        sub = circuit.with_layers(k)
        assert len(sub.gates) == 7 * k
        dense = _fid(target, simulate_circuit(sub, method="dense"))
        assert abs(dense - circuit.fidelities[k - 1]) < 1e-10
        assert abs(circuit_fidelity(model, sub) - dense) < 1e-10
    # the first layer prepares the best bond-2 truncation: fidelity < 1 here
    assert circuit.fidelities[0] < 0.99
    assert circuit.fidelities[2] > circuit.fidelities[0]


def test_mps_simulation_matches_dense():
    model = MPSBornMachine.random(9, bond_dim=5, seed=4, dtype="complex128")
    circuit = compile_mps(model, layers=2)
    dense = simulate_circuit(circuit, method="dense")
    mps = simulate_circuit(circuit, method="mps", cutoff=0.0)
    vec = mps.to_dense().reshape(-1)
    assert _fid(dense, vec) > 1 - 1e-10


def test_truncated_residual_simulation():
    model = MPSBornMachine.random(10, bond_dim=6, seed=9, dtype="float64")
    exact = compile_mps(model, layers=3)
    cheap = compile_mps(model, layers=3, max_bond_sim=4)
    assert abs(cheap.fidelities[0] - exact.fidelities[0]) < 1e-10  # layer 1 needs no residual
    # later layers are compiled from an approximate residual: the reported numbers are
    # estimates, but the layers still help, as the exact fidelity of the circuit shows
    true = circuit_fidelity(model, cheap)
    assert true > cheap.fidelities[0] + 0.05
    assert abs(true - exact.fidelities[-1]) < 0.2


@pytest.fixture(scope="module")
def trained_bas():
    torch.set_num_threads(1)
    data = tnborn.bars_and_stripes(4)
    model = MPSBornMachine.random(16, bond_dim=2, seed=0)
    SweepTrainer(model, lr=0.1, descent_steps=10, cutoff=5e-5, progress=False).fit(data, loops=2)
    assert abs(model.nll(data) - math.log(30)) < 1e-3
    assert max(model.bond_dims()) == 16
    return model, data


def test_bars_and_stripes_fidelity_rises_with_layers(trained_bas):
    model, data = trained_bas
    circuit = compile_mps(model, layers=4)
    fids = circuit.fidelities
    assert all(b >= a - 1e-9 for a, b in zip(fids, fids[1:])), fids
    assert fids[-1] > fids[0]
    # the per-layer numbers are exact: check layers 1 and 4 with quimb's dense simulator
    target = _model_state(model)
    for k in (1, 4):
        assert abs(_fid(target, simulate_circuit(circuit.with_layers(k))) - fids[k - 1]) < 1e-9
    # NLL under the circuit: dense and MPS evaluation agree; no model beats the entropy ln 30.
    # Both evaluations carry amplitude errors of at most `delta` relative to the unit norm
    # (one rounding per gate and per site), so log p_i = 2 log|psi_i| is determined to
    # 2 delta / |psi_i|: a pattern the circuit all but excludes (p ~ 1e-88 at one layer) has an
    # ill-conditioned log, and the NLL comparison uses that per-pattern bound.
    n = model.num_variables
    idx = data @ (1 << np.arange(n - 1, -1, -1, dtype=np.int64))
    for k in (1, 4):
        sub = circuit.with_layers(k)
        delta = rounding_bound(torch.float64, k * (n - 1) + n)
        amp = np.abs(simulate_circuit(sub, method="dense")[idx])
        mps_logp = MPSBornMachine([torch.from_numpy(a) for a in _circuit_arrays(sub)]).log_prob(data)
        mps_amp = np.exp(0.5 * np.asarray(mps_logp))
        assert np.max(np.abs(amp - mps_amp)) <= 2 * delta
        dense, mps = circuit_nll(sub, data, method="dense"), circuit_nll(sub, data, method="mps")
        assert abs(dense - mps) <= np.mean(4 * delta / amp)
        assert dense >= math.log(30) - 2 * delta
    assert circuit_nll(circuit, data) < circuit_nll(circuit.with_layers(1), data)
    print("BAS 4x4 fidelity per layer:", [round(f, 6) for f in fids])


def test_circuit_nll_matches_model_when_exact():
    model = MPSBornMachine.random(8, bond_dim=2, seed=21, dtype="complex128")
    data = np.random.default_rng(0).integers(0, 2, size=(50, 8))
    circuit = compile_mps(model)
    # per-pattern bounds: the model's log P from its amplitude conditioning (chain_log_prob_bound),
    # the circuit's from an amplitude error of at most `delta` on a unit state (log p = 2 log|psi|)
    n = model.num_variables
    idx = data @ (1 << np.arange(n - 1, -1, -1, dtype=np.int64))
    delta = rounding_bound(torch.float64, 4 * len(circuit.gates) + n)
    amp = np.abs(_model_state(model)[idx])
    bound = float(chain_log_prob_bound(model)[torch.from_numpy(idx)].mean()) + float(np.mean(2 * delta / amp))
    assert abs(circuit_nll(circuit, data) - model.nll(data)) <= bound
    assert abs(circuit_nll(circuit, data, method="mps") - model.nll(data)) <= bound


# --------------------------------------------------------------------------- #
# OpenQASM
# --------------------------------------------------------------------------- #
def _run_qasm(text: str) -> np.ndarray:
    """Independent interpreter: apply every u3/cx line to a dense state, ignoring the comments."""
    n = int(re.search(r"(?:qreg q\[(\d+)\]|qubit\[(\d+)\] q)", text).group(1) or
            re.search(r"qubit\[(\d+)\] q", text).group(1))
    psi = np.zeros((2,) * n, dtype=complex)
    psi[(0,) * n] = 1
    phase = 0.0
    for line in text.splitlines():
        m = re.match(r"u3\(([^,]+),([^,]+),([^)]+)\) q\[(\d+)\];", line)
        if m:
            t, p, lam = (float(m.group(i)) for i in (1, 2, 3))
            q = int(m.group(4))
            c, s = math.cos(t / 2), math.sin(t / 2)
            g = np.array([[c, -np.exp(1j * lam) * s], [np.exp(1j * p) * s, np.exp(1j * (p + lam)) * c]])
            psi = np.moveaxis(np.tensordot(g, psi, axes=([1], [q])), 0, q)
            continue
        m = re.match(r"cx q\[(\d+)\],q\[(\d+)\];", line)
        if m:
            c, t = int(m.group(1)), int(m.group(2))
            idx = [slice(None)] * n
            idx[c] = 1
            sub = psi[tuple(idx)].copy()
            axis = t - (1 if t > c else 0)
            psi[tuple(idx)] = np.flip(sub, axis=axis)
            continue
        m = re.match(r"gphase\(([^)]+)\);", line)
        if m:
            phase += float(m.group(1))
    return np.exp(1j * phase) * psi.reshape(-1)


@pytest.mark.parametrize("version", [2, 3])
def test_qasm_round_trip(version):
    model = MPSBornMachine.random(8, bond_dim=3, seed=17, dtype="complex128")
    circuit = compile_mps(model, layers=2)
    text = to_qasm(circuit, version=version, measure=True)
    lines = text.splitlines()
    assert lines[0] == ("OPENQASM 2.0;" if version == 2 else "OPENQASM 3.0;")
    assert lines[1] == ('include "qelib1.inc";' if version == 2 else 'include "stdgates.inc";')
    assert ("qreg q[8];" if version == 2 else "qubit[8] q;") in lines
    statements = [ln.split("(")[0].split()[0] for ln in lines[2:] if ln and not ln.startswith("//")]
    allowed = {"qreg", "creg", "u3", "cx", "measure"} if version == 2 else {"qubit[8]", "bit[8]", "u3", "cx", "gphase", "c"}
    assert set(statements) <= allowed, set(statements) - allowed
    assert sum(s == "cx" for s in statements) <= 3 * len(circuit.gates)
    back = parse_qasm(text)
    assert back.num_qubits == 8 and back.num_layers == 2
    assert back.fidelities == circuit.fidelities
    assert len(back.gates) == len(circuit.gates)
    for (w1, u1), (w2, u2) in zip(circuit.gates, back.gates):
        assert w1 == w2
        if version == 3:
            assert np.abs(u1 - u2).max() < 1e-10
        else:  # equal up to a global phase
            ph = np.trace(u2.conj().T @ u1) / 4
            assert abs(abs(ph) - 1) < 1e-12
            assert np.abs(u1 - ph * u2).max() < 1e-10
    # the program itself (not only its comments) prepares the state
    state = simulate_circuit(circuit)
    program = _run_qasm(text)
    assert _fid(state, program) > 1 - 1e-10
    if version == 3:
        assert np.abs(state - program).max() < 1e-10
    assert abs(circuit_fidelity(model, back) - circuit.fidelities[-1]) < 1e-10


def test_parse_qasm_rejects_bad_programs():
    with pytest.raises(tnborn.DataError):
        parse_qasm('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nh q[0];\n')
    with pytest.raises(tnborn.DataError):
        parse_qasm('OPENQASM 2.0;\nqreg q[2];\ncx q[0],q[1];\n')  # no gate group
    with pytest.raises(tnborn.DataError):
        parse_qasm("OPENQASM 2.0;\n// tnborn gate 0 on q[0],q[1]\ncx q[0],q[1];\n")  # no register
    with pytest.raises(tnborn.DataError):
        parse_qasm("OPENQASM 2.0;\nqreg q[3];\n// tnborn gate 0 on q[0],q[1]\ncx q[0],q[2];\n")


# --------------------------------------------------------------------------- #
# input checks and the checkpoint helper
# --------------------------------------------------------------------------- #
def test_bad_input():
    model = MPSBornMachine.random(4, seed=0)
    with pytest.raises(tnborn.ConfigError):
        compile_mps(model, layers=0)
    with pytest.raises(tnborn.ConfigError):
        compile_mps(model, max_bond_sim=1)
    with pytest.raises(tnborn.ConfigError):
        compile_mps(object())
    with pytest.raises(tnborn.ConfigError):
        compile_mps(MPSBornMachine.random(4, phys_dim=3, seed=0))
    circuit = compile_mps(model)
    with pytest.raises(tnborn.ConfigError):
        simulate_circuit(circuit, method="nope")
    with pytest.raises(tnborn.ConfigError):
        simulate_circuit(CompiledCircuit(30, []), method="dense")
    with pytest.raises(tnborn.ConfigError):
        CompiledCircuit(3, [((0, 3), np.eye(4))])
    with pytest.raises(tnborn.ConfigError):
        CompiledCircuit(3, [((0, 1), np.eye(2))])
    with pytest.raises(tnborn.ConfigError):
        circuit.with_layers(2)
    with pytest.raises(tnborn.DataError):
        circuit_nll(circuit, np.zeros((3, 5), dtype=int))
    with pytest.raises(tnborn.ConfigError):
        circuit_fidelity(MPSBornMachine.random(5, seed=0), circuit)


def test_non_neighbouring_gates_simulate_through_quimb():
    rng = np.random.default_rng(3)
    circuit = CompiledCircuit(4, [((0, 2), _haar(rng, 4)), ((3, 1), _haar(rng, 4)), ((1, 0), _haar(rng, 4))])
    dense = simulate_circuit(circuit)
    psi = np.zeros(16, dtype=complex)
    psi[0] = 1
    psi = psi.reshape(2, 2, 2, 2)
    for (i, j), u in circuit.gates:
        g = u.reshape(2, 2, 2, 2)
        psi = np.moveaxis(np.tensordot(g, psi, axes=([2, 3], [i, j])), [0, 1], [i, j])
    # three unitaries on a unit state, a 4-term sum per entry and gate (plus quimb's swaps)
    delta = rounding_bound(torch.float64, 3 * (4 + 4))
    assert np.abs(dense - psi.reshape(-1)).max() <= delta
    data = np.array([[0, 1, 1, 0], [1, 1, 0, 0]])
    amp = np.abs(psi.reshape(-1)[[6, 12]])
    ref = -np.mean(np.log(amp ** 2))
    # both evaluations carry amplitude errors <= delta: log p = 2 log|psi| moves by <= 2 delta / |psi| each
    assert abs(circuit_nll(circuit, data, method="mps") - ref) <= np.mean(4 * delta / amp)


def test_compile_checkpoint(tmp_path):
    model = MPSBornMachine.random(6, bond_dim=2, seed=2, dtype="complex128")
    path = tnborn.save(tmp_path / "m.tnb", model)
    summary = compile_checkpoint(path, layers=1, out=tmp_path / "c.qasm", version=3)
    assert summary["num_qubits"] == 6 and summary["two_qubit_gates"] == 5
    assert summary["fidelities"][0] > 1 - 1e-10
    back = parse_qasm((tmp_path / "c.qasm").read_text())
    assert circuit_fidelity(model, back) > 1 - 1e-10


def test_cli_circuit_command(tmp_path, capsys):
    cli = pytest.importorskip("tnborn.cli")
    model = MPSBornMachine.random(7, bond_dim=3, seed=2, dtype="complex128")
    path = tnborn.save(tmp_path / "m.tnb", model)
    out = tmp_path / "c.qasm"
    rc = cli.main(["circuit", str(path), "--layers", "2", "--out", str(out), "--json"])
    assert rc == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["layers"] == 2 and len(summary["fidelities"]) == 2
    back = parse_qasm(out.read_text())
    assert abs(circuit_fidelity(model, back) - summary["fidelities"][-1]) < 1e-10
    # a non-MPS checkpoint is refused with a message, not a traceback
    others = [g for g in tnborn.available_geometries() if g != "mps"]
    if others:
        cls = tnborn.get_geometry(others[0])
        tnborn.save(tmp_path / "o.tnb", cls.random(4, seed=0))
        assert cli.main(["circuit", str(tmp_path / "o.tnb"), "--out", str(tmp_path / "o.qasm")]) == 2
        assert "MPSBornMachine" in capsys.readouterr().err


def test_example_script_runs(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "circuit_bars_and_stripes.py"
    spec = importlib.util.spec_from_file_location("circuit_bars_and_stripes", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--layers", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "circuit_bas.json").read_text())
    assert [r["layers"] for r in result["table"]] == [1, 2]
    for r in result["table"]:
        assert abs(r["fidelity"] - r["fidelity_check"]) < 1e-9
    assert (tmp_path / "circuit_bas.png").stat().st_size > 0
    assert len(parse_qasm((tmp_path / "circuit.qasm").read_text()).gates) == 30


# --------------------------------------------------------------------------- #
# optimised layers
# --------------------------------------------------------------------------- #
from tnborn.circuit import gate_environment, optimize_circuit  # noqa: E402
from tnborn.circuit.states import _apply_gates, _left_canonical, _model_arrays, _overlap, _zero_state  # noqa: E402


def _unitarity_ok(circuit):
    bound = rounding_bound(torch.float64, 64)
    for _, u in circuit.gates:
        assert np.max(np.abs(u.conj().T @ u - np.eye(4))) <= bound


def test_optimised_bond_two_is_exact():
    model = MPSBornMachine.random(8, bond_dim=2, seed=3, dtype="complex128")
    opt, info = optimize_circuit(model, compile_mps(model, layers=1), sweeps=2)
    assert info["fidelity"] >= 1 - 1e-10
    assert _fid(_model_state(model), simulate_circuit(opt)) >= 1 - 1e-10


def test_optimised_beats_analytical_random_mps():
    model = MPSBornMachine.random(10, bond_dim=6, seed=5)
    for k in range(1, 5):
        c = compile_mps(model, layers=k)
        opt, info = optimize_circuit(model, c, sweeps=4, tol=0.0)
        h = [info["fidelity_before"]] + info["history"]
        assert all(b >= a - 1e-10 for a, b in zip(h, h[1:])), h  # polar updates are monotone
        true = _fid(_model_state(model), simulate_circuit(opt))
        assert abs(true - info["fidelity"]) < 1e-9
        assert true >= c.fidelities[-1] - 1e-10
        _unitarity_ok(opt)


def test_gate_environment_contracts_to_overlap():
    rng = np.random.default_rng(1)
    model = MPSBornMachine.random(7, bond_dim=4, seed=2, dtype="complex128")
    target = _left_canonical(_model_arrays(model))
    c = compile_mps(model, layers=2)
    k = 3
    bottom, _ = _apply_gates(_zero_state(7), c.gates[:4], 0, None, 0.0)
    g = _haar(rng, 4)
    env = gate_environment(target, bottom, k)
    full, _ = _apply_gates(bottom, [((k, k + 1), g)], 0, None, 0.0)
    ov = _overlap(target, full)
    assert abs(np.sum(g * env) - ov) <= rounding_bound(torch.float64, 7 * 16)


def test_bas_four_optimised_layers_from_qasm(trained_bas):
    model, _ = trained_bas
    opt, _ = optimize_circuit(model, compile_mps(model, layers=4), sweeps=3, tol=0.0)
    assert _fid(_model_state(model), _run_qasm(to_qasm(opt))) >= 0.65


@pytest.mark.slow
def test_bas_eight_optimised_layers_from_qasm(trained_bas):
    model, _ = trained_bas
    opt, _ = optimize_circuit(model, compile_mps(model, layers=8), sweeps=30, tol=1e-6)
    assert _fid(_model_state(model), _run_qasm(to_qasm(opt))) >= 0.95


# --------------------------------------------------------------------------- #
# cached environments, reference lines, layer growth
# --------------------------------------------------------------------------- #
from tnborn.circuit.analytical import _dagger_layer  # noqa: E402
from tnborn.circuit.optimize import _Environments  # noqa: E402
from tnborn.circuit.states import _orient  # noqa: E402
from tnborn.circuit import (  # noqa: E402
    grow_circuit,
    schmidt_bound,
    staircase_bond,
    truncation_fidelity,
)


def _dense_schmidt_bound(psi: np.ndarray, n: int, chi: int) -> float:
    """min over cuts of the weight of the chi largest squared Schmidt values (dense SVD)."""
    out = 1.0
    for k in range(1, n):
        s = np.linalg.svd(psi.reshape(2**k, 2 ** (n - k)), compute_uv=False)
        out = min(out, float(np.sum(s[:chi] ** 2) / np.sum(s**2)))
    return out


def test_cached_environments_match_direct_contraction():
    # every environment of a sweep over 3 layers (the cache is invalidated at each layer's
    # wrap-around and by the centre moves) equals the contraction from scratch
    model = MPSBornMachine.random(7, bond_dim=4, seed=8, dtype="complex128")
    target = _left_canonical(_model_arrays(model))
    gates = compile_mps(model, layers=3).gates
    rng = np.random.default_rng(0)
    top, ctop = _apply_gates(target, _dagger_layer(gates[1:]), 6, None, 0.0)
    envs = _Environments(top, ctop, _zero_state(7), 0, None, 0.0)
    bound = rounding_bound(torch.float64, 7 * 64)
    for m, (where, _) in enumerate(gates):
        k, _ = _orient(where, gates[m][1])
        env, log_scale = envs.environment(k)
        direct = gate_environment(envs.top, envs.bottom, k)
        assert np.max(np.abs(env * math.exp(log_scale) - direct)) <= bound * max(1.0, np.max(np.abs(direct)))
        envs.apply("bottom", (where, _haar(rng, 4)), None)  # any unitary: the cache must follow
        if m + 1 < len(gates):
            envs.apply("top", gates[m + 1], None)


def test_schmidt_bound_and_truncation_fidelity():
    n = 8
    model = MPSBornMachine.random(n, bond_dim=5, seed=4, dtype="complex128")
    psi = _model_state(model)
    for chi in (1, 2, 3, 4, 16):
        bound = schmidt_bound(model, chi)
        assert abs(bound - _dense_schmidt_bound(psi, n, chi)) <= rounding_bound(torch.float64, 64)
        trunc = truncation_fidelity(model, chi)
        assert trunc <= bound + rounding_bound(torch.float64, 64)
        # a sum of squares (condition one): log(trunc) carries trunc's relative rounding error
        assert abs(math.log(trunc) - truncation_fidelity(model, chi, log=True)) <= rounding_bound(torch.float64, 64)
    # bond 2: quimb's truncation is the state the analytical layer prepares (numpy SVD path)
    assert abs(truncation_fidelity(model, 2) - compile_mps(model, layers=1).fidelities[0]) < 1e-10
    assert abs(truncation_fidelity(model, 16) - 1) < 1e-10 and schmidt_bound(model, 16) == 1.0
    assert staircase_bond(3) == 8
    with pytest.raises(tnborn.ConfigError, match="max_bond must be an integer >= 1"):
        schmidt_bound(model, 0)


def test_staircase_bond_holds_for_random_gates():
    # L layers of arbitrary neighbouring unitaries on |0>: every Schmidt rank <= 2^L
    rng = np.random.default_rng(3)
    n = 8
    for layers in (1, 2, 3):
        gates = [((k, k + 1), _haar(rng, 4)) for _ in range(layers) for k in range(n - 1)]
        psi = simulate_circuit(CompiledCircuit(n, gates, [], n - 1))
        # a singular value that is zero in exact arithmetic is at most the state's error (a 4-term
        # sum per entry and gate, unit norm) plus the SVD's backward error (Weyl): count above that
        zero = rounding_bound(torch.float64, 4 * len(gates) + 2 ** n)
        ranks = []
        for k in range(1, n):
            s = np.linalg.svd(psi.reshape(2**k, 2 ** (n - k)), compute_uv=False)
            ranks.append(int(np.sum(s > zero)))
            assert ranks[-1] <= staircase_bond(layers)
            # the rule is not vacuous: every value counted is far above the threshold
            assert np.all((s <= zero) | (s > 1e3 * zero))
        assert max(ranks) == staircase_bond(layers)  # the bound is attained: the case makes it act


def test_grow_circuit_is_monotone_and_below_the_bound():
    n = 10
    model = MPSBornMachine.random(n, bond_dim=6, seed=5)
    psi = _model_state(model)
    seen = []
    circuit, rows = grow_circuit(model, max_layers=4, sweeps=3, tol=0.0,
                                 progress=lambda row, c: seen.append((row, c)))
    assert [r["layers"] for r in rows] == [1, 2, 3, 4] and len(seen) == 4
    analytical = compile_mps(model, layers=4).fidelities
    tol = rounding_bound(torch.float64, 4 * 16 * n)
    for (row, sub), ana in zip(seen, analytical):
        true = _fid(psi, simulate_circuit(sub))
        assert abs(true - row["fidelity"]) <= tol
        assert abs(row["fidelity_analytical"] - ana) <= tol
        assert row["fidelity"] >= max(ana, row["fidelity_start"]) - tol
        assert row["fidelity"] <= _dense_schmidt_bound(psi, n, 2 ** row["layers"]) + tol
        assert abs(row["log_fidelity"] - math.log(true)) <= tol / true
        assert abs(row["fidelity_per_qubit"] ** n - true) <= tol
        _unitarity_ok(sub)
    fids = [r["fidelity"] for r in rows]
    assert all(b >= a - tol for a, b in zip(fids, fids[1:])), fids
    # the returned circuit is the deepest one; its fidelities are those of its own first k layers
    assert abs(_fid(psi, simulate_circuit(circuit)) - fids[-1]) <= tol
    for k in (1, 2):
        assert abs(_fid(psi, simulate_circuit(circuit.with_layers(k))) - circuit.fidelities[k - 1]) <= tol


def test_grow_circuit_falls_back_to_an_identity_layer(monkeypatch):
    # build the cases where the rules act: a useless analytical layer (start from the
    # identity instead) and an optimisation that lowers the fidelity (keep C_L + identity)
    import tnborn.circuit.growth as tc  # where grow_circuit looks up its steps

    model = MPSBornMachine.random(8, bond_dim=4, seed=6)
    rng = np.random.default_rng(7)
    real = tc._analytical_layer
    calls = []

    def bad_layer(target, cutoff):
        calls.append(1)
        gates, fid = real(target, cutoff)
        if len(calls) <= 2:  # layer 1 (both columns) stays analytical
            return gates, fid
        return [(w, _haar(rng, 4)) for w, _ in gates], fid

    monkeypatch.setattr(tc, "_analytical_layer", bad_layer)
    _, rows = grow_circuit(model, max_layers=2, sweeps=2, tol=0.0)
    assert rows[1]["start"] == "identity"
    assert abs(rows[1]["fidelity_start"] - rows[0]["fidelity"]) <= rounding_bound(torch.float64, 512)
    assert rows[1]["fidelity"] >= rows[0]["fidelity"] - rounding_bound(torch.float64, 512)
    monkeypatch.setattr(tc, "_analytical_layer", real)

    real_opt = tc._optimize

    def worse(target, gates, *args):
        out, history = real_opt(target, gates, *args)
        if len(gates) > 7:  # from layer 2 on: scramble the result
            out = [(w, _haar(rng, 4)) for w, _ in out]
        return out, history

    monkeypatch.setattr(tc, "_optimize", worse)
    seen = []
    _, rows = grow_circuit(model, max_layers=3, sweeps=2, tol=0.0, progress=lambda r, c: seen.append(c))
    psi = _model_state(model)
    for a, b in zip(rows, rows[1:]):
        assert abs(b["fidelity"] - a["fidelity"]) <= rounding_bound(torch.float64, 512)
    assert abs(_fid(psi, simulate_circuit(seen[-1])) - rows[0]["fidelity"]) <= rounding_bound(torch.float64, 512)


def test_grow_circuit_stops_at_the_target():
    exact = MPSBornMachine.random(8, bond_dim=2, seed=3, dtype="complex128")
    circuit, rows = grow_circuit(exact, target_fidelity=0.999, max_layers=5, sweeps=2)
    assert len(rows) == 1 and rows[0]["fidelity"] >= 1 - 1e-10 and circuit.num_layers == 1
    model = MPSBornMachine.random(8, bond_dim=6, seed=3)
    _, rows = grow_circuit(model, target_fidelity=1.0, max_layers=2, sweeps=2)
    assert len(rows) == 2
    for bad in (0, 1.5, -0.1, float("nan"), True):
        with pytest.raises(tnborn.ConfigError, match=r"target_fidelity must be a number in \(0, 1\]"):
            grow_circuit(model, target_fidelity=bad)
    with pytest.raises(tnborn.ConfigError, match="max_layers must be an integer >= 1"):
        grow_circuit(model, max_layers=0)


def test_many_qubits_run_on_mps_and_report_log_fidelity():
    # 60 qubits (no state vector): the log-fidelity equals quimb's overlap of the circuit's
    # MPS with the model's; the stop rule is relative, so sweeps go on while the fidelity
    # (here ~0.007) gains less than tol in absolute terms but more than tol relatively
    n = 60
    model = MPSBornMachine.random(n, bond_dim=6, seed=9, dtype="complex128")
    tol = 1e-3
    circuit, info = optimize_circuit(model, compile_mps(model, layers=1), sweeps=3, tol=tol)
    h = [info["fidelity_before"]] + info["history"]
    gains = np.diff(h)
    assert info["sweeps"] == 3 and np.min(gains[:2]) < tol and np.min(np.diff(np.log(h))[:2]) >= tol, h
    ket = simulate_circuit(circuit, method="mps", max_bond=None, cutoff=0.0)
    target = _left_canonical(_model_arrays(model))
    import quimb.tensor as qtn

    bra = qtn.MatrixProductState([target[0][0]] + target[1:-1] + [target[-1][..., 0]], shape="lpr")
    bra.reindex_({bra.site_ind(k): ket.site_ind(k) for k in range(n)})
    ov = complex(bra.H @ ket)
    ref = math.log(abs(ov) ** 2 / (complex(bra.H @ bra).real * complex(ket.H @ ket).real))
    assert abs(info["log_fidelity"] - ref) <= rounding_bound(torch.float64, 2 * 16 * n) / info["fidelity"]


def test_circuit_layers_example_smoke(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "circuit_layers.py"
    spec = importlib.util.spec_from_file_location("circuit_layers", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--model", "bas", "--smoke", "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]) == 0
    result = json.loads((tmp_path / "o" / "bas_smoke.json").read_text())
    rows = result["table"]
    assert [r["layers"] for r in rows] == [1, 2] and result["num_qubits"] == 9
    model = tnborn.load(tmp_path / "w" / "bas" / "model.tnb")
    # the same residual simulation as grow_circuit (cutoff 1e-14): the spectra of bars and stripes
    # are degenerate, so another cutoff (compile_mps's default 1e-12) can pick another, equally
    # good bond-2 subspace and a fidelity that differs in the 9th digit
    analytical = compile_mps(model, layers=2, cutoff_sim=1e-14).fidelities
    for r, ana in zip(rows, analytical):
        assert abs(r["fidelity_analytical"] - ana) <= rounding_bound(torch.float64, 2 * 16 * 9)
        assert ana - 1e-10 <= r["fidelity"] <= r["schmidt_bound"] + 1e-10
    assert rows[1]["fidelity"] >= rows[0]["fidelity"] - 1e-10
    assert (tmp_path / "o" / "bas_smoke.png").stat().st_size > 0
    assert "| 2 | 48 |" in (tmp_path / "o" / "bas_smoke.md").read_text()
    # max-pooling: a block is ink when any of its pixels is
    img = np.zeros((1, 784), dtype=np.uint8)
    img[0, 28 * 3 + 5] = 1  # row 3, column 5 -> block (1, 2)
    assert np.flatnonzero(mod.downsample(img)[0]).tolist() == [14 * 1 + 2]


def test_svd_falls_back_to_gesvd(monkeypatch):
    # numpy's gesdd can fail to converge on ill-conditioned matrices (it did at 8 layers of
    # the bars-and-stripes growth): make it always fail and get the same circuits from gesvd
    # (the optimised gates themselves are not compared: the polar factor of a rank-deficient
    # environment is not unique, and which one an SVD returns is a matter of rounding)
    model = MPSBornMachine.random(7, bond_dim=4, seed=2)
    ref = compile_mps(model, layers=2).fidelities

    def fail(*args, **kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(np.linalg, "svd", fail)
    c = compile_mps(model, layers=2)
    assert np.allclose(c.fidelities, ref, rtol=0, atol=rounding_bound(torch.float64, 7 * 64))
    opt, info = optimize_circuit(model, c, sweeps=2, tol=0.0)
    assert info["fidelity"] >= ref[-1] - 1e-10
    _unitarity_ok(opt)
    from tnborn.circuit.states import _svd

    with pytest.raises(tnborn.NumericalError, match="non-finite"):
        _svd(np.full((3, 2), np.nan))
    import scipy.linalg

    monkeypatch.setattr(scipy.linalg, "svd", fail)
    with pytest.raises(tnborn.NumericalError, match="gesdd or gesvd"):
        _svd(np.eye(3))
