import pytest
import torch
import torch.nn.functional as F

import hamburger.functional as HF
from conftest import gauss, nonneg
from hamburger.bench.ham import saved_bytes as _saved_bytes
from hamburger.functional import _CD, _NMF, _VQ
from reference import cd as ref_cd
from reference import nmf as ref_nmf
from reference import vq as ref_vq

SHAPES = [(1, 5, 7, 3), (2, 8, 13, 4), (3, 6, 1, 2), (2, 16, 33, 16)]  # (B, D, N, R): odd, N=1, R=D


def _unit(t):
    return F.normalize(t, dim=1)


@pytest.mark.parametrize("b,d,n,r", SHAPES)
@pytest.mark.parametrize("steps", [0, 1, 6])
def test_nmf_matches_explicit_loop(b, d, n, r, steps):
    x, bases = nonneg(b, d, n), _unit(nonneg(b, d, r, seed=1))
    out = HF.nmf(x, bases, steps)
    recon, d_k, _, c = ref_nmf(x, bases, steps)
    torch.testing.assert_close(out.recon, recon, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out.bases, d_k, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out.codes, c, rtol=1e-9, atol=1e-12)
    assert out.recon.shape == (b, d, n) and out.bases.shape == (b, d, r) and out.codes.shape == (b, r, n)


