"""The three matrix decompositions of the hams, on (B, D, N) tensors: the maths, nothing else.

Notation (Geng et al., *Is Attention Better Than Matrix Decomposition?*, ICLR 2021):

    B  batch (samples times groups S)
    D  length of a column (channels per group)
    N  number of columns (pixels, tokens)
    R  rank: number of bases, the columns of the dictionary
    K  optimisation steps
    X  data, (B, D, N);  D bases (dictionary), (B, D, R);  C codes, (B, R, N);  X̄ = DC, (B, D, N)

Every solver starts from the given bases, runs K steps, then makes one final code update and returns
``Decomposition(recon=D @ C, bases=D, codes=C)``. ``grad`` chooses what is differentiated (``"one-step"``, the paper's;
``"bptt"``; ``"none"``; ``"implicit[:k]"``; ``"truncated:k"``, the default ``DEFAULT_GRAD = "truncated:2"``;
``"phantom:k:λ"``) and ``precision`` the large products' precision (``"fp32"``, ``"bf16"``, ``"tf32"``): docs/solve.md
says what each computes, what it rounds and how the solve is laid out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Decomposition",
    "nmf",
    "vq",
    "cd",
    "spd_inverse",
    "default_solver_steps",
    "product",
    "GRAD_MODES",
    "SOLVE_GRADIENTS",
    "PRECISIONS",
    "GradSpec",
    "parse_grad",
    "DEFAULT_GRAD",
    "damps_forward",
    "CpuSettings",
    "cpu_settings",
    "implicit_stats",
]

# the hams', the block's and the presets' default, by the rule of `hamburger estimators` (docs/results/gradients.md):
# the cheapest fixed-memory estimator that keeps the forward and trains within BPTT's spread at K 6 and 12
DEFAULT_GRAD = "truncated:2"
GRAD_MODES = ("one-step", "bptt", "none", "implicit")  # named; "truncated:k" and "phantom:k:λ" take arguments
SOLVE_GRADIENTS = ("one-step", "bptt")  # the named modes every solver and the causal token mixer train with
GRAD_SPELLINGS = '"one-step", "bptt", "none", "implicit", "implicit:<k>", "truncated:<k>" or "phantom:<k>:<λ>"'
SUPPORT = 1e-3  # implicit: a code belongs to the NNLS support when it is >= SUPPORT x its column's largest code
_IMPLICIT_COUNTERS: list[dict[str, int]] = []  # the open implicit_stats() counters (none: no host sync for them)


@contextlib.contextmanager
def implicit_stats():
    """Count the implicit gradient's adjoint solves while the block runs: yields ``{"solves": n, "unconverged": m}``
    (the columns solved, and those that hit the iteration cap). Counting reads the GPU's result on the host once per
    solve; outside this block nothing is counted."""
    counter = {"solves": 0, "unconverged": 0}
    _IMPLICIT_COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _IMPLICIT_COUNTERS.remove(counter)


class GradSpec(NamedTuple):
    """A gradient through a solve, parsed once (:func:`parse_grad`): ``kind`` one of one-step | bptt | none |
    implicit | truncated | phantom (| chunkwise, the token mixer's), with the unrolled steps k (implicit:k, truncated,
    phantom) and the damping λ of phantom (k 0 and λ 1 otherwise). ``str()`` gives its spelling back, the flag's
    value: ``str(parse_grad("phantom:2:0.5")) == "phantom:2:0.5"``."""

    kind: str
    k: int = 0
    lam: float = 1.0

    def __str__(self) -> str:
        if self.kind == "phantom":
            return f"phantom:{self.k}:{self.lam:g}"
        if self.kind == "truncated" or self.kind == "implicit" and self.k:
            return f"{self.kind}:{self.k}"
        return self.kind


def damps_forward(grad: str) -> bool:
    """Whether a gradient mode changes the forward value too (in evaluation as well): a phantom gradient with
    λ < 1. Every other mode leaves the solve's outputs as the paper's."""
    spec = parse_grad(grad)
    return spec.kind == "phantom" and spec.lam < 1


_ASCII_NUMBER = re.compile(r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")


SOLVE_KINDS = ("one-step", "bptt", "none", "implicit", "truncated", "phantom")  # the kinds a ham's solve takes


def parse_grad(
    grad: str | GradSpec,
    *,
    kinds: tuple[str, ...] = SOLVE_KINDS,
    what: str = "grad",
    spellings: str = GRAD_SPELLINGS,
) -> GradSpec:
    """``"truncated:2"`` -> ``GradSpec("truncated", 2, 1.0)``; a ``GradSpec`` is checked and returned as it is. A
    ``ValueError`` naming the ``spellings`` when it is none of them or its kind is not one of ``kinds`` (the token
    mixer's parser passes its own: :func:`hamburger.mixer.mixer_grad`)."""
    args: list[str] = []  # the spelling's numbers (k, λ): a kind that takes them needs k >= 1
    if isinstance(grad, GradSpec):
        spec = grad
        args = [str(grad.k)] if grad.k or grad.kind in ("truncated", "phantom") else []
    elif isinstance(grad, str):
        kind, _, rest = grad.partition(":")
        args = rest.split(":") if rest else []
        try:
            if not all(_ASCII_NUMBER.fullmatch(a) for a in args):  # int() takes "2_0" and other scripts' digits
                raise ValueError
            if kind in ("one-step", "bptt", "none", "implicit", "chunkwise") and not args:
                spec = GradSpec(kind)
            elif kind in ("truncated", "implicit") and len(args) == 1:
                spec = GradSpec(kind, int(args[0]))
            elif kind == "phantom" and len(args) == 2:
                spec = GradSpec(kind, int(args[0]), float(args[1]))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"{what} must be one of {spellings}, got {grad!r}") from None
    else:
        raise ValueError(f"{what} must be one of {spellings}, got {grad!r}")
    if spec.kind not in kinds:
        raise ValueError(f"{what} must be one of {spellings}, got {str(grad)!r}")
    if args and spec.k < 1:
        raise ValueError(f"grad {str(grad)!r}: the unrolled steps k must be >= 1")
    if not 0 < spec.lam <= 1:
        raise ValueError(f"grad {str(grad)!r}: the damping λ must be in (0, 1]")
    return spec


