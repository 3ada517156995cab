"""Deprecated alias (the 0.1 layout): segmentation models are in :mod:`hamburger.seg` (``models``, ``heads``,
``segmentation``), the HamGAN pairs in :mod:`hamburger.gan.models`; removed in 0.3."""

from ..deprecation import alias

alias(__name__, "hamburger.seg.models", "hamburger.seg.heads", "hamburger.seg.segmentation", "hamburger.gan.models")
