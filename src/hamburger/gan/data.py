"""Class-labelled image datasets for the GAN: the embedded silhouettes, scikit-learn digits, an image folder, CIFAR-10.

Each has two splits: ``train`` (what the GAN learns from) and ``reference`` (held out: what its samples are
compared with). Items are ``(image float32 (C, S, S) in [-1, 1], label int64)``. Problems raise ``ValueError``
naming the file and the layout expected.

* ``silhouettes`` (default, embedded): the 10-class animal silhouettes of the PyPI package `animal-shape-mnist`
  (read as in `animal-scenes`, never imported), 28² padded to 32², greyscale. Its zebra class holds photos, so the
  zebras are their thresholded, hole-filled masks. Near-duplicate silhouettes (mask IoU > 0.9, mirrors included)
  are reduced to one representative, so no near duplicate sits on both sides of the split; 25% of each class's
  representatives (seeded) are the reference split.
* ``digits``: scikit-learn's 8x8 digits (1,797 images, 16 grey levels), resized; 25% per class held out.
* ``folder``: ``root/<class>/*.png|jpg|jpeg|bmp|webp``, one sub-folder per class (sorted names are the labels),
  centre-cropped and resized, RGB; 25% of each class's files (seeded) held out.
* ``cifar10``: the python layout ``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` (``root``
  may be that folder itself); train = the five data batches, reference = the test batch.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.images import load_image
from ..data.silhouettes import (
    CLASSES,
    ZEBRA,
    NumpyUnpickler,
    deduplicated_groups,
    fill_holes,
    load_silhouettes,
    numpy_is_2,
    silhouette_masks,
)

SPLITS = ("train", "reference")
REFERENCE_FRACTION = 0.25
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
FOLDER_LAYOUT = "root/<class name>/<image>.png|jpg|jpeg|bmp|webp  (one sub-folder per class)"
CIFAR_LAYOUT = "root/cifar-10-batches-py/{data_batch_1, ..., data_batch_5, test_batch, batches.meta}"


class ImageClassDataset(Dataset):
    """Images (N, S, S, C) uint8 in memory, or file paths read on access, with labels (N,) and class names."""

    def __init__(
        self, images, labels: np.ndarray, classes: tuple[str, ...], *, name: str, size: int, channels: int
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels")
        if len(images) == 0:
            raise ValueError(f"{name}: the split holds no images")
        self.images, self.labels, self.classes = images, np.asarray(labels, dtype=np.int64), classes
        self.name, self.size, self.channels = name, size, channels
        self.num_classes = len(classes)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def reads_files(self) -> bool:
        """Whether images are read from files on access (an image folder) rather than held in memory."""
        return len(self.images) > 0 and isinstance(self.images[0], Path)

    def check_sample(self, index: int) -> str:
        """What is wrong with image ``index`` ("" when nothing is): the data check before training."""
        image = self.image(index)  # an unreadable file: ValueError naming it
        if image.shape != (self.size, self.size, self.channels):
            return f"sample {index} of {self.name}: image of shape {image.shape}, expected {(self.size,) * 2 + (3,)}"
        return ""

    def image(self, index: int) -> np.ndarray:
        """(S, S, C) uint8."""
        item = self.images[index]
        if isinstance(item, Path):
            return _square(_read_rgb(item), self.size)
        return item

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = torch.from_numpy(np.array(self.image(index))).permute(2, 0, 1)  # (S, S, C) -> (C, S, S)
        return img.float() / 127.5 - 1.0, int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images (N, C, S, S) in [-1, 1] and labels (N,): the whole split at once."""
        images = torch.stack([self[i][0] for i in range(len(self))])
        return images, torch.from_numpy(self.labels)


def _held_out(labels: np.ndarray, split: str, seed: int) -> np.ndarray:
    """Indices of ``split``: per class a seeded 25% is the reference split, the rest train."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.Generator(np.random.PCG64(seed))
    chosen = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        order = idx[rng.permutation(len(idx))]
        n_ref = max(1, int(round(len(idx) * REFERENCE_FRACTION))) if len(idx) > 1 else 0
        chosen.append(order[:n_ref] if split == "reference" else order[n_ref:])
    return np.sort(np.concatenate(chosen))


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) uint8 -> (N, size, size) uint8 (bilinear, PIL)."""
    from PIL import Image

    if images.shape[1:] == (size, size):
        return images
    return np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)) for a in images])


