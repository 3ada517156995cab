"""Deprecated alias of :mod:`hamburger.engine.datacheck` (the 0.1 layout); removed in 0.3."""

from ..deprecation import alias

alias(__name__, "hamburger.engine.datacheck")
