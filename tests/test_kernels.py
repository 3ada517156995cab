"""The fused Triton NMF steps (issue 30), run on the CPU under ``TRITON_INTERPRET=1`` with ``kernels.FORCE``."""

import pytest
import torch

import hamburger
from hamburger import functional as HF
from hamburger import kernels
from hamburger.functional import _NMF

pytest.importorskip("triton")


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read when the kernels are jitted, and per launch
    monkeypatch.setattr(kernels, "FORCE", True)


def _problem(batch=2, dim=40, n=70, rank=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, dim, n, generator=gen)
    d = torch.rand(batch, dim, rank, generator=gen)
    ct = torch.softmax(torch.randn(batch, n, rank, generator=gen), dim=-1)
    return x, d, ct


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_each_update_equals_the_pytorch_step_in_fp32(forced, precision):
    x, d, ct = _problem()
    ref_c = _NMF.codes(x, d.clone(), ct.clone(), 1e-6, False, precision)
    got_c = kernels.nmf_codes_step(x, d.clone(), ct.clone(), eps=1e-6, precision=precision)
    torch.testing.assert_close(got_c, ref_c, rtol=1e-5, atol=1e-7)
    ref_d = _NMF.bases(x, d.clone(), ref_c, 1e-6, False, precision)
    got_d = kernels.nmf_bases_step(x, d.clone(), ref_c.clone(), eps=1e-6, precision=precision)
    torch.testing.assert_close(got_d, ref_d, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("parts, n", [(2, 70), (3, 70), (4, 200), (9, 200)])  # slices of whole 64-blocks: 2, 2, 4, 4
def test_the_bases_update_split_over_n_equals_the_single_kernel(forced, precision, parts, n):
    """The split (issue 29: at B 1 the single kernel's 16 programs leave most of a GPU idle) writes each slice's XCᵀ
    and sums them in order: the same update as one kernel to float rounding, and the same bits on every run."""
    x, d, ct = _problem(n=n)
    whole = kernels.nmf_bases_step(x, d.clone(), ct.clone(), eps=1e-6, precision=precision, parts=1)
    split = kernels.nmf_bases_step(x, d.clone(), ct.clone(), eps=1e-6, precision=precision, parts=parts)
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-7)
    assert not torch.equal(split, d)  # it did update
    again = kernels.nmf_bases_step(x, d.clone(), ct.clone(), eps=1e-6, precision=precision, parts=parts)
    assert torch.equal(split, again)
    assert kernels.bases_parts(x, 32, 64) == 1  # not CUDA: one kernel unless asked


def test_the_bases_update_is_split_where_its_programs_would_leave_a_gpu_idle():
    x = torch.empty(1, 512, 128 * 128, device="meta")  # B 1, C 512, 128²: 16 channel tiles of 32
    assert kernels.bases_parts(x, 32, 64, sms=132) == 16  # 17 wanted: 256 blocks of 64 in slices of 16 blocks
    assert kernels.bases_parts(torch.empty(8, 512, 128 * 128, device="meta"), 32, 64, sms=132) == 3  # 128 programs
    assert kernels.bases_parts(torch.empty(32, 512, 4096, device="meta"), 32, 64, sms=132) == 1  # 512: enough
    assert kernels.bases_parts(torch.empty(1, 512, 100, device="meta"), 32, 64, sms=132) == 2  # N: two blocks


def test_bf16_rounds_the_operands_within_bf16_precision(forced):
    """bf16: the product's operands are rounded (the result moves off fp32's) and the update agrees with the PyTorch
    bf16 path to bf16's precision. Not bit for bit: the interpreter's float32 -> bfloat16 conversion is not torch's
    round-to-nearest-even, and the PyTorch path also rounds the product's result; the tensor-core path itself is
    checked on a GPU by benchmarks/gpu.sh."""
    x, d, ct = _problem(rank=20)
    xb = x.to(torch.bfloat16)
    got = kernels.nmf_codes_step(xb, d.clone(), ct.clone(), eps=1e-6, precision="bf16")
    exact = kernels.nmf_codes_step(x, d.clone(), ct.clone(), eps=1e-6, precision="fp32")
    assert not torch.equal(got, exact)
    torch.testing.assert_close(got, exact, rtol=2e-2, atol=1e-4)
    torch.testing.assert_close(got, _NMF.codes(xb, d, ct.clone(), 1e-6, False, "bf16"), rtol=2e-2, atol=1e-4)
    got_d = kernels.nmf_bases_step(xb, d.clone(), got.clone(), eps=1e-6, precision="bf16")
    ref_d = _NMF.bases(xb, d.clone(), got.clone(), 1e-6, False, "bf16")
    assert not torch.equal(got_d, kernels.nmf_bases_step(x, d.clone(), got.clone(), eps=1e-6, precision="fp32"))
    torch.testing.assert_close(got_d, ref_d, rtol=2e-2, atol=1e-4)


@pytest.mark.parametrize("steps", [0, 1, 6])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_whole_solve_matches_and_gradients_are_unchanged(forced, steps, precision):
    """K in {0, 1, 6}, R 10 (not a multiple of the tile), B 2: the fused solve equals the PyTorch one at inference,
    and under the one-step gradient (its K steps fused, the final update in PyTorch) the gradient too."""
    x, d, _ = _problem(n=50)
    tol = {"rtol": 1e-4, "atol": 1e-6} if precision == "fp32" else {"rtol": 3e-2, "atol": 1e-3}
    with torch.no_grad():
        ref = HF.nmf(x, d, steps, precision=precision, fused=False)
        got = HF.nmf(x, d, steps, precision=precision, fused=True)
    torch.testing.assert_close(got.recon, ref.recon, **tol)
    grads = []
    for fused in (False, True):
        xg = x.clone().requires_grad_()
        out = HF.nmf(xg, d, steps, grad="one-step", precision=precision, fused=fused).recon
        grads.append(torch.autograd.grad(out.square().mean(), xg)[0])
    torch.testing.assert_close(grads[1], grads[0], **tol)


