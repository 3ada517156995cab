"""``hamburger seq train|eval|compare|bench``: argument parsers (flat YAML recipes with ``--config``) and handlers."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.cli import names
from ..engine.config import (
    add_config_arguments,
    config_from_args,
    device_name,
    integers,
    nonnegative_float,
    positive_int,
    positive_ints,
    rank_int,
    shard_spec,
)
from ..mixer import (
    DEFAULT_MIXER_FIT,
    DEFAULT_MIXER_GRAD,
    DEFAULT_MIXER_MEMORY,
    DEFAULT_MIXER_NORM,
    MIXER_FITS,
    MIXER_GRADS,
    MIXER_LOCALS,
    MIXER_MEMORIES,
    MIXER_NORMS,
)
from . import bench, compare
from .config import SeqTrainConfig, mixer_grad_flag
from .eval import evaluate_run
from .train import train

SUBCOMMANDS: dict[str, argparse.ArgumentParser] = {}


def register(sub) -> None:
    """Add ``seq`` (train, eval, compare, bench) to the top-level sub-parsers."""
    seq = sub.add_parser("seq", help="token mixers on sequences: associative recall, character LM, cost")
    ssub = seq.add_subparsers(dest="seq_command", required=True)
    t = ssub.add_parser("train", help="train a causal sequence model with one mixer (resumable)")
    t.add_argument("--config", type=Path, help="flat YAML recipe whose keys are these flags (a run's config.yaml too)")
    add_config_arguments(t, SeqTrainConfig)
    e = ssub.add_parser("eval", help="test accuracy (mqar) or bits per character (lm) of a run; LM samples")
    e.add_argument("--run", type=Path, required=True, help="a run folder of seq train")
    e.add_argument("--weights", type=Path, default=None, help="default: <run>/best.safetensors")
    e.add_argument("--generate", type=positive_int, default=200, help="lm: characters to generate from a prompt")
    c = ssub.add_parser("compare", help="mixers side by side: the MQAR sweep or the LM over seeds (resumable)")
    c.add_argument("--task", choices=("mqar", "lm"), default="mqar")
    c.add_argument("--mixers", default="ham_nmf,softmax,linear,none")
    c.add_argument("--seeds", type=integers, default=None, help="lm: seeds (default 0,1,2)")
    c.add_argument("--lengths", type=positive_ints, default=(64, 256, 512), help="mqar: N")
    c.add_argument("--pairs", type=positive_ints, default=(8, 32), help="mqar: key-value pairs")
    c.add_argument(
        "--cells",
        type=_cells,
        default=None,
        help="mqar: the (N, pairs) cells, N:P,... (instead of every --lengths with every --pairs)",
    )
    c.add_argument("--iters", type=positive_int, default=None, help="steps per run (default: the task's)")
    c.add_argument("--device", type=device_name, default="cpu")
    c.add_argument("--out", type=Path, default=None, help="default results/seq-<task>")
    c.add_argument(
        "--ham-grad",
        type=mixer_grad_flag,
        default=DEFAULT_MIXER_GRAD,
        help=f"Ham mixers: gradient of the solve ({' | '.join(MIXER_GRADS)})",
    )
    c.add_argument(
        "--ham-norm", choices=MIXER_NORMS, default=DEFAULT_MIXER_NORM, help="Ham mixers: scale of the causal NMF solve"
    )
    c.add_argument(
        "--ham-memory",
        choices=MIXER_MEMORIES,
        default=DEFAULT_MIXER_MEMORY,
        help="Ham mixers: what a causal chunk's dictionary update starts from",
    )
    c.add_argument("--rank", type=rank_int, default=None, help="Ham mixers: R bases per head (default: seq train's)")
    c.add_argument(
        "--ham-width",
        type=positive_int,
        default=None,
        help="Ham mixers: W channels of the solve (default: seq train's)",
    )
    c.add_argument(
        "--ham-keys",
        type=positive_int,
        default=None,
        help="Ham mixers: channels per head that code a token (default: seq train's)",
    )
    c.add_argument(
        "--ham-fit",
        choices=MIXER_FITS,
        default=DEFAULT_MIXER_FIT,
        help="Ham mixers: how a causal NMF dictionary is fitted to the prefix statistics",
    )
    c.add_argument(
        "--ham-local",
        choices=("none", *MIXER_LOCALS),
        default="none",
        help="Ham mixers: a read-out of the recent tokens (chunk: the chunk's earlier ones; window: the "
        "last chunk - 1)",
    )
    c.add_argument(
        "--ham-decay",
        type=nonnegative_float,
        default=0.0,
        help="Ham mixers: start of a learned per-chunk decay of the prefix statistics (0: none)",
    )
    c.add_argument("--jobs", type=positive_int, default=1, help="training processes at once, the cores split")
    c.add_argument("--shard", type=shard_spec, default=None, help="I/N: train only every N-th run from the I-th")
    b = ssub.add_parser("bench", help="one causal mixer layer against N: time and peak memory, crossover vs SDPA")
    b.add_argument("--ns", type=positive_ints, default=(512, 1024, 2048, 4096, 8192, 16384))
    b.add_argument("--mixers", default="ham_nmf,ham_vq,softmax,linear")
    b.add_argument("--dim", type=positive_int, default=128)
    b.add_argument("--heads", type=positive_int, default=4)
    b.add_argument("--rank", type=rank_int, default=16)
    b.add_argument("--ham-width", type=positive_int, default=None, help="Ham: W channels of the solve (default: --dim)")
    b.add_argument("--chunk", type=positive_int, default=64)
    b.add_argument("--repeats", type=positive_int, default=3)
    b.add_argument("--device", type=device_name, default="cpu")
    b.add_argument("--out", type=Path, default=Path("results/seq-bench"))
    t.set_defaults(handler=_train)
    e.set_defaults(handler=_eval)
    c.set_defaults(handler=_compare)
    b.set_defaults(handler=_bench)
    SUBCOMMANDS.update(train=t, eval=e, compare=c, bench=b)


def _cells(text: str) -> tuple[tuple[int, int], ...]:
    """``"64:8,256:32"`` -> ((64, 8), (256, 32)); argparse reports a malformed list."""
    try:
        cells = tuple((int(n), int(p)) for n, p in (c.split(":") for c in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N:PAIRS,... (e.g. 64:8,256:32), got {text!r}") from None
    if any(n < 1 or p < 1 for n, p in cells):
        raise argparse.ArgumentTypeError(f"N and pairs must be >= 1, got {text!r}")
    return cells


def _train(args) -> None:
    train(config_from_args(SeqTrainConfig, args))


def _eval(args) -> None:
    print(evaluate_run(args.run, weights=args.weights, generate=args.generate)["text"])


def _compare(args) -> None:
    compare.run(
        task=args.task,
        mixers=names(args.mixers),
        seeds=args.seeds,
        lengths=tuple(args.lengths),
        pairs=tuple(args.pairs),
        iters=args.iters,
        device=args.device,
        out=args.out or Path(f"results/seq-{args.task}"),
        jobs=args.jobs,
        shard=args.shard,
        ham_grad=args.ham_grad,
        ham_norm=args.ham_norm,
        ham_memory=args.ham_memory,
        rank=args.rank,
        ham_width=args.ham_width,
        ham_keys=args.ham_keys,
        ham_fit=args.ham_fit,
        cells=args.cells,
        ham_local=args.ham_local,
        ham_decay=args.ham_decay,
    )


def _bench(args) -> None:
    bench.run(
        ns=tuple(args.ns),
        mixers=names(args.mixers),
        dim=args.dim,
        heads=args.heads,
        rank=args.rank,
        width=args.ham_width,
        chunk=args.chunk,
        repeats=args.repeats,
        device=args.device,
        out=args.out,
    )
