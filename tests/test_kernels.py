"""The compiled two-site kernels (tnborn.kernels) against the plain torch path.

Every case builds the same quantity twice, once with ``set_kernels("numba")``
and once with the plain torch code the sweep trainer runs otherwise (the
design matrix of ``_design`` and ``block_gradient_steps``; ``contract_select``
and ``normalise_rows`` for the environments), and compares them in float64 to
1e-12 relative (the issue's requirement). The tensors are positive (the
authors' uniform initialisation), so psi has no cancellation: the two paths
differ only by the order of their sums, a few ulps per result on these small
shapes, far below 1e-12. The whole-sweep comparison uses the first-order
rounding bound of :func:`tolerances.rounding_bound`.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tnborn import MPSBornMachine, SweepTrainer, kernels
from tnborn.environments import EnvironmentCache
from tnborn.errors import ConfigError, NumericalError
from tnborn.geometries.mps import chain as mk
from tnborn.training.sweep import _design, block_gradient_steps

from conftest import all_configs, amplitude_condition, dense_psi, record_cutoff_margins
from tolerances import rounding_bound

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")

REL = 1e-12


@pytest.fixture(autouse=True)
def _reset_choice():
    yield
    kernels.set_kernels(None)


def _positive_mps(dims, seed):
    """An MPS with bond dimensions ``dims`` and uniform [0.05, 1) entries."""
    g = torch.Generator().manual_seed(seed)
    full = [1] + list(dims) + [1]
    arrays = [0.05 + 0.95 * torch.rand(full[k], 2, full[k + 1], generator=g, dtype=torch.float64)
              for k in range(len(full) - 1)]
    return MPSBornMachine(arrays)


def _data(n, num_vars, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n, num_vars), generator=g, dtype=torch.int64)


def _plain_steps(model, block, envs, x, rows, batches, lr):
    """The sweep trainer's plain path (sweep.py, ``new is None`` branch), gradient steps only."""
    feats, last, order = _design(block, envs, x, rows, model.phys_dim)
    perm = [block.inds.index(ix) for ix in order] + [i for i, ix in enumerate(block.inds) if ix not in order]
    data = block.data.permute(*perm)
    shape = data.shape
    matrix = data.reshape(feats.shape[1], -1)
    matrix = matrix / torch.linalg.vector_norm(matrix)
    matrix = block_gradient_steps(matrix, feats, last, batches, lr)
    return matrix.reshape(shape).permute(*[perm.index(i) for i in range(len(perm))])


def _block_and_envs(model, x, k, leftward):
    source, target = (k + 1, k) if leftward else (k, k + 1)
    # no canonicalisation: positive tensors give positive environments, so psi has no cancellation
    block = model.merge(source, target)
    cache = EnvironmentCache(model, x)
    return block, cache.block_environments(block)


# (bond dims, bond k, leftward?): interior bonds, both edge bonds, unequal outer bonds
CASES = [
    ((2, 4, 3, 5, 2), 2, True),
    ((2, 4, 3, 5, 2), 0, False),   # left edge: no left environment
    ((2, 4, 3, 5, 2), 4, True),    # right edge: no right environment
    ((2, 4, 8, 4, 2), 1, False),
    ((2, 3, 7, 6, 2), 2, False),
]


@pytest.mark.parametrize("dims,k,leftward", CASES)
@pytest.mark.parametrize("n,batch,steps", [(37, 10, 4), (37, None, 3), (50, 7, 10)])
def test_two_site_steps_match_plain_path(dims, k, leftward, n, batch, steps):
    model = _positive_mps(dims, seed=k + n)
    x = _data(n, len(dims) + 1, seed=n)
    block, envs = _block_and_envs(model, x, k, leftward)
    if batch is None:
        rows, batches = None, [slice(None)] * steps
    else:  # a shuffled stream as the trainer draws it: batch sizes that do not divide n, repeats
        g = torch.Generator().manual_seed(1)
        rows = torch.cat([torch.randperm(n, generator=g) for _ in range(3)])[: batch * steps]
        batches = [slice(i * batch, (i + 1) * batch) for i in range(steps)]
    lr = 0.05
    kernels.set_kernels("torch")
    assert kernels.two_site_steps(block, envs, x, rows, batches, lr) is None
    want = _plain_steps(model, block, envs, x, rows, batches, lr)
    kernels.set_kernels("numba")
    got = kernels.two_site_steps(block, envs, x, rows, batches, lr)
    assert got is not None and got.shape == block.data.shape and got.dtype == torch.float64
    err = float(torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want))
    assert err <= REL, err
    # the kernel normalises the block as the plain path does
    assert abs(float(torch.linalg.vector_norm(got)) - 1.0) <= REL


