"""The training engine the tasks share: one loop, one checkpoint transaction, one log, one device/autocast/DDP set-up.

``fit(task, config)`` runs a task's training. The engine owns everything that is not the task's own:

* the run folder: stale temporaries removed at start, ``config.yaml`` written once the start has succeeded,
  ``log.jsonl`` (one record per step, truncated to the resumed step), TensorBoard events, a tqdm progress bar;
* ``--device``, ``torch.distributed`` (launched by ``torchrun``: DDP, rank-0 logging and checkpoints, every rank's
  RNG state), autocast (``amp``), the fp16 grad scaler, gradient accumulation;
* checkpoints (:mod:`hamburger.engine.checkpoint`): committed as one transaction, verified on ``resume``, the
  model's identity checked, a changed recipe refused unless ``allow_changed_config``;
* periodic evaluation (``val_interval``) keeping ``best.safetensors`` by the task's score.

A task is a :class:`~hamburger.engine.task.Task`: its model, data, optimiser, loss or step, and metrics.

The config is a dataclass (see :mod:`hamburger.engine.config`) with at least the fields ``device``, ``out``,
``seed``, ``iters``, ``accum_steps``, ``amp``, ``lr``, ``val_interval``, ``ckpt_interval``, ``resume``,
``allow_changed_config``, ``overwrite``, ``init_weights``, ``quiet`` and ``no_tensorboard``. A run folder holds one
run at a time (:mod:`hamburger.engine.runlock`): a new run refuses a folder that holds one unless it resumes or
overwrites it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import (
    MANIFEST,
    check_identity,
    commit_checkpoint,
    fault_point,
    load_checkpoint,
    load_model_weights,
    remove_stale,
    rng_state,
    save_weights,
    set_rng_state,
)
from .common import atomic_write_text
from .config import changed_fields, config_dict, save_config
from .runlock import RunLock, prepare
from .task import Task

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# how a run is started, never what it computes: a resumed run may change them whatever the task's free fields
ENGINE_FREE = frozenset({"out", "resume", "overwrite", "allow_changed_config"})
NO_SCORE = -1.0  # "no evaluation yet" in checkpoints (scores that select weights are mIoU, accuracy: never -1)


def _improves(value: float, best: float, task: Task) -> bool:
    if best == NO_SCORE:
        return True
    return value < best if task.score_lower_is_better else value > best


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


def step_loader(
    dataset, config, *, world: int, rank: int, start: int, batch_size: int | None = None, accum: int | None = None
) -> torch.utils.data.DataLoader:
    """The usual ``batches`` of a task: :class:`StepBatches` over ``dataset`` (which takes ``(index, epoch)`` keys)
    for steps ``start..iters-1``, with a seeded generator for the workers' seeds."""
    sampler = StepBatches(
        len(dataset),
        batch_size=batch_size or config.batch_size,
        world=world,
        rank=rank,
        accum=accum or config.accum_steps,
        seed=config.seed,
        start=start,
        total=config.iters,
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=config.workers,
        generator=torch.Generator().manual_seed(config.seed),
        pin_memory=torch.device(config.device).type == "cuda",
    )


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


def fit(task: Task, config) -> dict:
    """Train ``task`` as ``config`` says; returns the history, the best score, the run folder and the model."""
    rank, world, device = init_distributed(config.device)
    main = rank == 0
    out = Path(config.out)
    if not main:
        return _fit(task, config, rank, world, device)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):  # before any clean-up: a second process must not delete this run's files
        prepare(out, resume=config.resume, overwrite=config.overwrite)
        remove_stale(out)  # half-written temporaries and uncommitted step files of a killed run
        return _fit(task, config, rank, world, device)


