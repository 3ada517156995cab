"""Cost of one causal mixer layer against sequence length N (kept for the figures of issue 16; the command is now
`hamburger seq bench`, which adds linear attention, the crossover against SDPA, a plot and ``--device``).

    python benchmarks/mixer_scaling.py --ns 512,1024,2048,4096,8192,16384 --out results/mixer-scaling
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hamburger.seq.experiments import bench as seq_bench


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
    seq_bench.run(
        ns=tuple(int(v) for v in args.ns.split(",")),
        mixers=tuple(args.mixers.split(",")),
        dim=args.dim,
        heads=args.heads,
        rank=args.rank,
        chunk=args.chunk,
        repeats=args.repeats,
        out=args.out,
    )


if __name__ == "__main__":
    main()