PRECISIONS = ("fp32", "bf16", "tf32")


class Decomposition(NamedTuple):
    """Result of a decomposition X ≈ DC."""

    recon: Tensor | None  # X̄ = DC, (B, D, N); None when the solve was asked not to reconstruct
    bases: Tensor  # D, (B, D, R)
    codes: Tensor  # C, (B, R, N)


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _check(x: Tensor, bases: Tensor, steps: int, grad: str | GradSpec, eps: float, precision: str) -> GradSpec:
    """Check a solve's arguments (a ValueError or TypeError saying what was expected); the parsed ``grad``."""
    if not isinstance(x, Tensor) or not isinstance(bases, Tensor):
        raise TypeError(f"x and bases must be tensors, got {type(x).__name__} and {type(bases).__name__}")
    if x.ndim != 3:
        raise ValueError(f"x must be (B, D, N), got a tensor of shape {tuple(x.shape)}")
    if bases.ndim != 3 or bases.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"bases must be (B, D, R) = ({x.shape[0]}, {x.shape[1]}, R) to match x, got {tuple(bases.shape)}"
        )
    if bases.shape[2] < 1:
        raise ValueError(f"rank R must be >= 1, got bases of shape {tuple(bases.shape)}")
    if not x.is_floating_point() or not bases.is_floating_point():
        raise TypeError(f"x and bases must be floating point, got {x.dtype} and {bases.dtype}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps (K) must be an integer >= 0, got {steps!r}")
    spec = parse_grad(grad)  # a ValueError naming the spellings
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return spec


def _solver_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclasses.dataclass
class CpuSettings:
    """How the solve runs on a CPU (speed only: the maths is the same; a setting may change the last bits).

    Attributes:
        flush_denormals: zero the NMF factors' entries too small to stay normal floats after one more product (a
            denormal operand makes CPU arithmetic 10-100x slower).
        wide_xtd: in fp32, compute XᵀD as (DᵀX)ᵀ, the GEMM with the wide output (off: as on GPUs).
        xt_band: in bf16, the rows of X per band of XᵀD's contiguous copy of Xᵀ (0: no copy, the transposed view).
    """

    flush_denormals: bool = True
    wide_xtd: bool = True
    xt_band: int = 32


_CPU = CpuSettings()


@contextlib.contextmanager
def cpu_settings(**changes):
    """Run the block with some :class:`CpuSettings` changed (``cpu_settings(xt_band=0)``), restored after; yields
    the settings in force. What the benchmarks that time each setting use."""
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(CpuSettings)})
    if unknown:
        raise TypeError(f"unknown CPU settings {unknown}; known: {[f.name for f in dataclasses.fields(CpuSettings)]}")
    saved = dataclasses.replace(_CPU)
    for name, value in changes.items():
        setattr(_CPU, name, value)
    try:
        yield _CPU
    finally:
        for f in dataclasses.fields(CpuSettings):
            setattr(_CPU, f.name, getattr(saved, f.name))


def _tiny(t: Tensor) -> float:
    return torch.finfo(t.dtype).tiny * 2.0**24 if _CPU.flush_denormals else 0.0


def _flush(t: Tensor, inplace: bool) -> Tensor:
    """Zero the entries of a non-negative tensor that are too small to be normal floats after one more product.

    CPUs only: there a denormal operand makes arithmetic 10-100x slower; GPUs flush or handle them at full speed."""
    if t.device.type != "cpu" or not _CPU.flush_denormals:
        return t
    return torch.threshold_(t, _tiny(t), 0.0) if inplace else F.threshold(t, _tiny(t), 0.0)


def _low(precision: str) -> torch.dtype | None:
    return torch.bfloat16 if precision == "bf16" else None


def product(a: Tensor, b: Tensor, *, precision: str = "fp32") -> Tensor:
    """Batched product a @ b of (B, M, K) and (B, K, P) in the given precision (see the module docstring).

    With ``"bf16"`` both operands are rounded to bfloat16 (a no-op for one already in it), the GEMM accumulates in
    float32, and the result is returned in the dtype of the higher-precision operand. Otherwise a plain ``bmm``.
    """
    out = b.dtype if a.dtype == _low(precision) else a.dtype
    return _product_raw(a, b, precision).to(out)


def _product_raw(a: Tensor, b: Tensor, precision: str) -> Tensor:
    """a @ b as the GEMM returns it: bfloat16 with ``"bf16"``, for a caller whose next element-wise operation with
    a float32 tensor promotes it (exactly: every bfloat16 is a float32) and so saves the separate conversion pass."""
    low = _low(precision)
    return torch.bmm(a, b) if low is None else torch.bmm(a.to(low), b.to(low))


