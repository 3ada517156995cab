"""Segmentation models built from blocks: backbones (timm, imported lazily), heads, registered variants."""

from .heads import AuxHead, ContextHead, LightHamHead, MatchedConv
from .registry import create_model, list_models
from .segmentation import SegmentationModel

__all__ = [
    "create_model",
    "list_models",
    "SegmentationModel",
    "ContextHead",
    "LightHamHead",
    "AuxHead",
    "MatchedConv",
]
