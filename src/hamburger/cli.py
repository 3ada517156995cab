"""Command line: ``hamburger decompose``, ``hamburger bench`` and ``hamburger bench ham``. Thin: parse, then call a
recipe."""

from __future__ import annotations

import argparse
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hamburger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="is attention better than matrix decomposition? Hamburger vs self-attention vs no context, here"
    )
    demo.add_argument("--quick", action="store_true", help="the same path in a couple of minutes (a smoke check)")
    demo.add_argument("--iters", type=_positive, default=None, help="training iterations per model (default 800)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--data-root", type=Path, default=None, help="animal-scenes cache folder")
    demo.add_argument("--out", type=Path, default=Path("results/demo"))

    dec = sub.add_parser("decompose", help="decompose a real photo with NMF, VQ and CD; print errors, write a PNG")
    dec.add_argument("--image", default="camera", help="scikit-image greyscale photo (default: camera)")
    dec.add_argument("--ranks", type=_ints, default=(8, 16, 32, 64), help="comma-separated ranks R")
    dec.add_argument("--steps", type=int, default=10, help="optimisation steps K")
    dec.add_argument("--hams", default="nmf,vq,cd", help="comma-separated hams")
    dec.add_argument("--out", type=Path, default=Path("results/decompose"), help="output folder")

    bench = sub.add_parser(
        "bench", help="context modules side by side: params, FLOPs, time, memory over resolutions (or: bench ham)"
    )
    bench.add_argument("--modules", default=None, help="comma-separated context names (default: all registered)")
    bench.add_argument("--channels", type=_positive, default=512)
    bench.add_argument("--batch", type=_positive, default=1)
    bench.add_argument("--sizes", type=_ints, default=(32, 64, 96, 128), help="comma-separated H = W")
    bench.add_argument("--repeats", type=_positive, default=5)
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--dtype", default="float32")
    bench.add_argument("--memory-limit-gib", type=float, default=8.0, help="skip sizes predicted to need more")
    bench.add_argument("--time-limit-s", type=float, default=60.0, help="skip sizes predicted to take longer per step")
    bench.add_argument("--train-size", type=_positive, default=64, help="H = W of the training-memory-vs-K test")
    bench.add_argument("--train-steps", type=_ints, default=(1, 6, 30))
    bench.add_argument("--threads", type=_positive, default=None, help="torch threads (default: torch's choice)")
    bench.add_argument("--out", type=Path, default=Path("results/bench"))
    bsub = bench.add_subparsers(dest="mode", required=False)
    ham = bsub.add_parser("ham", help="NMF ham vs the official operation order; training memory vs K; denormals")
    ham.add_argument("--channels", type=_positive, default=512)
    ham.add_argument("--size", type=_positive, default=128, help="H = W of the speed test")
    ham.add_argument("--rank", type=_positive, default=64)
    ham.add_argument("--steps", type=int, default=7, help="eval steps K of the speed test")
    ham.add_argument("--repeats", type=_positive, default=7)
    ham.add_argument("--train-size", type=_positive, default=64)
    ham.add_argument("--train-steps", type=_ints, default=(1, 6, 30))
    ham.add_argument("--denormal-size", type=_positive, default=64)
    ham.add_argument("--denormal-steps", type=int, default=30)
    ham.add_argument("--threads", type=_positive, default=None, help="torch threads (default: torch's choice)")
    ham.add_argument("--out", type=Path, default=Path("results/bench-ham"))
    seg = bsub.add_parser("seg", help="segmentation throughput (images/s), training and inference")
    seg.add_argument("--models", default="hamnet_r50_d8,nonlocal_r50_d8,fcn_r50_d8")
    seg.add_argument("--crops", type=_ints, default=(256, 512))
    seg.add_argument("--train-batch", type=_positive, default=2)
    seg.add_argument("--repeats", type=_positive, default=3)
    seg.add_argument("--device", default="cpu")
    seg.add_argument("--out", type=Path, default=Path("results/bench-seg"))
    from .seg_cli import add_seg_parser

    add_seg_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import sys

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv) if "--config" not in argv else None
    if args is None or args.command == "seg":
        from .seg_cli import run_seg

        run_seg(args, parser, argv)
        return 0
    if args.command == "demo":
        from .recipes import compare

        iters = args.iters or (20 if args.quick else 800)
        compare.run(
            heads=compare.DEMO_HEADS, seeds=(args.seed,), iters=iters, val_interval=10 if args.quick else 100,
            max_val=40 if args.quick else None, data_root=args.data_root, out=args.out, title="demo",
        )  # fmt: skip
        return 0
    if args.command == "decompose":
        from .recipes import decompose

        if args.steps < 0:
            raise SystemExit(f"--steps must be >= 0, got {args.steps}")
        decompose.run(
            image=args.image, ranks=args.ranks, steps=args.steps, hams=tuple(args.hams.split(",")), out=args.out
        )
    elif args.command == "bench" and args.mode is None:
        import torch

        from .recipes import bench_context

        if args.threads:
            torch.set_num_threads(args.threads)
        try:
            bench_context.run(
                modules=tuple(args.modules.split(",")) if args.modules else None, channels=args.channels,
                batch=args.batch, sizes=args.sizes, repeats=args.repeats, device=args.device, dtype=args.dtype,
                memory_limit_gib=args.memory_limit_gib, time_limit_s=args.time_limit_s, train_size=args.train_size,
                train_steps=args.train_steps, out=args.out,
            )  # fmt: skip
        except ValueError as e:
            raise SystemExit(f"hamburger bench: {e}") from None
    elif args.command == "bench" and args.mode == "ham":
        import torch

        from .recipes import bench_ham

        if args.threads:
            torch.set_num_threads(args.threads)
        bench_ham.run(
            channels=args.channels,
            size=args.size,
            rank=args.rank,
            steps=args.steps,
            repeats=args.repeats,
            train_size=args.train_size,
            train_steps=args.train_steps,
            denormal_size=args.denormal_size,
            denormal_steps=args.denormal_steps,
            out=args.out,
        )
    elif args.command == "bench" and args.mode == "seg":
        from .recipes import bench_seg

        bench_seg.run(
            models=tuple(args.models.split(",")), crops=args.crops, train_batch=args.train_batch,
            repeats=args.repeats, device=args.device, out=args.out,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
