"""Command line: ``hamburger demo``, ``decompose``, ``ablate``, ``viz``, ``bench`` (``ham|seg|crossover|precision``),
``seg``, ``gan`` and ``seq``. Thin: parse, then call a recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from .engine.config import (
    device_name,
    integers,
    nonnegative_int,
    nonnegative_ints,
    positive_float,
    positive_int,
    positive_ints,
    shard_spec,
)


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _choices(allowed: tuple[str, ...]):
    """argparse type: comma-separated names, each one of ``allowed``."""

    def parse(text: str) -> tuple[str, ...]:
        names = _names(text)
        bad = [n for n in names if n not in allowed]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"expected comma-separated names from {', '.join(allowed)}; got {text!r}")
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hamburger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="is attention better than matrix decomposition? Hamburger vs self-attention vs no context, here"
    )
    demo.add_argument("--quick", action="store_true", help="the same path in a couple of minutes (a smoke check)")
    demo.add_argument("--iters", type=positive_int, default=None, help="training iterations per model (default 800)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:1, ...")
    demo.add_argument("--data-root", type=Path, default=None, help="animal-scenes cache folder")
    demo.add_argument("--out", type=Path, default=Path("results/demo"))

    dec = sub.add_parser("decompose", help="decompose a real photo with NMF, VQ and CD; print errors, write a PNG")
    dec.add_argument("--image", default="camera", help="scikit-image greyscale photo (default: camera)")
    dec.add_argument("--ranks", type=positive_ints, default=(8, 16, 32, 64), help="comma-separated ranks R")
    dec.add_argument("--steps", type=nonnegative_int, default=10, help="optimisation steps K")
    hams = ("nmf", "vq", "cd")
    dec.add_argument("--hams", type=_choices(hams), default=hams, help="comma-separated hams")
    dec.add_argument("--out", type=Path, default=Path("results/decompose"), help="output folder")

    bench = sub.add_parser(
        "bench", help="context modules side by side: params, FLOPs, time, memory over resolutions (or: bench ham)"
    )
    bench.add_argument("--modules", default=None, help="comma-separated context names (default: all registered)")
    bench.add_argument("--channels", type=positive_int, default=512)
    bench.add_argument("--batch", type=positive_int, default=1)
    bench.add_argument("--sizes", type=positive_ints, default=(32, 64, 96, 128), help="comma-separated H = W")
    bench.add_argument("--repeats", type=positive_int, default=5)
    bench.add_argument("--device", type=device_name, default="cpu")
    bench.add_argument("--dtype", default="float32")
    bench.add_argument("--memory-limit-gib", type=positive_float, default=8.0, help="skip sizes predicted to need more")
    bench.add_argument(
        "--time-limit-s", type=positive_float, default=60.0, help="skip sizes predicted to take longer per step"
    )
    bench.add_argument("--train-size", type=positive_int, default=64, help="H = W of the training-memory-vs-K test")
    bench.add_argument("--train-steps", type=nonnegative_ints, default=(1, 6, 30))
    bench.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    bench.add_argument("--out", type=Path, default=Path("results/bench"))
    bsub = bench.add_subparsers(dest="mode", required=False)
    ham = bsub.add_parser("ham", help="NMF ham vs the official operation order; training memory vs K; denormals")
    ham.add_argument("--channels", type=positive_int, default=512)
    ham.add_argument("--size", type=positive_int, default=128, help="H = W of the speed test")
    ham.add_argument("--rank", type=positive_int, default=64)
    ham.add_argument("--steps", type=nonnegative_int, default=7, help="eval steps K of the speed test")
    ham.add_argument("--repeats", type=positive_int, default=7)
    ham.add_argument("--train-size", type=positive_int, default=64)
    ham.add_argument("--train-steps", type=nonnegative_ints, default=(1, 6, 30))
    ham.add_argument("--denormal-size", type=positive_int, default=64)
    ham.add_argument("--denormal-steps", type=nonnegative_int, default=30)
    ham.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    ham.add_argument("--out", type=Path, default=Path("results/bench-ham"))
    cross = bsub.add_parser(
        "crossover", help="Hamburger vs non-local attention on every SDPA backend, bf16/fp32, eval/train: the crossover"
    )
    cross.add_argument("--device", type=device_name, default=None, help="cuda if available, else cpu")
    cross.add_argument("--sizes", type=positive_ints, default=(32, 64, 96, 128, 192, 256), help="comma-separated H = W")
    cross.add_argument("--batches", type=positive_ints, default=(1, 8))
    precisions = ("bf16", "fp32", "tf32")
    cross.add_argument("--precisions", type=_choices(precisions), default=("bf16", "fp32"), help="comma-separated")
    cross.add_argument("--modes", type=_choices(("eval", "train")), default=("eval", "train"))
    backends = ("flash", "cudnn", "efficient", "math")
    cross.add_argument("--backends", type=_choices(backends), default=backends, help="SDPA backends to try")
    cross.add_argument("--channels", type=positive_int, default=512)
    cross.add_argument("--rank", type=positive_int, default=64)
    cross.add_argument("--repeats", type=positive_int, default=20)
    cross.add_argument("--no-compile", action="store_true", help="skip the compiled Hamburger")
    cross.add_argument("--math-limit-gib", type=positive_float, default=8.0, help="skip the math backend above this")
    cross.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    cross.add_argument("--out", type=Path, default=Path("results/bench-crossover"))
    prec = bsub.add_parser("precision", help="accuracy and speed of each ham precision; the block vs SDPA attention")
    prec.add_argument("--device", type=device_name, default="cpu")
    prec.add_argument("--channels", type=positive_int, default=512)
    prec.add_argument("--sizes", type=positive_ints, default=(64, 128), help="H = W of the solver table")
    prec.add_argument("--rank", type=positive_int, default=64)
    prec.add_argument("--steps", type=nonnegative_int, default=7)
    prec.add_argument("--repeats", type=positive_int, default=7)
    prec.add_argument("--precisions", type=_choices(("fp32", "bf16", "tf32")), default=("fp32", "bf16", "tf32"))
    prec.add_argument("--block-size", type=positive_int, default=128, help="H = W of the block comparison")
    prec.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    prec.add_argument("--out", type=Path, default=Path("results/bench-precision"))
    seg = bsub.add_parser("seg", help="segmentation throughput (images/s), training and inference")
    seg.add_argument("--models", default="hamnet_r50_d8,nonlocal_r50_d8,fcn_r50_d8")
    seg.add_argument("--crops", type=positive_ints, default=(256, 512))
    seg.add_argument("--train-batch", type=positive_int, default=2)
    seg.add_argument("--repeats", type=positive_int, default=3)
    seg.add_argument("--device", type=device_name, default="cpu")
    seg.add_argument("--out", type=Path, default=Path("results/bench-seg"))
    from .seg.cli import _data_args, add_seg_parser

    add_seg_parser(sub)
    from .gan.cli import add_gan_parser

    add_gan_parser(sub)
    from .seq.cli import add_seq_parser

    add_seq_parser(sub)
    abl = sub.add_parser("ablate", help="the paper's ablations on animal-scenes (resumable): tables, plots, findings")
    abl.add_argument("--seeds", type=integers, default=(0, 1, 2), help="seeds of the rows that test a finding")
    abl.add_argument("--sweep-seeds", type=integers, default=(0,), help="seeds of the sweeps (version, init, K, R)")
    abl.add_argument("--iters", type=positive_int, default=600, help="training iterations per run")
    abl.add_argument("--device", type=device_name, default="cpu")
    abl.add_argument("--data-root", type=Path, default=None, help="animal-scenes cache folder")
    abl.add_argument("--out", type=Path, default=Path("results/ablate"))
    abl.add_argument("--jobs", type=positive_int, default=1, help="training processes at once, the cores split")
    abl.add_argument("--shard", type=shard_spec, default=None, help="I/N: train only every N-th run from the I-th")
    viz = sub.add_parser("viz", help="the paper's Figure 2: what the Hamburger decomposes, for a checkpoint or a photo")
    _data_args(viz)
    viz.add_argument("--weights", type=Path, default=None, help="a .safetensors file written by seg train")
    viz.add_argument("--split", default="test")
    viz.add_argument("--images", type=nonnegative_ints, default=(0, 1, 2, 3), help="indices in the split")
    viz.add_argument("--photo", default=None, help="instead of a checkpoint: a scikit-image photo (e.g. camera)")
    viz.add_argument("--ham", choices=("nmf", "vq", "cd"), default="nmf", help="the photo's ham")
    viz.add_argument("--photo-rank", type=positive_int, default=16)
    viz.add_argument("--steps", type=nonnegative_int, default=10, help="the photo's K")
    viz.add_argument("--out", type=Path, default=Path("results/viz"))
    viz.set_defaults(dataset="animal-scenes", model="hamnet_tiny")  # the embedded benchmark's model
    return parser


# what a user's input can cause: reported as one line naming the command, never a traceback
USER_ERRORS = (ValueError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def run_group(parser: argparse.ArgumentParser, argv: list[str], group: str, subcommands: dict, handle) -> None:
    """Dispatch ``hamburger <group> <sub> ...``: parse in two passes (a ``--config`` recipe's values become the
    defaults), call ``handle(args)``, and turn a user's error into one line naming the command."""
    from .engine.config import parse_with_recipe

    name = next((a for a in argv[argv.index(group) + 1 :] if not a.startswith("-")), None)
    if name not in subcommands:
        parser.parse_args(argv)  # argparse reports what is wrong
        raise SystemExit(2)
    try:
        handle(parse_with_recipe(parser, argv, subcommands[name]))
    except USER_ERRORS as e:
        raise SystemExit(f"hamburger {group} {name}: {e}") from None


