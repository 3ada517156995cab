"""Where the time of the Hamburger block goes, eager against captured, kernel by kernel (torch.profiler).

    PYTHONPATH=src python3 benchmarks/profile_block.py [--device cuda] [--batch 8] [--size 128] [--out DIR]

Written for the H200 run in which the captured block (``optimize(mode="reduce-overhead")``) ran slower than eager at
B 8 from 128² (12.2 against 7.8 ms eval, docs/results/crossover.md): it profiles one eval forward of each, bf16
(ham products and autocast), after warm-up, and writes the kernels that take the most device time (self CPU time on
a CPU) to OUT/profile-block.md, with the totals. Runs on a CPU too, at any size (the test's).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from hamburger import Hamburger, optimize


def _table(prof, device: str, rows: int) -> tuple[list[str], float]:
    """The top ``rows`` kernels as Markdown rows and the total milliseconds they were sorted by."""
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) / 1e3
    lines = [f"| {e.key[:80].replace('|', '/')} | {e.count} | {getattr(e, key) / 1e3:.3f} |" for e in events[:rows]]
    return lines, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=128, help="H = W")
    p.add_argument("--channels", type=int, default=512)
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--calls", type=int, default=3, help="profiled forwards per variant")
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--out", type=Path, default=Path("results/profile-block"))
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    dev = torch.device(args.device)
    torch.manual_seed(0)
    block = Hamburger(args.channels, ham="nmf", rank=args.rank, precision="bf16").to(dev).eval()
    variants = {"eager": optimize(block, fused=False, compile=False)}
    if dev.type == "cuda":
        variants["captured"] = optimize(copy.deepcopy(block), mode="reduce-overhead")
    else:  # CUDA graphs need a GPU: the same static graph without them
        variants["compiled"] = optimize(copy.deepcopy(block), dynamic=False)
    x = torch.rand(args.batch, args.channels, args.size, args.size, device=dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    md = [
        f"# The Hamburger block, eager against {list(variants)[1]}, B {args.batch}, {args.size}², C {args.channels}, "
        f"R {args.rank}, bf16, eval ({dev.type}{', ' + torch.cuda.get_device_name(dev) if dev.type == 'cuda' else ''}"
        f", torch {torch.__version__})",
        "",
    ]
    for name, module in variants.items():
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
            for _ in range(3):  # warm-up: compile, capture
                module(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            with profile(activities=activities) as prof:
                for _ in range(args.calls):
                    module(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
        lines, total = _table(prof, dev.type, args.rows)
        md += [
            f"## {name}: {total / args.calls:.2f} ms per forward ({'device' if dev.type == 'cuda' else 'CPU'} "
            f"time, summed over kernels)",
            "",
            "| kernel | calls | ms (all calls) |",
            "|---|---:|---:|",
            *lines,
            "",
        ]
        print(md[-len(lines) - 5], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile-block.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
