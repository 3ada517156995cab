"""Models built from blocks: segmentation (backbones via timm, imported lazily; heads; registered variants) and the
HamGAN generator / discriminator pairs (:mod:`hamburger.models.gan`)."""

from .gan import GANPair, create_gan, list_gans
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
    "create_gan",
    "list_gans",
    "GANPair",
]
