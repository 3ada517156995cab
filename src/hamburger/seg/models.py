"""Named segmentation variants: one builder per head family, a table of configurations, ``create_model``."""

from __future__ import annotations

from torch import nn

from ..burger import convert_2d_checkpoint
from ..context import list_contexts
from .backbones import TinyResNet, create_backbone
from .heads import AuxHead, ContextHead, LightHamHead
from .segmentation import SegmentationModel

# short backbone names -> timm names (deep-stem ResNets, as the paper's and mmseg's v1c)
BACKBONES = {"r18": "resnet18d", "r50": "resnet50c", "r101": "resnet101c", "efflite0": "tf_efficientnet_lite0"}


def _context_model(
    *,
    backbone: str,
    context: str,
    num_classes: int,
    pretrained=False,
    pretrained_keys="names",
    aux: bool = True,
    norm_layer="batch",
    output_stride: int = 8,
    backbone_norm=None,
    **head_kwargs,
) -> SegmentationModel:
    if backbone == "tiny":
        if pretrained:
            raise ValueError("the tiny backbone has no pretrained weights")
        body = TinyResNet()
    else:
        body = create_backbone(
            backbone,
            pretrained=pretrained,
            pretrained_keys=pretrained_keys,
            output_stride=output_stride,
            norm_layer=backbone_norm,
        )
    channels = body.feature_info.channels()
    head = ContextHead(channels[-1], num_classes, context=context, norm_layer=norm_layer, **head_kwargs)
    aux_head = AuxHead(channels[-2], num_classes, norm_layer=norm_layer) if aux else None
    return SegmentationModel(body, head, aux_head)


def _lightham_model(
    *,
    backbone: str,
    num_classes: int,
    pretrained=False,
    pretrained_keys="names",
    backbone_norm=None,
    norm_layer="group",
    **head_kwargs,
) -> SegmentationModel:
    if norm_layer != "group":
        raise ValueError(f"the LightHam head uses GroupNorm (as SegNeXt); got norm_layer={norm_layer!r}")
    body = create_backbone(
        backbone, pretrained=pretrained, pretrained_keys=pretrained_keys, output_stride=None, norm_layer=backbone_norm
    )
    channels = body.feature_info.channels()
    return SegmentationModel(body, LightHamHead(tuple(channels[-3:]), num_classes, **head_kwargs))


_VARIANTS: dict[str, tuple] = {}
for _short, _timm in BACKBONES.items():
    _VARIANTS[f"hamnet_{_short}_d8"] = (_context_model, {"backbone": _timm, "context": "hamburger"})
    _VARIANTS[f"fcn_{_short}_d8"] = (_context_model, {"backbone": _timm, "context": "none"})
    _VARIANTS[f"lightham_{_short}"] = (_lightham_model, {"backbone": _timm})
    if _short != "r101":
        for _ctx in list_contexts():
            _VARIANTS[f"{_ctx}_{_short}_d8"] = (_context_model, {"backbone": _timm, "context": _ctx})


# the small families for CPU work and the embedded benchmark: a 128-wide head with R = 16 on the tiny backbone
# (`<head>_tiny`, trained from scratch) or on EfficientNet-Lite0 at output stride 8 (`<head>_efflite0`, whose ImageNet
# weights ship in a package: --pretrained package:efficientnet-lite0)
FAMILIES = {"tiny": "tiny", "efflite0": "tf_efficientnet_lite0"}
for _family, _backbone in FAMILIES.items():
    for _ctx in ("hamburger", "none", "local", *list_contexts()):
        _name = {"hamburger": "hamnet", "none": "fcn"}.get(_ctx, _ctx)
        _extra = {"rank": 16} if _ctx in ("hamburger", "local") or _ctx.startswith("ham_") else {}
        if _ctx == "ema":
            _extra = {"bases": 16}
        _head = {"backbone": _backbone, "channels": 128, "mid_channels": 64, "aux": False}
        _VARIANTS[f"{_name}_{_family}"] = (_context_model, {**_head, "context": _ctx, **_extra})


def holds_ham(name: str) -> bool:
    """Whether the variant ``name`` holds a Hamburger (``hamnet_*``, ``ham_nmf/vq/cd_*``, ``lightham_*``): the models
    whose ``grad`` (``--ham-grad``) means something."""
    if name.startswith("lightham_"):
        return True
    if name not in _VARIANTS:
        return False
    context = _VARIANTS[name][1].get("context")
    return context == "hamburger" or str(context).startswith("ham_")


def list_models() -> list[str]:
    """Registered variant names (``lightham_<any timm backbone>`` is accepted too)."""
    return sorted(_VARIANTS)


def create_model(name: str, *, num_classes: int = 21, **overrides) -> nn.Module:
    """Build a variant; ``overrides`` replace its configuration (``backbone``, ``pretrained``, ``aux``, ``rank``...).

    ``lightham_<timm name>`` builds the LightHam head on any timm features backbone.
    """
    if name in _VARIANTS:
        builder, config = _VARIANTS[name]
    elif name.startswith("lightham_"):
        builder, config = _lightham_model, {"backbone": name[len("lightham_") :]}
    else:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return builder(num_classes=num_classes, **{**config, **overrides})


_LIGHTHAM_RENAMES = (("squeeze.gn.", "squeeze.norm."), ("align.gn.", "align.norm."))


def convert_lightham_checkpoint(state_dict: dict, *, prefix: str = "decode_head.") -> dict:
    """Head weights of a SegNeXt / mmseg ``LightHamHead`` checkpoint, renamed for :class:`LightHamHead`.

    mmseg keys under ``prefix``: ``squeeze.conv/gn``, ``hamburger.ham_in.conv``, ``hamburger.ham_out.conv/gn``,
    ``align.conv/gn``, ``conv_seg``. Load the result with ``model.head.load_state_dict(...)``. Keys of other parts
    (the backbone, an auxiliary head) are left out.
    """
    sd = state_dict.get("state_dict", state_dict)
    out = {}
    for key, value in sd.items():
        if not key.startswith(prefix) or key.startswith(prefix + "hamburger."):
            continue
        key = key[len(prefix) :]
        for old, new in _LIGHTHAM_RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = value
    ham = convert_2d_checkpoint(sd, prefix=prefix + "hamburger.")
    out.update({f"hamburger.{k}": v for k, v in ham.items()})
    return out