def _xtd(xp: Tensor, d: Tensor, precision: str, *, raw: bool = True, xt: Tensor | None = None) -> Tensor:
    """XᵀD, (B, N, R), as :func:`_product_raw` (``raw``) or :func:`product` returns it.

    ``xt``: Xᵀ as a contiguous (B, N, D) copy (:func:`_contiguous_xt`), used where no gradient has to reach X
    through this product. On CPUs in fp32 (``CpuSettings.wide_xtd``) computed as (DᵀX)ᵀ, a transposed view of the
    GEMM with the wide (R, N) output, which MKL runs faster than the tall one. Not for bf16 (the strided updates cost
    more than it saves; the copy is faster), not on GPUs (a transposed operand is a flag of the GEMM), nor under
    ``torch.compile`` (inductor returned NaN codes from a bf16 solve with the view; tests/test_fastpath.py checks the
    compiled solve). Timings: docs/results/precision.md."""
    if xt is not None and not (torch.is_grad_enabled() and xp.requires_grad):
        return _product_raw(xt, d, precision) if raw else product(xt, d, precision=precision)  # (B, N, R)
    if xp.device.type == "cpu" and precision != "bf16" and _CPU.wide_xtd and not torch.compiler.is_compiling():
        dtx = _product_raw(d.mT, xp, precision) if raw else product(d.mT, xp, precision=precision)
        return dtx.mT  # (B, R, D) @ (B, D, N) -> (B, R, N), viewed (B, N, R)
    # compiled: Xᵀ made contiguous in the graph, one node per product that the graph's CSE merges into one copy per
    # solve — left to itself inductor copies Xᵀ before every XᵀD (K + 1 copies of X per solve)
    xt = xp.mT.contiguous() if torch.compiler.is_compiling() else xp.mT
    return _product_raw(xt, d, precision) if raw else product(xt, d, precision=precision)  # (B, N, R)


def _contiguous_xt(xp: Tensor, steps: int, precision: str) -> Tensor | None:
    """Xᵀ (B, N, D) as a contiguous bfloat16 copy for the solve's XᵀD products, or None where it does not pay.

    CPUs, ``"bf16"``, at least two steps, eager: oneDNN's bf16 GEMM runs faster with a contiguous (N, D) operand than
    with the transposed view, and a solve of K steps takes K + 1 of them. The copy is made in bands of
    ``CpuSettings.xt_band`` rows (a plain ``.mT.contiguous()`` is slower: rows 2**k elements apart alias in the
    cache). Costs one more bfloat16 copy of X. ``steps``: the steps whose products pass no gradient to X (none under
    BPTT: no copy then). Timings: docs/results/precision.md."""
    band = _CPU.xt_band
    if xp.device.type != "cpu" or precision != "bf16" or steps < 2 or not band:
        return None
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return None
    with torch.no_grad():
        xt = xp.new_empty(xp.shape[0], xp.shape[2], xp.shape[1])  # (B, N, D)
        for i in range(0, xp.shape[1], band):
            xt[:, :, i : i + band].copy_(xp[:, i : i + band].mT)
    return xt


class _TF32Scope:
    """TF32 products inside the solve on CUDA (eager); a no-op elsewhere and while compiling or exporting."""

    def __init__(self, precision: str, device: torch.device) -> None:
        self.active = (
            precision == "tf32"
            and device.type == "cuda"
            and not (torch.compiler.is_compiling() or torch.compiler.is_exporting())
        )

    def __enter__(self):
        if self.active:
            self.saved = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("high")

    def __exit__(self, *exc):
        if self.active:
            torch.set_float32_matmul_precision(self.saved)


def no_autocast(device: torch.device):
    """Autocast off on ``device`` (the solve chooses its own dtypes); a no-op on the ``meta`` device, which has no
    autocast and only infers shapes."""
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


def _normalize_columns(bases: Tensor) -> Tensor:
    return F.normalize(bases, dim=1, eps=1e-6)  # (B, D, R): unit columns along D


def _unrolled(solver, x: Tensor, xp: Tensor, bases: Tensor, steps: int, spec: GradSpec, kw: dict):
    """BPTT (and ``truncated:K``): every step and the final update with autograd."""
    d, ct = solver.steps(x, bases, steps, inplace=False, xp=xp, **kw)
    return solver.final(x, d, ct, inplace=False, xp=xp, **kw)


def _implicit(solver, x: Tensor, xp: Tensor, bases: Tensor, steps: int, spec: GradSpec, kw: dict):
    """``implicit[:k]``: the first K − k steps without graph, the last k with it, then the final codes differentiated
    as the exact solution of their sub-problem (NMF: :class:`_NNLSCodes`; CD: its ridge solve is that closed form)."""
    if solver is _VQ:
        raise ValueError(
            "grad 'implicit' needs codes that solve a well-posed problem given the bases: "
            "NMF (least squares) or CD (ridge); VQ's soft assignment is not one"
        )
    with torch.no_grad():
        d, ct = solver.steps(x.detach(), bases.detach().clone(), steps - spec.k, inplace=True, xp=xp.detach(), **kw)
    if spec.k:  # implicit:k: the last k steps with autograd, the bases of the last one differentiable
        d, ct = solver.steps(x, d, spec.k, inplace=False, xp=xp, ct=ct, **kw)
    if solver is _CD:  # the ridge solve is the closed form: its derivative is the implicit one
        return solver.final(x, d, ct, inplace=False, xp=xp, **kw)
    with torch.no_grad():
        _, ct = solver.final(x.detach(), d.detach(), ct.detach(), inplace=False, xp=xp.detach(), **kw)
    if torch.is_grad_enabled() and (x.requires_grad or d.requires_grad):
        ct = _NNLSCodes.apply(x, d, ct)
    return d, ct


