"""A²-Net double attention block."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .common import check_input, conv1x1, reduced


class DoubleAttention(nn.Module):
    """Double attention block (Chen, Kalantidis, Li, Yan, Feng, *A²-Nets: Double Attention Networks*, NeurIPS 2018).

    Gather: G = A · softmax_N(B)ᵀ, m global descriptors from features A (m channels) pooled by n attention maps B.
    Distribute: each position takes a softmax_n(V)-weighted mix of the descriptors. z = x + W_out(G · softmax(V)).

    Args:
        channels: C.
        reduction: C / m and C / n (4).
    """

    def __init__(self, channels: int, *, reduction: int = 4) -> None:
        super().__init__()
        inter = reduced(channels, reduction)
        self.channels = channels
        self.features = conv1x1(channels, inter)  # A: m channels
        self.gather = conv1x1(channels, inter)  # B: n attention maps
        self.distribute = conv1x1(channels, inter)  # V: n attention vectors
        self.out = conv1x1(inter, channels)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels, ndim=None)
        z = x.reshape(x.shape[0], x.shape[1], -1)  # (B, C, N)
        a = self.features(z)  # (B, m, N)
        b = torch.softmax(self.gather(z), dim=-1)  # (B, n, N): attention over positions
        v = torch.softmax(self.distribute(z), dim=1)  # (B, n, N): attention over descriptors
        g = a @ b.mT  # (B, m, N) @ (B, N, n) -> (B, m, n)
        return (z + self.out(g @ v)).reshape(x.shape)  # (B, m, n) @ (B, n, N) -> (B, m, N)
