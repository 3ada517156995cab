"""CCNet criss-cross attention."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .common import check_input, reduced


class CrissCrossAttention(nn.Module):
    """Recurrent criss-cross attention (Huang, Wang, Huang, Huang, Wei, Liu, *CCNet: Criss-Cross Attention for
    Semantic Segmentation*, ICCV 2019).

    Each pixel attends to the H + W − 1 pixels of its row and column (itself once): q, k 1x1 convs to C/8, v to C,
    one softmax over the row and column energies; z = x + γ·out with γ initialised to 0. Applied ``recurrence``
    times with shared weights (2 in the paper: every pixel then sees every other).

    Args:
        channels: C.
        recurrence: R, number of passes (2).
        reduction: C / query-key channels (8).
    """

    def __init__(self, channels: int, *, recurrence: int = 2, reduction: int = 8) -> None:
        super().__init__()
        if recurrence < 1:
            raise ValueError(f"recurrence must be >= 1, got {recurrence}")
        inter = reduced(channels, reduction)
        self.channels, self.recurrence = channels, recurrence
        self.query = nn.Conv2d(channels, inter, 1)
        self.key = nn.Conv2d(channels, inter, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def criss_cross(self, x: Tensor) -> Tensor:
        """One pass: (B, C, H, W) -> (B, C, H, W)."""
        h = x.shape[2]
        q, k, v = self.query(x), self.key(x), self.value(x)
        energy_col = torch.einsum("bcij,bchj->bijh", q, k)  # (B, H, W, H): pixel (i, j) against its column
        self_mask = torch.eye(h, dtype=torch.bool, device=x.device)[:, None, :]  # (H, 1, H): (i, ·, h == i)
        energy_col = energy_col.masked_fill(self_mask, float("-inf"))  # count the pixel itself once (in its row)
        energy_row = torch.einsum("bcij,bciw->bijw", q, k)  # (B, H, W, W): against its row
        attn = torch.softmax(torch.cat([energy_col, energy_row], dim=-1), dim=-1)  # (B, H, W, H + W)
        attn_col, attn_row = attn[..., :h], attn[..., h:]
        out = torch.einsum("bijh,bchj->bcij", attn_col, v) + torch.einsum("bijw,bciw->bcij", attn_row, v)
        return x + self.gamma * out

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        for _ in range(self.recurrence):
            x = self.criss_cross(x)
        return x