def _bench(args, label: str, call) -> None:
    """Run a recipe with the requested torch threads; a bad input becomes a one-line exit naming the command."""
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        call()
    except USER_ERRORS as e:
        raise SystemExit(f"hamburger {label}: {e}") from None


def _viz(args) -> None:
    from .viz import figure2 as viz

    if args.photo:
        path = viz.photo(image=args.photo, ham=args.ham, rank=args.photo_rank, steps=args.steps, out=args.out)
        print(f"wrote {path}")
        return
    if args.weights is None:
        raise ValueError("--weights is required (or --photo for a bare photo)")
    from .seg.cli import _load_model
    from .seg.data import build_dataset
    from .seg.transforms import SegTransform

    if args.data_root is None and args.dataset != "animal-scenes":
        raise ValueError("--data-root is required")
    kw = {"num_classes": args.num_classes} if args.dataset == "folder" else {}
    dataset = build_dataset(args.dataset, args.data_root, args.split, transform=SegTransform(train=False), **kw)
    model = _load_model(args, dataset.num_classes).cpu()
    viz.run(model=model, dataset=dataset, indices=args.images, out=args.out)


def main(argv: list[str] | None = None) -> int:
    import sys

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "gan":  # parsed in two passes: a --config recipe's values become the defaults
        from .gan.cli import run_gan

        run_gan(parser, argv)
        return 0
    if command == "seq":
        from .seq.cli import run_seq

        run_seq(parser, argv)
        return 0
    args = parser.parse_args(argv) if "--config" not in argv else None
    if args is None or args.command == "seg":
        from .seg.cli import run_seg

        run_seg(args, parser, argv)
        return 0
    if args.command == "demo":
        from .seg import compare

        iters = args.iters or (20 if args.quick else 800)
        _bench(args, "demo", lambda: compare.run(
            heads=compare.DEMO_HEADS, seeds=(args.seed,), iters=iters, val_interval=10 if args.quick else 100,
            max_val=40 if args.quick else None, data_root=args.data_root, out=args.out, title="demo",
            device=args.device,
        ))  # fmt: skip
        return 0
    if args.command == "decompose":
        from .viz import decompose

        _bench(args, "decompose", lambda: decompose.run(
            image=args.image, ranks=args.ranks, steps=args.steps, hams=args.hams, out=args.out
        ))  # fmt: skip
    elif args.command == "ablate":
        from .seg import ablate

        _bench(args, "ablate", lambda: ablate.run(
            out=args.out, finding_seeds=args.seeds, sweep_seeds=args.sweep_seeds, iters=args.iters,
            data_root=args.data_root, device=args.device, shard=args.shard, jobs=args.jobs,
        ))  # fmt: skip
    elif args.command == "viz":
        _bench(args, "viz", lambda: _viz(args))
    elif args.command == "bench" and args.mode is None:
        from .bench import context as bench_context

        _bench(args, "bench", lambda: bench_context.run(
            modules=tuple(args.modules.split(",")) if args.modules else None, channels=args.channels,
            batch=args.batch, sizes=args.sizes, repeats=args.repeats, device=args.device, dtype=args.dtype,
            memory_limit_gib=args.memory_limit_gib, time_limit_s=args.time_limit_s, train_size=args.train_size,
            train_steps=args.train_steps, out=args.out,
        ))  # fmt: skip
    elif args.command == "bench" and args.mode == "ham":
        from .bench import ham as bench_ham

        _bench(args, "bench ham", lambda: bench_ham.run(
            channels=args.channels, size=args.size, rank=args.rank, steps=args.steps, repeats=args.repeats,
            train_size=args.train_size, train_steps=args.train_steps, denormal_size=args.denormal_size,
            denormal_steps=args.denormal_steps, out=args.out,
        ))  # fmt: skip
    elif args.command == "bench" and args.mode == "crossover":
        import torch

        from .bench import crossover as bench_crossover

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        _bench(args, "bench crossover", lambda: bench_crossover.run(
            device=device, sizes=args.sizes, batches=args.batches, precisions=args.precisions,
            modes=args.modes, backends=args.backends, channels=args.channels, rank=args.rank,
            repeats=args.repeats, compile=not args.no_compile, math_limit_gib=args.math_limit_gib, out=args.out,
        ))  # fmt: skip
    elif args.command == "bench" and args.mode == "precision":
        from .bench import precision as bench_precision

        _bench(args, "bench precision", lambda: bench_precision.run(
            channels=args.channels, sizes=args.sizes, rank=args.rank, steps=args.steps, repeats=args.repeats,
            precisions=args.precisions, device=args.device, block_size=args.block_size, out=args.out,
        ))  # fmt: skip
    elif args.command == "bench" and args.mode == "seg":
        from .bench import seg as bench_seg

        _bench(args, "bench seg", lambda: bench_seg.run(
            models=_names(args.models), crops=args.crops, train_batch=args.train_batch,
            repeats=args.repeats, device=args.device, out=args.out,
        ))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
