"""`hamburger gan train` / `gan sample`: the HamGAN recipe as a task of the shared engine.

The engine (:mod:`hamburger.engine.loop`) owns the loop, checkpoints (bitwise resume), logging, TensorBoard,
devices, autocast and DDP; :class:`GANTask` supplies the model pair, the data order, one Adam with a parameter group
per network, and its own step (``train_step``): ``d_steps`` discriminator updates on real and generated images
with the hinge loss, then one generator update, then the EMA of G.

    hinge: L_D = E[max(0, 1 − D(x, y))] + E[max(0, 1 + D(G(z, y'), y'))],  L_G = −E[D(G(z, y'), y')]

with y' drawn uniformly from the classes. Adam β = (0, 0.999), G 2e-4 / D 4e-4 by default (the paper's 1e-4 / 4e-4
for its batch of 256 is in the YAML recipes).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.checkpoint import IDENTITY_KEY, load_model_weights, model_identity, read_weights
from ..engine.common import atomic_write_bytes
from ..engine.config import load_run_config
from ..engine.datacheck import require_clean
from ..engine.loop import fit, step_loader
from ..engine.task import Task
from .config import RESUME_FREE, GANTrainConfig
from .data import build_gan_dataset
from .metrics import STANDING_BATCHES, ClassifierFeatures, features, frechet_during_training, load_classifier
from .models import GANPair, create_gan

GRID_SEED = 20260101  # the fixed z of the sample grids: the same picture positions across steps and runs


class _Keyed(torch.utils.data.Dataset):
    """Serves ``(index, epoch)`` keys of :class:`StepBatches` from a plain dataset (no augmentation)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.dataset[key[0]]


def lr_factor(step: int, *, iters: int, decay_from: float) -> float:
    """The factor of both learning rates after ``step`` updates: 1, then linear to 0 at ``iters`` from
    ``decay_from · iters`` (SN-GAN decays over its whole run; at the CPU default's budget it hurt: docs/gan.md)."""
    start = int(decay_from * iters)
    if step < start or start >= iters:  # constant rates stay constant past the last step too
        return 1.0
    return max(0.0, (iters - step) / (iters - start))  # start < iters here


def resolution_of(model: str) -> int:
    if not model.startswith("gan") or not model[3:].isdigit():
        raise ValueError(f"unknown GAN {model!r}; expected one of gan32, gan64, gan128")
    return int(model[3:])


def build_pair(config: GANTrainConfig, *, num_classes: int, image_channels: int) -> GANPair:
    return create_gan(
        config.model,
        arm=config.arm,
        ch=config.ch,
        z_dim=config.z_dim,
        num_classes=num_classes if config.conditional else None,
        context_resolution=config.context_resolution,
        image_channels=image_channels,
        steps=config.ham_steps,
        grad=config.ham_grad,
        ema=config.ema > 0,
    )


def identity_of(pair: GANPair, config: GANTrainConfig, num_classes: int) -> dict[str, str]:
    name = f"{config.model}-{config.arm}-ch{config.ch}-z{config.z_dim}" + ("-cond" if config.conditional else "")
    return model_identity(pair, name=name, num_classes=num_classes)


