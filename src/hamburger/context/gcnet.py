"""GCNet global context block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import check_input, conv1x1, reduced


class GlobalContext(nn.Module):
    """Global context block (Cao, Xu, Lin, Wei, Hu, *GCNet: Non-local Networks Meet Squeeze-Excitation Networks and
    Beyond*, ICCVW 2019).

    Context: c = x · softmax_N(W_k x)ᵀ, one query-independent attention map (C x 1). Transform: 1x1 conv to C/r,
    LayerNorm, ReLU, 1x1 conv back to C (zero-initialised, as the paper). z = x + transform(c), broadcast over N.

    Args:
        channels: C.
        reduction: r (4, the paper's best; 16 is its cheaper setting).
    """

    def __init__(self, channels: int, *, reduction: int = 4) -> None:
        super().__init__()
        inter = reduced(channels, reduction)
        self.channels = channels
        self.mask = conv1x1(channels, 1)
        self.down = conv1x1(channels, inter)
        self.norm = nn.LayerNorm(inter)
        self.up = conv1x1(inter, channels)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels, ndim=None)
        z = x.reshape(x.shape[0], x.shape[1], -1)  # (B, C, N)
        attn = torch.softmax(self.mask(z), dim=-1)  # (B, 1, N)
        context = z @ attn.mT  # (B, C, N) @ (B, N, 1) -> (B, C, 1)
        t = F.relu(self.norm(self.down(context).mT)).mT  # (B, C/r, 1), LayerNorm over channels
        return (z + self.up(t)).reshape(x.shape)
