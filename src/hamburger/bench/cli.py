"""``hamburger bench [ham|crossover|precision|seg|grad|check]``: the cost benchmarks' parsers and handlers."""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine.cli import choices, names, set_threads
from ..engine.config import (
    ExperimentOptions,
    Here,
    RunConfig,
    add_config_arguments,
    grad_specs,
    nonnegative_int,
    nonnegative_ints,
    positive_float,
    positive_int,
    positive_ints,
)
from ..functional import PRECISIONS
from ..seg.config import SegTrainConfig
from . import check as check_bench
from . import context as context_bench
from . import crossover as crossover_bench
from . import grad as grad_bench
from . import ham as ham_bench
from . import precision as precision_bench
from . import seg as seg_bench
from . import solve as solve_bench

CUDA_IF_AVAILABLE = Here(None, "cuda if available, else cpu")


def register(sub) -> None:
    bench = sub.add_parser(
        "bench", help="context modules side by side: params, FLOPs, time, memory over resolutions (or: bench ham)"
    )
    bench.add_argument("--modules", default=None, help="comma-separated context names (default: all registered)")
    bench.add_argument("--channels", type=positive_int, default=512)
    bench.add_argument("--batch", type=positive_int, default=1)
    bench.add_argument("--sizes", type=positive_ints, default=(32, 64, 96, 128), help="comma-separated H = W")
    bench.add_argument("--repeats", type=positive_int, default=5)
    add_config_arguments(bench, RunConfig, only=("device",))
    bench.add_argument("--dtype", default="float32")
    bench.add_argument("--memory-limit-gib", type=positive_float, default=8.0, help="skip sizes predicted to need more")
    bench.add_argument(
        "--time-limit-s", type=positive_float, default=60.0, help="skip sizes predicted to take longer per step"
    )
    bench.add_argument("--train-size", type=positive_int, default=64, help="H = W of the training-memory-vs-K test")
    bench.add_argument("--train-steps", type=nonnegative_ints, default=(1, 6, 30))
    bench.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    add_config_arguments(bench, ExperimentOptions, only=("out",), defaults={"out": Path("results/bench")})
    bsub = bench.add_subparsers(dest="mode", required=False)
    ham = bsub.add_parser("ham", help="NMF ham vs the official operation order; training memory vs K; denormals")
    ham.add_argument("--channels", type=positive_int, default=512)
    ham.add_argument("--size", type=positive_int, default=128, help="H = W of the speed test")
    add_config_arguments(ham, SegTrainConfig, only=("rank",), defaults={"rank": 64})
    ham.add_argument("--steps", type=nonnegative_int, default=7, help="eval steps K of the speed test")
    ham.add_argument("--repeats", type=positive_int, default=7)
    ham.add_argument("--train-size", type=positive_int, default=64)
    ham.add_argument("--train-steps", type=nonnegative_ints, default=(1, 6, 30))
    ham.add_argument("--denormal-size", type=positive_int, default=64)
    ham.add_argument("--denormal-steps", type=nonnegative_int, default=30)
    ham.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    add_config_arguments(ham, ExperimentOptions, only=("out",), defaults={"out": Path("results/bench-ham")})
    cross = bsub.add_parser(
        "crossover", help="Hamburger vs non-local attention on every SDPA backend, bf16/fp32, eval/train: the crossover"
    )
    add_config_arguments(cross, RunConfig, only=("device",), defaults={"device": CUDA_IF_AVAILABLE})
    cross.add_argument("--sizes", type=positive_ints, default=(32, 64, 96, 128, 192, 256), help="comma-separated H = W")
    cross.add_argument("--batches", type=positive_ints, default=(1, 8))
    cross.add_argument("--precisions", type=choices(PRECISIONS), default=("bf16", "fp32"), help="comma-separated")
    cross.add_argument("--modes", type=choices(("eval", "train")), default=("eval", "train"))
    backends = ("flash", "cudnn", "efficient", "math")
    cross.add_argument("--backends", type=choices(backends), default=backends, help="SDPA backends to try")
    cross.add_argument("--channels", type=positive_int, default=512)
    add_config_arguments(cross, SegTrainConfig, only=("rank",), defaults={"rank": 64})
    cross.add_argument("--repeats", type=positive_int, default=20)
    cross.add_argument("--no-compile", action="store_true", help="skip the compiled Hamburger")
    cross.add_argument("--capture", action="store_true", help="add the block under optimize(mode='reduce-overhead')")
    cross.add_argument(
        "--compile-attention",
        action="store_true",
        help="add the non-local block compiled with mode='reduce-overhead' (SDPA picks the backend)",
    )
    cross.add_argument("--math-limit-gib", type=positive_float, default=8.0, help="skip the math backend above this")
    cross.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    add_config_arguments(cross, ExperimentOptions, only=("out",), defaults={"out": Path("results/bench-crossover")})
    prec = bsub.add_parser("precision", help="accuracy and speed of each ham precision; the block vs SDPA attention")
    add_config_arguments(prec, RunConfig, only=("device",))
    prec.add_argument("--channels", type=positive_int, default=512)
    prec.add_argument("--sizes", type=positive_ints, default=(64, 128), help="H = W of the solver table")
    add_config_arguments(prec, SegTrainConfig, only=("rank",), defaults={"rank": 64})
    prec.add_argument("--steps", type=nonnegative_int, default=7)
    prec.add_argument("--repeats", type=positive_int, default=7)
    prec.add_argument("--precisions", type=choices(PRECISIONS), default=PRECISIONS)
    prec.add_argument("--block-size", type=positive_int, default=128, help="H = W of the block comparison")
    prec.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    add_config_arguments(prec, ExperimentOptions, only=("out",), defaults={"out": Path("results/bench-precision")})
    seg = bsub.add_parser("seg", help="segmentation throughput (images/s), training and inference")
    seg.add_argument("--models", default="hamnet_r50_d8,nonlocal_r50_d8,fcn_r50_d8")
    seg.add_argument("--crops", type=positive_ints, default=(256, 512))
    seg.add_argument("--train-batch", type=positive_int, default=2)
    seg.add_argument("--repeats", type=positive_int, default=3)
    add_config_arguments(seg, RunConfig, only=("device",))
    add_config_arguments(seg, ExperimentOptions, only=("out",), defaults={"out": Path("results/bench-seg")})
    grad = bsub.add_parser("grad", help="each gradient through the solve: time and peak memory of a training step vs K")
    grad.add_argument(
        "--estimators",
        type=grad_specs,
        default=grad_bench.ESTIMATORS,
        help="comma-separated: one-step, bptt, none, implicit, implicit:<k>, truncated:<k>, phantom:<k>:<λ>",
    )
    grad.add_argument("--steps", type=positive_ints, default=grad_bench.STEPS, help="comma-separated K")
    grad.add_argument("--sizes", type=positive_ints, default=(64, 128), help="H = W of the block")
    grad.add_argument("--channels", type=positive_int, default=512)
    add_config_arguments(grad, SegTrainConfig, only=("rank",), defaults={"rank": 64})
    grad.add_argument("--repeats", type=positive_int, default=3)
    grad.add_argument("--no-tiny", action="store_true", help="skip the demo's hamnet_tiny")
    add_config_arguments(grad, RunConfig, only=("device",))
    grad.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    add_config_arguments(grad, ExperimentOptions, only=("out",), defaults={"out": Path("results/bench-grad")})
    grad.set_defaults(handler=_grad)
    check = bsub.add_parser("check", help="GPU correctness: device vs CPU, determinism, captured vs eager (per ham)")
    add_config_arguments(check, RunConfig, only=("device",), defaults={"device": CUDA_IF_AVAILABLE})
    check.add_argument("--no-capture", action="store_true", help="skip the captured (compiled) block")
    add_config_arguments(check, ExperimentOptions, only=("out",), defaults={"out": Path("results/bench-check")})
    check.set_defaults(handler=_check)
    solve = bsub.add_parser("solve", help="the NMF solve alone: PyTorch, fused Triton steps (CUDA), compiled")
    add_config_arguments(solve, RunConfig, only=("device",), defaults={"device": CUDA_IF_AVAILABLE})
    solve.add_argument("--sizes", type=positive_ints, default=(64, 128), help="H = W")
    solve.add_argument("--batches", type=positive_ints, default=(1, 8))
    solve.add_argument("--precisions", type=choices(PRECISIONS), default=("bf16", "fp32"))
    solve.add_argument("--channels", type=positive_int, default=512)
    add_config_arguments(solve, SegTrainConfig, only=("rank",), defaults={"rank": 64})
    solve.add_argument("--repeats", type=positive_int, default=20)
    solve.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    solve.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    add_config_arguments(solve, ExperimentOptions, only=("out",), defaults={"out": Path("results/bench-solve")})
    solve.set_defaults(handler=_solve)
    bench.set_defaults(handler=_context)
    ham.set_defaults(handler=_ham)
    cross.set_defaults(handler=_crossover)
    prec.set_defaults(handler=_precision)
    seg.set_defaults(handler=_seg)


