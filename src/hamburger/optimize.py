"""One call to the fast path: every ham's precision set, the model compiled in place, state-dict keys unchanged."""

from __future__ import annotations

import torch
from torch import nn

from .functional import PRECISIONS
from .graphs import GraphRunner
from .ham import CHECK_MODES, Ham

__all__ = ["optimize", "STATIC_MODES", "GRAPHS"]

STATIC_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that capture CUDA graphs
GRAPHS = "graphs"  # optimize's own mode: CUDA graphs of the eager forward (hamburger.graphs), no compilation


def optimize(
    model: nn.Module,
    *,
    precision: str | None = None,
    compile: bool = True,
    mode: str | None = None,
    dynamic: bool | None = None,
    check_input: bool | str | None = None,
    fused: bool | None = None,
) -> nn.Module:
    """Put ``model`` on the fast path and return it (the same object, modified in place).

    Args:
        model: any module; every NMF / VQ / CD ham inside it is configured.
        precision: ``"fp32"`` | ``"bf16"`` | ``"tf32"`` for every ham (None keeps each ham's own). ``"bf16"`` is
            the fast choice on GPUs and on CPUs with bf16 matrix units; see :mod:`hamburger.functional` for what
            it rounds. With ``"tf32"`` and ``compile=True`` on a CUDA model, the compiled graph follows the global
            setting, so this call sets ``torch.set_float32_matmul_precision("high")`` (process-wide).
        compile: compile with ``model.compile(...)``, which keeps the parameter and buffer names (``torch.compile
            (model)`` would return a wrapper whose state dict is prefixed with ``_orig_mod.``).
        mode: ``torch.compile`` mode, e.g. ``"max-autotune"`` or ``"reduce-overhead"`` (CUDA graphs on GPU); or
            ``"graphs"``: no compilation, the *eager* forward captured into one CUDA graph per input shape for
            inference (:mod:`hamburger.graphs`; eval mode without autograd on CUDA, eager otherwise), which keeps
            the eager kernels (cuBLAS, the fused NMF steps) and drops only the launches; ``compile`` and
            ``dynamic`` do not apply.
        dynamic: ``torch.compile``'s ``dynamic``. None: ``False`` (one static graph per input shape) under
            ``"reduce-overhead"`` and ``"max-autotune"`` — CUDA graphs capture static graphs only, and torch's own
            default (specialise, then mark the changed dimension dynamic at the second shape) silently falls back to
            uncaptured kernels from the second shape on — and torch's default otherwise.
        check_input: set every ham's input check (``True``, ``"sync"``, ``"async"`` or ``False``; None keeps them).
        fused: set every ham's ``fused`` (NMF's gradient-free steps in Triton kernels on CUDA,
            :mod:`hamburger.kernels`): ``False`` turns them off, ``True`` on; None keeps each ham's own (auto).
            Inside ``compile=True`` graphs the compiler's own kernels run instead.

    The default input checks never synchronise the host inside a compiled graph (they become device asserts).

    **When capture pays**: where the block is launch-bound (small batches and sizes on a GPU); where it is not, a
    compiled and captured block (``"reduce-overhead"``) can run slower than eager, since it also swaps in the
    compiler's kernels, while ``mode="graphs"`` captures the eager kernels and drops only their launches. The GPU
    timings of both: docs/results/crossover.md. Measure your shapes before you keep either.

    **Shapes.** With static graphs every new input shape (batch, H, W) compiles once more — seconds on a GPU, tens
    of seconds for a whole model on a CPU — and is reused afterwards. After ``torch._dynamo.config.recompile_limit``
    shapes (8 by default) a compiled module falls back to eager for any further shape, with a warning. Multi-scale
    segmentation evaluation feeds a shape per scale and flip: either evaluate the eager model (the reference, always
    correct), pad or resize inputs to a few fixed sizes, pass ``dynamic=True`` (one graph for all shapes, without CUDA
    graphs), or raise the limit before the first call.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize expects an nn.Module, got {type(model).__name__}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if fused is not None and not isinstance(fused, bool):  # 1 == True, but a stored 1 is not a flag
        raise ValueError(f"fused must be None (keep), True or False, got {fused!r}")
    if check_input is not None and (check_input not in CHECK_MODES or type(check_input) is int):
        raise ValueError(f"check_input must be one of {CHECK_MODES} or None, got {check_input!r}")
    hams = [m for m in model.modules() if isinstance(m, Ham)]
    if mode == GRAPHS and any((h.check_input if check_input is None else check_input) == "sync" for h in hams):
        raise ValueError(
            'check_input="sync" synchronises the host, which a CUDA graph cannot hold: pass '
            'check_input="async" (or True) with mode="graphs"'
        )
    for ham in hams:
        if precision is not None:
            ham.precision = precision
        if check_input is not None:
            ham.check_input = check_input
        if fused is not None:
            ham.fused = fused
    if mode == GRAPHS:
        forward = model.forward.forward if isinstance(model.forward, GraphRunner) else model.forward
        model.forward = GraphRunner(model, forward)  # an instance attribute: nn.Module.__call__ finds it first
        return model
    if compile:
        on_cuda = any(p.is_cuda for p in model.parameters()) or any(b.is_cuda for b in model.buffers())
        if precision == "tf32" and on_cuda:
            torch.set_float32_matmul_precision("high")
        if dynamic is None and mode in STATIC_MODES:
            dynamic = False  # CUDA graphs need static shapes: one graph per shape, not a dynamic one from the second
        model.compile(mode=mode, dynamic=dynamic)
    return model
