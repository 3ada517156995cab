"""Models built from blocks: segmentation (backbones via timm, imported lazily; heads; registered variants) and the
HamGAN generator / discriminator pairs (:mod:`hamburger.models.gan`)."""

from ..gan.models import GANPair, create_gan, list_gans
from ..seg.heads import AuxHead, ContextHead, LightHamHead, MatchedConv
from ..seg.models import create_model, list_models
from ..seg.segmentation import SegmentationModel

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