def _tail(solver, x: Tensor, xp: Tensor, bases: Tensor, steps: int, spec: GradSpec, kw: dict):
    """``truncated:k`` and ``phantom:k:λ``: the first K − k steps without graph, the last k with it (damped by λ for
    phantom), then the final update."""
    with torch.no_grad():  # the first K - k steps: no graph
        d, ct = solver.steps(x.detach(), bases.detach().clone(), steps - spec.k, inplace=True, xp=xp.detach(), **kw)
    for _ in range(spec.k):  # the last k with autograd, damped for phantom (λ = 1: plain steps)
        d_next, ct_next = solver.steps(x, d, 1, inplace=False, xp=xp, ct=ct, **kw)
        d = d_next if spec.lam == 1 else (1 - spec.lam) * d + spec.lam * d_next
        # VQ / CD recompute the codes from the bases (their state is D; ct is None before their first step)
        ct = ct_next if spec.lam == 1 or ct is None else (1 - spec.lam) * ct + spec.lam * ct_next
    return solver.final(x, d, ct, inplace=False, xp=xp, **kw)


def _last_update(solver, x: Tensor, xp: Tensor, bases: Tensor, steps: int, spec: GradSpec, kw: dict):
    """``one-step`` (the paper's) and ``none``: the K steps without graph; the final update with autograd under
    one-step only."""
    with torch.no_grad():
        d, ct = solver.steps(x.detach(), bases.detach().clone(), steps, inplace=True, xp=xp.detach(), **kw)
    with torch.set_grad_enabled(torch.is_grad_enabled() and spec.kind == "one-step"):
        return solver.final(x, d, ct, inplace=not torch.is_grad_enabled(), xp=xp, **kw)


# one function per gradient kind: how the K steps and the final update run
_SOLVES = {
    "bptt": _unrolled,
    "implicit": _implicit,
    "truncated": _tail,
    "phantom": _tail,
    "one-step": _last_update,
    "none": _last_update,
}


def _run(
    solver, x: Tensor, bases: Tensor, steps: int, spec: GradSpec, reconstruct: bool, precision: str, **kw
) -> Decomposition:
    """Cast to the solver dtype, run the K steps under the chosen gradient mode, then the final update.

    The solvers receive X twice: ``x`` in the solver dtype (for norms) and ``xp``, X in the products' dtype: the
    same tensor, except with ``precision="bf16"`` (where a bfloat16 input is used as it is, with no round trip)."""
    out_dtype = x.dtype
    dtype = _solver_dtype(x.dtype)
    low = _low(precision)
    with no_autocast(x.device), _TF32Scope(precision, x.device):
        xp = x.to(low) if low is not None else None
        x = x.to(dtype)
        xp = x if xp is None else xp
        bases = bases.to(dtype)
        kw["precision"] = precision
        spec = spec._replace(k=min(spec.k, steps))  # the last k of K steps: all of them when k >= K
        free = steps  # the steps whose XᵀD passes no gradient to X: those that may read Xᵀ's copy
        if torch.is_grad_enabled() and xp.requires_grad and spec.kind == "bptt":
            free = 0
        elif torch.is_grad_enabled() and xp.requires_grad and spec.kind in ("truncated", "phantom", "implicit"):
            free = steps - spec.k
        kw["xt"] = _contiguous_xt(xp, free, precision)
        solve = _unrolled if spec.kind == "truncated" and spec.k == steps else _SOLVES[spec.kind]
        d, ct = solve(solver, x, xp, bases, steps, spec, kw)
        kw.pop("xt")  # Xᵀ's copy is dead: freed before the reconstruction is allocated
        recon = None
        if reconstruct and low is None:
            recon = torch.bmm(d, ct.mT).to(out_dtype)  # (B, D, R) @ (B, R, N) -> (B, D, N)
        elif reconstruct:
            # X's bf16 copy (our own, D x N like X̄, dead once no autograd graph holds it) takes the product
            reuse = xp.dtype != out_dtype and not torch.is_grad_enabled() and not xp.requires_grad
            recon = torch.bmm(d.to(low), ct.mT.to(low), out=xp if reuse else None).to(out_dtype)
    return Decomposition(recon, d, ct.mT)


