"""How much of a validation score is lost to stale BatchNorm statistics? Evaluate a segmentation checkpoint on the
animal-scenes validation split with its running statistics, with batch statistics in parts of the network, and
with the statistics recomputed for its weights from N training batches (``seg train --bn-recalib N``).

To look at a dip of a training curve, stop the run right after that step's checkpoint (the engine's fault
injection kills the process at the n-th committed checkpoint; checkpoints every 100 steps in the screen), then
point this script at the run's ``last.safetensors``::

    HAMBURGER_KILL_AT=committed:5 python benchmarks/stability.py --variants fixed --seeds 1 --out /tmp/lag
    python benchmarks/bn_lag.py /tmp/lag/fixed/seed1/last.safetensors --ham-init fixed
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hamburger.engine.checkpoint import read_weights
from hamburger.seg.data import build_dataset
from hamburger.seg.eval import evaluate
from hamburger.seg.metrics import ConfusionMatrix
from hamburger.seg.models import create_model
from hamburger.seg.train import recalibrate_batchnorm, recalibration_batches
from hamburger.seg.transforms import SegTransform


@torch.no_grad()
def batch_statistics_miou(model, dataset, prefix: str, batch: int = 16) -> float:
    """mIoU with the BatchNorms under ``prefix`` normalising by each batch of 16 validation images."""
    model.eval()
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and name.startswith(prefix):
            m.train()
    matrix = ConfusionMatrix(dataset.num_classes)
    for s in range(0, len(dataset), batch):
        images, labels = zip(*(dataset[i] for i in range(s, min(s + batch, len(dataset)))))
        for pred, label in zip(model(torch.stack(images))["out"].argmax(1), labels):
            matrix.update(pred, label)
    model.eval()
    return 100 * matrix.miou()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("weights", type=Path)
    p.add_argument("--model", default="hamnet_tiny")
    p.add_argument("--ham-init", default=None)
    p.add_argument("--context-norm", default=None)
    p.add_argument("--batches", default="10,25,50", help="recalibration sizes to try")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    kw = {k: v for k, v in (("init", args.ham_init), ("context_norm", args.context_norm)) if v}
    val = build_dataset("animal-scenes", None, "val", transform=SegTransform(train=False))
    crops = SegTransform(train=True, crop_size=128, scale_range=(1.0, 1.0), seed=args.seed)
    train = build_dataset("animal-scenes", None, "train", transform=crops)
    tensors, _ = read_weights(args.weights)
    model = create_model(args.model, num_classes=11, **kw)
    model.load_state_dict(tensors)
    model.eval()
    print(f"running statistics: {100 * evaluate(model, val)['miou']:.1f}")
    for prefix, label in (("head.context", "the context block"), ("head", "the head"), ("backbone", "the backbone")):
        model.load_state_dict(tensors)
        print(f"batch statistics in {label}: {batch_statistics_miou(model, val, prefix):.1f}")
    for n in (int(v) for v in args.batches.split(",")):
        model.load_state_dict(tensors)
        keys = recalibration_batches(len(train), n, 16, args.seed)  # what seg train --bn-recalib n reads
        loader = [(torch.stack([train[key][0] for key in batch]), None) for batch in keys]
        recalibrate_batchnorm(model, loader, torch.device("cpu"))
        print(f"recalibrated on {n} training batches: {100 * evaluate(model, val)['miou']:.1f}")


if __name__ == "__main__":
    main()
