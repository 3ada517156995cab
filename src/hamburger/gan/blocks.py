"""Building blocks of the SN-ResNet GAN (SAGAN / BigGAN family) and its context blocks.

Every convolution and linear layer is spectrally normalised (one power iteration per training forward) through
``torch.nn.utils.parametrizations.spectral_norm``, so state dicts hold ``parametrizations.weight.original`` with
the ``_u`` / ``_v`` power-iteration vectors beside it.

Context blocks (the ``arm`` of :func:`hamburger.gan.models.create_gan`) all map (B, C, H, W) -> (B, C, H, W) as
``x + σ·f(x)`` with the learnable scalar σ initialised to 0, so each is the identity at initialisation:

* ``ham_nmf`` / ``ham_vq`` / ``ham_cd``: the HamGAN block of the paper's TF code: lower bread SN 1x1 (no bias,
  C -> d) -> ReLU (NMF) -> ham (R bases, K steps, one-step gradient, fresh random bases every training forward) ->
  upper bread SN 1x1 (d -> C) -> conditional BN in the generator (nothing in the discriminator).
* ``sagan``: SAGAN's self-attention: θ, φ at C/8, g at C/2, 2x2 max-pool on φ and g, softmax(θᵀφ) g, SN 1x1 back to C.
* ``linear``: the context zoo's linear attention (SN on its convs); its BatchNorm becomes the identity in the
  discriminator.
* ``none``: no context block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ..burger import HAMS
from ..context import LinearAttention
from ..functional import DEFAULT_GRAD

ARMS = ("ham_nmf", "ham_vq", "ham_cd", "sagan", "linear", "none")


def sn(module: nn.Module) -> nn.Module:
    """``module`` with its weight spectrally normalised (one power iteration per training forward)."""
    return spectral_norm(module, n_power_iterations=1, eps=1e-6)


def sn_conv(in_channels: int, out_channels: int, kernel: int, *, bias: bool = True) -> nn.Module:
    conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=bias)
    nn.init.xavier_uniform_(conv.weight)
    if bias:
        nn.init.zeros_(conv.bias)
    return sn(conv)


def sn_linear(in_features: int, out_features: int, *, bias: bool = True) -> nn.Module:
    linear = nn.Linear(in_features, out_features, bias=bias)
    nn.init.xavier_uniform_(linear.weight)
    if bias:
        nn.init.zeros_(linear.bias)
    return sn(linear)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale γ and shift β are looked up per class (γ initialised to 1, β to 0; eps 1e-3 as in the
    TF GAN code). With ``num_classes=None`` it is an ordinary affine BatchNorm and ignores the label."""

    def __init__(self, channels: int, *, num_classes: int | None, eps: float = 1e-3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.norm = nn.BatchNorm2d(channels, eps=eps, affine=num_classes is None)
        if num_classes is not None:
            self.gamma = nn.Embedding(num_classes, channels)
            self.beta = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gamma.weight)
            nn.init.zeros_(self.beta.weight)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = self.norm(x)
        if self.num_classes is None:
            return h
        if y is None:
            raise ValueError("a class-conditional model needs labels y")
        return h * self.gamma(y)[:, :, None, None] + self.beta(y)[:, :, None, None]  # (B, C) -> (B, C, 1, 1)


