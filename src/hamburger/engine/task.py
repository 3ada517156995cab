"""The contract between the engine and a task, as a class: what :func:`hamburger.engine.loop.fit` calls, with the
defaults of the optional parts. Segmentation, the GAN and sequences subclass it; so does a new task.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import cast

import torch
from torch import nn


class Task:
    """Subclass and implement :meth:`build`, :meth:`optimizer`, :meth:`batches` and either :meth:`loss` (the default
    step) or :meth:`train_step` (a step of its own); :meth:`evaluate` when the config has a ``val_interval``.

    Class attributes (or set them on the instance in :meth:`build`, when they depend on the config):

    ``free_fields``
        config fields a resumed run may change (output, logging, workers, device).
    ``score``
        the metric of :meth:`evaluate` that selects ``best.safetensors``, or None (the last weights are kept).
    ``score_lower_is_better``
        the score improves downwards (bits per character, a distance); default: upwards (mIoU, accuracy).
    ``score_is_fraction``
        the score is a fraction in [0, 1], shown as a percentage on the progress bar.
    ``ddp_find_unused``
        passed to DistributedDataParallel: True for tasks whose steps leave some parameters unused (the GAN).
    """

    free_fields: frozenset[str] = frozenset()
    score: str | None = None
    score_lower_is_better: bool = False
    score_is_fraction: bool = False
    ddp_find_unused: bool = False

    def build(self, config, device: torch.device):
        """``(model on device, train_set, val_set or None, identity)``; the identity is the metadata of
        :func:`~hamburger.engine.checkpoint.model_identity`, checked when a checkpoint is loaded."""
        raise NotImplementedError(f"{type(self).__name__} must implement build(config, device)")

    def optimizer(self, model: nn.Module, config):
        """``(optimizer, LambdaLR scheduler)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement optimizer(model, config)")

    def batches(self, train_set, config, *, world: int, rank: int, start: int):
        """The loader for steps ``start..iters-1``, ``accum_steps`` micro-batches a step, this rank's share. Give it a
        seeded ``generator=``: its worker seeds then do not depend on where a run was resumed."""
        raise NotImplementedError(f"{type(self).__name__} must implement batches(train_set, config, ...)")

    def loss(self, net: nn.Module, batch, config, device: torch.device) -> torch.Tensor:
        """One micro-batch's loss (the default step divides it by ``accum_steps``, scales and back-propagates)."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss(...) or train_step(...)")

    def evaluate(self, model: nn.Module, val_set, config, device: torch.device, step: int) -> dict:
        """Scalar metrics, logged as ``val_<name>``; :attr:`score` names the one that selects ``best.safetensors``."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate(...) to validate")

    def train_step(self, net: nn.Module, batches, optimizer, scaler, config, device: torch.device, autocast) -> dict:
        """One optimiser step; returns its scalars (logged, shown on the bar; the engine refuses non-finite ones).

        The default: zero the gradients, ``accum_steps`` micro-batches of :meth:`loss` (DDP synchronises only on the
        last), back-propagated through ``scaler``, one optimiser step. A task with more than one update per step
        (the GAN's D and G) overrides it: it draws from the ``batches`` iterator, runs its forwards inside
        ``autocast()``, back-propagates through ``scaler`` and steps ``optimizer``. A non-finite loss raises
        ``FloatingPointError`` before its backward."""
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        ddp = isinstance(net, nn.parallel.DistributedDataParallel)
        for micro in range(config.accum_steps):
            sync = micro == config.accum_steps - 1
            ctx = cast(nn.parallel.DistributedDataParallel, net).no_sync() if ddp and not sync else nullcontext()
            with ctx, autocast():
                loss = self.loss(net, next(batches), config, device) / config.accum_steps
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()}")
            scaler.scale(loss).backward()
            total += loss.item()
        scaler.step(optimizer)
        scaler.update()
        return {"loss": total}

    def format_score(self, value: float) -> str:
        """The score as the progress bar shows it."""
        return f"{100 * value:.2f}" if self.score_is_fraction else f"{value:.4f}"
