"""A segmentation model from built parts: backbone -> head (+ auxiliary head), logits at input size."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SegmentationModel(nn.Module):
    """``SegmentationModel(backbone, head, aux_head)``: returns ``{"out": (B, K, H, W)}``, plus ``"aux"`` (B, K, H, W)
    when there is an auxiliary head (the key is absent otherwise, as in torchvision's segmentation models).

    Args:
        backbone: returns a list of feature maps (a timm ``features_only`` model).
        head: maps that list to logits.
        aux_head: optional, applied to ``features[aux_index]`` in training and evaluation.
        aux_index: which feature map feeds the auxiliary head (-2: stage 3 of a ResNet).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, aux_head: nn.Module | None = None, *, aux_index=-2):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.aux_index = aux_index

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError(f"expected a non-empty batch of images, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected floating-point images (normalised as in training), got {x.dtype}")
        size = x.shape[2:]
        features = self.backbone(x)
        out = F.interpolate(self.head(features), size, mode="bilinear", align_corners=False)
        if self.aux_head is None:
            return {"out": out}
        aux = F.interpolate(self.aux_head(features[self.aux_index]), size, mode="bilinear", align_corners=False)
        return {"out": out, "aux": aux}
