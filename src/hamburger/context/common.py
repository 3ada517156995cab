"""Small pieces shared by the context modules."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv1x1(in_channels: int, out_channels: int, *, bias: bool = True) -> nn.Conv1d:
    """A 1x1 convolution on flattened (B, C, N) maps, He-normal (fan-out) initialised."""
    conv = nn.Conv1d(in_channels, out_channels, 1, bias=bias)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def tokens(conv: nn.Conv1d, z: Tensor) -> Tensor:
    """Apply a 1x1 conv to (B, C, N) and return (B, N, C_out) contiguous, the layout attention kernels want."""
    return nn.functional.linear(z.mT, conv.weight[..., 0], conv.bias)  # (B, N, C) @ (C, C_out) -> (B, N, C_out)


def check_input(module: nn.Module, x: Tensor, channels: int, *, ndim: int | None = 4) -> None:
    name = type(module).__name__
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} expects (B, C, H, W) input, got shape {tuple(x.shape)}")
    if ndim is None and x.ndim < 3:
        raise ValueError(f"{name} expects (B, C, *spatial) input, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name} was built for {channels} channels, input has {x.shape[1]}")


def reduced(channels: int, ratio: int, name: str = "channels") -> int:
    if channels < ratio or channels % ratio:
        raise ValueError(f"{name} ({channels}) must be a positive multiple of the reduction ratio {ratio}")
    return channels // ratio


__all__ = ["conv1x1", "tokens", "check_input", "reduced", "torch"]
