"""Fused Triton kernels for the NMF steps that carry no gradient (the GPU fast path).

One NMF step is a code update C ← C ⊙ (DᵀX) ⊘ (DᵀD C + ε) and a bases update D ← D ⊙ (XCᵀ) ⊘ (D CCᵀ + ε). In eager
PyTorch each is a product and then three element-wise passes, each a full read and write of the N × R codes (or
D × R bases) in float32. Here each update is one kernel: a program computes a tile of the product (XᵀD for BLOCK_N
positions, or XCᵀ for BLOCK_D channels), loads the same tile of the state, multiplies it by the small Gram matrix
(DᵀD or CᵀC, R × R, computed beforehand by one ``bmm``) and writes the updated tile — the product never goes to
memory. The bases update's product XCᵀ reduces over all N positions while its tiles are over the D channels (16 at
C 512): where those programs would leave a GPU idle (:func:`bases_parts`) it is split over N into slices, written
to a workspace and summed in order by a second launch that applies the update. Operands of the large product are
bfloat16 under ``precision="bf16"`` (float32 accumulation, float32 state, as :func:`hamburger.functional.product`),
float32 with ``input_precision="ieee"`` under ``"fp32"`` (Triton's ``tl.dot`` would use TF32 on a GPU otherwise)
and TF32 under ``"tf32"``.

Only the steps without autograd run here: the ones the one-step gradient and the estimators of
:mod:`hamburger.functional` leave out of the graph, and every step at inference. A step that carries gradient
always takes the PyTorch path, so gradients are unchanged by construction. There is no persistent kernel over all
K steps: XCᵀ reduces over all N, which needs a grid-wide barrier that Triton does not provide.

Dispatch (:func:`use_fused`) is CUDA-only unless :data:`FORCE` is set, which the CPU tests do under
``TRITON_INTERPRET=1``. Triton's interpreter returns wrong results from ``tl.dot`` on bfloat16 operands (Triton 3.8),
so under the interpreter the tiles are upcast to float32 before the product (the ``UPCAST`` constexpr); the
bfloat16 tensor-core path itself is checked on a GPU by ``benchmarks/gpu.sh``.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

__all__ = ["FORCE", "available", "use_fused", "nmf_codes_step", "nmf_bases_step", "bases_parts"]

FORCE = False  # run the kernels on any device (the CPU tests, under TRITON_INTERPRET=1)
_MAX_RANK = 128  # R must fit one tile: the update needs a whole row of codes (or bases) at once


def available() -> bool:
    """Whether Triton can be imported (it comes with torch's CUDA builds)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_fused(x: Tensor, rank: int, fused: bool | None) -> bool:
    """Whether the solve of ``x`` runs its gradient-free NMF steps in these kernels: ``fused`` False never, True or
    None (auto) on a CUDA tensor (or any, with :data:`FORCE`) when Triton is there, R fits a tile and the call is not
    being compiled or exported (the compiler makes its own kernels)."""
    if fused is False or rank > _MAX_RANK:
        return False
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return (x.is_cuda or FORCE) and available()


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_KERNELS: dict[bool, tuple] = {}


def _kernels() -> tuple:
    """The two kernels, jitted on first use (so that TRITON_INTERPRET set by then is honoured)."""
    key = _interpreting()
    if key not in _KERNELS:
        import triton

        from . import _triton_nmf as source

        _KERNELS[key] = (triton.jit(source.codes_kernel), triton.jit(source.bases_kernel))
    return _KERNELS[key]


def _tile(size: int, low: int, high: int) -> int:
    """A power of two >= ``low`` (tl.dot's minimum is 16) covering ``size`` up to ``high``."""
    block = low
    while block < size and block < high:
        block *= 2
    return block


def _precisions(precision: str) -> tuple[bool, str, str]:
    """(bf16 operands, the large product's input_precision, the Gram product's input_precision)."""
    if precision == "tf32":
        return False, "tf32", "tf32"
    return precision == "bf16", "ieee", "ieee"


def _launch(xp: Tensor, d: Tensor, ct: Tensor, gram: Tensor, eps: float, precision: str, **blocks):
    """Launch the codes kernel over a grid of (tiles of BLOCK_N positions, B)."""
    batch, dim, n = xp.shape
    low, big, small = _precisions(precision)
    grid = (-(-n // blocks["BLOCK_N"]), batch)
    _kernels()[0][grid](
        xp,
        d,
        ct,
        gram,
        eps,
        n,
        dim,
        d.shape[-1],
        *xp.stride(),
        *d.stride(),
        *ct.stride(),
        *gram.stride(),
        **blocks,
        BLOCK_R=_tile(d.shape[-1], 16, _MAX_RANK),
        LOW=low,
        UPCAST=_interpreting(),
        PRECISION=big,
        SMALL_PRECISION=small,
    )


def nmf_codes_step(xp: Tensor, d: Tensor, ct: Tensor, *, eps: float, precision: str = "fp32") -> Tensor:
    """One code update in place on ``ct`` (B, N, R), float32, from X ``xp`` (B, D, N; float32 or bfloat16) and the
    bases ``d`` (B, D, R), float32. Returns ``ct``."""
    dim, n = xp.shape[1:]
    with torch.autocast(xp.device.type, enabled=False):  # the kernels take a float32 Gram matrix, also under autocast
        gram = torch.bmm(d.mT, d)  # (B, R, D) @ (B, D, R) -> (B, R, R)
    _launch(xp, d, ct, gram, eps, precision, BLOCK_N=_tile(n, 16, 64), BLOCK_K=_tile(dim, 16, 32))
    return ct


def bases_parts(xp: Tensor, block_d: int, block_n: int, *, sms: int | None = None) -> int:
    """Slices of N the bases update's product XCᵀ is split into: 1 (one kernel) unless the (channel tiles × B)
    programs would leave a GPU's ``sms`` multiprocessors (default: ``xp``'s GPU's; none off CUDA) idle — at B 1,
    C 512 there are 16 of them — then enough slices for about two programs per multiprocessor, each slice a whole
    number of BLOCK_N blocks of positions."""
    if sms is None:
        if not xp.is_cuda:
            return 1
        sms = torch.cuda.get_device_properties(xp.device).multi_processor_count
    programs = -(-xp.shape[1] // block_d) * xp.shape[0]
    return _slices(-(-xp.shape[2] // block_n), -(-2 * sms // programs))[1]


def _slices(blocks: int, parts: int) -> tuple[int, int]:
    """(blocks per slice, slices) for ``blocks`` BLOCK_N blocks of positions cut into about ``parts`` slices: at least
    one, at most one per block, and no empty slice (ceil(blocks / parts) blocks each)."""
    per = -(-blocks // max(1, min(parts, blocks)))
    return per, -(-blocks // per)


def nmf_bases_step(
    xp: Tensor, d: Tensor, ct: Tensor, *, eps: float, precision: str = "fp32", parts: int | None = None
) -> Tensor:
    """One bases update in place on ``d`` (B, D, R), float32, from X ``xp`` (B, D, N) and the codes ``ct``
    (B, N, R), float32. Returns ``d``. ``parts`` (default :func:`bases_parts`) > 1 splits the product over N: one
    launch writes each slice's XCᵀ to a float32 workspace, a second sums the slices in order (deterministic) and
    applies the update."""
    dim, n = xp.shape[1:]
    with torch.autocast(xp.device.type, enabled=False):
        gram = torch.bmm(ct.mT, ct)  # (B, R, N) @ (B, N, R) -> (B, R, R)
    block_d, block_n = _tile(dim, 16, 32), _tile(n, 16, 64)
    per, parts = _slices(-(-n // block_n), bases_parts(xp, block_d, block_n) if parts is None else parts)
    span = per * block_n  # positions per slice, whole blocks
    batch, rank = xp.shape[0], d.shape[-1]
    low, big, small = _precisions(precision)
    block_r, tiles = _tile(rank, 16, _MAX_RANK), -(-dim // block_d)
    bases = _kernels()[1]
    work = d if parts == 1 else torch.empty(parts, batch, dim, rank, device=d.device, dtype=torch.float32)
    args = (
        xp,
        d,
        ct,
        gram,
        work,
        eps,
        n,
        dim,
        rank,
        span,
        parts,
        *xp.stride(),
        *d.stride(),
        *ct.stride(),
        *gram.stride(),
        *((0, *d.stride()) if parts == 1 else work.stride()),
    )
    meta = dict(
        BLOCK_D=block_d,
        BLOCK_N=block_n,
        BLOCK_R=block_r,
        LOW=low,
        UPCAST=_interpreting(),
        PRECISION=big,
        SMALL_PRECISION=small,
    )
    if parts == 1:  # one kernel: the product over all N and the update
        bases[(tiles, batch, 1)](*args, **meta, MODE=0)
    else:  # the slices' products to the workspace (P, B, D, R), then their sum and the update
        bases[(tiles, batch, parts)](*args, **meta, MODE=1)
        bases[(tiles, batch, 1)](*args, **meta, MODE=2)
    return d
