"""`hamburger seg train`: the paper's training recipe, resumable, single process or torchrun (DDP).

Determinism: model initialisation is seeded; the data order is a per-epoch permutation of the seed; each sample's
augmentation depends on (seed, epoch, index) only; the DataLoader's worker seeds come from a private generator. A
checkpoint (weights with the model's identity, optimiser, scheduler, step, every RNG state) is committed as one
transaction (:mod:`hamburger.recipes.checkpoint`), so a run killed at any point — a test kills it inside every
file write — and resumed with ``--resume`` ends with the same weights, bit for bit, as one never stopped; the log
continues without repeated steps.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..data import IGNORE_INDEX, SegTransform, build_dataset
from ..models import create_model
from .checkpoint import (
    MANIFEST,
    check_identity,
    commit_checkpoint,
    fault_point,
    load_checkpoint,
    load_model_weights,
    model_identity,
    remove_stale,
    rng_state,
    save_weights,
    set_rng_state,
)
from .config import changed_fields, config_dict, save_config
from .seg_config import RESUME_FREE, SegTrainConfig

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


# ----------------------------------------------------------------------------------------------------------------
# distributed


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    dev = torch.device(device)
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    return rank, world, dev


# ----------------------------------------------------------------------------------------------------------------
# data order


class StepBatches(torch.utils.data.Sampler):
    """Yields, for steps ``start..total-1`` and each accumulation micro-step, this rank's ``[(index, epoch), ...]``.

    The global batch of a step is a slice of the epoch's seeded permutation (last partial batch dropped); rank r
    takes its r-th share, so a DDP run and a single process see the same global batches.
    """

    def __init__(self, length, *, batch_size, world, rank, accum, seed, start, total) -> None:
        if batch_size % (world * accum):
            raise ValueError(f"batch size {batch_size} must divide by world size x accumulation ({world}x{accum})")
        self.per_epoch = length // batch_size
        if self.per_epoch < 1:
            raise ValueError(f"the training split has {length} samples, fewer than one batch of {batch_size}")
        self.batch_size, self.world, self.rank, self.accum = batch_size, world, rank, accum
        self.seed, self.start, self.total, self.length = seed, start, total, length
        self._perm: tuple[int, list[int]] | None = None

    def _permutation(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = (epoch, torch.randperm(self.length, generator=g).tolist())
        return self._perm[1]

    def __iter__(self):
        share = self.batch_size // self.world
        micro = share // self.accum
        for step in range(self.start, self.total):
            epoch, pos = divmod(step, self.per_epoch)
            batch = self._permutation(epoch)[pos * self.batch_size : (pos + 1) * self.batch_size]
            mine = batch[self.rank * share : (self.rank + 1) * share]
            for a in range(self.accum):
                yield [(i, epoch) for i in mine[a * micro : (a + 1) * micro]]

    def __len__(self) -> int:
        return (self.total - self.start) * self.accum


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
        model, lr=args.lr, weight_decay=args.weight_decay, bias_lr_mult=args.bias_lr_mult,
        head_lr_mult=args.head_lr_mult,
    )  # fmt: skip
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
    if args.norm == "group":
        over["norm_layer"] = "group"
    if getattr(args, "backbone_norm", None) == "group":
        from ..models.backbones import group_norm

        over["backbone_norm"] = group_norm
    for flag, key in (("rank", "rank"), ("ham_init", "init"), ("dropout", "dropout"), ("aux", "aux")):
        value = getattr(args, flag, None)
        if value is not None:
            over[key] = value
    return over


def build_model(args, num_classes: int, device: torch.device) -> nn.Module:
    model = create_model(args.model, num_classes=num_classes, **model_overrides(args))
    precision = getattr(args, "ham_precision", None)
    if precision is not None:  # every ham of the model; other context modules have no such option
        from ..optimize import optimize

        optimize(model, precision=precision, compile=False)
    return model.to(device)


def seg_loss(outputs: dict, labels: torch.Tensor, aux_weight: float) -> torch.Tensor:
    loss = F.cross_entropy(outputs["out"].float(), labels, ignore_index=IGNORE_INDEX)
    if outputs.get("aux") is not None and aux_weight:
        loss = loss + aux_weight * F.cross_entropy(outputs["aux"].float(), labels, ignore_index=IGNORE_INDEX)
    return loss


# ----------------------------------------------------------------------------------------------------------------
# the loop


def train(args: SegTrainConfig) -> dict:
    """Train a segmentation model as ``args`` (a :class:`SegTrainConfig`) says; returns the history, the best
    validation mIoU, the run folder and the model. Writes ``config.yaml`` once the start (data, model, checkpoint
    checks) has succeeded."""
    if not isinstance(args, SegTrainConfig):
        raise TypeError(f"train expects a SegTrainConfig, got {type(args).__name__}")
    rank, world, device = init_distributed(args.device)
    main = rank == 0
    out = Path(args.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale(out)  # half-written temporaries and uncommitted step files of a killed run
    torch.manual_seed(args.seed)
    ds_kwargs = {"num_classes": args.num_classes} if args.dataset == "folder" else {}
    train_set = build_dataset(
        args.dataset, args.data_root, args.train_split,
        transform=SegTransform(
            train=True, crop_size=args.crop_size, seed=args.seed, scale_range=tuple(args.scale_range)
        ),
        **ds_kwargs,
    )  # fmt: skip
    val_set = None
    if args.val_interval:
        val_set = build_dataset(
            args.dataset, args.data_root, args.val_split, transform=SegTransform(train=False), **ds_kwargs
        )
    model = build_model(args, train_set.num_classes, device)
    identity = model_identity(model, name=args.model, num_classes=train_set.num_classes)
    if world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if getattr(args, "init_weights", None) and not (args.resume and (out / MANIFEST).is_file()):
        load_model_weights(model, args.init_weights)  # another stage's weights: keys checked, identity may differ
    optimizer, scheduler = build_optimizer(model, args)

    start, best = 0, -1.0
    checkpoint = load_checkpoint(out) if args.resume else None
    if checkpoint is not None:
        weights, metadata, state = checkpoint
        check_identity(metadata, identity, out / MANIFEST)
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best = state["step"], state["best_miou"]
        set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"])
        changes = changed_fields(state.get("config", {}), args, RESUME_FREE)
        if changes and not args.allow_changed_config:
            listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
            raise ValueError(
                f"--resume with a changed recipe ({listed}); the checkpoint in {out} was trained with the old values. "
                "Pass --allow-changed-config to continue anyway (the change is logged), or train into another --out"
            )
        if main:
            if changes:
                print(f"--allow-changed-config: continuing with {changes}", flush=True)
                with open(out / "config_changes.jsonl", "a") as f:
                    f.write(json.dumps({"step": start, "changes": {k: list(v) for k, v in changes.items()}}) + "\n")
            _truncate_log(out / "log.jsonl", start)
            print(f"resumed from {out / MANIFEST} at step {start}", flush=True)
    elif args.resume and main:
        if (out / "last_state.pt").is_file():
            raise ValueError(
                f"{out} holds a checkpoint of an older hamburger without {MANIFEST}, which cannot be verified; start "
                "over without --resume (or into another --out)"
            )
        print(f"--resume: no checkpoint in {out}, starting from scratch", flush=True)

    if main:
        save_config(args, out / "config.yaml")  # only now: a failed start leaves none behind

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = StepBatches(
        len(train_set), batch_size=args.batch_size, world=world, rank=rank, accum=args.accum_steps, seed=args.seed,
        start=start, total=args.iters,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=sampler, num_workers=args.workers, generator=torch.Generator().manual_seed(args.seed),
        pin_memory=device.type == "cuda",
    )  # fmt: skip
    writer = _tensorboard(out, args) if main else None
    bar = _bar(start, args.iters, main and not args.quiet)
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    history = []
    batches = iter(loader)
    model.train()
    t0 = time.perf_counter()
    for step in range(start, args.iters):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(args.accum_steps):
            images, labels = next(batches)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            sync = micro == args.accum_steps - 1 or world == 1
            ctx = net.no_sync() if not sync and isinstance(net, nn.parallel.DistributedDataParallel) else nullcontext()
            with ctx, torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = seg_loss(net(images), labels, args.aux_weight) / args.accum_steps
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower the LR or disable --amp")
            scaler.scale(loss).backward()
            total += loss.item()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        lr = args.lr * scheduler.lr_lambdas[0](scheduler.last_epoch)  # the base LR (groups scale it)
        record = {"step": step + 1, "loss": total, "lr": lr, "time": time.perf_counter() - t0}
        if val_set is not None and ((step + 1) % args.val_interval == 0 or step + 1 == args.iters):
            from .seg_eval import evaluate

            metrics = evaluate(model, val_set, device=device, max_samples=args.max_val_samples)
            model.train()
            record.update(val_miou=metrics["miou"], val_pixel_accuracy=metrics["pixel_accuracy"])
            if main and metrics["miou"] > best:
                best = metrics["miou"]
                save_weights(model.state_dict(), out / "best.safetensors", metadata=identity, point="best")
        history.append(record)
        if main:
            bar.update(record)
            if writer is not None:
                for key in ("loss", "lr", "val_miou", "val_pixel_accuracy"):
                    if key in record:
                        writer.add_scalar(f"train/{key}" if key in ("loss", "lr") else f"val/{key[4:]}", record[key],
                                          step + 1)  # fmt: skip
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            fault_point("logged")
        if (step + 1) % args.ckpt_interval == 0 or step + 1 == args.iters:
            rngs = _gather_rng(world)
            if main:
                state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "step": step + 1, "best_miou": best, "rng": rngs, "config": config_dict(args)}  # fmt: skip
                commit_checkpoint(out, step + 1, model.state_dict(), state, metadata=identity)
                if not args.quiet:
                    bar.write(f"checkpoint step {step + 1}")
                    sys.stdout.flush()
    bar.close()
    if writer is not None:
        writer.close()
    if main and best < 0:
        save_weights(model.state_dict(), out / "best.safetensors", metadata=identity)  # no validation: the last
    return {"history": history, "best_miou": best, "out": str(out), "model": model}


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log's records up to the resumed step: the steps after it are trained (and logged) again."""
    if not path.is_file():
        return
    from .common import atomic_write_text

    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _gather_rng(world: int):
    state = rng_state()
    if world == 1:
        return state
    states = [None] * world
    dist.all_gather_object(states, state)
    return states


def _tensorboard(out: Path, args):
    if args.no_tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


class _bar:
    """tqdm progress with loss, LR and ETA (tqdm computes the ETA); silent when disabled."""

    def __init__(self, start: int, total: int, enabled: bool) -> None:
        self.tqdm = None
        if enabled:
            from tqdm import tqdm

            self.tqdm = tqdm(total=total, initial=start, unit="it", dynamic_ncols=True)

    def update(self, record: dict) -> None:
        if self.tqdm is not None:
            post = {"loss": f"{record['loss']:.4f}", "lr": f"{record['lr']:.2e}"}
            if "val_miou" in record:
                post["val_mIoU"] = f"{100 * record['val_miou']:.2f}"
            self.tqdm.set_postfix(post)
            self.tqdm.update(1)

    def write(self, text: str) -> None:
        (self.tqdm.write if self.tqdm is not None else print)(text)

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
