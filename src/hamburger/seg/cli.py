"""``hamburger demo``, ``hamburger seg train|eval|predict|compare`` and ``hamburger ablate``: argument parsers (flat
YAML recipes with ``--config``) and their handlers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..engine.cli import choices, names
from ..engine.config import (
    ExperimentOptions,
    Here,
    add_config_arguments,
    config_from_args,
    grad_specs,
    integers,
    parse_bool,
    positive_floats,
    positive_int,
)
from .config import MODEL_OPTIONS, SegTrainConfig
from .data import build_dataset
from .eval import evaluate, predict_files
from .experiments import ablate, compare, estimators, pretrained
from .models import FAMILIES
from .train import load_trained_model, train
from .transforms import SegTransform


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="flat YAML recipe whose keys are these flags")
    # what builds the model and reads the data: seg train's declarations
    add_config_arguments(p, SegTrainConfig, only=MODEL_OPTIONS)


def _infer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scales", type=positive_floats, default=(1.0,), help="test scales, e.g. 0.5,0.75,1,1.25,1.5,1.75")
    p.add_argument("--flip", type=parse_bool, default=False, help="add horizontally flipped views")
    p.add_argument("--crop", type=positive_int, default=None, help="sliding-window size (default: whole image)")
    p.add_argument("--stride", type=positive_int, default=None, help="sliding-window stride (default: 2/3 of the crop)")


SUBCOMMANDS: dict[str, argparse.ArgumentParser] = {}
ANIMAL_SCENES_ROOT = "the animal-scenes cache (~/.cache/hamburger)"


def register(sub) -> None:
    """Add ``demo``, ``seg`` (train, eval, predict, compare) and ``ablate`` to the top-level sub-parsers."""
    demo = sub.add_parser(
        "demo", help="is attention better than matrix decomposition? Hamburger vs self-attention vs no context, here"
    )
    demo.add_argument("--quick", action="store_true", help="the same path in a couple of minutes (a smoke check)")
    add_config_arguments(
        demo,
        SegTrainConfig,
        only=("iters", "device", "data_root", "ham_grad"),
        defaults={"iters": Here(None, "800 per model, 20 with --quick"), "data_root": Here(None, ANIMAL_SCENES_ROOT)},
    )
    add_config_arguments(demo, ExperimentOptions, only=("seed", "out"), defaults={"out": Path("results/demo")})

    demo.set_defaults(handler=_demo)

    seg = sub.add_parser("seg", help="semantic segmentation: train, eval, predict")
    ssub = seg.add_subparsers(dest="seg_command", required=True)

    t = ssub.add_parser("train", help="train a segmentation model (torchrun for several processes)")
    t.add_argument("--config", type=Path, help="flat YAML recipe whose keys are these flags (a run's config.yaml too)")
    add_config_arguments(t, SegTrainConfig)

    e = ssub.add_parser("eval", help="evaluate a checkpoint: mIoU, per-class IoU, pixel accuracy")
    add_data_arguments(e)
    _infer_args(e)
    e.add_argument("--split", default="val")
    e.add_argument("--weights", type=Path, required=True, help="a .safetensors file written by seg train")
    e.add_argument("--max-samples", type=positive_int, default=None, help="evaluate the first N images")
    add_config_arguments(
        e,
        ExperimentOptions,
        only=("out",),
        defaults={"out": Here(None, "metrics.json and a per-class table, when given")},
    )

    p = ssub.add_parser("predict", help="palette masks and overlays for image files or folders")
    add_data_arguments(p)
    _infer_args(p)
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--weights", type=Path, required=True)
    add_config_arguments(p, ExperimentOptions, only=("out",), defaults={"out": Path("predictions")})
    c = ssub.add_parser("compare", help="context heads side by side on animal-scenes over several seeds (resumable)")
    c.add_argument("--config", type=Path, help="flat YAML recipe whose keys are these flags")
    c.add_argument(
        "--heads",
        default="hamnet,ham_vq,ham_cd,nonlocal,danet,ema,fcn",
        help="comma-separated heads: <head>_tiny models (hamnet, nonlocal, fcn, local, ham_vq, ...)",
    )
    add_config_arguments(c, ExperimentOptions, only=("seeds",))
    # each run's training: seg train's declarations, the demo's recipe by default
    add_config_arguments(
        c,
        SegTrainConfig,
        only=(
            "iters",
            "batch_size",
            "lr",
            "val_interval",
            "max_val_samples",
            "workers",
            "ham_precision",
            "ham_grad",
            "pretrained",
            "head_lr_mult",
            "bn_recalib",
            "device",
            "data_root",
        ),
        defaults={
            "iters": 800,
            "lr": 2e-3,
            "val_interval": 100,
            "workers": 1,
            "bn_recalib": 10,
            "data_root": Here(None, ANIMAL_SCENES_ROOT),
        },
    )
    c.add_argument(
        "--family", choices=tuple(FAMILIES), default="tiny", help="the backbone under the heads: tiny | efflite0"
    )
    add_config_arguments(c, ExperimentOptions, only=("out",), defaults={"out": Path("results/compare")})
    pre = ssub.add_parser(
        "pretrained",
        help="heads on a pretrained EfficientNet-Lite0 and from scratch, over seeds (resumable; prints its hours)",
    )
    pre.add_argument(
        "--arms",
        type=names,
        default=pretrained.ARMS,
        help="<head>[@<gradient>] of the efflite0 family (default %(default)s; e.g. hamnet@bptt, lightham)",
    )
    pre.add_argument(
        "--inits", type=choices(pretrained.INITS), default=pretrained.INITS, help="pretrained, scratch or both"
    )
    add_config_arguments(pre, ExperimentOptions, only=("seeds",), defaults={"seeds": (0, 1, 2)})
    add_config_arguments(
        pre,
        SegTrainConfig,
        only=(
            "iters",
            "lr",
            "head_lr_mult",
            "pretrained",
            "batch_size",
            "val_interval",
            "max_val_samples",
            "device",
            "data_root",
        ),
        defaults={
            "iters": Here(3200, "3200, the pilot's budget"),
            "lr": Here(5e-4, "the pretrained backbone's; the heads' is lr x head-lr-mult, also from scratch"),
            "head_lr_mult": 4.0,
            "pretrained": pretrained.PRETRAINED,
            "val_interval": 100,
            "data_root": Here(None, ANIMAL_SCENES_ROOT),
        },
    )
    pre.add_argument("--report-only", action="store_true", help="train nothing: the table of the finished runs")
    add_config_arguments(
        pre, ExperimentOptions, only=("out", "jobs", "shard"), defaults={"out": Path("results/pretrained")}
    )
    pre.set_defaults(handler=_pretrained)
    t.set_defaults(handler=_train)
    e.set_defaults(handler=_eval)
    p.set_defaults(handler=_predict)
    c.set_defaults(handler=_compare)
    SUBCOMMANDS.update(train=t, eval=e, predict=p, compare=c, pretrained=pre)

    abl = sub.add_parser("ablate", help="the paper's ablations on animal-scenes (resumable): tables, plots, findings")
    add_config_arguments(
        abl, ExperimentOptions, only=("seeds",), defaults={"seeds": Here((0, 1, 2), "of the rows that test a finding")}
    )
    abl.add_argument("--sweep-seeds", type=integers, default=(0,), help="seeds of the sweeps (version, init, K, R)")
    # ham_grad: every Hamburger row's but the gradient rows'
    add_config_arguments(
        abl,
        SegTrainConfig,
        only=("iters", "device", "data_root", "ham_grad"),
        defaults={"iters": Here(600, "600 per run"), "data_root": Here(None, ANIMAL_SCENES_ROOT)},
    )
    add_config_arguments(abl, ExperimentOptions, only=("out",), defaults={"out": Path("results/ablate")})
    abl.add_argument(
        "--groups",
        type=choices(ablate.GROUPS),
        default=ablate.GROUPS,
        help=f"row groups to train and report (default all: {','.join(ablate.GROUPS)})",
    )
    add_config_arguments(abl, ExperimentOptions, only=("jobs", "shard"))
    abl.set_defaults(handler=_ablate)

    est = sub.add_parser(
        "estimators",
        help="every gradient through the solve trained on animal-scenes (resumable): the default's evidence",
    )
    est.add_argument("--estimators", type=grad_specs, default=estimators.SHORT, help="gradients compared at K 6")
    add_config_arguments(est, ExperimentOptions, only=("seeds",), defaults={"seeds": estimators.SEEDS})
    est.add_argument(
        "--long",
        type=grad_specs,
        default=None,
        help="the gradients run again at K 12 (default: BPTT and the two best fixed-memory ones)",
    )
    add_config_arguments(
        est,
        SegTrainConfig,
        only=("iters", "device", "data_root"),
        defaults={"iters": Here(800, "800 per run"), "data_root": Here(None, ANIMAL_SCENES_ROOT)},
    )
    add_config_arguments(
        est, ExperimentOptions, only=("out", "jobs", "shard"), defaults={"out": Path("results/estimators")}
    )
    est.set_defaults(handler=_estimators)


def _demo(args) -> None:
    iters = args.iters or (20 if args.quick else 800)
    compare.run(
        heads=compare.DEMO_HEADS,
        seeds=(args.seed,),
        iters=iters,
        val_interval=10 if args.quick else 100,
        max_val=40 if args.quick else None,
        data_root=args.data_root,
        out=args.out,
        title="demo",
        device=args.device,
        ham_grad=args.ham_grad,
    )


def _ablate(args) -> None:
    ablate.run(
        out=args.out,
        finding_seeds=args.seeds,
        sweep_seeds=args.sweep_seeds,
        iters=args.iters,
        data_root=args.data_root,
        device=args.device,
        shard=args.shard,
        jobs=args.jobs,
        ham_grad=args.ham_grad,
        groups=args.groups,
    )


def _estimators(args) -> None:
    estimators.run(
        out=args.out,
        estimators=args.estimators,
        seeds=args.seeds,
        iters=args.iters,
        data_root=args.data_root,
        device=args.device,
        shard=args.shard,
        jobs=args.jobs,
        long=args.long,
    )


def _compare(args) -> None:
    compare.run(
        heads=names(args.heads),
        seeds=tuple(args.seeds),
        iters=args.iters,
        batch=args.batch_size,
        lr=args.lr,
        val_interval=args.val_interval,
        max_val=args.max_val_samples,
        workers=args.workers,
        data_root=args.data_root,
        out=args.out,
        ham_precision=args.ham_precision,
        device=args.device,
        bn_recalib=args.bn_recalib,
        ham_grad=args.ham_grad,
        family=args.family,
        pretrained=args.pretrained,
        head_lr_mult=args.head_lr_mult,
    )


def _pretrained(args) -> None:
    pretrained.run(
        arms=args.arms,
        inits=args.inits,
        seeds=tuple(args.seeds),
        iters=args.iters,
        lr=args.lr,
        head_lr_mult=args.head_lr_mult,
        pretrained=args.pretrained,
        batch=args.batch_size,
        val_interval=args.val_interval,
        max_val=args.max_val_samples,
        data_root=args.data_root,
        out=args.out,
        device=args.device,
        report_only=args.report_only,
        shard=args.shard,
        jobs=args.jobs,
    )


def _train(args) -> None:
    config = config_from_args(SegTrainConfig, args)
    if config.data_root is None and config.dataset != "animal-scenes":
        raise ValueError("--data-root is required (or data_root in the --config recipe)")
    train(config)  # saves config.yaml beside the run once the start has succeeded


def _eval(args) -> None:
    if args.data_root is None and args.dataset != "animal-scenes":
        raise ValueError("--data-root is required")
    kw = {"num_classes": args.num_classes} if args.dataset == "folder" else {}
    dataset = build_dataset(args.dataset, args.data_root, args.split, transform=SegTransform(train=False), **kw)
    model = load_trained_model(args, dataset.num_classes)
    res = evaluate(
        model,
        dataset,
        device=args.device,
        scales=args.scales,
        flip=args.flip,
        crop=args.crop,
        stride=args.stride,
        max_samples=args.max_samples,
        progress=True,
    )
    print("\n".join(res["table"]))
    print(f"mIoU {100 * res['miou']:.2f}  pixel accuracy {100 * res['pixel_accuracy']:.2f}  ({res['samples']} images)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps({k: v for k, v in res.items() if k != "table"}, indent=2))
        (args.out / "per_class.md").write_text("\n".join(res["table"]) + "\n")


def _predict(args) -> None:
    if args.num_classes is None and args.dataset != "folder":
        known = {"voc": 21, "pascal_context": 59, "ade20k": 150, "cityscapes": 19, "animal-scenes": 11}
        if args.dataset not in known:
            raise ValueError(f"unknown dataset {args.dataset!r}; pass --num-classes")
        args.num_classes = known[args.dataset]
    if args.num_classes is None:
        raise ValueError("--num-classes is required")
    model = load_trained_model(args, args.num_classes)
    written = predict_files(
        model,
        args.inputs,
        args.out,
        num_classes=args.num_classes,
        device=args.device,
        scales=args.scales,
        flip=args.flip,
        crop=args.crop,
        stride=args.stride,
    )
    print(f"wrote {len(written)} masks and overlays to {args.out}")
