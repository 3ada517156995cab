"""Global-context modules with one interface: ``module(channels, **kw)`` maps (B, C, H, W) -> (B, C, H, W) with a
residual, so any of them drops into the same place in a network.

    create_context("nonlocal", 512)   list_contexts()
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..burger import Hamburger
from .a2net import DoubleAttention
from .attention import LinearAttention, NonLocal
from .ccnet import CrissCrossAttention
from .danet import DualAttention
from .ema import EMAUnit
from .gcnet import GlobalContext

__all__ = [
    "create_context",
    "list_contexts",
    "register_context",
    "NonLocal",
    "LinearAttention",
    "DualAttention",
    "CrissCrossAttention",
    "EMAUnit",
    "DoubleAttention",
    "GlobalContext",
]

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict]] = {}


def register_context(name: str, builder: Callable[..., nn.Module], **defaults) -> None:
    """Register ``builder(channels, **kw)`` under ``name`` with default keyword arguments."""
    if name in _REGISTRY:
        raise ValueError(f"context {name!r} is already registered")
    _REGISTRY[name] = (builder, defaults)


def list_contexts() -> list[str]:
    """Names accepted by :func:`create_context`, sorted."""
    return sorted(_REGISTRY)


def create_context(name: str, channels: int, **overrides) -> nn.Module:
    """Build the context module ``name`` for ``channels`` channels; ``overrides`` replace its defaults."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown context {name!r}; available: {', '.join(list_contexts())}")
    builder, defaults = _REGISTRY[name]
    return builder(channels, **{**defaults, **overrides})


register_context("nonlocal", NonLocal, impl="sdpa")
register_context("nonlocal_naive", NonLocal, impl="naive")
register_context("linear", LinearAttention)
register_context("danet", DualAttention)
register_context("ccnet", CrissCrossAttention, recurrence=2)
register_context("ema", EMAUnit)
register_context("a2net", DoubleAttention)
register_context("gcnet", GlobalContext)
for _ham in ("nmf", "vq", "cd"):
    register_context(f"ham_{_ham}", Hamburger, ham=_ham, version="v1")
