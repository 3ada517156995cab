"""`hamburger bench ham`: the NMF ham against the official operation order, training memory against K, denormals.

Every figure is measured in the run that prints it; timings of different variants are interleaved repeats.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .. import functional as HF
from ..burger import Hamburger
from ..engine.common import interleaved_medians, machine_info, matmul_gflops, write_results
from ..engine.measure import count_flops
from ..functional import SOLVE_GRADIENTS
from ..ham import NMF


def reference_nmf(x: torch.Tensor, bases: torch.Tensor, steps: int, eps: float = 1e-6) -> torch.Tensor:
    """The official code's operation order and layout: codes (B, N, R), plain bmm on transposed views,
    out-of-place element-wise maths, XᵀD recomputed for the first step. Returns the reconstruction (B, D, N)."""
    coef = torch.softmax(torch.bmm(x.transpose(1, 2), bases), dim=-1)  # (B, N, R)
    for _ in range(steps):
        numerator = torch.bmm(x.transpose(1, 2), bases)  # (B, N, R)
        denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))  # (B, N, R)
        coef = coef * numerator / (denominator + eps)
        numerator = torch.bmm(x, coef)  # (B, D, R)
        denominator = bases.bmm(coef.transpose(1, 2).bmm(coef))  # (B, D, R)
        bases = bases * numerator / (denominator + eps)
    numerator = torch.bmm(x.transpose(1, 2), bases)
    denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
    coef = coef * numerator / (denominator + eps)
    return torch.bmm(bases, coef.transpose(1, 2))  # (B, D, N)


def saved_bytes(fn) -> int:
    """Bytes autograd saves for backward while fn runs: the training memory that depends on the ham's K."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def clustered_input(channels: int, n: int, clusters: int = 8, floor: float = 1e-3, seed: int = 0) -> torch.Tensor:
    """(1, C, N) non-negative features of a few clusters on disjoint channel sets plus a tiny floor: the late-training
    regime in which NMF's multiplicative updates shrink the codes of the wrong clusters geometrically."""
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(1, channels, clusters)
    width = channels // clusters
    for j in range(clusters):
        w[0, j * width : (j + 1) * width, j] = torch.rand(width, generator=g) + 0.5
    labels = torch.randint(0, clusters, (n,), generator=g)
    return w @ F.one_hot(labels, clusters).T.float()[None] + floor * torch.rand(1, channels, n, generator=g)


def _denormal_fraction(t: torch.Tensor) -> float:
    a = t.abs()
    return ((a > 0) & (a < torch.finfo(t.dtype).tiny)).float().mean().item()