class GANTask(Task):
    """Class-conditional GAN training as a task of the engine."""

    score = None  # no selection metric: best.safetensors is the last step's weights
    free_fields = RESUME_FREE
    ddp_find_unused = True  # the D step does not use G's parameters

    def build(self, config: GANTrainConfig, device: torch.device):
        train_set = build_gan_dataset(config.dataset, config.data_root, "train", size=resolution_of(config.model))
        if not config.skip_data_check and train_set.reads_files:  # the in-memory datasets were checked when built
            require_clean((train_set,), workers=config.workers, progress=not config.quiet)
        pair = build_pair(config, num_classes=train_set.num_classes, image_channels=train_set.channels).to(device)
        self.num_classes = train_set.num_classes
        self.classes = train_set.classes
        probe = grid_inputs(config, self.num_classes, device) if config.val_interval else None
        self.classifier = self.reference_features = None
        if config.eval_classifier is not None:  # the training curve of the Fréchet classifier distance
            self.classifier, _ = load_classifier(config.eval_classifier)
            reference = build_gan_dataset(config.dataset, config.data_root, "reference", size=train_set.size)
            self.reference_features = features(ClassifierFeatures(self.classifier), reference.tensors()[0])
        return pair, train_set, probe, identity_of(pair, config, train_set.num_classes)

    def optimizer(self, model: GANPair, config: GANTrainConfig):
        groups = [
            {"params": list(model.generator.parameters()), "lr": config.lr, "name": "generator"},
            {"params": list(model.discriminator.parameters()), "lr": config.lr_d, "name": "discriminator"},
        ]
        opt = torch.optim.Adam(groups, lr=config.lr, betas=(config.beta1, config.beta2))
        schedule = functools.partial(lr_factor, iters=config.iters, decay_from=config.lr_decay_from)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)

    def batches(self, train_set, config: GANTrainConfig, *, world: int, rank: int, start: int):
        # each rank its own stream of z, fake labels and ham bases (the engine restores it on resume)
        torch.manual_seed(config.seed + 1_000_003 * (rank + 1))
        # d_steps full batches per step: StepBatches' accumulation micro-batches
        return step_loader(
            _Keyed(train_set),
            config,
            world=world,
            rank=rank,
            start=start,
            batch_size=config.batch_size * config.d_steps,
            accum=config.d_steps,
        )

    def train_step(self, net, batches, optimizer, scaler, config: GANTrainConfig, device, autocast) -> dict:
        pair: GANPair = net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
        conditional = config.conditional
        for _ in range(config.d_steps):
            real, labels = (t.to(device, non_blocking=True) for t in next(batches))
            b = real.shape[0]
            z = torch.randn(b, config.z_dim, device=device)
            fake_labels = torch.randint(0, self.num_classes, (b,), device=device) if conditional else None
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                with torch.no_grad():
                    fake = pair.generator(z, fake_labels)
                images = torch.cat([real, fake.to(real.dtype)])  # one D forward for both halves (D has no BN)
                both = torch.cat([labels, fake_labels]) if conditional else None
                logits = net(images, both, mode="discriminate").float()
                loss_d = F.relu(1.0 - logits[:b]).mean() + F.relu(1.0 + logits[b:]).mean()
            scaler.scale(loss_d).backward()  # only D's parameters have gradients: Adam skips G's
            scaler.step(optimizer)
            scaler.update()
        z = torch.randn(b, config.z_dim, device=device)
        fake_labels = torch.randint(0, self.num_classes, (b,), device=device) if conditional else None
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss_g = -net(z, fake_labels, mode="generate_and_discriminate").float().mean()
        scaler.scale(loss_g).backward()
        for p in pair.discriminator.parameters():  # the G loss's gradient reaches D too: not D's update
            p.grad = None
        scaler.step(optimizer)
        scaler.update()
        if pair.generator_ema is not None:
            pair.update_ema(config.ema)
        return {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "d_real": logits[:b].mean().item(),
            "d_fake": logits[b:].mean().item(),
        }

    def evaluate(self, model: GANPair, probe, config: GANTrainConfig, device, step: int) -> dict:
        """Write the class-conditional sample grid of this step (rank 0) and, with ``eval_classifier``, return the
        Fréchet classifier distance of ``eval_samples`` samples (no selection: the last weights are kept)."""
        import torch.distributed as dist

        if dist.is_initialized() and dist.get_rank() != 0:
            return {}
        grid = sample_grid(model, *probe)
        save_grid(grid, config.samples_per_class, Path(config.out) / "samples" / f"step{step:07d}.png")
        if self.classifier is None:
            return {}
        distance = frechet_during_training(
            model,
            self.classifier,
            self.reference_features,
            count=config.eval_samples,  # images come back on CPU
            num_classes=self.num_classes,
            conditional=config.conditional,
            device=device,
        )
        return {"frechet_distance": distance}


