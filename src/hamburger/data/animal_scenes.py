"""Deprecated alias of :mod:`hamburger.seg.scenes` (the 0.1 layout); removed in 0.3."""

from ..deprecation import alias

alias(__name__, "hamburger.seg.scenes", "hamburger.data.silhouettes", "hamburger.seg.data")
