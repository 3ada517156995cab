"""HamGAN: SN-ResNet generator and projection discriminator with a context block (Hamburger, attention or none).

The 128² layout is the paper's (its TF code, after SAGAN / TF-GAN), with ch = 64, z = 128:

* G: z -> SN linear -> 4²·16ch -> up-blocks 16ch (8²), 8ch (16²), 4ch (32²) -> context -> 2ch (64²), ch (128²)
  -> BN -> ReLU -> SN conv3x3 -> tanh.
* D: optimised block ch (64²) -> 2ch (32²) -> context -> 4ch, 8ch, 16ch (4²) -> 16ch (no pooling) -> ReLU ->
  global sum pool -> SN linear + projection Σ h·SN-embed(y).

64² drops the first up-block of G (start 16ch) and the first down-block of D; 32² drops two (G starts at 8ch,
D's widths stop at 4ch and its last block widens to G's start width). The context slot's resolution is an
argument (default 32² at 128², 16² at 64² and 32²).

    pair = create_gan("gan32", arm="ham_nmf", ch=16, num_classes=10)
    x = pair.generator(torch.randn(8, 128), labels)       # (8, 1, 32, 32)
    logits = pair.discriminator(x, labels)                  # (8,)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import DEFAULT_GRAD
from .blocks import ARMS, DBlock, GBlock, create_gan_context, sn, sn_conv, sn_linear

__all__ = ["Generator", "Discriminator", "GANPair", "create_gan", "list_gans", "register_gan", "ARMS"]


def _check_labels(y: Tensor | None, num_classes: int | None, batch: int) -> None:
    if num_classes is None:
        return
    if y is None:
        raise ValueError("a class-conditional model needs labels y of shape (B,)")
    if y.shape != (batch,) or y.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be integers of shape ({batch},), got {y.dtype} {tuple(y.shape)}")


class Generator(nn.Module):
    """SN-ResNet generator (B, z_dim) [+ labels (B,)] -> (B, image_channels, resolution, resolution) in [-1, 1].

    Args:
        resolution: 32, 64 or 128.
        ch: base width (the paper's 64).
        z_dim: latent size (128).
        num_classes: classes of the conditional BNs, or None (unconditional).
        arm: the context block (:data:`ARMS`).
        context_resolution: where the context block sits (default 32 at 128, else 16).
        image_channels: 3 for RGB, 1 for greyscale.
        steps: K of a Hamburger arm.
        grad: the gradient through a Hamburger arm's solve (:mod:`hamburger.functional`).
    """

    def __init__(
        self,
        *,
        resolution: int = 32,
        ch: int = 64,
        z_dim: int = 128,
        num_classes: int | None = None,
        arm: str = "ham_nmf",
        context_resolution: int | None = None,
        image_channels: int = 3,
        steps: int = 6,
        grad: str = DEFAULT_GRAD,
    ) -> None:
        super().__init__()
        widths = _widths(resolution)  # multiples of ch from 4² upwards, e.g. [16, 16, 8, 4, 2, 1] at 128
        ctx = _context_resolution(resolution, context_resolution)
        self.z_dim, self.num_classes, self.resolution = z_dim, num_classes, resolution
        self.start = widths[0] * ch
        self.linear = sn_linear(z_dim, 4 * 4 * self.start)
        self.blocks = nn.ModuleList()
        self.context_after = int(math.log2(ctx // 4)) - 1  # the index of the block whose output is ctx²
        for a, b in zip(widths[:-1], widths[1:]):
            self.blocks.append(GBlock(a * ch, b * ch, num_classes=num_classes))
        self.context = create_gan_context(
            arm,
            widths[self.context_after + 1] * ch,
            discriminator=False,
            num_classes=num_classes,
            steps=steps,
            grad=grad,
        )
        self.bn = nn.BatchNorm2d(ch, eps=1e-3)
        self.to_image = sn_conv(ch, image_channels, 3)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"Generator expects z of shape (B, {self.z_dim}), got {tuple(z.shape)}")
        _check_labels(y, self.num_classes, z.shape[0])
        h = self.linear(z).reshape(z.shape[0], self.start, 4, 4)  # (B, 16ch·16) -> (B, 16ch, 4, 4)
        for i, block in enumerate(self.blocks):
            h = block(h, y)
            if i == self.context_after and self.context is not None:
                h = self.context(h, y)
        return torch.tanh(self.to_image(F.relu(self.bn(h))))


class Discriminator(nn.Module):
    """SN-ResNet projection discriminator (B, image_channels, r, r) [+ labels] -> (B,) logits (hinge loss)."""

    def __init__(
        self,
        *,
        resolution: int = 32,
        ch: int = 64,
        num_classes: int | None = None,
        arm: str = "ham_nmf",
        context_resolution: int | None = None,
        image_channels: int = 3,
        steps: int = 6,
        grad: str = DEFAULT_GRAD,
    ) -> None:
        super().__init__()
        widths = _widths(resolution)[::-1][:-1]  # e.g. [1, 2, 4, 8, 16] at 128: one per halving
        ctx = _context_resolution(resolution, context_resolution)
        self.num_classes, self.resolution, self.image_channels = num_classes, resolution, image_channels
        self.blocks = nn.ModuleList([DBlock(image_channels, widths[0] * ch, first=True)])
        for a, b in zip(widths[:-1], widths[1:]):
            self.blocks.append(DBlock(a * ch, b * ch))
        top = _widths(resolution)[0] * ch
        self.blocks.append(DBlock(widths[-1] * ch, top, down=False))
        self.context_after = int(math.log2(resolution // ctx)) - 1
        self.context = create_gan_context(
            arm, widths[self.context_after] * ch, discriminator=True, num_classes=None, steps=steps, grad=grad
        )
        self.linear = sn_linear(top, 1)
        self.embed = None
        if num_classes is not None:
            embed = nn.Embedding(num_classes, top)
            nn.init.xavier_uniform_(embed.weight)
            self.embed = sn(embed)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        expect = (self.image_channels, self.resolution, self.resolution)
        if x.ndim != 4 or tuple(x.shape[1:]) != expect:
            raise ValueError(f"Discriminator expects images (B, {', '.join(map(str, expect))}), got {tuple(x.shape)}")
        _check_labels(y, self.num_classes, x.shape[0])
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.context_after and self.context is not None:
                h = self.context(h)
        h = F.relu(h).sum(dim=(2, 3))  # (B, C, 4, 4) -> (B, C): global sum pool
        out = self.linear(h).squeeze(1)  # (B,)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)  # projection: Σ_c embed(y)_c · h_c
        return out


def _widths(resolution: int) -> list[int]:
    if resolution not in (32, 64, 128):
        raise ValueError(f"resolution must be 32, 64 or 128, got {resolution}")
    return {128: [16, 16, 8, 4, 2, 1], 64: [16, 8, 4, 2, 1], 32: [8, 4, 2, 1]}[resolution]


def _context_resolution(resolution: int, context_resolution: int | None) -> int:
    ctx = context_resolution or (32 if resolution == 128 else 16)
    if ctx not in (8, 16, 32, 64) or ctx >= resolution:
        raise ValueError(f"context_resolution must be 8, 16, 32 or 64 and below {resolution}, got {ctx}")
    return ctx


class GANPair(nn.Module):
    """A generator and its discriminator in one module (one state dict, one checkpoint), with an optional
    exponential moving average of the generator (``generator_ema``, used for sampling when present)."""

    def __init__(self, generator: Generator, discriminator: Discriminator, *, ema: bool = False) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.generator_ema = None
        if ema:
            self.generator_ema = copy.deepcopy(generator).requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))  # for the warm-up (resumes)

    def forward(self, x: Tensor, y: Tensor | None = None, *, mode: str) -> Tensor:
        """One entry point for DistributedDataParallel: ``mode="discriminate"`` gives D(x, y) (B,);
        ``"generate_and_discriminate"`` gives D(G(x, y), y) for latents x (B, z_dim); ``"generate"`` gives G(x, y)."""
        if mode == "discriminate":
            return self.discriminator(x, y)
        if mode == "generate_and_discriminate":
            return self.discriminator(self.generator(x, y), y)
        if mode == "generate":
            return self.generator(x, y)
        raise ValueError(f"mode must be 'discriminate', 'generate_and_discriminate' or 'generate', got {mode!r}")

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """θ_ema ← d·θ_ema + (1 − d)·θ with the warm-up d = min(decay, (1 + n) / (10 + n)) after n updates (so the
        average forgets the initial weights within a short run); buffers (BN statistics, power-iteration vectors)
        are copied (:func:`standing_statistics` re-estimates the BN statistics for the averaged weights)."""
        if self.generator_ema is None:
            raise ValueError("this GANPair was built without ema=True")
        n = int(self.ema_updates)
        d = min(decay, (1.0 + n) / (10.0 + n))
        self.ema_updates += 1
        for e, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            e.lerp_(p, 1.0 - d)
        for e, b in zip(self.generator_ema.buffers(), self.generator.buffers()):
            e.copy_(b)

    def sampler(self, *, standing_batches: int = 0) -> Generator:
        """The generator to sample from: the EMA copy when kept, else the trained one; with ``standing_batches``
        a copy of it with standing BN statistics (:func:`standing_statistics`)."""
        gen = self.generator_ema if self.generator_ema is not None else self.generator
        return standing_statistics(gen, batches=standing_batches) if standing_batches else gen


@torch.no_grad()
def standing_statistics(generator: Generator, *, batches: int = 16, batch_size: int = 64, seed: int = 0) -> Generator:
    """A copy of ``generator`` whose batch-norm statistics are the plain average over ``batches`` batches of its own
    samples (z ~ N(0, I), classes balanced; BigGAN's "standing statistics"). Running statistics lag behind the weights
    in training and do not belong to EMA weights at all; these belong to the weights sampled from. Everything but
    the BNs runs in eval mode, as when sampling."""
    if batches < 1 or batch_size < 2:
        raise ValueError(f"standing statistics need batches >= 1 and batch_size >= 2, got {batches}, {batch_size}")
    gen = copy.deepcopy(generator)
    norms = [m for m in gen.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    device = next(gen.parameters()).device
    g = torch.Generator().manual_seed(seed)
    gen.eval()  # the network as it samples (no power iteration, the ham's eval path) ...
    for m in norms:
        m.train()  # ... but its BNs normalise by, and average, the batch statistics
    for i in range(batches):
        z = torch.randn(batch_size, gen.z_dim, generator=g).to(device)
        y = None
        if gen.num_classes:
            y = ((torch.arange(batch_size) + i * batch_size) % gen.num_classes).to(device)
        gen(z, y)
    for m in norms:
        m.momentum = 0.1
    return gen.eval()


# ----------------------------------------------------------------------------------------------------------------
# registry

_GANS: dict[str, tuple[Callable[..., GANPair], dict]] = {}


def register_gan(name: str, builder: Callable[..., GANPair], **defaults) -> None:
    """Register ``builder(**kw) -> GANPair`` under ``name`` with default keyword arguments."""
    if name in _GANS:
        raise ValueError(f"GAN {name!r} is already registered")
    _GANS[name] = (builder, defaults)


def list_gans() -> list[str]:
    """Names accepted by :func:`create_gan`, sorted."""
    return sorted(_GANS)


def create_gan(name: str, **overrides) -> GANPair:
    """Build the registered GAN ``name``: keyword arguments ``arm``, ``ch``, ``z_dim``, ``num_classes``,
    ``context_resolution``, ``image_channels``, ``steps``, ``grad``, ``ema`` override its defaults."""
    if name not in _GANS:
        raise ValueError(f"unknown GAN {name!r}; available: {', '.join(list_gans())}")
    builder, defaults = _GANS[name]
    return builder(**{**defaults, **overrides})


def _build(
    *,
    resolution: int,
    arm: str = "ham_nmf",
    ch: int = 64,
    z_dim: int = 128,
    num_classes: int | None = None,
    context_resolution: int | None = None,
    image_channels: int = 3,
    steps: int = 6,
    grad: str = DEFAULT_GRAD,
    ema: bool = False,
) -> GANPair:
    shared = dict(
        resolution=resolution,
        ch=ch,
        num_classes=num_classes,
        arm=arm,
        context_resolution=context_resolution,
        image_channels=image_channels,
        steps=steps,
        grad=grad,
    )
    return GANPair(Generator(z_dim=z_dim, **shared), Discriminator(**shared), ema=ema)


for _res in (32, 64, 128):
    register_gan(f"gan{_res}", _build, resolution=_res)
