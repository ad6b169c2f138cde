"""Harness of the step-rule study (guard_study.md): one 10-loop MNIST run with a candidate local update.

Candidate rules were measured by replacing ``tnborn.training.sweep.block_gradient_steps`` with
the numpy re-implementation ``patched`` below (``--cfg '{"mode": ...}'``), on commit abf2565 of
tnborn; ``"mode": "lib"`` / ``"kernel"`` call the library's own local update (with or without
the guard), which is how the rows marked [branch] in guard_study.md were run on this branch.
Appends one JSON line per run to ``--out``. Not an example of the API: it patches internals.

Usage::

    python guard_study_harness.py --name bond0 --seed 0 --cfg '{"mode": "bond", "bound": 0.0}'
"""
from __future__ import annotations
import argparse, json, os, time, sys
from pathlib import Path
import numpy as np, torch
import tnborn
import tnborn.training.sweep as sw
from tnborn.errors import NumericalError

CFG = {}
LOG = []

def patched(matrix, feats, last, batches, lr, *, rule="none", sizes=None, communicator=None,
            max_nll_rise=None, max_shrinks=0, stats=None, **extra):
    if CFG["mode"] == "kernel":
        return ORIG(matrix, feats, last, batches, lr, rule=rule, sizes=sizes, communicator=communicator,
                    max_nll_rise=None, stats=stats, **extra)
    if CFG["mode"] == "lib":
        return ORIG(matrix, feats, last, batches, lr, rule=rule, sizes=sizes, communicator=communicator,
                    max_nll_rise=CFG.get("bound", 0.0), max_shrinks=max_shrinks, stats=stats, **extra)
    mode = CFG["mode"]; bound = CFG.get("bound", 0.0); clip = CFG.get("clip"); delta = CFG.get("delta")
    shrinks = CFG.get("shrinks", 0)
    m = matrix.numpy().copy(); F = feats.numpy(); R = last.numpy()
    nrows = F.shape[0]
    st = stats
    def psi_of(mm, f, r):
        return np.einsum("bk,bk->b", f @ mm, r)
    def nll(p):
        return -2.0 * np.log(np.abs(p)).mean()
    allpsi = psi_of(m, F, R) if mode in ("bond", "bondsign") else None
    for sl, size in zip(batches, sizes):
        f, r = F[sl], R[sl]
        psi = psi_of(m, f, r)
        if not np.all(psi != 0) or not np.all(np.isfinite(psi)):
            raise NumericalError("psi(x) = 0 for a training sample")
        w = 1.0 / psi
        if clip is not None:
            cap = clip * np.median(np.abs(w))
            w = np.clip(w, -cap, cap)
        rho_max = CFG.get("selfclip")
        if rho_max is not None:  # own term changes psi_b by rho_b = (2 lr / B) |F_b|^2 |R_b|^2 / psi_b^2 (relative)
            rho = (2 * lr / size) * (np.einsum("bk,bk->b", f, f) * np.einsum("bd,bd->b", r, r)) / psi ** 2
            w = w * np.minimum(1.0, rho_max / rho)
        clipgm = CFG.get("clipgm")
        if clipgm is not None:  # |w_b| <= c * exp(mean log|w|): a sample's NLL at most 2 ln c above the batch NLL
            cap = clipgm * np.exp(np.mean(np.log(np.abs(w))))
            w = np.clip(w, -cap, cap)
        clipg = CFG.get("clipg")
        if clipg is not None:  # per-sample term norm |G_b| = |F_b||R_b|/|psi_b| = 1/|cos theta_b|
            gn = np.linalg.norm(f, axis=1) * np.linalg.norm(r, axis=1) * np.abs(w)
            cap = clipg * np.median(gn)
            w = w * np.minimum(1.0, cap / gn)
        if CFG.get("log"):
            gn = np.linalg.norm(f, axis=1) * np.linalg.norm(r, axis=1) * np.abs(w)
            LOG.append((float(np.median(gn)), float(gn.max()), float(2 * lr * np.linalg.norm(f.T @ (r * w[:, None]) / size - m)), float(np.mean(np.abs(w) > 10*np.median(np.abs(w))))))
        g = f.T @ (r * w[:, None])
        st.steps += 1
        rate = lr
        accepted = False
        for k in range(shrinks + 1):
            new = (1 - 2 * rate) * m + (2 * rate / size) * g
            nrm = np.linalg.norm(new)
            if not (np.isfinite(nrm) and nrm > 0):
                raise NumericalError("zero or non-finite block")
            new = new / nrm
            if mode == "none":
                ok = True
            elif mode == "batch":
                ok = nll(psi_of(new, f, r)) <= nll(psi) + bound
            elif mode == "bond":
                newall = psi_of(new, F, R)
                ok = nll(newall) <= nll(allpsi) + bound
            elif mode == "sign":  # no psi of the batch crosses zero along the step
                ok = bool(np.all(np.sign(psi_of(new, f, r)) == np.sign(psi)))
            elif mode == "bondsign":
                newall = psi_of(new, F, R)
                ok = bool(np.all(np.sign(newall) == np.sign(allpsi)))
            elif mode == "trust":
                ok = np.linalg.norm(new - m) <= delta
            else:
                raise ValueError(mode)
            if ok:
                m = new
                if mode in ("bond", "bondsign"):
                    allpsi = newall
                st.shrunk += k > 0
                accepted = True
                break
            rate /= 2
        if not accepted:
            st.rejected += 1
    return torch.from_numpy(m)

