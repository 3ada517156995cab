"""Self-attention (non-local, embedded Gaussian) and linear attention blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..burger import make_norm
from .common import check_input, conv1x1, tokens

IMPLS = ("sdpa", "naive")


class _QKVBlock(nn.Module):
    """Shared shell of the attention blocks: q, k, v 1x1 convs to d channels, and z = x + norm(W_z y)."""

    def __init__(self, channels: int, inter: int, norm_layer) -> None:
        super().__init__()
        self.channels = channels
        self.query = conv1x1(channels, inter)
        self.key = conv1x1(channels, inter)
        self.value = conv1x1(channels, inter)
        self.out = conv1x1(inter, channels, bias=False)
        self.norm = make_norm(norm_layer, channels)

    def attend(self, z: Tensor) -> Tensor:  # (B, C, N) -> (B, N, d)
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels, ndim=None)
        z = x.reshape(x.shape[0], x.shape[1], -1)  # (B, C, N)
        y = self.attend(z)  # (B, N, d)
        h = torch.matmul(self.out.weight[..., 0], y.mT)  # (C, d) @ (B, d, N) -> (B, C, N)
        return (z + self.norm(h)).reshape(x.shape)


class NonLocal(_QKVBlock):
    """Non-local block, embedded Gaussian (Wang, Girshick, Gupta, He, *Non-local Neural Networks*, CVPR 2018).

    y = softmax(θ(x)ᵀφ(x) · s) g(x) over all N positions; z = x + BN(W_z y). θ, φ, g are 1x1 convs to C/2
    channels (the non-local convention).

    Args:
        channels: C.
        inter_channels: channels of θ, φ, g (default C/2).
        impl: ``"sdpa"``: ``F.scaled_dot_product_attention`` on contiguous (B, 1, N, C/2) tensors, which takes the
            fused (flash) kernel and never forms the N x N matrix; ``"naive"``: explicit softmax(QKᵀ)V.
        norm_layer: norm after W_z (``"batch"``, ``"group"``, ``"syncbatch"`` or a callable).
        use_scale: s = 1/√(C/2) (mmcv's default, trains more stably); False gives the paper's unscaled softmax.
    """

    def __init__(
        self,
        channels: int,
        *,
        inter_channels: int | None = None,
        impl: str = "sdpa",
        norm_layer="batch",
        use_scale: bool = True,
    ) -> None:
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        inter = inter_channels or max(1, channels // 2)
        super().__init__(channels, inter, norm_layer)
        self.impl = impl
        self.scale = inter**-0.5 if use_scale else 1.0

    def attend(self, z: Tensor) -> Tensor:
        """(B, C, N) -> attention output (B, N, C/2)."""
        q, k, v = (tokens(c, z).unsqueeze(1) for c in (self.query, self.key, self.value))  # (B, 1, N, C/2)
        if self.impl == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, scale=self.scale).squeeze(1)
        attn = torch.softmax((q @ k.mT) * self.scale, dim=-1)  # (B, 1, N, N)
        return (attn @ v).squeeze(1)  # (B, N, C/2)


class LinearAttention(_QKVBlock):
    """Linear (kernelised, softmax-free) attention block (Katharopoulos, Vyas, Pappas, Fleuret, *Transformers are
    RNNs*, ICML 2020): yₙ = φ(qₙ)ᵀ Σₘ φ(kₘ)vₘᵀ / φ(qₙ)ᵀ Σₘ φ(kₘ), φ = elu + 1, in O(N·d²); z = x + BN(W_z y).

    Args:
        channels: C.
        inter_channels: channels of q, k, v (default C/2).
        norm_layer: norm after W_z.
        eps: added to the normaliser.
    """

    def __init__(
        self, channels: int, *, inter_channels: int | None = None, norm_layer="batch", eps: float = 1e-6
    ) -> None:
        super().__init__(channels, inter_channels or max(1, channels // 2), norm_layer)
        self.eps = eps

    def attend(self, z: Tensor) -> Tensor:
        """(B, C, N) -> (B, N, d) in O(N·d²)."""
        q = F.elu(tokens(self.query, z)) + 1  # (B, N, d)
        k = F.elu(tokens(self.key, z)) + 1  # (B, N, d)
        v = tokens(self.value, z)  # (B, N, d)
        kv = k.mT @ v  # (B, d, N) @ (B, N, d) -> (B, d, d)
        norm = q @ k.sum(dim=1, keepdim=True).mT + self.eps  # (B, N, d) @ (B, d, 1) -> (B, N, 1)
        return (q @ kv) / norm  # (B, N, d)