class _NNLSCodes(torch.autograd.Function):
    """Identity on the codes Cᵀ (B, N, R) in the forward; in the backward the derivative of the non-negative least
    squares solution on each column's support S, C_S = (D_SᵀD_S)⁻¹D_SᵀX, with the adjoint yₙ = (D_SᵀD_S)⁻¹(∂L/∂cₙ)_S:
    ∂L/∂xₙ = D_S yₙ, and, when the bases carry gradient (``implicit:k``), ∂L/∂D = Σₙ rₙ yₙᵀ − D yₙ c_{S,n}ᵀ with the
    residual rₙ = xₙ − D_S c_{S,n}."""

    @staticmethod
    def forward(ctx, x: Tensor, d: Tensor, ct: Tensor) -> Tensor:
        ctx.save_for_backward(x, d, ct)
        return ct.clone()

    @staticmethod
    def backward(ctx, grad_ct: Tensor):
        x, d, ct = ctx.saved_tensors
        mask = (ct >= SUPPORT * ct.amax(dim=-1, keepdim=True)).to(grad_ct.dtype)  # (B, N, R): the support
        gram = torch.bmm(d.mT, d)  # (B, R, D) @ (B, D, R) -> (B, R, R)
        y = _masked_cg(gram, mask, grad_ct * mask)  # (B, N, R): (D_SᵀD_S)⁻¹ g_S per column, 0 off the support
        grad_x = torch.bmm(d, y.mT) if ctx.needs_input_grad[0] else None  # (B, D, R) @ (B, R, N) -> (B, D, N)
        grad_d = None
        if ctx.needs_input_grad[1]:
            cs = ct * mask  # (B, N, R): the codes on their support
            residual = x.to(d.dtype) - torch.bmm(d, cs.mT)  # (B, D, N)
            grad_d = torch.bmm(residual, y) - torch.bmm(d, torch.bmm(y.mT, cs))  # (B, D, R)
        return grad_x, grad_d, None


def _masked_cg(gram: Tensor, mask: Tensor, b: Tensor) -> Tensor:
    """Solve (M G M + (I - M)) y = b for every row of b (B, N, R) by conjugate gradients, G (B, R, R) symmetric
    positive definite on each support M; b is zero off the support, and so is y."""
    tol = 1e-12 if b.dtype == torch.float64 else 1e-6
    cap = 2 * b.shape[-1] + 10

    def apply(v: Tensor) -> Tensor:
        return mask * torch.bmm(mask * v, gram) + (1 - mask) * v  # (B, N, R) @ (B, R, R)

    y = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(-1, keepdim=True)  # (B, N, 1)
    goal = (tol * tol) * rs
    for _ in range(cap):
        if bool((rs <= goal).all()):
            break
        ap = apply(p)
        alpha = rs / (p * ap).sum(-1, keepdim=True).clamp_min(torch.finfo(b.dtype).tiny)
        y = y + alpha * p
        r = r - alpha * ap
        rs_next = (r * r).sum(-1, keepdim=True)
        p = r + (rs_next / rs.clamp_min(torch.finfo(b.dtype).tiny)) * p
        rs = rs_next
    if _IMPLICIT_COUNTERS:
        unconverged = int((rs > goal).sum())
        for counter in _IMPLICIT_COUNTERS:
            counter["solves"] += rs.numel()
            counter["unconverged"] += unconverged
    return y


# ----------------------------------------------------------------------------------------------------------------
# NMF: Lee-Seung multiplicative updates


class _NMF:
    @staticmethod
    def codes(
        xp: Tensor,
        d: Tensor,
        ct: Tensor,
        eps: float,
        inplace: bool,
        precision: str,
        xtd: Tensor | None = None,
        xt: Tensor | None = None,
        ctl: Tensor | None = None,
    ) -> Tensor:
        # C <- C * (DᵀX) / (DᵀD C + eps), written on Cᵀ: Cᵀ <- Cᵀ * (XᵀD) / (Cᵀ DᵀD + eps)
        num = _xtd(xp, d, precision, xt=xt) if xtd is None else xtd  # (B, N, R)
        gram = torch.bmm(d.mT, d)  # (B, R, D) @ (B, D, R) -> (B, R, R)
        if _low(precision) is not None:  # bf16: CᵀDᵀD from the codes' bfloat16 copy ``ctl`` (made here if not given)
            den = _product_raw(ct if ctl is None else ctl, gram, precision)  # (B, N, R) @ (B, R, R), bfloat16
            den = den.to(ct.dtype).add_(eps) if inplace else den.to(ct.dtype) + eps
        elif inplace:
            den = torch.baddbmm(ct.new_full((), eps), ct, gram)  # (B, N, R) @ (B, R, R) -> (B, N, R)
        else:
            den = torch.bmm(ct, gram) + eps  # (B, N, R)
        if inplace:
            return _flush(ct.mul_(num).div_(den), True)  # ct is spent: the update overwrites it
        return _flush(ct * num / den, False)

    @staticmethod
    def bases(
        xp: Tensor, d: Tensor, ct: Tensor, eps: float, inplace: bool, precision: str, ctl: Tensor | None = None
    ) -> Tensor:
        # D <- D * (XCᵀ) / (D CCᵀ + eps); with bf16 both products take the codes' bfloat16 copy ``ctl``
        ctl = ct if ctl is None else ctl
        num = product(xp, ctl, precision=precision).to(d.dtype)  # (B, D, N) @ (B, N, R) -> (B, D, R)
        gram = product(ctl.mT, ctl, precision=precision).to(d.dtype)  # (B, R, N) @ (B, N, R) -> (B, R, R)
        den = torch.bmm(d, gram)  # (B, D, R) @ (B, R, R) -> (B, D, R)
        if inplace:
            return _flush(d.mul_(num).div_(den.add_(eps)), True)
        return _flush(d * num / (den + eps), False)

    @classmethod
    def steps(
        cls, x, d, steps: int, *, inplace: bool, eps: float, precision="fp32", xp=None, ct=None, fused=False, xt=None
    ):
        """K steps from the bases ``d`` and, when given, the codes ``ct`` (continuing a solve), else C₀. ``fused``: the
        steps without autograd (``inplace``) run in :mod:`hamburger.kernels`' Triton kernels."""
        xp = x if xp is None else xp
        xtd = None
        if ct is None:
            xtd = _xtd(xp, d, precision, raw=False, xt=xt)  # (B, N, R): XᵀD, shared by the start and the first update
            # C0 = softmax(DᵀX) over R (t = 1 for NMF); contiguous, as xtd may be a transposed view
            ct = torch.softmax(xtd, dim=-1).contiguous()
        if fused and inplace and not torch.is_grad_enabled():
            from . import kernels

            ct, d = ct.float().contiguous(), d.contiguous()  # the kernels' state: float32, updated in place
            for _ in range(steps):
                kernels.nmf_codes_step(xp, d, ct, eps=eps, precision=precision)
                kernels.nmf_bases_step(xp, d, ct, eps=eps, precision=precision)
            return d, ct
        low = _low(precision)
        ctl = None  # the codes in the products' dtype: one conversion per step serves XCᵀ, CCᵀ and the next CᵀDᵀD
        for k in range(steps):
            ct = cls.codes(xp, d, ct, eps, inplace, precision, xtd if k == 0 else None, xt, ctl)
            ctl = None if low is None else ct.to(low)
            d = cls.bases(xp, d, ct, eps, inplace, precision, ctl)
        return d, ct

    @classmethod
    def final(cls, x, d, ct, *, inplace: bool, eps: float, precision="fp32", xp=None, fused=False, xt=None):
        xp = x if xp is None else xp
        if fused and inplace and not torch.is_grad_enabled():
            from . import kernels

            return d, kernels.nmf_codes_step(xp, d.contiguous(), ct.float().contiguous(), eps=eps, precision=precision)
        return d, cls.codes(xp, d, ct, eps, inplace, precision, xt=xt)