def _grad(args) -> None:
    set_threads(args.threads)
    grad_bench.run(
        estimators=args.estimators,
        steps=args.steps,
        sizes=args.sizes,
        channels=args.channels,
        rank=args.rank,
        repeats=args.repeats,
        device=args.device,
        tiny=not args.no_tiny,
        out=args.out,
    )


def _check(args) -> None:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = check_bench.run(device=device, capture=not args.no_capture, out=args.out)
    if not result["ok"]:
        raise SystemExit("hamburger bench check: a check failed (see the table above)")


def _solve(args) -> None:
    set_threads(args.threads)
    solve_bench.run(
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        sizes=args.sizes,
        batches=args.batches,
        precisions=args.precisions,
        channels=args.channels,
        rank=args.rank,
        repeats=args.repeats,
        compile=not args.no_compile,
        out=args.out,
    )


def _context(args) -> None:
    set_threads(args.threads)
    context_bench.run(
        modules=names(args.modules) if args.modules else None,
        channels=args.channels,
        batch=args.batch,
        sizes=args.sizes,
        repeats=args.repeats,
        device=args.device,
        dtype=args.dtype,
        memory_limit_gib=args.memory_limit_gib,
        time_limit_s=args.time_limit_s,
        train_size=args.train_size,
        train_steps=args.train_steps,
        out=args.out,
    )


def _ham(args) -> None:
    set_threads(args.threads)
    ham_bench.run(
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


def _crossover(args) -> None:
    set_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    crossover_bench.run(
        device=device,
        sizes=args.sizes,
        batches=args.batches,
        precisions=args.precisions,
        modes=args.modes,
        backends=args.backends,
        channels=args.channels,
        rank=args.rank,
        repeats=args.repeats,
        compile=not args.no_compile,
        capture=args.capture,
        compile_attention=args.compile_attention,
        math_limit_gib=args.math_limit_gib,
        out=args.out,
    )


def _precision(args) -> None:
    set_threads(args.threads)
    precision_bench.run(
        channels=args.channels,
        sizes=args.sizes,
        rank=args.rank,
        steps=args.steps,
        repeats=args.repeats,
        precisions=args.precisions,
        device=args.device,
        block_size=args.block_size,
        out=args.out,
    )


def _seg(args) -> None:
    seg_bench.run(
        models=names(args.models),
        crops=args.crops,
        train_batch=args.train_batch,
        repeats=args.repeats,
        device=args.device,
        out=args.out,
    )