ORIG = sw.block_gradient_steps
sw.block_gradient_steps = patched
_orig_batches = sw.SweepTrainer._batches
def _whole_batches(self, n, device):
    rows, batches, sizes = _orig_batches(self, n, device)
    if CFG.get("whole") and rows is not None:
        used = torch.zeros(n, dtype=torch.bool); used[rows] = True
        rows = torch.cat([rows, torch.nonzero(~used)[:, 0].to(rows.device)])
    return rows, batches, sizes
sw.SweepTrainer._batches = _whole_batches

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--cfg", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--geometry", default="tree")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--loops", type=int, default=10)
    p.add_argument("--out", default="guard_study_runs.jsonl")
    p.add_argument("--start-batch", type=int, default=100)
    a = p.parse_args()
    CFG.update(json.loads(a.cfg))
    D = Path(os.environ.get("TNBORN_DATA", "/work/shared/data"))
    train = np.load(D / "mnist1k_train_thr50.npy").astype(np.int64)
    test = np.load(D / "mnist1k_other_thr50.npy").astype(np.int64)
    kw = {"layout": "image", "image_shape": (28, 28)} if a.geometry == "tree" else {}
    model = tnborn.get_geometry(a.geometry).random(784, bond_dim=2, seed=a.seed, **kw)
    sched = {"cutoff": [0.3, 5e-5], "lr": [0.05, 1e-3], "batch_size": [a.start_batch, a.batch], "descent_steps": 10,
             "min_bond": 2, "max_nll_rise": None if CFG["mode"] == "kernel" else 0.0, **({"guard_scope": CFG["scope"]} if "scope" in CFG else {}), **CFG.get("settings", {}), "seed": a.seed}
    tr = tnborn.SweepTrainer(model, max_bond={"tree": 8, "mps": 30}[a.geometry], progress=False, **sched)
    t0 = time.perf_counter(); status = "ok"
    try:
        tr.fit(train, loops=a.loops, test_data=test)
    except tnborn.errors.TnbornError as exc:
        status = f"error: {type(exc).__name__}: {str(exc)[:200]}"
    per = [h for h in tr.history if float(h["loop"]).is_integer()]
    out = {"name": a.name, "start_batch": a.start_batch, "cfg": CFG, "seed": a.seed, "geometry": a.geometry, "batch": a.batch, "status": status,
           "loops_done": len(per), "train_nll": per[-1]["train_nll"] if per else None,
           "test_nll": per[-1]["test_nll"] if per else None,
           "curve": [round(h["train_nll"], 2) for h in per],
           "steps": tr.step_stats.steps, "shrunk": tr.step_stats.shrunk, "rejected": tr.step_stats.rejected,
           "fallbacks": tr.fallbacks, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out), flush=True)
    if LOG:
        L = np.array(LOG); out["log"] = {"median_gn": float(np.median(L[:,0])), "p99_maxgn": float(np.quantile(L[:,1], 0.99)), "frac_clipped10": float(L[:,3].mean()), "step_q": [float(q) for q in np.quantile(L[:,2], [0.5, 0.9, 0.99, 0.999])]}
        print(out["log"])
    with open(a.out, "a") as fh:
        fh.write(json.dumps(out) + "\n")

main()
