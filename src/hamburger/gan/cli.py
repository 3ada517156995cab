"""``hamburger gan train|sample|eval|compare``: argument parsers (flat YAML recipes with ``--config``) and handlers."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..engine.cli import names
from ..engine.config import (
    ExperimentOptions,
    Here,
    add_config_arguments,
    config_from_args,
    int_between,
)
from .blocks import ARMS
from .config import GANTrainConfig
from .eval import evaluate_run, format_report
from .experiments import compare
from .metrics import MAX_SAMPLES
from .train import load_run, sample_grid, save_grid, train

SUBCOMMANDS: dict[str, argparse.ArgumentParser] = {}
MAX_GRID_COLUMNS = 256  # a grid of 256 columns x 10 classes at 32² is 8k x 0.7k pixels: more is not a picture


def register(sub) -> None:
    """Add ``gan`` (train, sample, eval, compare) to the top-level sub-parsers."""
    gan = sub.add_parser("gan", help="HamGAN: class-conditional image generation with a Hamburger, attention or none")
    gsub = gan.add_subparsers(dest="gan_command", required=True)
    t = gsub.add_parser("train", help="train a GAN (resumable; torchrun for several processes)")
    t.add_argument("--config", type=Path, help="flat YAML recipe whose keys are these flags (a run's config.yaml too)")
    add_config_arguments(t, GANTrainConfig)
    s = gsub.add_parser("sample", help="a sample grid (one row per class) from a trained run")
    s.add_argument("--run", type=Path, required=True, help="a run folder of gan train (its config.yaml is read)")
    s.add_argument("--weights", type=Path, default=None, help="default: <run>/last.safetensors")
    s.add_argument("--per-class", type=int_between(1, MAX_GRID_COLUMNS), default=8, help="samples per class (columns)")
    add_config_arguments(
        s,
        ExperimentOptions,
        only=("seed", "out"),
        defaults={"seed": Here(0, "of the latents"), "out": Here(None, "a PNG, <run>/samples/sample-seed<N>.png")},
    )
    e = gsub.add_parser("eval", help="offline metrics of a run: Fréchet classifier distance, KID, precision/recall")
    e.add_argument("--run", type=Path, required=True, help="a run folder of gan train")
    e.add_argument("--weights", type=Path, default=None, help="default: <run>/last.safetensors")
    e.add_argument("--samples", type=int_between(2, MAX_SAMPLES), default=2000, help="generated images")
    add_config_arguments(e, ExperimentOptions, only=("seed",), defaults={"seed": Here(0, "of the latents")})
    e.add_argument("--classifier", type=Path, default=None, help="feature classifier (trained there if missing)")
    e.add_argument(
        "--inception-weights",
        type=Path,
        default=None,
        help="a local torch-fidelity Inception weights file: also report FID and IS (never downloaded)",
    )
    c = gsub.add_parser("compare", help="arms side by side over seeds, same network and budget (resumable)")
    c.add_argument("--arms", default="ham_nmf,sagan,none", help="comma-separated: " + ", ".join(ARMS))
    add_config_arguments(c, ExperimentOptions, only=("seeds",))
    c.add_argument(
        "--samples", type=int_between(2, MAX_SAMPLES), default=2000, help="generated images per final evaluation"
    )
    train_default = Here(None, "gan train's")
    add_config_arguments(
        c,
        GANTrainConfig,
        only=("iters", "batch_size", "ema", "ham_grad", "dataset", "data_root", "device"),
        defaults={
            "iters": train_default,
            "batch_size": train_default,
            "ema": train_default,
            "ham_grad": Here(None, "each arm's own"),
        },
    )
    add_config_arguments(c, ExperimentOptions, only=("jobs", "shard", "out"), defaults={"out": Path("results/gan")})
    t.set_defaults(handler=_train)
    s.set_defaults(handler=_sample)
    e.set_defaults(handler=_eval)
    c.set_defaults(handler=_compare)
    SUBCOMMANDS.update(train=t, sample=s, eval=e, compare=c)


def _eval(args) -> None:
    report = evaluate_run(
        args.run,
        weights=args.weights,
        samples=args.samples,
        seed=args.seed,
        classifier=args.classifier,
        inception_weights=args.inception_weights,
    )
    print(format_report(report))
    print(f"wrote {Path(args.run) / 'eval.json'}")


def _sample(args) -> None:
    path = sample(args.run, weights=args.weights, per_class=args.per_class, seed=args.seed, out=args.out)
    print(f"wrote {path}")


def _compare(args) -> None:
    arms = names(args.arms)
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise ValueError(f"unknown arms {unknown}; available: {', '.join(ARMS)}")
    defaults = GANTrainConfig()
    compare.run(
        arms=arms,
        seeds=tuple(args.seeds),
        iters=args.iters or defaults.iters,
        batch=args.batch_size or defaults.batch_size,
        out=args.out,
        dataset=args.dataset,
        data_root=args.data_root,
        device=args.device,
        samples=args.samples,
        ema=args.ema,
        ham_grad=args.ham_grad,
        jobs=args.jobs,
        shard=args.shard,
    )


def _train(args) -> None:
    config = config_from_args(GANTrainConfig, args)
    if config.data_root is None and config.dataset in ("folder", "cifar10"):
        raise ValueError(f"--data-root is required for dataset {config.dataset!r}")
    result = train(config)
    if not config.quiet:
        print(f"samples in {Path(config.out) / 'samples'}; last weights {Path(config.out) / 'last.safetensors'}")
    return result


def sample(run: Path, *, weights: Path | None = None, per_class: int = 8, seed: int = 0, out: Path | None = None):
    """Write a grid of ``per_class`` samples per class (one row each) from a ``gan train`` run; returns the PNG."""
    pair, config, num_classes = load_run(run, weights)
    gen = torch.Generator().manual_seed(seed)
    rows = num_classes if config.conditional else 1
    if not 1 <= per_class <= MAX_GRID_COLUMNS:
        raise ValueError(f"per_class must be in 1..{MAX_GRID_COLUMNS}, got {per_class}")
    z = torch.randn(rows * per_class, config.z_dim, generator=gen)
    labels = torch.arange(rows).repeat_interleave(per_class) if config.conditional else None
    out = Path(out) if out else Path(run) / "samples" / f"sample-seed{seed}.png"
    if out.is_dir():  # a folder: the grid goes inside it
        out = out / f"sample-seed{seed}.png"
    save_grid(sample_grid(pair, z, labels), per_class, out)
    return out