def test_dispatch_and_the_switches(forced, monkeypatch):
    x = torch.rand(1, 8, 16)
    assert kernels.use_fused(x, 8, None) and kernels.use_fused(x, 8, True)
    assert not kernels.use_fused(x, 8, False) and not kernels.use_fused(x, 129, None)  # R must fit one tile
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not kernels.use_fused(x, 8, None)  # the compiler makes its own kernels
    monkeypatch.undo()
    assert not kernels.use_fused(x, 8, None)  # CPU tensors: CUDA-only without FORCE
    model = hamburger.Hamburger(16, rank=4)
    assert all(m.fused is None for m in model.modules() if isinstance(m, hamburger.ham.Ham))
    hamburger.optimize(model, fused=False, compile=False)
    assert all(m.fused is False for m in model.modules() if isinstance(m, hamburger.ham.Ham))
    with pytest.raises(ValueError, match="fused must be"):
        hamburger.optimize(model, fused="yes", compile=False)
    with pytest.raises(ValueError, match="fused must be"):
        hamburger.NMF(16, fused=1.5)


def test_bench_solve_times_each_variant(forced, tmp_path):
    import json

    from hamburger.cli import main

    out = tmp_path / "solve"
    main(
        [
            "bench",
            "solve",
            "--device",
            "cpu",
            "--sizes",
            "8",
            "--batches",
            "1,2",
            "--precisions",
            "fp32",
            "--channels",
            "16",
            "--rank",
            "4",
            "--repeats",
            "1",
            "--no-compile",
            "--out",
            str(out),
        ]
    )
    rows = json.loads((out / "solve.json").read_text())["results"]["rows"]
    assert [(r["batch"], r["size"]) for r in rows] == [(1, 8), (2, 8)]
    assert all(set(r["ms"]) == {"pytorch", "fused"} and min(r["ms"].values()) > 0 for r in rows)
    assert "| fp32 | 2 | 8 |" in (out / "solve.md").read_text()


def test_a_kernel_that_disagrees_with_pytorch_is_turned_off_with_a_warning(forced, monkeypatch):
    """Once per device and precision the fused steps are checked against PyTorch's; a wrong result (here, a kernel
    that doubles the codes) turns the fused path off there instead of reaching the user."""
    monkeypatch.setattr(HF, "_FUSED_VERIFIED", {})
    x, d, _ = _problem(n=50)
    with torch.no_grad():
        ref = HF.nmf(x, d, 3, fused=False).recon
        torch.testing.assert_close(HF.nmf(x, d, 3, fused=True).recon, ref, rtol=1e-4, atol=1e-6)
        assert HF._FUSED_VERIFIED == {("cpu", "fp32"): True}
        wrong = kernels.nmf_codes_step
        monkeypatch.setattr(kernels, "nmf_codes_step", lambda *a, **k: 2 * wrong(*a, **k))
        with pytest.warns(RuntimeWarning, match=r"disagree with PyTorch's \(relative errors .*\) on cpu \(bf16"):
            out = HF.nmf(x, d, 3, precision="bf16", fused=True).recon
        torch.testing.assert_close(out, HF.nmf(x, d, 3, precision="bf16", fused=False).recon)  # PyTorch's steps
        assert HF._FUSED_VERIFIED[("cpu", "bf16")] is False


def test_a_kernel_that_fails_is_turned_off_with_a_warning_and_autocast_does_not_reach_it(forced, monkeypatch):
    """On the first H200 run, the verification ran under the caller's bf16 autocast: the Gram matrix came out bf16 and
    Triton refused to compile a float32-by-bfloat16 dot — a crash in the user's forward. The kernels now take float32
    Gram matrices under autocast too, and a kernel that raises turns the fused path off with a warning."""
    monkeypatch.setattr(HF, "_FUSED_VERIFIED", {})
    x, d, _ = _problem(n=50)
    grams = []
    jitted = kernels._kernels

    class Spied:  # records the Gram matrix's dtype (argument ``at``) of every launch
        def __init__(self, kernel, at):
            self.kernel, self.at = kernel, at

        def __getitem__(self, grid):
            return lambda *a, **k: (grams.append(a[self.at].dtype), self.kernel[grid](*a, **k))

    monkeypatch.setattr(kernels, "_kernels", lambda: tuple(map(Spied, jitted(), (3, 3))))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = HF.nmf(x, d, 3, precision="bf16", fused=True).recon
    assert grams and set(grams) == {torch.float32}
    assert HF._FUSED_VERIFIED == {("cpu", "bf16"): True} and torch.isfinite(out).all()

    def broken(*args, **kwargs):
        raise RuntimeError("at 28:10:\nBoth operands must be same dtype. Got fp32 and bf16")

    monkeypatch.setattr(kernels, "nmf_codes_step", broken)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="failed \\(RuntimeError: Both operands"):
        out = HF.nmf(x, d, 3, fused=True).recon  # fp32: not verified yet
    torch.testing.assert_close(out, HF.nmf(x, d, 3, fused=False).recon)
    assert HF._FUSED_VERIFIED[("cpu", "fp32")] is False