def _fit(task: Task, config, rank: int, world: int, device: torch.device) -> dict:
    main, out = rank == 0, Path(config.out)
    torch.manual_seed(config.seed)
    model, train_set, val_set, identity = task.build(config, device)
    if world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if config.init_weights and not (config.resume and (out / MANIFEST).is_file()):
        load_model_weights(model, config.init_weights)  # another stage's weights: keys checked, identity may differ
    optimizer, scheduler = task.optimizer(model, config)
    start, best, rng, scaler_state = 0, NO_SCORE, None, None
    if config.resume:
        start, best, rng, scaler_state = _resume(task, config, out, model, optimizer, scheduler, identity, rank)

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=task.ddp_find_unused,
        )
    loader = task.batches(train_set, config, world=world, rank=rank, start=start)
    if main:
        save_config(config, out / "config.yaml")  # only now: a failed start (data, model, resume, loader) leaves none
    writer = _tensorboard(out, config) if main else None
    bar = ProgressBar(start, config.iters, main and not config.quiet)
    amp_dtype = AMP_DTYPES[config.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    if scaler_state:  # the fp16 loss scale, where the run left it
        scaler.load_state_dict(scaler_state)
    history = []
    batches = iter(loader)  # may draw a seed from the global RNG: restore the checkpoint's RNG state after it
    if rng is not None:
        states = rng  # one per rank (DDP) or one
        _restore("RNG", lambda: set_rng_state(states[rank] if isinstance(states, list) else states), out / MANIFEST)
    model.train()
    t0 = time.perf_counter()

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)

    for step in range(start, config.iters):
        try:
            values = task.train_step(net, batches, optimizer, scaler, config, device, autocast)
        except FloatingPointError as e:  # the default step's non-finite loss
            raise FloatingPointError(f"{e} at step {step}; lower the LR or disable --amp") from None
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            raise FloatingPointError(f"{bad} at step {step}; lower the LR or disable --amp")
        scheduler.step()
        lr = config.lr * scheduler.lr_lambdas[0](scheduler.last_epoch)  # the base LR (parameter groups scale it)
        record = {"step": step + 1, **values, "lr": lr, "time": time.perf_counter() - t0}
        if val_set is not None and ((step + 1) % config.val_interval == 0 or step + 1 == config.iters):
            metrics = task.evaluate(model, val_set, config, device, step + 1)
            model.train()
            record.update({f"val_{k}": v for k, v in metrics.items()})
            if main and task.score in metrics and _improves(metrics[task.score], best, task):
                best = metrics[task.score]
                save_weights(model.state_dict(), out / "best.safetensors", metadata=identity, point="best", digest=True)
        history.append(record)
        if main:
            bar.update(record, task)
            if writer is not None:
                for key, value in record.items():
                    if key not in ("step", "time"):
                        tag = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"
                        writer.add_scalar(tag, value, step + 1)
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            fault_point("logged")
        if (step + 1) % config.ckpt_interval == 0 or step + 1 == config.iters:
            rngs = _gather_rng(world)
            if main:
                state = {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step + 1,
                    "best_score": best,
                    "rng": rngs,
                    "config": config_dict(config),
                    "scaler": scaler.state_dict(),
                }
                commit_checkpoint(out, step + 1, model.state_dict(), state, metadata=identity)
                if not config.quiet:
                    bar.write(f"checkpoint step {step + 1}")
                    sys.stdout.flush()
    bar.close()
    if writer is not None:
        writer.close()
    if main and best == NO_SCORE:
        # no validation: the last weights
        save_weights(model.state_dict(), out / "best.safetensors", metadata=identity, digest=True)
    return {"history": history, "best_score": best, "out": str(out), "model": model}