def run(
    *,
    channels: int = 512,
    size: int = 128,
    rank: int = 64,
    steps: int = 7,
    repeats: int = 7,
    train_size: int = 64,
    train_steps: tuple[int, ...] = (1, 6, 30),
    denormal_size: int = 64,
    denormal_steps: int = 30,
    out: Path | None = None,
    progress: bool = True,
) -> dict:
    info = machine_info()
    say = print if progress else (lambda *a, **k: None)
    rows: dict = {}

    # 1. speed of the NMF ham (no breads), eval: ours against the official operation order
    say("[1/4] machine fp32 matmul throughput ...")
    peak = matmul_gflops()
    rows["matmul_gflops"] = peak
    ham = NMF(channels, rank=rank, eval_steps=steps).eval()
    x = torch.rand(1, channels, size, size)
    start = ham.eval_bases  # (1, D, R), the ham's own fixed start
    flat = x.reshape(1, channels, -1)
    with torch.no_grad():
        ours_out, ref_out = ham(x), reference_nmf(flat, start, steps).reshape_as(x)
        max_diff = (ours_out - ref_out).abs().max().item()
        flops = {
            "ours": count_flops(lambda: ham(x)),
            "reference": count_flops(lambda: reference_nmf(flat, start, steps)),
        }
        say(f"[2/4] NMF ham 1x{channels}x{size}x{size}, R={rank}, K={steps}: {repeats} interleaved repeats ...")
        times = interleaved_medians(
            {"ours": lambda: ham(x), "reference": lambda: reference_nmf(flat, start, steps)}, repeats=repeats
        )
    rows["speed"] = {
        "shape": [1, channels, size, size],
        "rank": rank,
        "steps": steps,
        "repeats": repeats,
        "ms": {k: v * 1e3 for k, v in times.items()},
        "gflop": {k: v / 1e9 for k, v in flops.items()},
        "gflops_per_s": {k: flops[k] / times[k] / 1e9 for k in times},
        "speedup": times["reference"] / times["ours"],
        "flop_ratio": flops["ours"] / flops["reference"],
        "max_abs_diff": max_diff,
    }

    # 2. training memory and time against K: one-step gradient vs BPTT (Hamburger block, v1)
    say(f"[3/4] training memory vs K (block 1x{channels}x{train_size}x{train_size}) ...")
    xt = torch.randn(1, channels, train_size, train_size)
    mem = {}
    for grad in SOLVE_GRADIENTS:
        for k in train_steps:
            block = Hamburger(channels, rank=rank, train_steps=k, grad=grad).train()

            def step(block=block):
                block(xt).square().mean().backward()

            saved = saved_bytes(lambda block=block: block(xt).square().mean())
            t = interleaved_medians({"step": step}, repeats=max(3, repeats // 2))["step"]
            mem[f"{grad} K={k}"] = {"saved_MiB": saved / 2**20, "fwd_bwd_ms": t * 1e3}
    rows["training"] = mem

    # 3. denormals: a long-running input with and without the solver's flush
    say(f"[4/4] denormals: clustered input, K={denormal_steps} ...")
    xd = clustered_input(channels, denormal_size * denormal_size)
    bases = NMF(channels, rank=rank).eval_bases
    den = {}
    for flag in (False, True):
        with HF.cpu_settings(flush_denormals=flag), torch.no_grad():
            d = HF.nmf(xd, bases, denormal_steps)
        den["flush" if flag else "no flush"] = {
            "denormal_codes": _denormal_fraction(d.codes),
            "denormal_bases": _denormal_fraction(d.bases),
        }
    timings = {}
    for flag in (False, True):
        with HF.cpu_settings(flush_denormals=flag):
            timings["flush" if flag else "no flush"] = interleaved_medians(
                {"nmf": lambda: HF.nmf(xd, bases, denormal_steps, grad="none")}, repeats=repeats
            )["nmf"]
    for k, v in timings.items():
        den[k]["ms"] = v * 1e3
    rows["denormals"] = den

    md = _markdown(rows, channels, size, rank, steps, train_size, denormal_size, denormal_steps)
    if out is not None:
        json_path, md_path = write_results(Path(out), "bench-ham", info, rows, md)
        say(f"wrote {md_path} and {json_path}")
    say("\n".join(md))
    return {"machine": info, "results": rows}


def _markdown(rows, channels, size, rank, steps, train_size, denormal_size, denormal_steps) -> list[str]:
    s = rows["speed"]
    peak = rows["matmul_gflops"]
    md = [
        f"## NMF ham, eval, 1x{channels}x{size}x{size}, R={rank}, K={steps} (fp32; machine matmul {peak:.0f} GFLOP/s)",
        "",
        "| implementation | median ms | GFLOP | GFLOP/s | % of matmul peak |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in ("reference", "ours"):
        g = s["gflops_per_s"][k]
        md.append(f"| {k} | {s['ms'][k]:.1f} | {s['gflop'][k]:.2f} | {g:.0f} | {100 * g / peak:.0f}% |")
    md += [
        "",
        f"speed-up {s['speedup']:.2f}x, FLOP ratio {s['flop_ratio']:.3f}, max |difference| {s['max_abs_diff']:.2e}",
        "",
        f"## Training (forward+backward), Hamburger v1 block, 1x{channels}x{train_size}x{train_size}, R={rank}",
        "",
        "| gradient | saved for backward (MiB) | fwd+bwd ms |",
        "|---|---:|---:|",
    ]
    for k, v in rows["training"].items():
        md.append(f"| {k} | {v['saved_MiB']:.1f} | {v['fwd_bwd_ms']:.1f} |")
    md += [
        "",
        f"## Denormals: clustered input 1x{channels}x{denormal_size * denormal_size}, K={denormal_steps}",
        "",
        "| solver | denormal codes | denormal bases | median ms |",
        "|---|---:|---:|---:|",
    ]
    for k, v in rows["denormals"].items():
        md.append(f"| {k} | {100 * v['denormal_codes']:.1f}% | {100 * v['denormal_bases']:.1f}% | {v['ms']:.1f} |")
    return md