_FUSED_VERIFIED: dict[tuple[str, str], bool] = {}


def _fused_verified(device: torch.device, precision: str) -> bool:
    """Once per (device, precision) and process: the fused code and bases updates against PyTorch's on a small
    problem. A disagreement turns the fused path off there, with a warning, instead of returning wrong numbers.
    Not run during CUDA graph capture (the fused path waits until a call outside capture has verified it)."""
    key = (str(device), precision)
    if key not in _FUSED_VERIFIED:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return False
        from . import kernels

        gen = torch.Generator().manual_seed(0)
        x = torch.rand(2, 40, 70, generator=gen).to(device)
        d = torch.rand(2, 40, 10, generator=gen).to(device)
        ct = torch.softmax(torch.randn(2, 70, 10, generator=gen), dim=-1).to(device)
        xp = x.to(torch.bfloat16) if precision == "bf16" else x
        tol = 1e-4 if precision == "fp32" else 3e-2
        # as the solve runs them: without autocast (under it the Gram matrices come out bf16, and Triton refuses to
        # compile a dot of float32 and bfloat16)
        with torch.no_grad(), no_autocast(device), _TF32Scope(precision, device):
            ref_c = _NMF.codes(xp, d, ct, 1e-6, False, precision)
            ref_d = _NMF.bases(xp, d, ref_c, 1e-6, False, precision)
            try:
                got_c = kernels.nmf_codes_step(xp, d.clone(), ct.clone(), eps=1e-6, precision=precision)
                got_d = kernels.nmf_bases_step(xp, d.clone(), ref_c.clone(), eps=1e-6, precision=precision)
                errors = [float((a - b).norm() / b.norm()) for a, b in ((got_c, ref_c), (got_d, ref_d))]
                why = f"disagree with PyTorch's (relative errors {errors[0]:.1e}, {errors[1]:.1e})"
            except Exception as error:  # a kernel that does not compile or launch here: PyTorch's steps, not a crash
                errors, why = [math.nan], f"failed ({type(error).__name__}: {str(error).splitlines()[-1][:200]})"
        _FUSED_VERIFIED[key] = ok = all(e <= tol for e in errors)  # NaN fails too
        if not ok:
            warnings.warn(
                f"hamburger: the fused Triton NMF steps {why} on {device} ({precision}); using PyTorch's "
                "steps there. Please report it with your GPU and Triton version.",
                RuntimeWarning,
                stacklevel=3,
            )
    return _FUSED_VERIFIED[key]


def nmf(
    x: Tensor,
    bases: Tensor,
    steps: int,
    *,
    grad: str = DEFAULT_GRAD,
    eps: float = 1e-6,
    reconstruct: bool = True,
    precision: str = "fp32",
    fused: bool | None = None,
) -> Decomposition:
    """Non-negative matrix factorisation X ≈ DC by K multiplicative (Lee-Seung) updates.

    Args:
        x: X, (B, D, N), non-negative.
        bases: starting dictionary D, (B, D, R), non-negative. Not modified.
        steps: K, number of (code, bases) update pairs before the final code update.
        grad: ``"one-step"`` | ``"bptt"`` | ``"none"`` | ``"implicit"`` | ``"implicit:k"`` | ``"truncated:k"`` |
            ``"phantom:k:λ"`` (docs/solve.md).
        eps: ε added to every denominator.
        reconstruct: False skips the product DC (``recon`` is None), for callers that fold a linear map into D.
        precision: ``"fp32"`` | ``"bf16"`` | ``"tf32"``: of the products with X and of DC (module docstring).
        fused: the steps that carry no gradient in fused Triton kernels (:mod:`hamburger.kernels`): None (auto) and
            True on CUDA float32 / bfloat16 input when Triton is there and R <= 128, outside compilation; False never.
            Gradients are unchanged: every step that carries one runs in PyTorch.

    Start C₀ = softmax(DᵀX) over R; each step C ← C ⊙ (DᵀX) ⊘ (DᵀDC + ε), then D ← D ⊙ (XCᵀ) ⊘ (DCCᵀ + ε);
    then one more code update and X̄ = DC.
    """
    spec = _check(x, bases, steps, grad, eps, precision)
    if fused is not False and x.dtype != torch.float64:
        from .kernels import use_fused

        fused = use_fused(x, bases.shape[-1], fused) and _fused_verified(x.device, precision)
    return _run(_NMF, x, bases, steps, spec, reconstruct, precision, eps=eps, fused=bool(fused))


