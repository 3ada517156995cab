"""``hamburger gan train|sample``: argument parsers (flat YAML recipes with ``--config``) and dispatch."""

from __future__ import annotations

import argparse
from pathlib import Path

from .recipes.config import positive_int

SUBCOMMANDS: dict[str, argparse.ArgumentParser] = {}


def add_gan_parser(sub) -> None:
    from .recipes.config import add_config_arguments
    from .recipes.gan_config import GANTrainConfig

    gan = sub.add_parser("gan", help="HamGAN: class-conditional image generation with a Hamburger, attention or none")
    gsub = gan.add_subparsers(dest="gan_command", required=True)
    t = gsub.add_parser("train", help="train a GAN (resumable; torchrun for several processes)")
    t.add_argument("--config", type=Path, help="flat YAML recipe whose keys are these flags (a run's config.yaml too)")
    add_config_arguments(t, GANTrainConfig)
    s = gsub.add_parser("sample", help="a sample grid (one row per class) from a trained run")
    s.add_argument("--run", type=Path, required=True, help="a run folder of gan train (its config.yaml is read)")
    s.add_argument("--weights", type=Path, default=None, help="default: <run>/last.safetensors")
    s.add_argument("--per-class", type=positive_int, default=8, help="samples per class (columns)")
    s.add_argument("--seed", type=int, default=0, help="seed of the latents")
    s.add_argument("--out", type=Path, default=None, help="PNG to write (default: <run>/samples/sample-seed<N>.png)")
    SUBCOMMANDS.update(train=t, sample=s)


def run_gan(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    from .cli import USER_ERRORS
    from .recipes.config import parse_with_recipe

    name = next((a for a in argv[argv.index("gan") + 1 :] if not a.startswith("-")), None)
    if name not in SUBCOMMANDS:
        parser.parse_args(argv)  # argparse reports what is wrong
        raise SystemExit(2)
    try:
        args = parse_with_recipe(parser, argv, SUBCOMMANDS[name])
        if args.gan_command == "train":
            _train(args)
        else:
            path = sample(args.run, weights=args.weights, per_class=args.per_class, seed=args.seed, out=args.out)
            print(f"wrote {path}")
    except USER_ERRORS as e:
        raise SystemExit(f"hamburger gan {name}: {e}") from None


def _train(args) -> None:
    from .recipes.config import config_from_args
    from .recipes.gan_config import GANTrainConfig
    from .recipes.gan_train import train

    config = config_from_args(GANTrainConfig, args)
    if config.data_root is None and config.dataset in ("folder", "cifar10"):
        raise ValueError(f"--data-root is required for dataset {config.dataset!r}")
    result = train(config)
    if not config.quiet:
        print(f"samples in {Path(config.out) / 'samples'}; last weights {Path(config.out) / 'last.safetensors'}")
    return result


def sample(
    run: Path, *, weights: Path | None = None, per_class: int = 8, seed: int = 0, out: Path | None = None
) -> Path:
    """Write a grid of ``per_class`` samples per class (one row each) from a ``gan train`` run; returns the PNG."""
    import dataclasses
    import json

    import torch
    import yaml

    from .recipes.checkpoint import IDENTITY_KEY, load_model_weights, read_weights
    from .recipes.gan_config import GANTrainConfig
    from .recipes.gan_train import build_pair, identity_of, sample_grid, save_grid

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise ValueError(f"{run} holds no config.yaml: not a gan train run folder")
    config = GANTrainConfig(**yaml.safe_load((run / "config.yaml").read_text()))
    config = dataclasses.replace(config, samples_per_class=per_class)
    weights = Path(weights) if weights else run / "last.safetensors"
    tensors, metadata = read_weights(weights)  # the classes and image channels come with the weights
    num_classes = int(json.loads(metadata.get(IDENTITY_KEY, "{}")).get("num_classes", 0))
    to_image = tensors.get("generator.to_image.parametrizations.weight.original")
    if not num_classes or to_image is None:
        raise ValueError(f"{weights} is not a weights file of gan train (no num_classes or generator.to_image)")
    pair = build_pair(config, num_classes=num_classes, image_channels=to_image.shape[0])
    load_model_weights(pair, weights, identity_of(pair, config, num_classes))
    gen = torch.Generator().manual_seed(seed)
    rows = num_classes if config.conditional else 1
    z = torch.randn(rows * per_class, config.z_dim, generator=gen)
    labels = torch.arange(rows).repeat_interleave(per_class) if config.conditional else None
    out = Path(out) if out else run / "samples" / f"sample-seed{seed}.png"
    save_grid(sample_grid(pair, z, labels), per_class, out)
    return out
