"""`hamburger seg train`: the paper's training recipe, resumable, single process or torchrun (DDP).

Segmentation is a task of the shared engine (:mod:`hamburger.engine.loop`), which owns the loop, checkpoints,
logging, devices, autocast and DDP; this file supplies the model, the data order, the optimiser, the loss and the
metric (:class:`SegTask`).

Determinism: model initialisation is seeded; the data order is a per-epoch permutation of the seed; each sample's
augmentation depends on (seed, epoch, index) only; the DataLoader's worker seeds come from a private generator. A
checkpoint (weights with the model's identity, optimiser, scheduler, step, every RNG state) is committed as one
transaction (:mod:`hamburger.engine.checkpoint`), so a run killed at any point — a test kills it inside every
file write — and resumed with ``--resume`` ends with the same weights, bit for bit, as one never stopped; the log
continues without repeated steps.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.checkpoint import load_model_weights, model_identity
from ..engine.datacheck import require_clean
from ..engine.loop import fit, step_loader
from ..engine.task import Task
from ..optimize import optimize
from .backbones import group_norm
from .config import RESUME_FREE, SegTrainConfig
from .data import build_dataset
from .eval import evaluate
from .models import create_model
from .transforms import IGNORE_INDEX, SegTransform

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


# ----------------------------------------------------------------------------------------------------------------
# optimiser and schedule


def param_groups(model: nn.Module, *, lr, weight_decay, bias_lr_mult=2.0, head_lr_mult=1.0) -> list[dict]:
    """The paper's groups: conv/linear weights with weight decay; biases at ``bias_lr_mult`` x LR and norm
    parameters without weight decay. ``head_lr_mult`` scales everything outside the backbone (LightHam recipes)."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)}
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = 1.0 if name.startswith("backbone.") else head_lr_mult
        if id(p) in norm_params:
            key = ("norm", mult, 1.0, 0.0)
        elif name.endswith("bias"):
            key = ("bias", mult, bias_lr_mult, 0.0)
        elif p.ndim <= 1:  # learnable scalars (γ, v2+ coefficients)
            key = ("scalar", mult, 1.0, 0.0)
        else:
            key = ("weight", mult, 1.0, weight_decay)
        groups.setdefault(key, []).append(p)
    return [
        {"params": ps, "lr": lr * mult * lr_mult, "initial_lr": lr * mult * lr_mult, "weight_decay": wd, "name": k}
        for (k, mult, lr_mult, wd), ps in groups.items()
    ]


def poly_lambda(step: int, *, total: int, power: float, warmup: int, warmup_ratio: float) -> float:
    factor = (1.0 - min(step, total) / total) ** power
    if step < warmup:
        factor *= warmup_ratio + (1.0 - warmup_ratio) * step / warmup
    return factor


def build_optimizer(model, args):
    groups = param_groups(
        model,
        lr=args.lr,
        weight_decay=args.weight_decay,
        bias_lr_mult=args.bias_lr_mult,
        head_lr_mult=args.head_lr_mult,
    )
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum)
    elif args.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999))
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {args.optimizer!r}")
    schedule = partial(
        poly_lambda, total=args.iters, power=args.poly_power, warmup=args.warmup_iters, warmup_ratio=args.warmup_ratio
    )
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


# ----------------------------------------------------------------------------------------------------------------
# model


def model_overrides(args) -> dict:
    """CLI flags that change a model variant (only those given)."""
    over = {}
    if args.pretrained:
        over["pretrained"] = True if args.pretrained == "hub" else args.pretrained
        if getattr(args, "pretrained_keys", "names") != "names":
            over["pretrained_keys"] = args.pretrained_keys
    if args.norm == "group":
        over["norm_layer"] = "group"
    if getattr(args, "context_norm", None):
        over["context_norm"] = args.context_norm
    if getattr(args, "backbone_norm", None) == "group":
        over["backbone_norm"] = group_norm
    flags = (
        ("rank", "rank"),
        ("ham_type", "ham"),
        ("ham_init", "init"),
        ("ham_version", "version"),
        ("ham_steps", "train_steps"),
        ("ham_eval_steps", "eval_steps"),
        ("ham_grad", "grad"),
        ("ham_breads", "breads"),
        ("dropout", "dropout"),
        ("aux", "aux"),
    )
    for flag, key in flags:
        value = getattr(args, flag, None)
        if value is not None:
            over[key] = value
    return over


def build_model(args, num_classes: int, device: torch.device) -> nn.Module:
    model = create_model(args.model, num_classes=num_classes, **model_overrides(args))
    if getattr(args, "freeze_backbone", False) or getattr(args, "freeze_bn", False):
        model.freeze_backbone_bn = True  # its BatchNorm layers stay in eval mode: the loaded statistics
    if getattr(args, "freeze_backbone", False):
        model.backbone.requires_grad_(False)
    precision = getattr(args, "ham_precision", None)
    if precision is not None:  # every ham of the model; other context modules have no such option
        optimize(model, precision=precision, compile=False)
    return model.to(device)