def test_uneven_step_slices():
    """Steps of different lengths (a last, shorter batch) use their own 1/B."""
    model = _positive_mps((2, 4, 4, 2), seed=3)
    x = _data(23, 5, seed=3)
    block, envs = _block_and_envs(model, x, 1, False)
    rows = torch.arange(23)
    batches = [slice(0, 10), slice(10, 20), slice(20, 23)]
    want = _plain_steps(model, block, envs, x, rows, batches, 0.1)
    kernels.set_kernels("numba")
    got = kernels.two_site_steps(block, envs, x, rows, batches, 0.1)
    assert float(torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want)) <= REL


def test_zero_psi_falls_back_to_plain_path():
    """psi = 0 for a sample: the kernel declines, so the plain path raises its precise error."""
    model = _positive_mps((2, 3, 2), seed=0)
    x = _data(8, 4, seed=0)
    block, envs = _block_and_envs(model, x, 1, False)
    ix = next(iter(envs))
    vec, log = envs[ix]
    vec = vec.clone()
    vec[3] = 0.0
    bad = {**envs, ix: (vec, log)}
    kernels.set_kernels("numba")
    assert kernels.two_site_steps(block, bad, x, None, [slice(None)], 0.1) is None
    with pytest.raises(NumericalError, match="psi"):
        _plain_steps(model, block, bad, x, None, [slice(None)], 0.1)


def test_kernel_declines_outside_its_domain():
    model = _positive_mps((2, 3, 2), seed=0)
    x = _data(8, 4, seed=0)
    block, envs = _block_and_envs(model, x, 1, False)
    kernels.set_kernels("numba")
    as_complex = dataclasses.replace(block, data=block.data.to(torch.complex128))
    assert kernels.two_site_steps(as_complex, envs, x, None, [slice(None)], 0.1) is None
    # a block with its physical indices not next to each other is not chain-shaped
    swapped = dataclasses.replace(block, inds=(block.inds[1], block.inds[0], *block.inds[2:]),
                                  data=block.data.transpose(0, 1))
    assert kernels.two_site_steps(swapped, envs, x, None, [slice(None)], 0.1) is None


def test_a_chain_passed_through_from_quimb_uses_the_kernel_too():
    """Applicability is read off the block, not the geometry's name: any chain-shaped block qualifies."""
    import tnborn

    net = tnborn.from_quimb(_positive_mps((2, 4, 3, 2), seed=5).tn.copy())
    assert net.geometry == "network"
    x = _data(29, 5, seed=2)
    block, envs = _block_and_envs(net, x, 1, False)
    want = _plain_steps(net, block, envs, x, None, [slice(None)] * 4, 0.05)
    kernels.set_kernels("numba")
    got = kernels.two_site_steps(block, envs, x, None, [slice(None)] * 4, 0.05)
    assert got is not None
    assert float(torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want)) <= REL


@pytest.mark.parametrize("din,dout,leftward", [(1, 2, False), (3, 5, False), (6, 4, True), (5, 5, True)])
def test_site_message_matches_plain_path(din, dout, leftward):
    g = torch.Generator().manual_seed(din * 7 + dout)
    n = 41
    x = _data(n, 3, seed=din)
    a = 0.05 + torch.rand((dout, 2, din) if leftward else (din, 2, dout), generator=g, dtype=torch.float64)
    if leftward:  # incoming from the right: the (Din, d, Dout) view is a permutation
        a = a.permute(2, 1, 0)
    vec = torch.rand(n, din, generator=g, dtype=torch.float64)
    vec[5] = 0.0  # a zero row: log = -inf, vector stays zero
    log = torch.randn(n, generator=g, dtype=torch.float64)
    want_v, want_l = mk.normalise_rows(mk.contract_select(vec, a, x[:, 1]), log)
    kernels.set_kernels("numba")
    got_v, got_l = kernels.mps_site_message(a, vec, log, x, 1)
    assert torch.isneginf(got_l[5]) and torch.isneginf(want_l[5])
    assert torch.equal(got_v[5], want_v[5])
    keep = torch.isfinite(want_l)
    assert float((got_v - want_v).abs().max()) <= REL
    assert float((got_l[keep] - want_l[keep]).abs().max() / want_l[keep].abs().max()) <= REL


def _fit(choice, data, seed=0):
    kernels.set_kernels(choice)
    model = _positive_mps((2, 2, 2, 2, 2, 2, 2), seed=11)
    trainer = SweepTrainer(model, lr=0.05, cutoff=1e-3, max_bond=6, batch_size=9, descent_steps=5,
                           min_bond=2, seed=seed, progress=False)
    hist = trainer.fit(data, loops=3)
    return [h["train_nll"] for h in hist], [h["bond_dims"] for h in hist], model