# ----------------------------------------------------------------------------------------------------------------
# VQ (soft k-means) and CD (concept decomposition)


def _inv_colnorm(x: Tensor, floor: float | None, eps: float | None) -> Tensor:
    """1 / ‖xₙ‖ per column as (B, N, 1): max(‖x‖, floor) as F.normalize, or (eps + ‖x‖)."""
    norm = torch.linalg.vector_norm(x, dim=1).unsqueeze(-1)  # (B, N, 1)
    return 1.0 / (norm.clamp_min(floor) if floor is not None else norm + eps)


def _soft_assign(
    xp: Tensor, d: Tensor, scale: Tensor, eps: float, inplace: bool, precision: str, xt: Tensor | None = None
) -> Tensor:
    """Cᵀ = softmax(inv_t · X̂ᵀD) over R, each code row then divided by (eps + its sum over N).

    ``scale`` = inv_t / max(‖xₙ‖, 1e-12), (B, N, 1), computed once per solve since X does not change."""
    # X̂ᵀD = diag(1/‖xₙ‖) XᵀD: scaling the (N, R) product instead of normalising X (D x N) saves a pass over X
    logits = _xtd(xp, d, precision, xt=xt)  # (B, N, R)
    logits = logits.mul_(scale) if inplace and logits.dtype == scale.dtype else logits * scale
    ct = _flush(torch.softmax(logits, dim=-1), inplace)  # (B, N, R)
    total = ct.sum(dim=1, keepdim=True).add_(eps)  # (B, 1, R): Σₙ C
    return ct.div_(total) if inplace else ct / total


class _VQ:
    @staticmethod
    def steps(x, d, steps, *, inplace, eps, inv_t, precision="fp32", xp=None, ct=None, xt=None):
        xp = x if xp is None else xp  # a step recomputes the codes from the bases: a given ``ct`` is not needed
        scale = _inv_colnorm(x, 1e-12, None) * inv_t if steps else None  # (B, N, 1), as F.normalize
        for _ in range(steps):
            ct = _soft_assign(xp, _normalize_columns(d), scale, eps, inplace, precision, xt)
            d = product(xp, ct, precision=precision)  # D = XCᵀ: (B, D, N) @ (B, N, R) -> (B, D, R)
        return d, ct

    @staticmethod
    def final(x, d, ct, *, inplace, eps, inv_t, precision="fp32", xp=None, xt=None):
        xp = x if xp is None else xp
        # C = softmax(inv_t · D̂ᵀ (X ⊘ (eps + ‖xₙ‖))) with the norms constant for autograd
        logits = _xtd(xp, _normalize_columns(d), precision, xt=xt)  # (B, N, R), promoted by the scaling
        scale = _inv_colnorm(x.detach(), None, eps) * inv_t  # (B, N, 1)
        return d, _flush(torch.softmax(logits * scale, dim=-1), inplace)


class _CD:
    @staticmethod
    def steps(x, d, steps, *, inplace, eps, inv_t, beta, solver_steps, precision="fp32", xp=None, ct=None, xt=None):
        xp = x if xp is None else xp  # a step recomputes the codes from the bases: a given ``ct`` is not needed
        scale = _inv_colnorm(x, 1e-12, None) * inv_t if steps else None  # (B, N, 1), as F.normalize
        for _ in range(steps):
            ct = _soft_assign(xp, d, scale, eps, inplace, precision, xt)
            d = _normalize_columns(product(xp, ct, precision=precision))  # (B, D, N) @ (B, N, R) -> (B, D, R)
        return d, ct

    @staticmethod
    def final(x, d, ct, *, inplace, eps, inv_t, beta, solver_steps, precision="fp32", xp=None, xt=None):
        xp = x if xp is None else xp
        # C = (DᵀD + βI)⁻¹ DᵀX, i.e. Cᵀ = XᵀD (DᵀD + βI)⁻¹ (the matrix is symmetric)
        eye = torch.eye(d.shape[-1], dtype=d.dtype, device=d.device)
        system = torch.baddbmm(eye * beta, d.mT, d)  # (B, R, R)
        inverse = spd_inverse(system, beta, steps=solver_steps)
        rhs = _xtd(xp, d, precision, raw=False, xt=xt)  # (B, N, R)
        ct = torch.bmm(rhs, inverse)  # (B, N, R)
        # one step of iterative refinement brings the fp32 solve to the accuracy of an exact one
        return d, ct + torch.bmm(rhs - torch.bmm(ct, system), inverse)


