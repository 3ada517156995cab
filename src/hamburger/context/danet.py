"""DANet dual attention: position and channel attention modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import check_input, conv1x1, reduced, tokens


class DualAttention(nn.Module):
    """Position + channel attention (Fu, Liu, Tian, Li, Bao, Fang, Lu, *Dual Attention Network for Scene
    Segmentation*, CVPR 2019).

    Position (PAM): q, k 1x1 convs to C/8, v to C; out = softmax(qᵀk) v over all N positions (computed with
    ``F.scaled_dot_product_attention``, unscaled as in DANet). Channel (CAM): E = XXᵀ (C x C),
    A = softmax(max(E) − E), out = A X. z = x + γ_p·PAM + γ_c·CAM, with γ_p and γ_c learnable and initialised to 0.

    Args:
        channels: C.
        reduction: C / channels of the position query and key (8).
    """

    def __init__(self, channels: int, *, reduction: int = 8) -> None:
        super().__init__()
        inter = reduced(channels, reduction)
        self.channels = channels
        self.query = conv1x1(channels, inter)
        self.key = conv1x1(channels, inter)
        self.value = conv1x1(channels, channels)
        self.gamma_position = nn.Parameter(torch.zeros(1))
        self.gamma_channel = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels, ndim=None)
        z = x.reshape(x.shape[0], x.shape[1], -1)  # (B, C, N)
        q, k, v = (tokens(c, z).unsqueeze(1) for c in (self.query, self.key, self.value))  # (B, 1, N, ·)
        position = F.scaled_dot_product_attention(q, k, v, scale=1.0).squeeze(1).mT  # (B, C, N)
        energy = z @ z.mT  # (B, C, N) @ (B, N, C) -> (B, C, C)
        attn = torch.softmax(energy.amax(dim=-1, keepdim=True) - energy, dim=-1)  # (B, C, C)
        channel = attn @ z  # (B, C, C) @ (B, C, N) -> (B, C, N)
        return (z + self.gamma_position * position + self.gamma_channel * channel).reshape(x.shape)