def test_whole_sweep_same_nll_as_plain_path(monkeypatch):
    """Three loops of mini-batch training (batch 9 of 40 rows): same NLL and bond dims.

    One update at a time (the compiled chain run of tests/test_compiled.py switched off),
    so that every update goes through :func:`kernels.two_site_steps`.
    """
    import tnborn.training.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "compiled_updates", lambda *args: [])
    data = _data(40, 8, seed=5)
    margins = record_cutoff_margins(monkeypatch)
    nll_t, dims_t, m_t = _fit("torch", data)
    monkeypatch.undo()
    monkeypatch.setattr(sweep_module, "compiled_updates", lambda *args: [])
    used = []
    steps = kernels.two_site_steps

    def counted(*args):
        out = steps(*args)
        used.append(out is not None)
        return out

    monkeypatch.setattr(kernels, "two_site_steps", counted)
    nll_n, dims_n, m_n = _fit("numba", data)
    assert used and all(used)  # every update of the numba run went through the kernel
    updates = 3 * 2 * (8 - 2)
    # equal bond dimensions follow from the rounding bound only if no singular value of a plain-path
    # split lies within it of the cutoff (unit-norm blocks of rank <= 12: s_0 >= 1 / sqrt(12))
    ops = updates * 5 * (9 + 4 * 36)
    assert len(margins) == updates and min(margins) > rounding_bound(torch.float64, ops) * 12 ** 0.5
    assert dims_n == dims_t
    bound = rounding_bound(torch.float64, ops, scale=max(nll_t))
    for a, b in zip(nll_n, nll_t):
        assert abs(a - b) <= bound
    lp_t, lp_n = m_t.log_prob(data), m_n.log_prob(data)
    assert float((lp_t - lp_n).abs().max()) <= bound


def test_choice_validation(monkeypatch):
    with pytest.raises(ConfigError, match="kernels must be one of"):
        kernels.set_kernels("fast")
    monkeypatch.setenv("TNBORN_KERNELS", "gpu")
    with pytest.raises(ConfigError, match="TNBORN_KERNELS must be one of"):
        kernels.get_kernels()
    monkeypatch.setenv("TNBORN_KERNELS", "torch")
    assert kernels.get_kernels() == "torch"
    assert kernels.set_kernels("numba") == "numba"
    assert kernels.set_kernels(None) == "torch"


def test_auto_leaves_large_work_to_blas():
    """``auto``: above NUMBA_MAX_WORK per step the plain path runs."""
    model = _positive_mps((2, 4, 3, 2), seed=0)
    x = _data(10, 5, seed=0)
    block, envs = _block_and_envs(model, x, 1, False)
    kernels.set_kernels("auto")
    assert kernels.two_site_steps(block, envs, x, None, [slice(None)], 0.1) is not None
    old = kernels.NUMBA_MAX_WORK
    try:
        kernels.NUMBA_MAX_WORK = 10 * 2 * 3 - 1  # rows * Dl * Dr of this step is 60
        assert kernels.two_site_steps(block, envs, x, None, [slice(None)], 0.1) is None
    finally:
        kernels.NUMBA_MAX_WORK = old


#: Bond dimensions of the brute-force chains (N <= 10).
CHAIN_DIMS = [(2, 4, 8, 16, 32, 16, 8, 4, 2), (2, 1, 2, 1, 2), (3, 5, 7, 5, 3)]


