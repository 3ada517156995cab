"""``hamburger decompose`` and ``hamburger viz``: pictures of what the hams decompose.

``viz --weights`` draws Figure 2 for a trained segmentation model: the one place this package reads another task's
checkpoints, so it imports :mod:`hamburger.seg` (allowed by the import contract; seg never imports viz).
"""

from __future__ import annotations

from pathlib import Path

from ..burger import HAMS
from ..engine.cli import choices
from ..engine.config import (
    ExperimentOptions,
    add_config_arguments,
    nonnegative_int,
    nonnegative_ints,
    positive_int,
    positive_ints,
)
from ..seg.cli import add_data_arguments
from ..seg.data import build_dataset
from ..seg.train import load_trained_model
from ..seg.transforms import SegTransform
from . import decompose, figure2


def register(sub) -> None:
    dec = sub.add_parser("decompose", help="decompose a real photo with NMF, VQ and CD; print errors, write a PNG")
    dec.add_argument("--image", default="camera", help="scikit-image greyscale photo (default: camera)")
    dec.add_argument("--ranks", type=positive_ints, default=(8, 16, 32, 64), help="comma-separated ranks R")
    dec.add_argument("--steps", type=nonnegative_int, default=10, help="optimisation steps K")
    hams = tuple(HAMS)
    dec.add_argument("--hams", type=choices(hams), default=hams, help="comma-separated hams")
    add_config_arguments(dec, ExperimentOptions, only=("out",), defaults={"out": Path("results/decompose")})

    viz = sub.add_parser("viz", help="the paper's Figure 2: what the Hamburger decomposes, for a checkpoint or a photo")
    add_data_arguments(viz)
    viz.add_argument("--weights", type=Path, default=None, help="a .safetensors file written by seg train")
    viz.add_argument("--split", default="test")
    viz.add_argument("--images", type=nonnegative_ints, default=(0, 1, 2, 3), help="indices in the split")
    viz.add_argument("--photo", default=None, help="instead of a checkpoint: a scikit-image photo (e.g. camera)")
    viz.add_argument("--ham", choices=tuple(HAMS), default="nmf", help="the photo's ham")
    viz.add_argument("--photo-rank", type=positive_int, default=16)
    viz.add_argument("--steps", type=nonnegative_int, default=10, help="the photo's K")
    add_config_arguments(viz, ExperimentOptions, only=("out",), defaults={"out": Path("results/viz")})
    viz.set_defaults(dataset="animal-scenes", model="hamnet_tiny")  # the embedded benchmark's model
    dec.set_defaults(handler=_decompose)
    viz.set_defaults(handler=_viz)


def _decompose(args) -> None:
    decompose.run(image=args.image, ranks=args.ranks, steps=args.steps, hams=args.hams, out=args.out)


def _viz(args) -> None:
    if args.photo:
        path = figure2.photo(image=args.photo, ham=args.ham, rank=args.photo_rank, steps=args.steps, out=args.out)
        print(f"wrote {path}")
        return
    if args.weights is None:
        raise ValueError("--weights is required (or --photo for a bare photo)")
    if args.data_root is None and args.dataset != "animal-scenes":
        raise ValueError("--data-root is required")
    kw = {"num_classes": args.num_classes} if args.dataset == "folder" else {}
    dataset = build_dataset(args.dataset, args.data_root, args.split, transform=SegTransform(train=False), **kw)
    model = load_trained_model(args, dataset.num_classes).cpu()
    figure2.run(model=model, dataset=dataset, indices=args.images, out=args.out)
