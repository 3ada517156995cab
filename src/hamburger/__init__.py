"""hamburger: matrix decomposition as a first-class alternative to attention (Geng et al., ICLR 2021)."""

from . import functional
from .burger import Hamburger, convert_2d_checkpoint
from .context import create_context, list_contexts
from .functional import Decomposition
from .gan.models import create_gan, list_gans
from .ham import CD, NMF, VQ
from .mixer import HamMixer
from .optimize import optimize
from .seg.models import create_model, list_models
from .sequence import HamDecoder, HamEncoder, HamTransformerBlock, create_mixer

__version__ = "0.1.0"

__all__ = [
    "functional",
    "Decomposition",
    "NMF",
    "VQ",
    "CD",
    "Hamburger",
    "convert_2d_checkpoint",
    "create_context",
    "list_contexts",
    "create_model",
    "list_models",
    "create_gan",
    "list_gans",
    "optimize",
    "HamMixer",
    "HamTransformerBlock",
    "HamEncoder",
    "HamDecoder",
    "create_mixer",
    "__version__",
]