def _chain_sites(dims, seed, dtype=torch.float64, positive=False):
    g = torch.Generator().manual_seed(seed)
    full = [1] + list(dims) + [1]
    draw = (lambda *sh: 0.05 + 0.95 * torch.rand(*sh, generator=g, dtype=torch.float64)) if positive else \
        (lambda *sh: torch.randn(*sh, generator=g, dtype=torch.float64))
    return [draw(full[k], 2, full[k + 1]).to(dtype) for k in range(len(full) - 1)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dims", CHAIN_DIMS)
def test_chain_log_amplitude_equals_brute_force(dims, dtype):
    """log|psi| and the sign of every configuration against quimb's dense contraction (float64),
    within the rounding of the chain: ``kappa(x)`` times the steps along a path. The dims take
    both message paths (Din * Dout above and below SMALL_MESSAGE) and bonds of 1 inside the chain."""
    sites = _chain_sites(dims, seed=len(dims), dtype=dtype)
    model = MPSBornMachine([a.to(torch.float64) for a in sites])
    n = model.num_variables
    x = all_configs(n)
    psi = dense_psi(model)
    kernels.set_kernels("numba")
    log_abs, sign = kernels.chain_log_amplitude(sites, x)
    assert log_abs.dtype == dtype and sign.dtype == dtype and log_abs.shape == sign.shape == (2 ** n,)
    bound = rounding_bound(dtype, sum(dims) + n) * 2 * amplitude_condition(model)
    assert bool(((log_abs.double() - torch.log(psi.abs())).abs() <= bound).all())
    # the sign is determined where rounding cannot reach |psi| (relative bound below one)
    sure = bound < 1
    assert torch.equal(sign.double()[sure], torch.sign(psi)[sure]) and bool(sure.any())


def test_the_brute_force_chains_take_both_message_paths():
    from tnborn.kernels._numba_mps import SMALL_MESSAGE

    works = {dl * dr for dims in CHAIN_DIMS for dl, dr in zip(dims, dims[1:] + (1,))}  # messages after site 0
    assert min(works) <= SMALL_MESSAGE < max(works)
    assert any(1 in dims for dims in CHAIN_DIMS)  # a message with Din = 1 inside a chain (it divides)


def test_chain_log_amplitude_equals_plain_path_on_784_sites():
    """A positive state (no cancellation: kappa = 1) at MNIST size: both paths to rounding."""
    sites = _chain_sites([30] * 783, seed=3, positive=True)
    x = _data(40, 784, seed=2)
    kernels.set_kernels("numba")
    got, got_sign = kernels.chain_log_amplitude(sites, x)
    want, want_sign = mk.log_amplitude_chain(sites, x)
    # each path: the products' rounding (kappa = 1: no cancellation), relative to psi, plus the sum
    # of 783 log-scales, relative to |log psi| (> 1 here, so it bounds both)
    bound = 2 * rounding_bound(torch.float64, 30 * 783 + 784)
    assert float((got - want).abs().max()) <= bound * float(want.abs().max())
    assert torch.equal(got_sign, want_sign) and bool((got_sign == 1).all())


def test_chain_log_amplitude_zero_and_nan_as_the_plain_path():
    """A zero amplitude is ``-inf`` with sign 0; a NaN entry kills the rows that pass it, like the plain path."""
    sites = [a.clone() for a in _chain_sites((3, 3, 3, 3, 3), seed=0)]
    sites[2][0, 1, 0] = float("nan")
    sites[3][:, 0, :] = 0.0
    x = all_configs(6)
    kernels.set_kernels("numba")
    got = kernels.chain_log_amplitude(sites, x)
    want = mk.log_amplitude_chain(sites, x)
    dead = (x[:, 3] == 0) | (x[:, 2] == 1)
    assert bool(torch.isneginf(got[0][dead]).all()) and bool((got[1][dead] == 0).all())
    assert bool(torch.isfinite(got[0][~dead]).all()) and bool((~dead).any())
    assert torch.equal(torch.isneginf(got[0]), torch.isneginf(want[0])) and torch.equal(got[1], want[1])


def test_chain_log_amplitude_auto_limit_and_domain(monkeypatch):
    """``auto`` runs it up to LOG_AMPLITUDE_MAX_WORK (Dl * Dr of the largest site), never for
    complex sites, sites that need gradients or no rows; the model's log P takes it where it applies."""
    sites = _chain_sites((2, 4, 3, 2), seed=0)
    x = _data(10, 5, seed=0)
    kernels.set_kernels("auto")
    assert kernels.chain_log_amplitude(sites, x) is not None
    monkeypatch.setattr(kernels, "LOG_AMPLITUDE_MAX_WORK", 4 * 3 - 1)
    assert kernels.chain_log_amplitude(sites, x) is None
    monkeypatch.undo()
    assert kernels.chain_log_amplitude([a.to(torch.complex128) for a in sites], x) is None
    assert kernels.chain_log_amplitude([a.requires_grad_() for a in sites], x) is None
    assert kernels.chain_log_amplitude([a.detach() for a in sites], x[:0]) is None
    calls = []
    real = kernels.chain_log_amplitude
    monkeypatch.setattr(kernels, "chain_log_amplitude", lambda *a: calls.append(1) or real(*a))
    model = MPSBornMachine([a.detach() for a in sites])
    model.log_prob(x)
    assert calls and torch.allclose(model.log_prob(x), model.log_prob(x.numpy()))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("conditional", [False, True])
def test_zipper_binary_draws_what_the_plain_path_draws(dtype, conditional):
    """The same uniforms, the same decisions. A decision at site ``j`` can differ only if its uniform
    falls within the rounding of ``w / tot`` (``j (D + 4)`` steps) of the boundary: at most ``2 x``
    that bound per draw. Summed over the draws that is below one in float64 (so every row is
    identical) but not in float32, where only that many rows may differ. Log-probabilities of the
    identical rows agree to rounding. Bond 40 at 300 sites: both the plain rows and the rescaling."""
    model = MPSBornMachine.random(300, 40, seed=4, dtype=dtype)
    sites = [a.contiguous() for a in model._canonical_sites()]
    b = 400
    m = torch.ones((b, 1), dtype=dtype)
    xk = _data(b, 300, seed=1)
    free = (torch.rand(b, 300, generator=torch.Generator().manual_seed(2)) < 0.7) if conditional else None
    kernels.set_kernels("numba")
    gen = torch.Generator().manual_seed(9)
    got = kernels.zipper_binary(sites, m, xk, free, gen)
    after = gen.get_state()
    want = mk.zipper_binary(sites, m, xk, free, torch.Generator().manual_seed(9))
    assert got is not None
    same = (got[0] == want[0]).all(dim=1)
    may_differ = b * sum(2 * rounding_bound(dtype, j * (40 + 4)) for j in range(1, 301))
    assert int((~same).sum()) <= may_differ and (dtype != torch.float64 or bool(same.all()))
    if free is not None:
        assert torch.equal(got[0][~free], xk[~free])  # known values kept
    # the log-probabilities: 300 ratios of sums of D = 40 squares, relative to |log p| (hundreds)
    bound = rounding_bound(dtype, 300 * (40 + 4)) * float(want[1].abs().max())
    assert float((got[1][same] - want[1][same]).abs().max()) <= bound
    check = torch.Generator().manual_seed(9)
    torch.rand(300, b, dtype=torch.float64, generator=check)
    assert torch.equal(after, check.get_state())  # the uniforms the plain path draws, no more


def test_zipper_binary_leaves_a_zero_weight_to_the_plain_path():
    """A row that reaches zero amplitude: the kernel returns None and puts the generator back."""
    sites = [a.contiguous() for a in MPSBornMachine.random(6, 2, seed=0)._canonical_sites()]
    sites[3] = sites[3].clone()
    sites[3][:, 1, :] = 0.0  # psi = 0 whenever x_3 = 1: a known 1 there reaches zero weight
    xk = torch.ones((5, 6), dtype=torch.int64)
    free = torch.ones((5, 6), dtype=torch.bool)
    free[:, 3] = False
    kernels.set_kernels("numba")
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert kernels.zipper_binary(sites, torch.ones((5, 1), dtype=torch.float64), xk, free, gen) is None
    assert torch.equal(gen.get_state(), state)
    with pytest.raises(NumericalError, match="zero amplitude"):
        mk.zipper_binary(sites, torch.ones((5, 1), dtype=torch.float64), xk, free, gen)


def test_zipper_binary_domain():
    sites = [a.contiguous() for a in MPSBornMachine.random(5, 3, seed=0)._canonical_sites()]
    m, xk, gen = torch.ones((4, 1), dtype=torch.float64), _data(4, 5, seed=0), torch.Generator()
    kernels.set_kernels("auto")
    assert kernels.zipper_binary(sites, m, xk, None, gen) is not None
    assert kernels.zipper_binary([a.to(torch.complex128) for a in sites], m.to(torch.complex128), xk, None,
                                 gen) is None
    assert kernels.zipper_binary(sites, m.float(), xk, None, gen) is None  # dtypes differ
    assert kernels.zipper_binary(sites, m[:0], xk[:0], None, gen) is None
    kernels.set_kernels("torch")
    assert kernels.zipper_binary(sites, m, xk, None, gen) is None


def test_chain_kernels_refuse_what_they_would_read_out_of_bounds():
    """They read the sites by address and the values as indices: bad shapes or values are refused."""
    sites = _chain_sites((2, 3, 2), seed=0)
    x = _data(4, 4, seed=0)
    kernels.set_kernels("numba")
    for bad_x in (x[:, :3], x + 2, -x - 1):
        with pytest.raises(ValueError, match="chain kernel input"):
            kernels.chain_log_amplitude(sites, bad_x)
    broken = [sites[0], sites[1][:, :, :2], sites[2], sites[3]]  # Dr = 2 meets Dl = 3
    with pytest.raises(ValueError, match="matching bonds"):
        kernels.chain_log_amplitude(broken, x)
    with pytest.raises(ValueError, match="matching bonds"):
        kernels.chain_log_amplitude(sites[:3], x[:, :3])  # the last site's Dr is 2, not 1
    m, gen = torch.ones((4, 1), dtype=torch.float64), torch.Generator()
    free = torch.ones((4, 4), dtype=torch.bool)
    free[:, 1] = False
    with pytest.raises(ValueError, match="known values"):
        kernels.zipper_binary(sites, m, x + 2 * (~free), free, gen)  # a known value of 2
    with pytest.raises(ValueError, match="bool mask"):
        kernels.zipper_binary(sites, m, x, free[:, :3], gen)
    with pytest.raises(ValueError, match="matching bonds"):
        kernels.zipper_binary(sites, torch.ones((4, 2), dtype=torch.float64), x, None, gen)
    # unknown entries may hold anything: they are never read
    assert kernels.zipper_binary(sites, m, x + 5 * free, free, gen) is not None
    a, vec, log = sites[1], torch.rand(4, 2, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    assert kernels.mps_site_message(a, vec, log, x, 1) is not None
    for args in ((a, vec, log, x, 4), (a, vec, log, x + 2, 1), (a, vec[:, :1], log, x, 1),
                 (a, vec, log[:3], x, 1)):
        with pytest.raises(ValueError, match="chain kernel input"):
            kernels.mps_site_message(*args)


def _split_with(choice, dims, k, target_left, **rule):
    kernels.set_kernels(choice)
    model = _positive_mps(dims, seed=7)
    model.move_center(k)
    block = model.merge(k, k + 1)
    info = model.split(block, target=k if target_left else k + 1, **rule)
    return model, info


@pytest.mark.parametrize("rule,expect_dim", [
    # nothing truncated: the rank. Not cutoff=0 ("keep s > 0"): at k=2 the 8 x 8 block has rank 5
    # (bond 5), and whether LAPACK returns its three numerical zeros as 1e-21 or as exactly 0 is the
    # library's choice; 1e-10 lies 10 decades from both the zeros and the true values
    (dict(cutoff=1e-10), None),
    (dict(cutoff=0.01, min_bond=1), "cutoff"),         # the cutoff acts
    (dict(cutoff=0.0, max_bond=3), 3),                 # the cap acts
    (dict(cutoff=0.99, min_bond=2), 2),                # min_bond acts (the cutoff would keep 1)
])
@pytest.mark.parametrize("k,target_left", [(2, True), (2, False), (0, False), (4, True)])
def test_split_matrix_matches_plain_path(monkeypatch, rule, expect_dim, k, target_left):
    dims = (2, 4, 5, 4, 2)
    margins = record_cutoff_margins(monkeypatch)
    m_t, info_t = _split_with("torch", dims, k, target_left, **rule)
    m_n, info_n = _split_with("numba", dims, k, target_left, **rule)
    # LAPACK via numba and via torch: equal kept dimensions need every singular value clear of the
    # cutoff by more than the rounding of an SVD of the (at most 10 x 10) block
    assert len(margins) == 1 and margins[0] > rounding_bound(torch.float64, 100), margins
    assert info_n.bond_dim == info_t.bond_dim
    full = min(2 * (dims[k - 1] if k else 1), 2 * (dims[k + 1] if k + 1 < len(dims) else 1), dims[k])
    if isinstance(expect_dim, int):
        assert info_n.bond_dim == min(expect_dim, full)
    elif expect_dim is None:
        assert info_n.bond_dim == full
    elif full > 2:  # interior bonds (at the edge bonds the rank is 2 and nothing is cut)
        assert info_n.bond_dim < full and 0 < info_n.max_discarded < rule["cutoff"]
    assert abs(info_n.max_discarded - info_t.max_discarded) <= REL
    assert abs(info_n.discarded_weight - info_t.discarded_weight) <= REL
    assert float((info_n.singular_values - info_t.singular_values).abs().max()) <= REL
    assert m_n.center == m_t.center
    # the halves agree up to the sign of each singular pair: compare their product and the state
    bn, bt = m_n.merge(k, k + 1).data, m_t.merge(k, k + 1).data
    assert float(torch.linalg.vector_norm(bn - bt) / torch.linalg.vector_norm(bt)) <= REL
    x = _data(30, len(dims) + 1, seed=2)
    lp_n, lp_t = m_n.log_prob(x), m_t.log_prob(x)
    assert float((lp_n - lp_t).abs().max()) <= REL * float(lp_t.abs().max())
    # the half that holds no singular values is an isometry
    a = m_n.site_arrays()[k + 1 if target_left else k]
    mat = a.reshape(a.shape[0], -1) if target_left else a.reshape(-1, a.shape[2])
    gram = mat @ mat.T if target_left else mat.T @ mat
    assert float((gram - torch.eye(gram.shape[0], dtype=gram.dtype)).abs().max()) <= REL


def test_split_matrix_declines_eig_method_and_bad_blocks():
    kernels.set_kernels("numba")
    a = torch.rand(4, 6, dtype=torch.float64)
    assert kernels.split_matrix(a, 0.0, None, 1, True, "svd:eig") is None
    assert kernels.split_matrix(torch.zeros(4, 6, dtype=torch.float64), 0.0, None, 1, True, "svd") is None
    bad = a.clone()
    bad[1, 2] = float("nan")
    assert kernels.split_matrix(bad, 0.0, None, 1, True, "svd") is None
    # blocks that gesdd would rescale before decomposing are left to the plain path
    assert kernels.split_matrix(a * 1e-200, 0.0, None, 1, True, "svd") is None
    assert kernels.split_matrix(a * 1e200, 0.0, None, 1, True, "svd") is None
    assert kernels.split_matrix(a.float() * 1e-15, 0.0, None, 1, True, "svd") is None
    assert kernels.split_matrix(a * 1e-100, 0.0, None, 1, True, "svd") is not None
    left, right, s, keep, max_disc, weight = kernels.split_matrix(a, 0.0, 3, 1, True, "svd")
    assert keep == 3 and left.shape == (4, 3) and right.shape == (3, 6) and s.shape == (4,)
    assert max_disc == float(s[3] / s[0]) and weight == pytest.approx(float(s[3] ** 2 / (s ** 2).sum()), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(60, 60), (24, 60), (60, 24), (7, 3), (3, 7), (1, 5), (5, 1)])
def test_split_matrix_kept_vectors_of_every_shape(shape, dtype):
    """The compiled split bidiagonalises the block or its transpose (whichever is tall) and
    transforms back only the kept vectors: on a block with known singular values 2^-i, the
    values, the orthonormality of both halves and the truncated product agree with the exact
    ones within the rounding of a backward-stable SVD (perturbation ||E|| ~ m n u ||a||, and
    the kept subspace moves by ||E|| / gap, the gap at the cut being s_keep / 2)."""
    kernels.set_kernels("numba")
    m, n = shape
    r = min(m, n)
    gen = torch.Generator().manual_seed(3)
    u0 = torch.linalg.qr(torch.randn(m, r, generator=gen, dtype=torch.float64))[0]
    v0 = torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=torch.float64))[0]
    s0 = 0.5 ** torch.arange(r, dtype=torch.float64)
    a = (u0 * s0) @ v0.T
    keep = min(3, r)
    out = kernels.split_matrix(a.to(dtype), 0.0, keep, 1, True, "svd")
    assert out is not None
    left, right, s, kept, max_disc, weight = out
    assert kept == keep and left.shape == (m, keep) and right.shape == (keep, n)
    assert left.dtype == dtype and right.dtype == dtype and left.is_contiguous() and right.is_contiguous()
    err = rounding_bound(dtype, m * n)  # ||E|| / ||a||, with ||a|| = s0[0] = 1
    assert float((s.double() - s0).abs().max()) <= err
    gap = float(s0[keep - 1] / 2) if keep < r else 1.0
    eye = torch.eye(keep, dtype=torch.float64)
    # the singular values (unit 2-norm) went to the left half; the right one is orthonormal
    assert float((right.double() @ right.double().T - eye).abs().max()) <= err / gap
    kept_s = s0[:keep] / torch.linalg.vector_norm(s0[:keep])
    assert float((left.double().T @ left.double() - torch.diag(kept_s ** 2)).abs().max()) <= 2 * err / gap
    exact = (u0[:, :keep] * kept_s) @ v0[:, :keep].T
    assert float((left.double() @ right.double() - exact).abs().max()) <= 4 * err / gap


