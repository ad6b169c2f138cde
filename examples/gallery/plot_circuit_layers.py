"""
Circuits: fidelity against the number of layers
===============================================

Compile a trained MPS Born machine into staircase layers of neighbouring
two-qubit gates and compare three ways of choosing the gates:

* **analytical** layers (Ran's algorithm, :func:`tnborn.circuit.compile_mps`):
  each layer prepares the best bond-2 approximation of what the previous
  layers left;
* **optimised** layers (:func:`tnborn.circuit.grow_circuit`, the
  ``tnborn circuit --layers auto`` of the command line): a new analytical
  layer in front of the optimised circuit, then polar (Evenbly-Vidal) sweeps
  over every gate until a sweep gains less than ``tol`` in log-fidelity;
* two **reference lines** at the bond dimension ``2^L`` that ``L`` staircase
  layers can reach: the model truncated to that bond dimension by SVD, and the
  bound no state of that bond dimension can exceed (per cut, the weight of
  the ``2^L`` largest squared Schmidt values).

The first part runs here, on the bars-and-stripes model of ``tnborn train``.
The second plots the stored results of ``examples/circuit_layers.py`` for
8 layers of that model and for a 196-qubit MNIST model (14 x 14 images),
which take minutes rather than seconds.
"""

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import tnborn
from tnborn.circuit import compile_mps, grow_circuit, parse_qasm, simulate_circuit, to_qasm

torch.set_num_threads(2)

# %%
# Train the default model of ``tnborn train``: 4 x 4 bars and stripes with
# the authors' settings, 4 loops from a random bond-2 MPS (seed 0). It learns
# the uniform distribution over the 30 patterns (NLL ``ln 30``) with bond
# dimensions up to 16.
data = tnborn.bars_and_stripes(4)
model = tnborn.MPSBornMachine.random(16, bond_dim=2, seed=0)
tnborn.SweepTrainer(model, lr=0.1, descent_steps=10, cutoff=5e-5, progress=False).fit(data, loops=4)
print(f"NLL {model.nll(data):.4f} (ln 30 = {math.log(30):.4f}), bonds {model.bond_dims()}")

# %%
# Grow optimised layers up to 4, with at most 10 sweeps per layer count
# (the stored run below uses 30), and compile 4 analytical layers. Every
# reported fidelity is exact: the circuit's state ``C|0>`` is simulated as an
# MPS without truncation.
circuit, rows = grow_circuit(model, max_layers=4, sweeps=10, tol=1e-6)
analytical = compile_mps(model, layers=4, cutoff_sim=1e-14)
print("compile_mps:", [round(f, 4) for f in analytical.fidelities])  # the analytical column
print("layers  analytical  optimised  truncation  bound")
for r in rows:
    print(f"{r['layers']:6d}  {r['fidelity_analytical']:10.4f}  {r['fidelity']:9.4f}  "
          f"{r['truncation_fidelity']:10.4f}  {r['schmidt_bound']:5.4f}")

# %%
# The written OpenQASM uses only ``u3`` and ``cx`` (three per two-qubit gate)
# and prepares the same state: parse it back and compare state vectors.
qasm = to_qasm(circuit)
psi = simulate_circuit(parse_qasm(qasm))
ref = simulate_circuit(circuit)
print(f"{qasm.count('cx ')} cx gates; |<C|C_qasm>|^2 = {abs(ref.conj() @ psi) ** 2:.12f}")


def plot_rows(ax, rows, title, log=False):
    """Fidelity against layers: analytical, optimised and the two references."""
    ks = [r["layers"] for r in rows]
    ax.plot(ks, [r["schmidt_bound"] for r in rows], "k:", marker=".", label=r"bound at bond $2^L$")
    ax.plot(ks, [r["truncation_fidelity"] for r in rows], "--", color="gray", marker="s",
            label=r"MPS truncated to bond $2^L$")
    ax.plot(ks, [r["fidelity"] for r in rows], "o-", label="optimised layers")
    ax.plot(ks, [r["fidelity_analytical"] for r in rows], "^-", label="analytical layers")
    ax.set_xlabel("layers $L$")
    ax.set_ylabel(r"fidelity $|\langle\psi|C|0\rangle|^2$")
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


fig, ax = plt.subplots(figsize=(5, 4))
plot_rows(ax, rows, "bars and stripes, computed here (10 sweeps)")
fig.tight_layout()

# %%
# The stored runs of ``examples/circuit_layers.py`` (JSON, markdown and PNG
# in ``examples/results/circuit_layers``)::
#
#     python examples/circuit_layers.py --model bas --layers 8 --out examples/results/circuit_layers
#     python examples/circuit_layers.py --model mnist14 --layers 5 --max-bond-sim 64 \
#         --out examples/results/circuit_layers
#
# For bars and stripes, 4 optimised layers already reach the bond dimension
# 16 of the model (the references are 1 from there on); analytical layers stay
# near 0.6. The MNIST model (the paper's 1000 training images max-pooled to
# 14 x 14, ``tnborn train --max-bond 10``, 2 loops) has 196 qubits: its
# fidelities are small, so the plot is logarithmic, and the fidelity per
# qubit ``F^(1/N)`` is the more telling number.
try:
    here = Path(__file__).resolve().parent
except NameError:  # run interactively
    here = Path.cwd()
results = here.parent / "results" / "circuit_layers"
stored = {name: json.loads((results / f"{name}.json").read_text())
          for name in ("bas", "mnist14") if (results / f"{name}.json").is_file()}
if stored:
    fig, axes = plt.subplots(1, len(stored), figsize=(5 * len(stored), 4), squeeze=False)
    for ax, (name, result) in zip(axes[0], stored.items()):
        log = min(r["fidelity_analytical"] for r in result["table"]) < 0.05
        plot_rows(ax, result["table"], f"{name}: {result['num_qubits']} qubits, max bond "
                  f"{max(result['bond_dims'])}", log=log)
    fig.tight_layout()
    for name, result in stored.items():
        print(f"{name}: " + ", ".join(f"L={r['layers']}: {r['fidelity_analytical']:.3g} -> {r['fidelity']:.3g} "
                                      f"(per qubit {r['fidelity_per_qubit']:.4f})" for r in result["table"]))
else:
    print(f"NOTE: no stored results in {results}")