def vq(
    x: Tensor,
    bases: Tensor,
    steps: int,
    *,
    inv_t: float = 100.0,
    grad: str = DEFAULT_GRAD,
    eps: float = 1e-6,
    reconstruct: bool = True,
    precision: str = "fp32",
) -> Decomposition:
    """Soft vector quantisation (soft k-means with cosine similarity) X ≈ DC.

    Args:
        x: X, (B, D, N).
        bases: starting dictionary D, (B, D, R).
        steps: K.
        inv_t: inverse temperature of the softmax assignment (``inv_t`` in the official code).
        grad: ``"one-step"`` | ``"bptt"`` | ``"none"`` | ``"implicit"`` | ``"implicit:k"`` | ``"truncated:k"`` |
            ``"phantom:k:λ"`` (docs/solve.md; VQ has no implicit gradient).
        eps: ε of the code normalisation and of the final column norms.
        reconstruct: False skips the product DC (``recon`` is None).
        precision: ``"fp32"`` | ``"bf16"`` | ``"tf32"`` (module docstring).

    Each step: C = softmax(inv_t · D̂ᵀX̂) over R (columns of X and D L2-normalised), C ← C ⊘ (ε + Σₙ C),
    D = XCᵀ. Final: C = softmax(inv_t · D̂ᵀ(X ⊘ (ε + ‖xₙ‖))), X̄ = DC. The start C₀ = softmax(inv_t · DᵀX) of the
    paper is overwritten by the first step before it is used, so it is not computed.
    """
    spec = _check(x, bases, steps, grad, eps, precision)
    return _run(_VQ, x, bases, steps, spec, reconstruct, precision, eps=eps, inv_t=float(inv_t))


def cd(
    x: Tensor,
    bases: Tensor,
    steps: int,
    *,
    inv_t: float = 100.0,
    beta: float = 0.1,
    grad: str = DEFAULT_GRAD,
    eps: float = 1e-6,
    solver_steps: int | None = None,
    reconstruct: bool = True,
    precision: str = "fp32",
) -> Decomposition:
    """Concept decomposition X ≈ DC: spherical soft k-means bases, ridge-regression codes.

    Args:
        x: X, (B, D, N).
        bases: starting dictionary D, (B, D, R), columns expected L2-normalised.
        steps: K.
        inv_t: inverse temperature of the soft assignment.
        beta: β, ridge weight of the final code solve.
        grad: ``"one-step"`` | ``"bptt"`` | ``"none"`` | ``"implicit"`` | ``"implicit:k"`` | ``"truncated:k"`` |
            ``"phantom:k:λ"`` (docs/solve.md; VQ has no implicit gradient).
        eps: ε of the code normalisation.
        solver_steps: Newton-Schulz iterations for (DᵀD + βI)⁻¹; default: enough for unit-norm columns
            (condition number ≤ (R + β)/β), see :func:`spd_inverse`.
        reconstruct: False skips the product DC (``recon`` is None).
        precision: ``"fp32"`` | ``"bf16"`` | ``"tf32"`` (module docstring).

    Each step: C = softmax(inv_t · DᵀX̂) over R, C ← C ⊘ (ε + Σₙ C), D = normalise columns of XCᵀ.
    Final: C = (DᵀD + βI)⁻¹DᵀX, X̄ = DC. The inverse is built from matrix products only (no ``solve``), so the
    same code runs in eager mode, under ``torch.compile`` and in ONNX.
    """
    spec = _check(x, bases, steps, grad, eps, precision)
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (it makes DᵀD + βI invertible), got {beta!r}")
    return _run(
        _CD,
        x,
        bases,
        steps,
        spec,
        reconstruct,
        precision,
        eps=eps,
        inv_t=float(inv_t),
        beta=float(beta),
        solver_steps=solver_steps,
    )


# ----------------------------------------------------------------------------------------------------------------
# exportable SPD inverse


def default_solver_steps(rank: int, beta: float, tol: float = 1e-12) -> int:
    """Newton-Schulz iterations that reach ``tol`` for DᵀD + βI with unit-norm columns (eigenvalues in [β, R+β])."""
    kappa = (rank + beta) / beta
    # error after k iterations from X0 = 2/(β+‖A‖∞)·I is e0^(2^k), e0 = (κ-1)/(κ+1)
    e0 = (kappa - 1.0) / (kappa + 1.0)
    return max(1, math.ceil(math.log2(math.log(tol) / math.log(e0)))) + 1


def spd_inverse(a: Tensor, lower: float, *, steps: int | None = None) -> Tensor:
    """Inverse of symmetric positive-definite matrices (B, R, R) whose eigenvalues are ≥ ``lower``, by Newton-Schulz.

    X₀ = 2/(lower + ‖A‖∞)·I, X ← X(2I − AX). Only products and sums: exportable to ONNX, which has no inverse or
    solve. ``steps`` defaults to :func:`default_solver_steps` for the matrix size with unit-norm columns.
    """
    if steps is None:
        steps = default_solver_steps(a.shape[-1], lower)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    upper = a.abs().sum(dim=-1).amax(dim=-1, keepdim=True).unsqueeze(-1)  # (B, 1, 1): ‖A‖∞ ≥ λmax
    inv = eye * (2.0 / (upper + lower))  # (B, R, R)
    for _ in range(steps):
        inv = torch.bmm(inv, 2.0 * eye - torch.bmm(a, inv))  # (B, R, R)
    return inv
