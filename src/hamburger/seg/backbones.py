"""timm feature backbones (``features_only``), with pretrained weights from timm's hub, a local file or a package."""

from __future__ import annotations

import math
import os
from pathlib import Path

from torch import nn

from .pretrained import PACKAGE_PREFIX, load_pretrained, package_entry, package_file


def group_norm(num_channels: int, **kwargs) -> nn.GroupNorm:
    """GroupNorm with 32 groups (or the largest divisor of the channels below it): a batch-independent norm_layer."""
    return nn.GroupNorm(math.gcd(32, num_channels), num_channels, **kwargs)


def create_backbone(
    name: str,
    *,
    pretrained: bool | str = False,
    pretrained_keys: str | dict = "names",
    output_stride: int | None = 8,
    out_indices=(1, 2, 3, 4),
    **timm_kwargs,
) -> nn.Module:
    """A timm ``features_only`` model returning a list of feature maps.

    Args:
        name: any timm model name with features support (``resnet101d``, ``convnext_tiny``, ...).
        pretrained: False; True for timm's hub weights (needs internet or the hub cache); a path to a local weights
            file (``.safetensors``, ``.pth``) of the full timm model; or ``"package:<name>"``, the weights an installed
            package ships (:data:`hamburger.seg.pretrained.PACKAGES`, for the architecture of its entry).
        pretrained_keys: how a local file's keys map onto the model's: ``"names"`` (timm's own), ``"order"`` or a
            ``{file key: model key}`` dict (:func:`hamburger.seg.pretrained.map_keys`).
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
    if isinstance(pretrained, str) and pretrained.startswith(PACKAGE_PREFIX):
        entry = package_entry(pretrained)
        if name != entry.arch:
            raise ValueError(f"the weights of {pretrained} are for the backbone {entry.arch!r}, not {name!r}")
        path, pretrained_keys, pretrained = package_file(entry), entry.keys, False
    elif isinstance(pretrained, (str, os.PathLike)) and not isinstance(pretrained, bool):
        path = Path(pretrained)
        if not path.is_file():
            raise ValueError(f"pretrained weights file {path} not found")
        if pretrained_keys == "names":  # timm's names: timm's own loader (it adapts a classifier, a stem, ...)
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
            path, pretrained = None, True
        else:
            pretrained = False
    else:
        path = None
    if path is not None:  # a local file or a package's: mapped by pretrained_keys, its fit checked
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_pretrained(model, name, path, pretrained_keys)
        return model
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


class _FeatureInfo:
    def __init__(self, channels: list[int], reductions: list[int]) -> None:
        self._channels, self._reductions = channels, reductions

    def channels(self) -> list[int]:
        return list(self._channels)

    def reduction(self) -> list[int]:
        return list(self._reductions)


class _Residual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, pad, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, pad, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.skip = None
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        y = nn.functional.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nn.functional.relu(y + (x if self.skip is None else self.skip(x)))


class TinyResNet(nn.Module):
    """A small stride-8 residual backbone for CPU work (~0.7M parameters): 4 feature maps at strides 2, 4, 8, 8
    (the last dilated), with 32, 64, 128, 128 channels; the interface of a timm ``features_only`` model."""

    def __init__(self, widths=(32, 64, 128, 128)) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w1, 3, 2, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True))
        self.stage1 = _Residual(w1, w1)
        self.stage2 = _Residual(w1, w2, stride=2)
        self.stage3 = _Residual(w2, w3, stride=2)
        self.stage4 = _Residual(w3, w4, dilation=2)
        self.feature_info = _FeatureInfo(list(widths), [2, 4, 8, 8])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.stage1(self.stem(x))
        f2 = self.stage2(x)
        f3 = self.stage3(f2)
        return [x, f2, f3, self.stage4(f3)]