def load_trained_model(args, num_classes: int) -> nn.Module:
    """The model ``args`` describes (``seg eval``'s flags), with the weights of ``args.weights`` (its identity checked),
    in eval mode."""
    args.pretrained = None  # the checkpoint has the weights
    model = build_model(args, num_classes, torch.device(args.device))
    load_model_weights(model, args.weights, model_identity(model, name=args.model, num_classes=num_classes))
    return model.eval()


def seg_loss(outputs: dict, labels: torch.Tensor, aux_weight: float) -> torch.Tensor:
    loss = F.cross_entropy(outputs["out"].float(), labels, ignore_index=IGNORE_INDEX)
    if outputs.get("aux") is not None and aux_weight:
        loss = loss + aux_weight * F.cross_entropy(outputs["aux"].float(), labels, ignore_index=IGNORE_INDEX)
    return loss


# ----------------------------------------------------------------------------------------------------------------
# the task


class SegTask(Task):
    """Semantic segmentation as a task of the engine: model, data order, optimiser, loss, mIoU."""

    score = "miou"
    score_is_fraction = True
    free_fields = RESUME_FREE

    def build(self, config: SegTrainConfig, device: torch.device):
        kw = {"num_classes": config.num_classes} if config.dataset == "folder" else {}
        transform = SegTransform(
            train=True, crop_size=config.crop_size, seed=config.seed, scale_range=tuple(config.scale_range)
        )
        train_set = build_dataset(config.dataset, config.data_root, config.train_split, transform=transform, **kw)
        val_set = None
        if config.val_interval:
            val_set = build_dataset(
                config.dataset, config.data_root, config.val_split, transform=SegTransform(train=False), **kw
            )
        if not config.skip_data_check:
            require_clean((train_set, val_set), workers=config.workers, progress=not config.quiet)
        model = build_model(config, train_set.num_classes, device)
        identity = model_identity(model, name=config.model, num_classes=train_set.num_classes)
        self.train_set = train_set  # the source of BatchNorm recalibration before each evaluation
        return model, train_set, val_set, identity

    def optimizer(self, model: nn.Module, config: SegTrainConfig):
        return build_optimizer(model, config)

    def batches(self, train_set, config: SegTrainConfig, *, world: int, rank: int, start: int):
        return step_loader(train_set, config, world=world, rank=rank, start=start)

    def loss(self, net: nn.Module, batch, config: SegTrainConfig, device: torch.device) -> torch.Tensor:
        images, labels = (t.to(device, non_blocking=True) for t in batch)
        return seg_loss(net(images), labels, config.aux_weight)

    def evaluate(self, model: nn.Module, val_set, config: SegTrainConfig, device: torch.device, step: int) -> dict:
        if config.bn_recalib:
            recalibrate_batchnorm(model, self.recalibration_loader(config), device)
        metrics = evaluate(model, val_set, device=device, max_samples=config.max_val_samples)
        return {"miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"]}

    def recalibration_loader(self, config: SegTrainConfig):
        """``bn_recalib`` batches of training crops (:func:`recalibration_batches`)."""
        batches = recalibration_batches(len(self.train_set), config.bn_recalib, config.batch_size, config.seed)
        return torch.utils.data.DataLoader(
            self.train_set, batch_sampler=batches, num_workers=config.workers, generator=torch.Generator()
        )


def recalibration_batches(length: int, count: int, batch_size: int, seed: int) -> list[list[tuple[int, int]]]:
    """``count`` batches of (index, epoch 0) keys: a fixed, seeded choice of training samples with the epoch-0
    augmentation, the same before every evaluation (and after a resume); the global RNG is not touched."""
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [[(i, 0) for i in order[b * batch_size : (b + 1) * batch_size]] for b in range(count)]
    return [b for b in batches if b]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, device: torch.device) -> None:
    """Recompute every BatchNorm's running statistics as the plain average over ``loader``'s batches, with the rest
    of the model in eval mode (hams start from their eval bases, dropout is off), as evaluation will see it.

    The running averages kept during training (momentum 0.1) trail weights that move quickly: on the embedded
    benchmark this lag alone took the Hamburger head's validation mIoU from 44 to 22 at one evaluation
    (docs/stability.md). Recomputing them for the current weights ("precise BN") removes it.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    was_training = model.training
    model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
        m.train()
    for images, _ in loader:
        model(images.to(device, non_blocking=True))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def train(config: SegTrainConfig) -> dict:
    """Train a segmentation model as ``config`` says (see :class:`SegTrainConfig`); returns the history, the best
    validation mIoU (``best_miou``), the run folder and the model. ``config.yaml`` is written beside the run once
    the start (data, model, checkpoint checks) has succeeded."""
    if not isinstance(config, SegTrainConfig):
        raise TypeError(f"train expects a SegTrainConfig, got {type(config).__name__}")
    result = fit(SegTask(), config)
    result["best_miou"] = result["best_score"]
    return result
