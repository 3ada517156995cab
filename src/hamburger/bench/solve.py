"""`hamburger bench solve`: the NMF solve alone at inference (``functional.nmf``, K steps and the final code update,
no autograd) — PyTorch's kernels, the fused Triton steps (:mod:`hamburger.kernels`, CUDA) and ``torch.compile`` —
per precision, batch and size. Issue 30's target is the fused solve at 128², B 1, bf16: at most 0.25 ms on an H200.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import functional as HF
from .. import kernels
from ..engine.common import machine_info, write_results
from ..engine.measure import bench_device
from .crossover import timer


def _variants(device: torch.device, precision: str, steps: int) -> dict:
    def solve(fused):
        return lambda x, bases: HF.nmf(x, bases, steps, grad="none", precision=precision, fused=fused).recon

    out = {"pytorch": solve(False)}
    if (device.type == "cuda" or kernels.FORCE) and kernels.available():
        out["fused"] = solve(True)
    out["compiled"] = torch.compile(solve(False), dynamic=False)
    return out


def run(
    *,
    device: str = "cuda",
    sizes=(64, 128),
    batches=(1, 8),
    precisions=("bf16", "fp32"),
    channels: int = 512,
    rank: int = 64,
    steps: int = 7,
    repeats: int = 20,
    compile: bool = True,
    out: Path | None = Path("results/bench-solve"),
    progress: bool = True,
) -> dict:
    """One row per (precision, batch, size): milliseconds of each variant, and the fused solve's speed-up."""
    dev, dev_info = bench_device(device)
    rows = []
    for precision in precisions:
        variants = _variants(dev, precision, steps)
        if not compile:
            variants.pop("compiled")
        for batch in batches:
            for size in sizes:
                gen = torch.Generator().manual_seed(0)
                x = torch.rand(batch, channels, size * size, generator=gen).to(dev)
                bases = torch.nn.functional.normalize(torch.rand(batch, channels, rank, generator=gen), dim=1).to(dev)
                ms = {}
                with torch.no_grad():
                    for name, f in variants.items():
                        ms[name] = timer(lambda f=f, x=x, b=bases: f(x, b), dev, repeats=repeats)
                rows.append({"precision": precision, "batch": batch, "size": size, "ms": ms})
                if progress:
                    print(rows[-1], flush=True)
    names = sorted({k for r in rows for k in r["ms"]})
    md = [
        f"## The NMF solve alone (C {channels}, R {rank}, K {steps} + the final code update, no autograd) on "
        f"{dev_info.get('gpu', machine_info()['cpu'])}",
        "",
        f"Milliseconds (median of {repeats}).",
        "",
        "| precision | B | H=W | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for r in rows:
        md.append(
            f"| {r['precision']} | {r['batch']} | {r['size']} | "
            + " | ".join(f"{r['ms'][k]:.3f}" if k in r["ms"] else "-" for k in names)
            + " |"
        )
    info = {**machine_info(), **dev_info, "channels": channels, "rank": rank, "steps": steps, "repeats": repeats}
    result = {"machine": info, "rows": rows}
    if out is not None:
        write_results(Path(out), "solve", info, {"rows": rows}, md)
    if progress:
        print("\n".join(md))
    return result
