"""`hamburger seq train`: token mixers on multi-query associative recall or character language modelling, as a
task of the shared engine (loop, checkpoints with bitwise resume, log, TensorBoard, devices, autocast, DDP).

:class:`SeqTask` supplies the model (:class:`~hamburger.seq.model.SequenceModel`), the data, AdamW with warm-up
and cosine decay, the cross-entropy loss and the metric: recall accuracy at the query positions (MQAR), bits per
character (LM, lower is better).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.checkpoint import model_identity
from ..engine.loop import fit, step_loader
from ..engine.task import Task
from .config import RESUME_FREE, SeqTrainConfig, free_fields_of, mixer_kwargs
from .data import IGNORE, bits, mqar, mqar_mixture, parse_cells, sympy_corpus, tiles
from .model import SequenceModel

VOCAB = 256


class _Pairs(torch.utils.data.Dataset):
    """(inputs, targets) rows served by ``(index, epoch)`` keys."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        return self.inputs[i], self.targets[i]


class _Windows(torch.utils.data.Dataset):
    """Random windows of a character stream: item (i, epoch) starts at an offset drawn from (seed, epoch, i), so
    the data order depends on nothing else (and resumes exactly)."""

    def __init__(self, stream: torch.Tensor, *, length: int, seed: int) -> None:
        self.stream, self.length, self.seed = stream, length, seed

    def __len__(self) -> int:
        return (len(self.stream) - 1) // self.length  # one "epoch" covers the stream's length once

    def __getitem__(self, key):
        i, epoch = key
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + i)
        start = int(torch.randint(0, len(self.stream) - self.length - 1, (1,), generator=gen))
        w = self.stream[start : start + self.length + 1].long()
        return w[:-1], w[1:]


def split_data(config: SeqTrainConfig, split: str):
    """The ``split`` (train | val | test) of the configured task as a dataset of (inputs, targets)."""
    if config.task == "mqar":
        counts = {"train": config.train_examples, "val": config.val_examples, "test": max(config.val_examples, 1000)}
        seed = config.data_seed * 3 + ("train", "val", "test").index(split)
        if config.train_cells:  # a mixture of cells (the arena's protocol): counts per cell
            cells = parse_cells(config.train_cells)
            return _Pairs(*mqar_mixture(counts[split], cells, vocab=VOCAB, seed=seed))
        return _Pairs(*mqar(counts[split], seq_len=config.seq_len, pairs=config.pairs, vocab=VOCAB, seed=seed))
    corpus = sympy_corpus()
    if split == "train":
        return _Windows(corpus["train"], length=config.seq_len, seed=config.seed)
    w = tiles(corpus[split], length=config.seq_len, limit=config.val_examples if split == "val" else None)
    return _Pairs(w[:, :-1], w[:, 1:])


def build_model(config: SeqTrainConfig) -> SequenceModel:
    return SequenceModel(
        VOCAB,
        dim=config.dim,
        depth=config.depth,
        mixer=config.mixer,
        heads=config.heads,
        max_len=config.seq_len,
        conv=config.conv,
        **mixer_kwargs(config),
    )


def identity_of(model: nn.Module, config: SeqTrainConfig) -> dict[str, str]:
    name = f"seq-{config.mixer}-d{config.dim}x{config.depth}-h{config.heads}-N{config.seq_len}"
    if config.mixer.startswith("ham_"):
        name += f"-R{config.rank}-K{config.ham_steps}-L{config.chunk}"
        name += f"-W{config.ham_width}" if config.ham_width else ""
        name += f"-k{config.ham_keys}" if config.ham_keys else ""
        name += "" if config.ham_fit == "mult" else f"-{config.ham_fit}"
        name += "-query" if config.ham_query else ""
        name += {"none": "", "chunk": "-local"}.get(config.ham_local, f"-local-{config.ham_local}")
        name += f"-decay{config.ham_decay:g}" if config.ham_decay else ""
        name += "" if config.ham_norm == "none" else f"-{config.ham_norm}"  # the forward differs: a checkpoint says so
        name += "" if config.ham_memory == "dict" else f"-{config.ham_memory}"
    return model_identity(model, name=name, num_classes=VOCAB)


def _schedule(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate_model(model: nn.Module, data, task: str, *, device, batch: int = 64) -> dict:
    """MQAR: ``accuracy`` at the query positions; LM: ``bpc`` (bits per character) over every target."""
    model.eval()
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    total, correct, nats = 0, 0, 0.0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        logits = model(inputs).float()
        mask = targets != IGNORE
        if task == "mqar":
            correct += (logits.argmax(-1)[mask] == targets[mask]).sum().item()
        else:
            nats += F.cross_entropy(logits[mask], targets[mask], reduction="sum").item()
        total += mask.sum().item()
    return {"accuracy": correct / total} if task == "mqar" else {"bpc": bits(nats / total)}


class SeqTask(Task):
    """Sequence training as a task of the engine."""

    free_fields = RESUME_FREE

    def build(self, config: SeqTrainConfig, device: torch.device):
        self.score = "accuracy" if config.task == "mqar" else "bpc"
        self.score_lower_is_better = config.task == "lm"
        self.score_is_fraction = config.task == "mqar"
        train_set = split_data(config, "train")
        val_set = split_data(config, "val") if config.val_interval else None
        model = build_model(config).to(device)
        return model, train_set, val_set, identity_of(model, config)

    def optimizer(self, model: nn.Module, config: SeqTrainConfig):
        decay = [p for p in model.parameters() if p.ndim >= 2]
        rest = [p for p in model.parameters() if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))
        schedule = partial(_schedule, warmup=config.warmup, total=config.iters)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)

    def batches(self, train_set, config: SeqTrainConfig, *, world: int, rank: int, start: int):
        return step_loader(train_set, config, world=world, rank=rank, start=start)

    def loss(self, net: nn.Module, batch, config: SeqTrainConfig, device) -> torch.Tensor:
        inputs, targets = (t.to(device, non_blocking=True) for t in batch)
        logits = net(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)

    def evaluate(self, model: nn.Module, val_set, config: SeqTrainConfig, device, step: int) -> dict:
        return evaluate_model(model, val_set, config.task, device=device)


def train(config: SeqTrainConfig) -> dict:
    """Train as ``config`` says; returns the engine's result (history, best score, run folder, model)."""
    if not isinstance(config, SeqTrainConfig):
        raise TypeError(f"train expects a SeqTrainConfig, got {type(config).__name__}")
    task = SeqTask()
    task.free_fields = free_fields_of(config)  # --resume ignores the Ham's fields for another mixer
    return fit(task, config)