def _resume(task, config, out, model, optimizer, scheduler, identity, rank) -> tuple[int, float, Any, dict | None]:
    """Load the committed checkpoint (verified), refuse a changed recipe; (start step, best score, RNG states, the
    fp16 grad scaler's state or None)."""
    checkpoint = load_checkpoint(out)
    if checkpoint is None:
        if (out / "last_state.pt").is_file():
            raise ValueError(
                f"{out} holds a checkpoint of an older hamburger without {MANIFEST}, which cannot be verified; start "
                "over without --resume (or into another --out)"
            )
        if rank == 0:
            print(f"--resume: no checkpoint in {out}, starting from scratch", flush=True)
            _truncate_log(out / "log.jsonl", 0)  # a run killed before its first commit: its steps are trained again
        return 0, NO_SCORE, None, None
    weights, metadata, state = checkpoint
    _check_state(state, out / MANIFEST)
    changes = changed_fields(state.get("config", {}), config, task.free_fields | ENGINE_FREE)
    if changes and not config.allow_changed_config:  # before the identity: it names the fields that differ
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        raise ValueError(
            f"--resume with a changed recipe ({listed}); the checkpoint in {out} was trained with the old values. "
            "Pass --allow-changed-config to continue anyway (the change is logged), or train into another --out"
        )
    check_identity(metadata, identity, out / MANIFEST)
    model.load_state_dict(weights)
    _restore("optimizer", lambda: optimizer.load_state_dict(state["optimizer"]), out / MANIFEST)
    _restore("scheduler", lambda: scheduler.load_state_dict(state["scheduler"]), out / MANIFEST)
    start = state["step"]
    if rank == 0:
        if changes:
            print(f"--allow-changed-config: continuing with {changes}", flush=True)
            with open(out / "config_changes.jsonl", "a") as f:
                f.write(json.dumps({"step": start, "changes": {k: list(v) for k, v in changes.items()}}) + "\n")
        _truncate_log(out / "log.jsonl", start)
        print(f"resumed from {out / MANIFEST} at step {start}", flush=True)
    return start, state["best_score"], state["rng"], state.get("scaler")


def _restore(what: str, load, manifest: Path) -> None:
    """Run ``load`` (restoring one part of a checkpoint's state); what it raises on a state that does not fit is a
    ValueError naming the part."""
    try:
        load()
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
        problem = f"{type(e).__name__}: {str(e)[:120]}"
        raise ValueError(
            f"the checkpoint of {manifest}: its {what} state does not fit this run ({problem}); start over without "
            "--resume"
        ) from None


def _check_state(state, manifest: Path) -> None:
    """The structure of a checkpoint's state, checked before any of it is used (a hand-edited or foreign state file
    whose hash was recomputed): a ValueError naming the entry."""
    kinds: dict[str, type | tuple[type, ...]] = {
        "optimizer": dict,
        "scheduler": dict,
        "step": int,
        "best_score": (int, float),
        "rng": (dict, list),
    }
    if not isinstance(state, dict):
        raise ValueError(f"the checkpoint of {manifest}: its state is a {type(state).__name__}, not a mapping")
    for key, kind in kinds.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(
                f"the checkpoint of {manifest}: its state's {key!r} is {type(value).__name__}, "
                "not what a run writes; start over without --resume"
            )
    if not isinstance(state.get("config", {}), dict):
        raise ValueError(f"the checkpoint of {manifest}: its state's 'config' is not a mapping")
    if state["step"] < 0:
        raise ValueError(f"the checkpoint of {manifest}: its state's step is {state['step']} (< 0)")
    if not state["optimizer"] or not state["scheduler"]:
        raise ValueError(f"the checkpoint of {manifest}: its state's optimizer or scheduler is empty")


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log's records up to the resumed step: the steps after it are trained (and logged) again."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # half-written when the run was killed: a step after the checkpoint
                break
            raise ValueError(f"{path}, line {number}: not a JSON record; the log is damaged") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path}, line {number}: a record without an integer 'step'; the log is damaged")
        if record["step"] <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _gather_rng(world: int):
    state = rng_state()
    if world == 1:
        return state
    states: list[dict | None] = [None] * world
    dist.all_gather_object(states, state)
    return states


def _tensorboard(out: Path, config):
    if config.no_tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


class ProgressBar:
    """tqdm progress with loss, LR, the validation score and the ETA (tqdm computes it); silent when disabled."""

    def __init__(self, start: int, total: int, enabled: bool) -> None:
        self.tqdm = None
        if enabled:
            from tqdm import tqdm

            self.tqdm = tqdm(total=total, initial=start, unit="it", dynamic_ncols=True)

    def update(self, record: dict, task: Task) -> None:
        if self.tqdm is not None:
            post = {k: f"{v:.4f}" for k, v in record.items() if k not in ("step", "lr", "time") and "val_" not in k}
            post["lr"] = f"{record['lr']:.2e}"
            if f"val_{task.score}" in record:
                post[f"val_{task.score}"] = task.format_score(record[f"val_{task.score}"])
            self.tqdm.set_postfix(post)
            self.tqdm.update(1)

    def write(self, text: str) -> None:
        (self.tqdm.write if self.tqdm is not None else print)(text)

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