# ----------------------------------------------------------------- vector loops
def _compiled(fn):
    """``fn`` (numba's private kernels take only compiled callers) wrapped for a test."""
    import numba

    return numba.njit(fn)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dot_sums_in_its_documented_lane_order(dtype):
    """Term i to lane i % 8, each lane in order (float32 products summed in float64), lanes
    added pairwise: the same bits as that order written out, for every length (a partial
    last chunk included)."""
    import numpy as np

    from tnborn.kernels import _numba_mps as nm

    dot = _compiled(lambda x, y: nm._dot(x, y))
    rng = np.random.default_rng(3)
    for n in [*range(0, 41), 97, 3600, 3601]:
        x = rng.standard_normal(n).astype(dtype)
        y = rng.standard_normal(n).astype(dtype)
        lanes = [0.0] * 8
        for i in range(n):
            lanes[i % 8] = float(np.float64(lanes[i % 8]) + np.float64(x[i] * y[i]))
        want = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
        assert dot(x, y) == want, n


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_absmax_finite_is_the_largest_magnitude(dtype):
    import numpy as np

    from tnborn.kernels import _numba_mps as nm

    absmax = _compiled(lambda x: nm._absmax_finite(x))
    rng = np.random.default_rng(4)
    assert absmax(np.zeros(0, dtype=dtype)) == 0.0
    for n in [1, 7, 8, 9, 30, 63, 64, 1000]:
        x = rng.standard_normal(n).astype(dtype)
        for at in {0, n // 2, n - 1}:  # the largest magnitude in every position, of either sign
            z = x.copy()
            z[at] = -10.0
            assert absmax(z) == 10.0, (n, at)
            assert absmax(np.abs(z)) == 10.0


@pytest.mark.parametrize("din, dout", [(1, 30), (2, 30), (10, 30), (10, 64)])
def test_message_rows_are_rescaled_by_the_reciprocal_except_where_that_differs(din, dout):
    """Within one rounding of the quotient for an ordinary maximum; the quotient itself for a
    subnormal maximum (whose reciprocal overflows) and for a chain's end site (din = 1, where the
    plain path divides); infinite and NaN rows as torch's division leaves them; a zero row as it
    is. din = 2 takes the kernel's small-site path, din = 10 its grouped path (rows of 64: the
    vector maximum where the group's values are finite)."""
    import numpy as np

    from tnborn.kernels import _numba_mps as nm

    message = _compiled(lambda vec, a, vals: nm._message_scaled(vec, a, vals, vec, np.empty(0, dtype=np.int64)))
    rng = np.random.default_rng(5)
    x = rng.standard_normal(dout)
    rows = [x, x * 1e-310, x.copy(), x.copy(), np.zeros(dout)]
    rows[2][3] = -np.inf
    rows[3][4] = np.nan
    assert (din * dout <= nm.SMALL_MESSAGE) == (din < 10) and (dout >= nm._VECTOR_ROW) == (dout == 64)
    n = 2 * len(rows)
    vals = np.arange(n) % 2  # every row of both physical values
    a = rng.standard_normal((din, 2, dout))
    vec = np.zeros((n, din))
    vec[:, 0] = 1.0  # y[b] = a[0, vals[b], :]
    for b in range(n):
        a[0, vals[b], :] = rows[b // 2]
        got, scales = message(vec, a, vals)
        row = rows[b // 2]
        with np.errstate(over="ignore", invalid="ignore"):
            quotient = row / np.abs(row).max() if np.abs(row).max() > 0 else row
        if b // 2 == 0 and din > 1:  # ordinary: x * (1 / s), each of the two roundings and the
            # quotient's own within half an ulp: |x * (1/s) - x / s| <= 3/2 eps |x / s|
            assert scales[b] == np.abs(row).max()
            assert np.all(np.abs(got[b] - quotient) <= 1.5 * np.finfo(np.float64).eps * np.abs(quotient))
        else:
            assert np.array_equal(got[b], quotient, equal_nan=True), (din, b)
        assert np.array_equal(scales[b], np.abs(row).max(), equal_nan=True)
    tiny = rows[1]
    with np.errstate(over="ignore"):
        assert np.abs(tiny).max() < np.finfo(np.float64).tiny and np.isinf(1.0 / np.abs(tiny).max())


def test_all_finite_finds_any_non_finite_entry_and_never_overflows():
    import numpy as np

    from tnborn.kernels import _numba_mps as nm

    all_finite = _compiled(lambda a: nm._all_finite(a))
    big = np.full((60, 60), 1e308)  # a sum of these overflows; the check must not
    assert all_finite(big) and all_finite(np.zeros((0, 3)))
    for bad in (np.inf, -np.inf, np.nan):
        for at in [(0, 0), (31, 17), (59, 59)]:
            a = big.copy()
            a[at] = bad
            assert not all_finite(a), (bad, at)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_update_is_the_update_then_its_dot(dtype):
    """``m <- beta m + alpha g`` with the squared norm in the same pass: the same bits as the
    update (in float64, stored in the array's dtype) followed by ``_dot(m, m)``."""
    import numpy as np

    from tnborn.kernels import _numba_mps as nm

    fused = _compiled(lambda m, g, b, a: nm._update_sumsq(m, g, b, a))

    def two_passes(m, g, beta, alpha):
        m[:] = (beta * m.astype(np.float64) + alpha * g.astype(np.float64)).astype(m.dtype)
        return m

    dot = _compiled(lambda x, y: nm._dot(x, y))
    rng = np.random.default_rng(6)
    for n in [1, 7, 8, 9, 30, 3600, 3601]:
        m = rng.standard_normal(n).astype(dtype)
        g = rng.standard_normal(n).astype(dtype)
        got = m.copy()
        sumsq = fused(got, g, 0.998, 2e-5)
        want = two_passes(m.copy(), g, 0.998, 2e-5)
        assert np.array_equal(got, want) and sumsq == dot(want, want), n


def test_kernels_that_do_not_compile_here_leave_the_plain_path_with_a_warning(monkeypatch):
    """A numba whose LLVM cannot lower the kernels' explicit loops (or computes them wrong)
    switches the kernels off once, with a warning, instead of failing mid-training."""
    from tnborn.kernels import _numba_mps as nm

    def fails(x):
        raise RuntimeError("Intrinsic name not mangled correctly for type arguments!")

    for broken in (fails, lambda x: (385.0, 10.0, True, 384.0)):
        monkeypatch.setattr(nm, "probe", broken)
        monkeypatch.setattr(kernels, "_numba", None)
        with pytest.warns(RuntimeWarning, match="plain torch path runs instead"):
            assert not kernels.available()
        assert not kernels.available()  # decided once
        block = torch.rand(2, 2, 2, 2, dtype=torch.float64)
        assert kernels.split_matrix(block.reshape(4, 4), 0.0, None, 1, True, "svd") is None
    monkeypatch.undo()
    monkeypatch.setattr(kernels, "_numba", None)
    assert kernels.available()
