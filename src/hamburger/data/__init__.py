"""Data sources that several tasks share: the animal silhouettes (:mod:`.silhouettes`) and image files
(:mod:`.images`). The segmentation names of the 0.1 layout resolve lazily from :mod:`hamburger.seg`."""

import importlib

_MOVED = {
    "DATASETS": "hamburger.seg.data",
    "SegmentationDataset": "hamburger.seg.data",
    "build_dataset": "hamburger.seg.data",
    "SegTransform": "hamburger.seg.transforms",
    "IGNORE_INDEX": "hamburger.seg.transforms",
}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MOVED[name]), name)
