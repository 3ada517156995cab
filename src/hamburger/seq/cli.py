"""``hamburger seq train|eval|compare|bench``: argument parsers (flat YAML recipes with ``--config``) and handlers."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.cli import names
from ..engine.config import (
    ExperimentOptions,
    Here,
    add_config_arguments,
    config_from_args,
    positive_float,
    positive_int,
    positive_ints,
)
from .config import HAM_OPTIONS, SeqTrainConfig, cells_flag
from .data import parse_cells
from .eval import evaluate_run
from .experiments import arena, bench, compare
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
    add_config_arguments(c, SeqTrainConfig, only=("task",), defaults={"task": "mqar"})
    c.add_argument("--mixers", default="ham_nmf,softmax,linear,none")
    add_config_arguments(
        c,
        ExperimentOptions,
        only=("seeds",),
        defaults={"seeds": Here(None, "lm: 0,1,2; mqar: 0,1,2 at N 256 / 32 pairs, 0 elsewhere")},
    )
    c.add_argument("--lengths", type=positive_ints, default=(64, 256, 512), help="mqar: N")
    add_config_arguments(
        c, SeqTrainConfig, only=("pairs",), defaults={"pairs": Here((8, 32), "8,32")}, lists=("pairs",)
    )
    c.add_argument(
        "--cells",
        type=_cells,
        default=None,
        help="mqar: the (N, pairs) cells, N:P,... (instead of every --lengths with every --pairs)",
    )
    add_config_arguments(
        c,
        SeqTrainConfig,
        only=("iters", "lr", "device"),
        defaults={"iters": Here(None, "the task's"), "lr": Here(None, f"seq train's, {SeqTrainConfig().lr:g}")},
    )
    add_config_arguments(c, ExperimentOptions, only=("out",), defaults={"out": Here(None, "results/seq-<task>")})
    # the Ham mixers' options: seq train's declarations (their defaults are training's)
    add_config_arguments(c, SeqTrainConfig, only=HAM_OPTIONS)
    add_config_arguments(c, ExperimentOptions, only=("jobs", "shard"))
    a = ssub.add_parser(
        "arena", help="the causal mixers by Zoology's MQAR protocol: a mixture of cells, LR sweep, recall vs state"
    )
    a.add_argument("--mixers", default=",".join(arena.ARENA_MIXERS), help="comma-separated mixers and hybrids")
    add_config_arguments(
        a,
        SeqTrainConfig,
        only=("dim", "lr", "train_cells", "iters", "device"),
        defaults={
            "dim": Here(arena.DIMS, ",".join(map(str, arena.DIMS))),
            "lr": Here(arena.LRS, ",".join(f"{x:g}" for x in arena.LRS)),
            "train_cells": arena.TRAIN_CELLS,
            "iters": arena.ITERS,
        },
        lists=("dim", "lr"),
    )
    a.add_argument("--test-cells", type=cells_flag, default=arena.TEST_CELLS, help="the MQAR cells N:P,... tested")
    add_config_arguments(a, ExperimentOptions, only=("seeds",), defaults={"seeds": Here((0,), "0")})
    add_config_arguments(a, SeqTrainConfig, only=HAM_OPTIONS)
    add_config_arguments(
        a, ExperimentOptions, only=("out", "jobs", "shard"), defaults={"out": Path("results/seq-arena")}
    )
    a.add_argument("--max-hours", type=positive_float, default=30.0, help="refuse a plan longer than this")
    a.add_argument("--report-only", action="store_true", help="train nothing: the tables of the finished runs")
    a.add_argument(
        "--also",
        type=_labelled,
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="another arena's folder (a Ham variant run with other options) whose rows join the table as "
        "'<mixer> (LABEL)'; repeatable",
    )
    b = ssub.add_parser("bench", help="one causal mixer layer against N: time and peak memory, crossover vs SDPA")
    b.add_argument("--ns", type=positive_ints, default=(512, 1024, 2048, 4096, 8192, 16384))
    b.add_argument("--mixers", default="ham_nmf,ham_vq,softmax,linear")
    # a cost benchmark's layer: seq train's declarations, C 128, 4 heads, R 16 and L 64 (the layer whose cost
    # docs/results report), every Ham option
    add_config_arguments(b, SeqTrainConfig, only=("dim", "heads", "device"), defaults={"dim": 128, "heads": 4})
    add_config_arguments(b, SeqTrainConfig, only=HAM_OPTIONS, defaults=bench.BENCH_HAM)
    b.add_argument("--repeats", type=positive_int, default=3)
    add_config_arguments(b, ExperimentOptions, only=("out",), defaults={"out": Path("results/seq-bench")})
    t.set_defaults(handler=_train)
    e.set_defaults(handler=_eval)
    c.set_defaults(handler=_compare)
    b.set_defaults(handler=_bench)
    a.set_defaults(handler=_arena)
    SUBCOMMANDS.update(train=t, eval=e, compare=c, bench=b, arena=a)


def _cells(text: str) -> tuple[tuple[int, int], ...]:
    """``"64:8,256:32"`` -> ((64, 8), (256, 32)) (:func:`~hamburger.seq.data.parse_cells`; a cell too short for its
    pairs is skipped by the comparison, not refused); argparse reports a malformed list."""
    try:
        return parse_cells(text, fit=False)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _labelled(text: str) -> tuple[str, Path]:
    """``"delta R 16=results/x"`` -> ("delta R 16", Path("results/x")); argparse reports a malformed one."""
    label, sep, folder = text.rpartition("=")
    if not sep or not label.strip() or not folder.strip():
        raise argparse.ArgumentTypeError(f"expected LABEL=DIR, got {text!r}")
    return label.strip(), Path(folder.strip())


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
        cells=args.cells,
        out=args.out or Path(f"results/seq-{args.task}"),
        jobs=args.jobs,
        shard=args.shard,
        iters=args.iters,
        device=args.device,
        **({"lr": args.lr} if args.lr is not None else {}),
        **{name: getattr(args, name) for name in HAM_OPTIONS},
    )


def _arena(args) -> None:
    arena.run(
        mixers=names(args.mixers),
        dims=tuple(args.dim),
        lrs=tuple(args.lr),
        seeds=tuple(args.seeds),
        train_cells=args.train_cells,
        test_cells=args.test_cells,
        out=args.out,
        jobs=args.jobs,
        shard=args.shard,
        max_hours=args.max_hours,
        report_only=args.report_only,
        also=tuple(args.also),
        iters=args.iters,
        device=args.device,
        **{name: getattr(args, name) for name in HAM_OPTIONS},
    )


def _bench(args) -> None:
    bench.run(
        ns=tuple(args.ns),
        mixers=names(args.mixers),
        dim=args.dim,
        heads=args.heads,
        repeats=args.repeats,
        device=args.device,
        out=args.out,
        **{name: getattr(args, name) for name in HAM_OPTIONS},
    )