@pytest.mark.parametrize("b,d,n,r", SHAPES)
@pytest.mark.parametrize("steps", [0, 1, 6])
@pytest.mark.parametrize("inv_t", [1.0, 100.0])
def test_vq_matches_explicit_loop(b, d, n, r, steps, inv_t):
    x, bases = gauss(b, d, n), _unit(gauss(b, d, r, seed=1))
    out = HF.vq(x, bases, steps, inv_t=inv_t)
    recon, d_k, _, c = ref_vq(x, bases, steps, inv_t=inv_t)
    torch.testing.assert_close(out.recon, recon, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(out.codes, c, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("b,d,n,r", SHAPES)
@pytest.mark.parametrize("steps", [0, 1, 6])
def test_cd_matches_explicit_loop(b, d, n, r, steps):
    x, bases = gauss(b, d, n), _unit(gauss(b, d, r, seed=1))
    out = HF.cd(x, bases, steps, inv_t=100.0, beta=0.1)
    recon, d_k, _, c = ref_cd(x, bases, steps)
    torch.testing.assert_close(out.recon, recon, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(out.bases, d_k, rtol=1e-8, atol=1e-10)


def test_nmf_objective_monotone_and_nonnegative():
    x, bases = nonneg(2, 24, 50), _unit(nonneg(2, 24, 6, seed=3))
    errors = []
    for k in range(0, 25):
        out = HF.nmf(x, bases, k)
        assert (out.bases >= 0).all() and (out.codes >= 0).all()
        errors.append((x - out.recon).norm().item())
    diffs = torch.tensor(errors).diff()
    assert (diffs <= 1e-10).all(), errors  # Lee-Seung updates never increase ‖X − DC‖ (within rounding)
    assert errors[-1] < 0.9 * errors[0]


def test_vq_cd_code_normalisation_and_ridge_equations():
    x, bases = gauss(2, 12, 40), _unit(gauss(2, 12, 5, seed=2))
    # step codes: each row sums to 1 over N (up to eps)
    for ref in (ref_vq, ref_cd):
        _, _, c_k, _ = ref(x, bases, 3)
        torch.testing.assert_close(c_k.sum(dim=2), torch.ones(2, 5, dtype=x.dtype), rtol=1e-4, atol=1e-4)
    # our step codes are exposed through one step + inspecting the internal solver
    d, ct = _VQ.steps(x, bases, 3, inplace=False, eps=1e-6, inv_t=100.0)
    torch.testing.assert_close(ct.sum(dim=1), torch.ones(2, 5, dtype=x.dtype), rtol=1e-4, atol=1e-4)
    # final VQ codes sum to 1 over R
    out = HF.vq(x, bases, 3)
    torch.testing.assert_close(out.codes.sum(dim=1), torch.ones(2, 40, dtype=x.dtype))
    # final CD codes satisfy the ridge normal equations (DᵀD + βI) C = DᵀX
    out = HF.cd(x, bases, 3, beta=0.1)
    d = out.bases
    lhs = (d.mT @ d + 0.1 * torch.eye(5, dtype=x.dtype)) @ out.codes
    torch.testing.assert_close(lhs, d.mT @ x, rtol=1e-9, atol=1e-9)


def test_spd_inverse_matches_exact_solve_float32():
    for r in (4, 16, 64):
        d = _unit(gauss(3, 256, r, dtype=torch.float32, seed=r))
        a = d.mT @ d + 0.1 * torch.eye(r)
        rhs = gauss(3, r, 500, dtype=torch.float32, seed=9)
        exact = torch.linalg.solve(a.double(), rhs.double())
        ours = HF.spd_inverse(a, 0.1) @ rhs
        rel = (ours.double() - exact).norm() / exact.norm()
        assert rel < 1e-5, (r, rel)
    # the worst case for unit columns: all columns equal, condition number (R + β)/β
    r = 64
    d = torch.ones(1, 32, r, dtype=torch.float64) / 32**0.5
    a = d.mT @ d + 0.1 * torch.eye(r, dtype=torch.float64)
    torch.testing.assert_close(HF.spd_inverse(a, 0.1) @ a, torch.eye(r, dtype=torch.float64)[None])


def test_cd_final_codes_match_exact_solve_in_float32():
    x, bases = gauss(2, 64, 300, dtype=torch.float32), _unit(gauss(2, 64, 32, dtype=torch.float32, seed=1))
    out = HF.cd(x, bases, 4)
    d = out.bases.double()
    exact = torch.linalg.solve(d.mT @ d + 0.1 * torch.eye(32, dtype=torch.float64), d.mT @ x.double())
    assert (out.codes.double() - exact).norm() / exact.norm() < 1e-5


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", ["nmf", "vq", "cd"])
def test_one_step_gradient_is_autograd_through_final_update_only(name):
    solver, ref = {"nmf": (_NMF, ref_nmf), "vq": (_VQ, ref_vq), "cd": (_CD, ref_cd)}[name]
    fn = getattr(HF, name)
    x0 = nonneg(2, 10, 30) if name == "nmf" else gauss(2, 10, 30)
    bases = _unit(nonneg(2, 10, 4, seed=1))
    kw = {"eps": 1e-6} if name == "nmf" else {"eps": 1e-6, "inv_t": 20.0}
    if name == "cd":
        kw.update(beta=0.1, solver_steps=None)
    weight = gauss(2, 10, 30, seed=5)

    x = x0.clone().requires_grad_(True)
    public_kw = {k: v for k, v in kw.items() if k != "solver_steps"}
    (fn(x, bases, 3, grad="one-step", **public_kw).recon * weight).sum().backward()

    _, d_k, c_k, _ = ref(x0, bases, 3, **public_kw)
    x2 = x0.clone().requires_grad_(True)
    d, ct = solver.final(x2, d_k, c_k.mT.contiguous(), inplace=False, **kw)
    ((d @ ct.mT) * weight).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["nmf", "cd"])
def test_gradcheck_bptt_and_final_update(name):
    solver = {"nmf": _NMF, "cd": _CD}[name]
    x = (nonneg(1, 4, 6) + 0.1 if name == "nmf" else gauss(1, 4, 6)).requires_grad_(True)
    bases = _unit(nonneg(1, 4, 3, seed=1))
    kw = {} if name == "nmf" else {"inv_t": 5.0}
    assert torch.autograd.gradcheck(lambda t: getattr(HF, name)(t, bases, 2, grad="bptt", **kw).recon, (x,))
    fkw = {"eps": 1e-6} if name == "nmf" else {"eps": 1e-6, "inv_t": 5.0, "beta": 0.1, "solver_steps": None}
    ct = torch.softmax(gauss(1, 6, 3, seed=4), dim=-1)

    def final_recon(t):
        d, codes = solver.final(t, bases, ct, inplace=False, **fkw)
        return d @ codes.mT

    assert torch.autograd.gradcheck(final_recon, (x,))


def test_vq_gradients():
    # VQ's final update holds the column norms constant by definition, so the map as a whole is not what autograd
    # differentiates: gradcheck the K steps, and compare BPTT with autograd through the explicit equations.
    x = gauss(2, 5, 7).requires_grad_(True)
    bases = _unit(gauss(2, 5, 3, seed=1))
    assert torch.autograd.gradcheck(lambda t: _VQ.steps(t, bases, 2, inplace=False, eps=1e-6, inv_t=5.0)[0], (x,))
    weight = gauss(2, 5, 7, seed=3)
    (HF.vq(x, bases, 2, inv_t=5.0, grad="bptt").recon * weight).sum().backward()
    ours, x.grad = x.grad, None

    def explicit(t):
        d = bases
        for _ in range(2):
            ct = torch.softmax(5.0 * F.normalize(t, dim=1).mT @ F.normalize(d, dim=1, eps=1e-6), dim=-1)
            ct = ct / (1e-6 + ct.sum(dim=1, keepdim=True))
            d = t @ ct
        scale = 1.0 / (1e-6 + t.detach().norm(dim=1, keepdim=True))
        c = torch.softmax(5.0 * F.normalize(d, dim=1, eps=1e-6).mT @ (t * scale), dim=1)
        return d @ c

    (explicit(x) * weight).sum().backward()
    torch.testing.assert_close(ours, x.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", ["nmf", "vq", "cd"])
def test_grad_none_gives_no_gradient_and_modes_agree_in_value(name):
    fn = getattr(HF, name)
    x = nonneg(2, 6, 9).requires_grad_(True)
    bases = _unit(nonneg(2, 6, 3, seed=1))
    outs = {g: fn(x, bases, 4, grad=g) for g in HF.GRAD_MODES if not (name == "vq" and g == "implicit")}
    assert not outs["none"].recon.requires_grad
    assert outs["one-step"].recon.requires_grad and outs["bptt"].recon.requires_grad
    for g in ("one-step", "bptt"):
        torch.testing.assert_close(outs[g].recon, outs["none"].recon, rtol=1e-12, atol=1e-12)


def test_bases_argument_is_not_modified():
    x, bases = nonneg(2, 6, 9), _unit(nonneg(2, 6, 3, seed=1))
    keep = bases.clone()
    for fn in (HF.nmf, HF.vq, HF.cd):
        fn(x, bases, 3)
    assert torch.equal(bases, keep)


def test_low_precision_input_is_solved_in_float32():
    x = nonneg(2, 16, 40, dtype=torch.float32) * 100
    bases = _unit(nonneg(2, 16, 4, seed=1, dtype=torch.float32))
    full = HF.nmf(x, bases, 6).recon
    for dtype, tol in ((torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)):
        out = HF.nmf(x.to(dtype), bases, 6).recon
        assert out.dtype == dtype and torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), full, rtol=tol, atol=tol * 100)


def test_no_denormals_leave_the_solver():
    # disjoint supports plus a tiny floor: codes of the wrong cluster decay geometrically towards zero
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(1, 64, 4)
    for j in range(4):
        w[0, j * 16 : (j + 1) * 16, j] = 1.0
    labels = torch.randint(0, 4, (600,), generator=g)
    x = w @ F.one_hot(labels, 4).T.float()[None] + 1e-5 * torch.rand(1, 64, 600, generator=g)
    bases = _unit(torch.rand(1, 64, 8, generator=g))
    out = HF.nmf(x, bases, 40)
    tiny = torch.finfo(torch.float32).tiny
    for t in (out.codes, out.bases):
        assert not ((t > 0) & (t < tiny)).any()
    # and the reconstruction is what the exact equations give (the float64 loop has no denormal issue)
    recon, *_ = ref_nmf(x.double(), bases.double(), 40)
    torch.testing.assert_close(out.recon.double(), recon, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: HF.nmf(torch.rand(2, 3), torch.rand(2, 3, 1), 1), r"x must be \(B, D, N\)"),
        (lambda: HF.nmf(torch.rand(2, 3, 4), torch.rand(2, 4, 1), 1), r"bases must be \(B, D, R\)"),
        (lambda: HF.nmf(torch.rand(2, 3, 4), torch.rand(2, 3, 0), 1), "rank R must be >= 1"),
        (lambda: HF.nmf(torch.rand(2, 3, 4), torch.rand(2, 3, 2), -1), "steps"),
        (lambda: HF.vq(torch.rand(2, 3, 4), torch.rand(2, 3, 2), 1, grad="full"), "grad must be one of"),
        (lambda: HF.cd(torch.rand(2, 3, 4), torch.rand(2, 3, 2), 1, beta=0.0), "beta must be > 0"),
        (lambda: HF.nmf(torch.ones(2, 3, 4, dtype=torch.long), torch.rand(2, 3, 2), 1), "floating point"),
    ],
)
def test_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ----------------------------------------------------------------------------------------------------------------
# truncated and phantom gradients