def silhouettes(root=None, split: str = "train", *, size: int = 32, seed: int = 0) -> ImageClassDataset:
    images, labels = load_silhouettes()
    keep = deduplicated_groups(silhouette_masks(images, labels), labels)  # [(index, class)], one per group
    index = np.array([i for i, _ in keep])
    picked = index[_held_out(labels[index], split, seed)]
    out = images[picked].copy()  # (n, 28, 28)
    for j, i in enumerate(picked):
        if labels[i] == ZEBRA:  # photos: their silhouette instead
            out[j] = fill_holes(images[i] >= 48).astype(np.uint8) * 255
    out = np.pad(out, ((0, 0), (2, 2), (2, 2)))  # (n, 32, 32)
    return ImageClassDataset(
        _resize(out, size)[..., None], labels[picked], CLASSES[1:], name="silhouettes", size=size, channels=1
    )


def digits(root=None, split: str = "train", *, size: int = 32, seed: int = 0) -> ImageClassDataset:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.rint(data.images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    picked = _held_out(data.target, split, seed)
    return ImageClassDataset(
        _resize(images[picked], size)[..., None],
        data.target[picked],
        tuple(str(d) for d in range(10)),
        name="digits",
        size=size,
        channels=1,
    )


def _read_rgb(path: Path) -> np.ndarray:
    return load_image(path)


def _square(img: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square, resize to (size, size, 3) uint8."""
    from PIL import Image

    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(img[top : top + s, left : left + s])
    return np.asarray(crop.resize((size, size), Image.BICUBIC))


def folder(root, split: str = "train", *, size: int = 32, seed: int = 0) -> ImageClassDataset:
    root = Path(root) if root is not None else None
    if root is None or not root.is_dir():
        raise ValueError(f"image folder {root} not found; expected layout:\n{FOLDER_LAYOUT}")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise ValueError(f"{root} has no class sub-folders; expected layout:\n{FOLDER_LAYOUT}")
    paths, labels = [], []
    for c, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"class folder {root / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        paths += files
        labels += [c] * len(files)
    labels = np.array(labels, dtype=np.int64)
    picked = _held_out(labels, split, seed)
    return ImageClassDataset(
        [paths[i] for i in picked], labels[picked], classes, name=f"folder {root}", size=size, channels=3
    )


class _Primitives(pickle.Unpickler):
    """CIFAR's pickles hold dicts, lists, bytes and NumPy arrays; nothing else is unpickled (``_codecs.encode``
    is how protocol-2 pickles written by Python 3 store bytes)."""

    def find_class(self, module, name):
        if (module, name) not in NumpyUnpickler.ALLOWED | {("_codecs", "encode")}:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module.replace("numpy.core", "numpy._core") if numpy_is_2() else module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise ValueError(f"CIFAR-10 file {path} not found; expected layout:\n{CIFAR_LAYOUT}")
    try:
        batch = _Primitives(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as e:  # a truncated or foreign file: name it
        raise ValueError(f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data) or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"CIFAR-10 batch {path} has data {data.shape} and {len(labels)} labels; expected (n, 3072)")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels  # (n, 3072) -> (n, 32, 32, 3)


def cifar10(root, split: str = "train", *, size: int = 32, seed: int = 0) -> ImageClassDataset:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root) if root is not None else None
    if root is None or not root.is_dir():
        raise ValueError(f"CIFAR-10 folder {root} not found; expected layout:\n{CIFAR_LAYOUT}")
    base = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_cifar_batch(base / n) for n in names]
    images = np.concatenate([p[0] for p in parts])
    if size != 32:
        images = np.stack([_square(a, size) for a in images])
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    return ImageClassDataset(
        images, np.concatenate([p[1] for p in parts]), classes, name="cifar10", size=size, channels=3
    )


GAN_DATASETS = {"silhouettes": silhouettes, "digits": digits, "folder": folder, "cifar10": cifar10}


def build_gan_dataset(name: str, root, split: str, *, size: int = 32, seed: int = 0) -> ImageClassDataset:
    """The ``split`` (``train`` | ``reference``) of dataset ``name`` at ``size``² pixels."""
    if name not in GAN_DATASETS:
        raise ValueError(f"unknown GAN dataset {name!r}; available: {', '.join(GAN_DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    return GAN_DATASETS[name](root, split, size=size, seed=seed)
