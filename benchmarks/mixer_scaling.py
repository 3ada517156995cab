"""Cost of one causal mixer layer against sequence length N: the chunked causal Ham (NMF, VQ) and causal SDPA
attention — forward time, training-step time (forward + backward) and peak memory, with the power-law exponent of
each over N (1 = linear). Issue 16's check that the causal Ham's cost grows linearly in N.

    python benchmarks/mixer_scaling.py --ns 512,1024,2048,4096,8192,16384 --out results/mixer-scaling
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hamburger.recipes.common import atomic_write_text, machine_info
from hamburger.recipes.measure import median_time, peak_memory, power_law_exponent
from hamburger.sequence import create_mixer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ns", default="512,1024,2048,4096,8192,16384")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mixers", default="ham_nmf,ham_vq,softmax")
    p.add_argument("--out", type=Path, default=Path("results/mixer-scaling"))
    args = p.parse_args()
    ns = [int(v) for v in args.ns.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.mixers.split(","):
        kw = {"rank": args.rank, "chunk": args.chunk} if name.startswith("ham_") else {}
        mixer = create_mixer(name, args.dim, heads=args.heads, causal=True, **kw)
        for n in ns:
            x = torch.randn(1, n, args.dim)

            def forward(mixer=mixer, x=x):
                with torch.no_grad():
                    return mixer(x)

            def train_step(mixer=mixer, x=x):
                mixer.zero_grad(set_to_none=True)
                mixer(x).square().mean().backward()

            rows.append({
                "mixer": name, "n": n, "forward_ms": 1e3 * median_time(forward, repeats=args.repeats),
                "train_ms": 1e3 * median_time(train_step, repeats=args.repeats),
                "train_peak_mib": peak_memory(train_step, torch.device("cpu")) / 2**20,
            })  # fmt: skip
            print(rows[-1], flush=True)
    md = [f"# One causal mixer layer against N (C {args.dim}, {args.heads} heads, R {args.rank}, chunk {args.chunk}, "
          "batch 1, CPU)", ""] + [f"- {k}: {v}" for k, v in machine_info().items()]  # fmt: skip
    md += ["", "| mixer | N | forward ms | train step ms | train peak MiB |", "|---|---:|---:|---:|---:|"]
    md += [f"| {r['mixer']} | {r['n']} | {r['forward_ms']:.1f} | {r['train_ms']:.1f} | {r['train_peak_mib']:.1f} |"
           for r in rows]  # fmt: skip
    md += ["", "Power-law exponent over N (cost ∝ N^e; 1 = linear, 2 = quadratic), least squares over N >= 2048:", "",
           "| mixer | forward | train step | train memory |", "|---|---:|---:|---:|"]  # fmt: skip
    for name in args.mixers.split(","):
        rs = [r for r in rows if r["mixer"] == name and r["n"] >= 2048]
        e = [power_law_exponent([r["n"] for r in rs], [r[k] for r in rs])
             for k in ("forward_ms", "train_ms", "train_peak_mib")]  # fmt: skip
        md.append(f"| {name} | " + " | ".join(f"{v:.2f}" if v is not None else "-" for v in e) + " |")
    atomic_write_text(args.out / "mixer-scaling.md", "\n".join(md) + "\n")
    atomic_write_text(args.out / "mixer-scaling.json", json.dumps(rows, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
