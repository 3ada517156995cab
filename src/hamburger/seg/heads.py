"""Segmentation heads: the paper's HamNet head (with any context module in place of the Hamburger), the
SegNeXt/mmseg LightHam head, and the FCN auxiliary head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..burger import Hamburger, make_norm
from ..context import create_context


class ConvNormAct(nn.Sequential):
    """k x k conv (no bias) -> norm -> ReLU (mmseg ``ConvModule`` names: ``conv``, ``norm``)."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 1, norm_layer="batch") -> None:
        norm = make_norm(norm_layer, out_channels)
        if isinstance(norm, nn.BatchNorm1d):  # the block-level norms are 1D; heads work on 2D maps
            norm = nn.BatchNorm2d(out_channels)
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = norm
        self.act = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")


class MatchedConv(nn.Module):
    """The no-context baseline: residual 1x1 conv-norm-ReLU layers whose parameter count matches ``target``."""

    def __init__(self, channels: int, *, target_params: int, norm_layer="batch") -> None:
        super().__init__()
        per_layer = channels * channels + 2 * channels
        layers = max(1, round(target_params / per_layer))
        self.layers = nn.Sequential(*(ConvNormAct(channels, channels, norm_layer=norm_layer) for _ in range(layers)))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.layers(x))


class IdentityHam(nn.Module):
    """A ham that returns its input: the Hamburger's breads and norms with no decomposition (the local control)."""

    spatial = False

    def forward(self, x: Tensor) -> Tensor:
        return x


def build_context(name: str, channels: int, *, norm_layer="batch", **kwargs) -> nn.Module:
    """``"hamburger"`` (the paper's head block, v2 NMF by default), ``"local"`` (the same block with the
    decomposition replaced by the identity: same parameters, no global context), ``"none"`` (parameter-matched
    convs) or any name of :func:`hamburger.list_contexts`."""
    if name in ("hamburger", "local"):
        defaults = {"ham": "nmf", "version": "v2", "rank": 64, "train_steps": 6, "eval_steps": 6}
        block = Hamburger(channels, norm_layer=norm_layer, **{**defaults, **kwargs})
        if name == "local":
            block.ham = IdentityHam()
        return block
    if name == "none":
        reference = build_context("hamburger", channels, norm_layer=norm_layer)
        return MatchedConv(
            channels, target_params=sum(p.numel() for p in reference.parameters()), norm_layer=norm_layer
        )
    if name.startswith("ham_"):
        kwargs.setdefault("norm_layer", norm_layer)
    return create_context(name, channels, **kwargs)


class ContextHead(nn.Module):
    """The HamNet VOC head: 3x3 conv-norm-ReLU (in -> 512) -> context -> 3x3 conv-norm-ReLU (512 -> 256)
    -> dropout 0.1 -> 1x1 classifier, on the last feature map.

    Args:
        in_channels: channels of the backbone's last stage.
        num_classes: K.
        context: ``"hamburger"``, ``"none"`` or a zoo name.
        channels: width of the context (512).
        mid_channels: width before the classifier (256).
        dropout: 0.1.
        norm_layer: norm of the head's convs (and of the context where it has one).
        context_norm: the context module's own norm, where it differs from the head's (e.g. ``"group"``: a
            Hamburger whose norms keep no running statistics).
        **context_kwargs: passed to the context module (e.g. ``rank``, ``version``).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        context: str = "hamburger",
        channels: int = 512,
        mid_channels: int = 256,
        dropout: float = 0.1,
        norm_layer="batch",
        context_norm=None,
        **context_kwargs,
    ) -> None:
        super().__init__()
        self.squeeze = ConvNormAct(in_channels, channels, kernel_size=3, norm_layer=norm_layer)
        self.context = build_context(context, channels, norm_layer=context_norm or norm_layer, **context_kwargs)
        self.align = ConvNormAct(channels, mid_channels, kernel_size=3, norm_layer=norm_layer)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = self.squeeze(features[-1])
        x = self.context(x)
        return self.classifier(self.dropout(self.align(x)))


class LightHamHead(nn.Module):
    """SegNeXt's LightHam head (mmseg ``LightHamHead``): stages 2-4 resized to the stage-2 size and concatenated ->
    1x1 squeeze -> Hamburger (v1, GroupNorm) -> 1x1 align -> classifier. Names follow mmseg's, so a checkpoint loads
    through :func:`hamburger.seg.models.convert_lightham_checkpoint`.

    Args:
        in_channels: channels of the three stages used.
        num_classes: K.
        ham_channels: width of the squeeze and the Hamburger (512).
        channels: width of the align conv (512).
        in_index: which of the backbone's feature maps to use (the last three).
        dropout: before the classifier (0.1).
        **ham_kwargs: to the Hamburger (``rank`` 64, ``train_steps`` 6, ``eval_steps`` 7, ...).
    """

    def __init__(
        self,
        in_channels: tuple[int, ...],
        num_classes: int,
        *,
        ham_channels: int = 512,
        channels: int = 512,
        in_index: tuple[int, ...] = (-3, -2, -1),
        dropout: float = 0.1,
        context: str = "hamburger",
        **ham_kwargs,
    ) -> None:
        super().__init__()
        self.in_index = in_index
        self.squeeze = ConvNormAct(sum(in_channels), ham_channels, norm_layer="group")
        if context == "hamburger":
            defaults = {"ham": "nmf", "version": "v1", "rank": 64, "train_steps": 6, "eval_steps": 7}
            self.hamburger = Hamburger(ham_channels, norm_layer="group", **{**defaults, **ham_kwargs})
        else:
            self.hamburger = build_context(context, ham_channels, norm_layer="group", **ham_kwargs)
        self.align = ConvNormAct(ham_channels, channels, norm_layer="group")
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        feats = [features[i] for i in self.in_index]
        size = feats[0].shape[2:]
        feats = [
            f if f.shape[2:] == size else F.interpolate(f, size, mode="bilinear", align_corners=False) for f in feats
        ]
        x = self.squeeze(torch.cat(feats, dim=1))
        x = self.align(self.hamburger(x))
        return self.conv_seg(self.dropout(x))


class AuxHead(nn.Module):
    """FCN auxiliary head (mmseg ``FCNHead``, one conv): 3x3 conv-norm-ReLU (in -> 256) -> dropout -> classifier."""

    def __init__(
        self, in_channels: int, num_classes: int, *, channels: int = 256, dropout: float = 0.1, norm_layer="batch"
    ) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_channels, channels, kernel_size=3, norm_layer=norm_layer)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.conv(x)))
