"""Segmentation datasets in their real on-disk layouts, and the paper's transforms. Needs Pillow and NumPy."""

from .datasets import DATASETS, SegmentationDataset, build_dataset
from .transforms import IGNORE_INDEX, SegTransform

__all__ = ["DATASETS", "SegmentationDataset", "build_dataset", "SegTransform", "IGNORE_INDEX"]