def grid_inputs(config: GANTrainConfig, num_classes: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fixed z (classes x samples_per_class, z_dim) and labels (one row per class), from :data:`GRID_SEED`."""
    gen = torch.Generator().manual_seed(GRID_SEED)
    rows = num_classes if config.conditional else 1
    z = torch.randn(rows * config.samples_per_class, config.z_dim, generator=gen).to(device)
    labels = torch.arange(rows).repeat_interleave(config.samples_per_class).to(device) if config.conditional else None
    return z, labels


@torch.no_grad()
def sample_grid(
    pair: GANPair, z: torch.Tensor, labels: torch.Tensor | None, *, standing_batches: int = STANDING_BATCHES
) -> torch.Tensor:
    """Images (N, C, S, S) in [-1, 1] from the sampling generator (EMA when kept) in eval mode, with standing BN
    statistics as in :func:`hamburger.gan.metrics.generate`."""
    gen = pair.sampler(standing_batches=standing_batches)
    was = gen.training
    gen.eval()
    try:
        return gen(z, labels).float().cpu()
    finally:
        gen.train(was)


def save_grid(images: torch.Tensor, columns: int, path: Path, *, scale: int = 2, pad: int = 2) -> None:
    """A PNG of ``images`` (N, C, S, S) in [-1, 1], ``columns`` per row, each pixel ``scale``x``scale``."""
    from PIL import Image

    n, c, s, _ = images.shape
    rows = -(-n // columns)
    cell = s + pad
    canvas = torch.ones(c, rows * cell + pad, columns * cell + pad)  # white separators
    for i in range(n):
        r, k = divmod(i, columns)
        canvas[:, pad + r * cell : pad + r * cell + s, pad + k * cell : pad + k * cell + s] = (images[i] + 1) / 2
    pixels = (canvas.clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels.repeat_interleave(scale, 1).repeat_interleave(scale, 2).permute(1, 2, 0)  # (H, W, C)
    arr = pixels.squeeze(2).numpy() if c == 1 else pixels.numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def train(config: GANTrainConfig) -> dict:
    """Train as ``config`` says; writes ``samples/step*.png`` every ``val_interval`` steps and ``samples/final.png``."""
    if not isinstance(config, GANTrainConfig):
        raise TypeError(f"train expects a GANTrainConfig, got {type(config).__name__}")
    resolution_of(config.model)
    task = GANTask()
    result = fit(task, config)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        pair = result["model"]
        device = next(pair.parameters()).device
        grid = sample_grid(pair, *grid_inputs(config, task.num_classes, device))
        save_grid(grid, config.samples_per_class, Path(config.out) / "samples" / "final.png")
    result["classes"] = task.classes
    return result


def load_run(run: Path, weights: Path | None = None):
    """(GANPair with the run's weights, its GANTrainConfig, number of classes) from a ``gan train`` run folder."""
    import json

    run = Path(run)
    config = load_run_config(run, GANTrainConfig, "gan train")
    weights = Path(weights) if weights else run / "last.safetensors"
    tensors, metadata = read_weights(weights)  # the classes and image channels come with the weights
    num_classes = int(json.loads(metadata.get(IDENTITY_KEY, "{}")).get("num_classes", 0))
    to_image = tensors.get("generator.to_image.parametrizations.weight.original")
    if not num_classes or to_image is None:
        raise ValueError(f"{weights} is not a weights file of gan train (no num_classes or generator.to_image)")
    pair = build_pair(config, num_classes=num_classes, image_channels=to_image.shape[0])
    load_model_weights(pair, weights, identity_of(pair, config, num_classes))
    return pair, config, num_classes