def _grad_of(fn, x, bases, steps, grad, **kw):
    x = x.clone().requires_grad_(True)
    out = fn(x, bases, steps, grad=grad, **kw).recon
    (g,) = torch.autograd.grad(out.square().sum(), x)
    return out.detach(), g


@pytest.mark.parametrize("name", ["nmf", "vq", "cd"])
def test_truncated_and_phantom_gradients(name):
    """truncated:K is BPTT; phantom:k:1 is truncated:k, value and gradient; truncated:k leaves the forward value
    alone; phantom with λ < 1 changes it (the last k steps are damped)."""
    fn, kw = getattr(HF, name), {"inv_t": 5.0} if name != "nmf" else {}
    x = nonneg(2, 6, 9, dtype=torch.float64)
    bases = _unit(nonneg(2, 6, 3, seed=1, dtype=torch.float64))
    k_steps = 4
    bptt = _grad_of(fn, x, bases, k_steps, "bptt", **kw)
    for a, b in zip(_grad_of(fn, x, bases, k_steps, f"truncated:{k_steps}", **kw), bptt):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for k in (1, 2):
        truncated = _grad_of(fn, x, bases, k_steps, f"truncated:{k}", **kw)
        phantom = _grad_of(fn, x, bases, k_steps, f"phantom:{k}:1", **kw)
        torch.testing.assert_close(truncated[0], bptt[0], rtol=1e-12, atol=1e-12)  # the same forward
        for a, b in zip(phantom, truncated):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert (truncated[1] - bptt[1]).abs().max() > 1e-9  # and another gradient: the early steps are constants
    damped = _grad_of(fn, x, bases, k_steps, "phantom:2:0.5", **kw)
    assert (damped[0] - bptt[0]).abs().max() > 1e-6


