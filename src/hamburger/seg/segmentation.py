"""A segmentation model from built parts: backbone -> head (+ auxiliary head), logits at input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the input statistics the data pipeline normalises with (seg.transforms), and timm's ResNets were trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationModel(nn.Module):
    """``SegmentationModel(backbone, head, aux_head)``: returns ``{"out": (B, K, H, W)}``, plus ``"aux"`` (B, K, H, W)
    when there is an auxiliary head (the key is absent otherwise, as in torchvision's segmentation models).

    Args:
        backbone: returns a list of feature maps (a timm ``features_only`` model).
        head: maps that list to logits.
        aux_head: optional, applied to ``features[aux_index]`` in training and evaluation.
        aux_index: which feature map feeds the auxiliary head (-2: stage 3 of a ResNet).

    Inputs are normalised with ImageNet's statistics (:mod:`hamburger.seg.transforms`); a backbone whose
    ``pretrained_cfg`` names other ones (TensorFlow ports: mean = std = 0.5) gets its inputs re-normalised by a fixed
    per-channel affine map, x·σ_in/σ + (μ_in − μ)/σ, so it sees the statistics its weights were trained with.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, aux_head: nn.Module | None = None, *, aux_index=-2):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.aux_index = aux_index
        cfg = getattr(backbone, "pretrained_cfg", None) or {}
        mean, std = tuple(cfg.get("mean") or IMAGENET_MEAN), tuple(cfg.get("std") or IMAGENET_STD)
        scale = shift = None
        if (mean, std) != (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)) and len(mean) == len(std) == 3:
            m_in, s_in, m, s = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD, mean, std))
            scale, shift = s_in / s, (m_in - m) / s
        self.register_buffer("input_scale", scale, persistent=False)  # (1, 3, 1, 1) or None
        self.register_buffer("input_shift", shift, persistent=False)
        self.freeze_backbone_bn = False  # True: the backbone's BatchNorm layers use (and keep) their statistics

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        if mode and self.freeze_backbone_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError(f"expected a non-empty batch of images, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected floating-point images (normalised as in training), got {x.dtype}")
        size = x.shape[2:]
        if self.input_scale is not None:
            x = x * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)  # the backbone's own statistics
        features = self.backbone(x)
        out = F.interpolate(self.head(features), size, mode="bilinear", align_corners=False)
        if self.aux_head is None:
            return {"out": out}
        aux = F.interpolate(self.aux_head(features[self.aux_index]), size, mode="bilinear", align_corners=False)
        return {"out": out, "aux": aux}
