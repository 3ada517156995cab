"""timm feature backbones (``features_only``), with pretrained weights from timm's hub or a local file."""

from __future__ import annotations

import math
import os
from pathlib import Path

from torch import nn


def group_norm(num_channels: int, **kwargs) -> nn.GroupNorm:
    """GroupNorm with 32 groups (or the largest divisor of the channels below it): a batch-independent norm_layer."""
    return nn.GroupNorm(math.gcd(32, num_channels), num_channels, **kwargs)


def create_backbone(
    name: str, *, pretrained: bool | str = False, output_stride: int | None = 8, out_indices=(1, 2, 3, 4), **timm_kwargs
) -> nn.Module:
    """A timm ``features_only`` model returning a list of feature maps.

    Args:
        name: any timm model name with features support (``resnet101d``, ``convnext_tiny``, ...).
        pretrained: False; True for timm's hub weights (needs internet or the hub cache); or a path to a local
            weights file (``.safetensors``, ``.pth``) for the full timm model.
        output_stride: 8 dilates the last two stages (the paper's dilated ResNets); None keeps the model's own.
        out_indices: which feature levels to return.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``norm_layer``); None values are dropped.
    """
    try:
        import timm
    except ImportError as e:  # pragma: no cover - the seg extra installs it
        raise ImportError("segmentation backbones need timm: pip install 'hamburger[seg]'") from e
    kwargs = {"features_only": True, "out_indices": tuple(out_indices)}
    kwargs.update({k: v for k, v in timm_kwargs.items() if v is not None})
    if output_stride is not None:
        kwargs["output_stride"] = output_stride
    if isinstance(pretrained, (str, os.PathLike)) and not isinstance(pretrained, bool):
        path = Path(pretrained)
        if not path.is_file():
            raise ValueError(f"pretrained weights file {path} not found")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        pretrained = True
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as e:  # offline hub, missing cache, bad file: say how to supply the weights
        raise RuntimeError(
            f"could not load pretrained weights for backbone {name!r} ({type(e).__name__}: {str(e)[:200]}). "
            "Without internet access, download them where you have it (timm.create_model(name, pretrained=True) "
            "fills the Hugging Face cache, which you can copy), or pass a local file: pretrained='/path/to/"
            f"{name}.safetensors' (CLI: --pretrained PATH), or train from scratch with pretrained=False."
        ) from None
