"""EMANet expectation-maximisation attention unit."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..burger import make_norm
from .common import check_input, conv1x1


class EMAUnit(nn.Module):
    """Expectation-maximisation attention unit (Li, Zhong, Wu, Yang, Lin, Liu, *Expectation-Maximization Attention
    Networks for Semantic Segmentation*, ICCV 2019): the paper's closest relative of the Hamburger.

    x = conv(z); starting from the moving-average bases μ (C x k), T EM iterations: responsibilities
    Z = softmax(xᵀμ) over k (E step), μ = x Z / Σₙ Z then L2-normalised columns (M step); x̃ = μ Zᵀ;
    out = ReLU(z + BN(conv(ReLU(x̃)))). In training μ ← m·μ + (1 − m)·batch-mean(μ_T), all-reduced across
    processes. The iterations run without autograd and the last responsibilities are recomputed with it (as the
    Hamburger's one-step gradient); the released EMANet code detaches them too, which leaves its first conv with no
    gradient at all.

    Args:
        channels: C.
        bases: k (64).
        steps: T, EM iterations (3).
        momentum: m of the moving average (0.9).
        norm_layer: norm after the output conv.
        seed: seed of μ's initial draw.
    """

    mu: Tensor  # the running bases (a buffer), (1, C, k)

    def __init__(
        self, channels: int, *, bases: int = 64, steps: int = 3, momentum: float = 0.9, norm_layer="batch", seed=0
    ) -> None:
        super().__init__()
        if bases < 1 or steps < 1:
            raise ValueError(f"bases and steps must be >= 1, got {bases} and {steps}")
        self.channels, self.steps, self.momentum = channels, steps, momentum
        gen = torch.Generator().manual_seed(seed)
        mu = torch.randn(1, channels, bases, generator=gen) * (2.0 / bases) ** 0.5
        self.register_buffer("mu", F.normalize(mu, dim=1))  # (1, C, k)
        self.conv_in = conv1x1(channels, channels)
        self.conv_out = conv1x1(channels, channels, bias=False)
        self.norm = make_norm(norm_layer, channels)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels, ndim=None)
        z = x.reshape(x.shape[0], x.shape[1], -1)  # (B, C, N)
        h = self.conv_in(z)  # (B, C, N)
        mu = self.mu.expand(h.shape[0], -1, -1)  # (B, C, k)
        with torch.no_grad():
            hd = h.detach()
            for _ in range(self.steps):
                resp = torch.softmax(hd.mT @ mu, dim=-1)  # E step: (B, N, C) @ (B, C, k) -> (B, N, k)
                mu = F.normalize(hd @ (resp / (1e-6 + resp.sum(dim=1, keepdim=True))), dim=1)  # M step: (B, C, k)
        resp = torch.softmax(h.mT @ mu, dim=-1)  # (B, N, k), with gradient to h
        rec = F.relu(mu @ resp.mT)  # (B, C, k) @ (B, k, N) -> (B, C, N)
        if self.training:
            self._update(mu)
        return F.relu(z + self.norm(self.conv_out(rec))).reshape(x.shape)

    @torch.no_grad()
    def _update(self, mu: Tensor) -> None:
        mean = mu.mean(dim=0, keepdim=True)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        self.mu.mul_(self.momentum).add_(mean, alpha=1 - self.momentum)
        self.mu.copy_(F.normalize(self.mu, dim=1))