class GBlock(nn.Module):
    """Generator up-block: cBN -> ReLU -> nearest x2 -> SN conv3x3 -> cBN -> ReLU -> SN conv3x3, plus the shortcut
    nearest x2 -> SN conv1x1."""

    def __init__(self, in_channels: int, out_channels: int, *, num_classes: int | None) -> None:
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(in_channels, num_classes=num_classes)
        self.conv1 = sn_conv(in_channels, out_channels, 3)
        self.bn2 = ConditionalBatchNorm2d(out_channels, num_classes=num_classes)
        self.conv2 = sn_conv(out_channels, out_channels, 3)
        self.shortcut = sn_conv(in_channels, out_channels, 1)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2, mode="nearest")  # (B, C, H, W) -> (.., 2H, 2W)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """Discriminator block: (ReLU) -> SN conv3x3 -> ReLU -> SN conv3x3 -> (avg-pool /2), plus a SN conv1x1 shortcut
    where the width or the size changes. ``first=True`` is the "optimised" input block (no leading ReLU, the
    shortcut pools before its conv)."""

    def __init__(self, in_channels: int, out_channels: int, *, down: bool = True, first: bool = False) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = sn_conv(in_channels, out_channels, 3)
        self.conv2 = sn_conv(out_channels, out_channels, 3)
        self.shortcut = sn_conv(in_channels, out_channels, 1) if (down or in_channels != out_channels) else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        if self.down:
            h = F.avg_pool2d(h, 2)  # (B, C, H, W) -> (B, C, H/2, W/2)
        s = x
        if self.first:
            s = self.shortcut(F.avg_pool2d(s, 2))
        elif self.shortcut is not None:
            s = self.shortcut(s)
            s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


# ----------------------------------------------------------------------------------------------------------------
# context blocks


class _Gated(nn.Module):
    """x + σ·f(x) with the scalar σ initialised to 0."""

    def __init__(self) -> None:
        super().__init__()
        self.sigma = nn.Parameter(torch.zeros(()))


class GANHamburger(_Gated):
    """The HamGAN block: x + σ·norm(W_u · ham(ReLU(W_l x))) with spectrally normalised breads.

    Args:
        channels: C.
        ham: ``"nmf"``, ``"vq"`` or ``"cd"``.
        ham_channels: d, channels inside the block (default C).
        rank: R (default d/8).
        steps: K in training and evaluation (6).
        grad: the gradient through the ham's solve (:mod:`hamburger.functional`; default ``DEFAULT_GRAD``).
        num_classes: classes of the conditional BN after the upper bread (generator); ``None`` with
            ``norm=True`` gives an ordinary BN.
        norm: False (the discriminator) puts no norm after the upper bread.
    """

    def __init__(
        self,
        channels: int,
        *,
        ham: str = "nmf",
        ham_channels: int | None = None,
        rank: int | None = None,
        steps: int = 6,
        grad: str = DEFAULT_GRAD,
        num_classes: int | None = None,
        norm: bool = True,
    ) -> None:
        super().__init__()
        if ham not in HAMS:
            raise ValueError(f"ham must be one of {tuple(HAMS)}, got {ham!r}")
        d = ham_channels or channels
        self.ham_type = ham
        self.lower_bread = sn_conv(channels, d, 1, bias=False)
        extra = {"beta": 0.01} if ham == "cd" else {}  # the TF GAN code's ridge weight
        self.ham = HAMS[ham](d, rank=rank or max(1, d // 8), train_steps=steps, eval_steps=steps, grad=grad, **extra)
        self.ham.check_nonnegative = False  # the ReLU below keeps NMF's input non-negative
        self.upper_bread = sn_conv(d, channels, 1, bias=False)
        self.norm = ConditionalBatchNorm2d(channels, num_classes=num_classes) if norm else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.lower_bread(x)  # (B, d, H, W)
        if self.ham_type == "nmf":
            h = F.relu(h)
        h = self.upper_bread(self.ham(h))  # (B, d, H, W) -> (B, C, H, W)
        if self.norm is not None:
            h = self.norm(h, y)
        return x + self.sigma * h


class SAGANAttention(_Gated):
    """SAGAN self-attention (Zhang et al., 2019): θ, φ at C/8 and g at C/2 (SN 1x1 convs, no bias), φ and g max-pooled
    2x2, y = softmax(θᵀφ) g (unscaled), o = SN 1x1 (C/2 -> C), out = x + σ·o."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 8:
            raise ValueError(f"SAGAN attention needs channels >= 8 (θ, φ have C/8), got {channels}")
        self.theta = sn_conv(channels, channels // 8, 1, bias=False)
        self.phi = sn_conv(channels, channels // 8, 1, bias=False)
        self.g = sn_conv(channels, channels // 2, 1, bias=False)
        self.o = sn_conv(channels // 2, channels, 1, bias=False)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        b, _, h, w = x.shape
        q = self.theta(x).flatten(2).mT.unsqueeze(1)  # (B, C/8, H, W) -> (B, 1, HW, C/8)
        k = F.max_pool2d(self.phi(x), 2).flatten(2).mT.unsqueeze(1)  # (B, 1, HW/4, C/8)
        v = F.max_pool2d(self.g(x), 2).flatten(2).mT.unsqueeze(1)  # (B, 1, HW/4, C/2)
        att = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, 1, HW, C/2)
        att = att.squeeze(1).mT.reshape(b, -1, h, w)  # (B, C/2, H, W)
        return x + self.sigma * self.o(att)


class GatedContext(_Gated):
    """A context-zoo module ``m`` (which returns x + f(x)) as x + σ·(m(x) − x), its convs spectrally normalised and,
    with ``norm_free=True``, its norm layers replaced by the identity (the discriminator)."""

    def __init__(self, module: nn.Module, *, norm_free: bool) -> None:
        super().__init__()
        for child in list(module.modules()):
            for attr, sub in list(child.named_children()):
                if norm_free and isinstance(sub, (nn.modules.batchnorm._NormBase, nn.GroupNorm)):
                    setattr(child, attr, nn.Identity())
                elif isinstance(sub, (nn.Conv1d, nn.Conv2d)):
                    sn(sub)
        self.module = module

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return x + self.sigma * (self.module(x) - x)


def create_gan_context(
    arm: str, channels: int, *, discriminator: bool, num_classes: int | None, steps: int = 6, grad: str = DEFAULT_GRAD
) -> nn.Module | None:
    """The context block ``arm`` (one of :data:`ARMS`) for ``channels`` channels, or None for ``"none"``.

    The Hamburger's d is ``channels`` and R = d/8 (the paper: G d 256 R 32, D d 128 R 16 at ch 64)."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    if arm == "none":
        return None
    if arm.startswith("ham_"):
        return GANHamburger(
            channels, ham=arm[4:], steps=steps, grad=grad, num_classes=num_classes, norm=not discriminator
        )
    if arm == "sagan":
        return SAGANAttention(channels)

    return GatedContext(LinearAttention(channels), norm_free=discriminator)