@pytest.mark.parametrize("name", ["vq", "cd"])
def test_truncated_is_bptt_through_the_last_k_steps_from_the_detached_state(name):
    """VQ and CD carry the bases alone from step to step, so truncated:k on K steps must equal BPTT on k steps from
    the bases after K - k steps (returned by a K - k step solve), to rounding."""
    fn = getattr(HF, name)
    x = nonneg(2, 6, 9, dtype=torch.float64)
    bases = _unit(nonneg(2, 6, 3, seed=1, dtype=torch.float64))
    middle = fn(x, bases, 3, inv_t=5.0, grad="none").bases  # D after 3 of the 5 steps
    a = _grad_of(fn, x, bases, 5, "truncated:2", inv_t=5.0)
    b = _grad_of(fn, x, middle, 2, "bptt", inv_t=5.0)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


def test_phantom_gradient_is_the_derivative_of_the_last_k_damped_steps_from_the_detached_state():
    """phantom:k:λ differentiates the last k damped steps (and the final update) as functions of X, with the state
    after the first K - k steps a constant: checked against that function written out (gradcheck'd in float64)."""
    x = nonneg(1, 4, 5, dtype=torch.float64)
    bases = _unit(nonneg(1, 4, 2, seed=3, dtype=torch.float64))
    with torch.no_grad():
        d0, c0 = _NMF.steps(x, bases.clone(), 1, inplace=False, eps=1e-6)  # K - k = 1 of K = 3

    def last_steps(t):
        d, c = d0, c0
        for _ in range(2):  # k = 2 damped steps, λ = 0.5
            dn, cn = _NMF.steps(t, d, 1, inplace=False, eps=1e-6, ct=c)
            d, c = 0.5 * d + 0.5 * dn, 0.5 * c + 0.5 * cn
        d, c = _NMF.final(t, d, c, inplace=False, eps=1e-6)
        return torch.bmm(d, c.mT)  # (B, D, R) @ (B, R, N)

    t = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(last_steps, (t,))
    ours = _grad_of(HF.nmf, x, bases, 3, "phantom:2:0.5")
    (g,) = torch.autograd.grad(last_steps(t).square().sum(), t)
    torch.testing.assert_close(ours[0], last_steps(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[1], g, rtol=1e-10, atol=1e-12)


def test_saved_memory_of_a_fixed_k_does_not_grow_with_k_steps():
    x = nonneg(2, 16, 64).requires_grad_(True)
    bases = _unit(nonneg(2, 16, 4, seed=2))
    for grad in ("truncated:2", "phantom:2:0.5", "one-step"):
        sizes = [_saved_bytes(lambda s=s, g=grad: HF.nmf(x, bases, s, grad=g)) for s in (4, 8, 16)]
        assert sizes[0] == sizes[1] == sizes[2], (grad, sizes)
    bptt = [_saved_bytes(lambda s=s: HF.nmf(x, bases, s, grad="bptt")) for s in (4, 8)]
    assert bptt[1] > 1.5 * bptt[0]


@pytest.mark.parametrize(
    "grad, match",
    [
        ("truncated", "grad must be one of"),
        ("truncated:0", "k must be >= 1"),
        ("phantom:2", "grad must be one of"),
        ("phantom:2:0", r"λ must be in \(0, 1\]"),
        ("phantom:2:1.5", r"λ must be in"),
        ("truncated:x", "one of"),
    ],
)
def test_grad_spellings_are_checked(grad, match):
    with pytest.raises(ValueError, match=match):
        HF.nmf(torch.rand(1, 3, 4), torch.rand(1, 3, 2), 3, grad=grad)
    assert HF.parse_grad("phantom:3:0.25") == HF.GradSpec("phantom", 3, 0.25)


@pytest.mark.parametrize("solve", [HF.nmf, HF.vq, HF.cd])
def test_k_beyond_the_solves_steps_is_clamped_to_them(solve):
    """The last k of K steps: truncated:5 on K = 3 is BPTT, and any k works at K = 0 (the final update alone)."""
    x, bases = nonneg(1, 6, 9, seed=2), _unit(nonneg(1, 6, 3, seed=3))
    for steps in (0, 3):
        out, g = _grad_of(solve, x, bases, steps, "truncated:5")
        ref, g_ref = _grad_of(solve, x, bases, steps, "bptt")
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        torch.testing.assert_close(g, g_ref, rtol=0, atol=0)


def test_implicit_gradient_is_the_derivative_of_the_nnls_solution_on_the_support(monkeypatch):
    """NMF: ∂L/∂xₙ = D_S (D_SᵀD_S)⁻¹ (∂L/∂cₙ)_S with D the final bases, per column, checked against a direct solve
    in float64 (the conjugate-gradient adjoint stops at a relative residual of 1e-12: agreement to 1e-9). The forward
    is one-step's. CD's implicit gradient is its one-step gradient (the ridge solve is the closed form); VQ has none."""
    g = torch.Generator().manual_seed(0)
    d_true = F.normalize(torch.rand(1, 6, 3, generator=g, dtype=torch.float64) + 0.2, dim=1)
    c_true = torch.rand(1, 3, 7, generator=g, dtype=torch.float64) * (torch.rand(1, 3, 7, generator=g) > 0.3)
    x = torch.bmm(d_true, c_true) + 0.01  # (B, D, N): non-negative, some codes truly zero
    bases = _unit(nonneg(1, 6, 3, seed=4))
    weight = torch.randn(1, 6, 7, generator=g, dtype=torch.float64)
    monkeypatch.setattr(HF, "SUPPORT", 0.8)  # a support that leaves codes out, so the masking is exercised
    t = x.clone().requires_grad_(True)
    out = HF.nmf(t, bases, 30, grad="implicit")
    (ours,) = torch.autograd.grad((out.recon * weight).sum(), t)
    d, codes = out.bases.detach(), out.codes.detach()[0]  # (1, D, R), (R, N)
    expected = torch.zeros_like(x[0])
    grad_codes = d[0].T @ weight[0]  # (R, N): ∂L/∂C with D constant
    left_out = 0
    for n in range(x.shape[2]):
        s = codes[:, n] >= HF.SUPPORT * codes[:, n].max()
        ds = d[0][:, s]  # (D, |S|)
        expected[:, n] = ds @ torch.linalg.solve(ds.T @ ds, grad_codes[s, n])
        left_out += int((~s).sum())
    assert left_out >= 3
    torch.testing.assert_close(ours[0], expected, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(out.recon, HF.nmf(x, bases, 30, grad="one-step").recon, rtol=0, atol=0)
    with HF.implicit_stats() as stats:
        HF.nmf(t, bases, 30, grad="implicit").recon.sum().backward()
    assert stats == {"solves": 7, "unconverged": 0}
    HF.nmf(t, bases, 30, grad="implicit").recon.sum().backward()
    assert stats == {"solves": 7, "unconverged": 0}  # counted only inside the block
    with HF.cpu_settings(flush_denormals=False) as settings:
        assert settings.flush_denormals is False and settings.xt_band == 32
    with HF.cpu_settings() as settings:
        assert settings.flush_denormals is True  # restored
    with pytest.raises(TypeError, match="unknown CPU settings"), HF.cpu_settings(nosuch=1):
        pass
    a = _grad_of(HF.cd, x, bases, 4, "implicit", inv_t=5.0)
    b = _grad_of(HF.cd, x, bases, 4, "one-step", inv_t=5.0)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="VQ's soft assignment is not one"):
        HF.vq(x, bases, 2, grad="implicit")
    import hamburger as hb

    with pytest.raises(ValueError, match="VQ has no implicit gradient"):
        hb.VQ(6, grad="implicit")
    assert _saved_bytes(lambda: HF.nmf(t, bases, 6, grad="implicit")) == _saved_bytes(
        lambda: HF.nmf(t, bases, 24, grad="implicit")
    )  # memory independent of K


def test_implicit_k_differentiates_the_nnls_solution_in_the_bases_too(monkeypatch):
    """implicit:k: the codes' NNLS solution on its support, C_S = (D_SᵀD_S)⁻¹D_SᵀX, differentiated with respect to X
    and D — checked against autograd through a direct per-column solve in float64 (agreement to 1e-9: the adjoint's
    CG stops at 1e-12); the forward is one-step's; memory does not grow with K."""
    g = torch.Generator().manual_seed(1)
    d = F.normalize(torch.rand(1, 6, 3, generator=g, dtype=torch.float64) + 0.2, dim=1).requires_grad_(True)
    support = torch.rand(1, 5, 3, generator=g) > 0.3  # (B, N, R)
    support[..., 0] = True  # every column keeps a code
    c_true = (torch.rand(1, 5, 3, generator=g, dtype=torch.float64) + 0.5) * support
    noise = 0.01 * torch.rand(1, 6, 5, generator=g, dtype=torch.float64)
    x = (torch.bmm(d.detach(), c_true.mT) + noise).requires_grad_(True)  # (B, D, N)
    weight = torch.randn(1, 5, 3, generator=g, dtype=torch.float64)
    monkeypatch.setattr(HF, "SUPPORT", 1e-6)
    columns = []
    for n in range(5):
        s = support[0, n]
        ds = d[0][:, s]
        cs = torch.linalg.solve(ds.T @ ds, ds.T @ x[0, :, n])
        columns.append(torch.zeros(3, dtype=torch.float64).masked_scatter(s, cs))
    direct = torch.stack(columns)[None]  # (1, N, R): the least-squares codes on the support, differentiable
    assert (direct.detach()[support] > 0.1).all()  # positive on the support: the NNLS solution
    expected = torch.autograd.grad((direct * weight).sum(), (x, d))
    ours = torch.autograd.grad((HF._NNLSCodes.apply(x, d, direct.detach()) * weight).sum(), (x, d))
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    # through the solver: one-step's forward, a gradient through the bases of the last k steps, memory flat in K
    xs, bases = nonneg(1, 6, 9, seed=2).double(), _unit(nonneg(1, 6, 3, seed=3)).double()
    ref, _ = _grad_of(HF.nmf, xs, bases, 6, "one-step")
    out1, g1 = _grad_of(HF.nmf, xs, bases, 6, "implicit:1")
    _, g0 = _grad_of(HF.nmf, xs, bases, 6, "implicit")
    torch.testing.assert_close(out1, ref, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(g1, g0)
    t = xs.clone().requires_grad_(True)
    assert _saved_bytes(lambda: HF.nmf(t, bases, 6, grad="implicit:1")) == _saved_bytes(
        lambda: HF.nmf(t, bases, 24, grad="implicit:1")
    )
    # k > K is clamped: implicit:2 on one step is implicit:1
    torch.testing.assert_close(
        _grad_of(HF.nmf, xs, bases, 1, "implicit:2")[1], _grad_of(HF.nmf, xs, bases, 1, "implicit:1")[1], rtol=0, atol=0
    )


def test_cd_implicit_gradient_is_the_derivative_of_the_ridge_solution():
    """CD: C = (DᵀD + βI)⁻¹DᵀX with D the final bases, so ∂L/∂X = D (DᵀD + βI)⁻¹ Dᵀ ∂L/∂X̄ — to 1e-9 in float64
    (the inverse is Newton–Schulz plus one refinement step, exact to rounding at this conditioning)."""
    x = nonneg(2, 6, 9, dtype=torch.float64)
    bases = _unit(nonneg(2, 6, 3, seed=5, dtype=torch.float64))
    weight = gauss(2, 6, 9, seed=6)
    t = x.clone().requires_grad_(True)
    out = HF.cd(t, bases, 4, inv_t=5.0, beta=0.1, grad="implicit")
    (ours,) = torch.autograd.grad((out.recon * weight).sum(), t)
    d = out.bases.detach()
    system = d.mT @ d + 0.1 * torch.eye(3, dtype=torch.float64)
    expected = d @ torch.linalg.solve(system, d.mT @ weight)  # (B, D, R) @ (B, R, N)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-11)
