"""Data sources that several tasks share: the animal silhouettes of `animal-shape-mnist` (:mod:`.silhouettes`) and
image files (:mod:`.images`). A task's datasets live with the task: :mod:`hamburger.seg.data` (segmentation layouts and
the animal-scenes benchmark), :mod:`hamburger.gan.data`, :mod:`hamburger.seq.data`.

The segmentation names this package exported in 0.1 (``build_dataset``, ``SegTransform``, ...) still resolve, with a
:class:`DeprecationWarning`, until 0.3.
"""

import importlib
import warnings

_MOVED = {  # name -> its module since 0.2
    "DATASETS": "hamburger.seg.data",
    "SegmentationDataset": "hamburger.seg.data",
    "build_dataset": "hamburger.seg.data",
    "SegTransform": "hamburger.seg.transforms",
    "IGNORE_INDEX": "hamburger.seg.transforms",
}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"hamburger.data.{name} moved to {_MOVED[name]}; the old path is removed in hamburger 0.3",
                  DeprecationWarning, stacklevel=2)  # fmt: skip
    return getattr(importlib.import_module(_MOVED[name]), name)
