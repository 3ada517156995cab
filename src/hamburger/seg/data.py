"""Readers for PASCAL VOC 2012 (+ SBD trainaug), PASCAL Context (59), ADE20K, Cityscapes and a generic folder.

Every reader lists (image path, mask path) pairs for a split and returns ``(image uint8 (H, W, 3), mask int64
(H, W))`` with classes 0..K-1 and 255 = ignore. Problems raise ``ValueError`` naming the file and the layout expected.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.images import load_image
from ..data.silhouettes import CLASSES
from . import scenes
from .transforms import IGNORE_INDEX

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def _read_lines(path: Path, layout: str) -> list[str]:
    if not path.is_file():
        raise ValueError(f"split list {path} not found; expected layout:\n{layout}")
    names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"split list {path} is empty")
    return names


def _require_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise ValueError(f"dataset folder {path} not found; expected layout:\n{layout}")
    return path


def load_mask(path: Path) -> np.ndarray:
    """Label indices (H, W) as stored: palette PNGs give their indices, greyscale PNGs their values."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L", "I", "I;16"):
                raise ValueError(f"expected a palette or greyscale label PNG, got mode {img.mode}")
            return np.asarray(img).astype(np.int64)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read mask {path}: {e}") from None


class SegmentationDataset(Dataset):
    """(image, mask) pairs from a list of files, with label mapping, validation and an optional transform.

    The transform is called as ``transform(image, mask, index, epoch)``; see :class:`~hamburger.data.SegTransform`.
    A key may be an index or an ``(index, epoch)`` pair (what the training sampler yields).
    """

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        *,
        num_classes: int,
        reduce_zero_label: bool = False,
        transform: Callable | None = None,
        class_names: tuple[str, ...] | None = None,
        name: str = "dataset",
    ) -> None:
        if not pairs:
            raise ValueError(f"{name}: no samples found")
        self.pairs = pairs
        self.num_classes = num_classes
        self.reduce_zero_label = reduce_zero_label
        self.transform = transform
        self.class_names = class_names or tuple(str(i) for i in range(num_classes))
        self.name = name

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        image, mask = load_image(image_path), load_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} is "
                f"{mask.shape[1]}x{mask.shape[0]}"
            )
        if self.reduce_zero_label:  # 0 ("other") is ignored, classes shift down by one
            mask = np.where(mask == 0, IGNORE_INDEX, mask - 1)
            mask[mask == IGNORE_INDEX - 1] = IGNORE_INDEX
        bad = np.setdiff1d(np.unique(mask), np.append(np.arange(self.num_classes), IGNORE_INDEX))
        if bad.size:
            raise ValueError(
                f"mask {mask_path} has label values {bad[:10].tolist()} outside 0..{self.num_classes - 1} and the "
                f"ignore index {IGNORE_INDEX}"
            )
        return image, mask

    def check_sample(self, index: int) -> str:
        """What is wrong with sample ``index`` ("" when nothing is): the data check before training."""
        image, _ = self.read(index)  # a missing or unreadable file, sizes, labels: ValueError naming the file
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            return f"sample {index} of {self.name}: image of shape {image.shape}, expected (H, W, 3)"
        return ""

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        image, mask = self.read(index)
        if self.transform is None:
            return torch.from_numpy(image.copy()).permute(2, 0, 1), torch.from_numpy(mask)
        return self.transform(image, mask, index, epoch)


# ----------------------------------------------------------------------------------------------------------------
# layouts

VOC_LAYOUT = """  <root>/JPEGImages/<id>.jpg
  <root>/SegmentationClass/<id>.png          (palette PNG, 255 = border)
  <root>/SegmentationClassAug/<id>.png       (SBD, greyscale; for split trainaug)
  <root>/ImageSets/Segmentation/<split>.txt  (train, val, trainval, trainaug / train_aug)
  where <root> is VOCdevkit/VOC2012 (or its parent)"""


def _voc_root(root: Path, year: str) -> Path:
    for candidate in (root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return root


def voc(root, split: str = "train", **kw) -> SegmentationDataset:
    """PASCAL VOC 2012, 21 classes; ``split="trainaug"`` reads SBD masks from SegmentationClassAug."""
    root = _require_dir(_voc_root(Path(root), "2012"), VOC_LAYOUT)
    sets = root / "ImageSets" / "Segmentation"
    if split == "trainaug":
        names = next((f for f in ("trainaug.txt", "train_aug.txt") if (sets / f).is_file()), "trainaug.txt")
        ids = _read_lines(sets / names, VOC_LAYOUT)
        aug = _require_dir(root / "SegmentationClassAug", VOC_LAYOUT)
        pairs = [(root / "JPEGImages" / f"{i}.jpg", aug / f"{i}.png") for i in ids]
    else:
        ids = _read_lines(sets / f"{split}.txt", VOC_LAYOUT)
        pairs = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids]
    return SegmentationDataset(pairs, num_classes=21, class_names=VOC_CLASSES, name=f"voc/{split}", **kw)


CONTEXT_LAYOUT = """  <root>/JPEGImages/<id>.jpg
  <root>/SegmentationClassContext/<id>.png           (0 = background/other, 1..59 the classes; mmseg converter)
  <root>/ImageSets/SegmentationContext/<split>.txt   (train, val)
  where <root> is VOCdevkit/VOC2010 (or its parent)"""


def pascal_context(root, split: str = "train", **kw) -> SegmentationDataset:
    """PASCAL Context, 59 classes (mmseg layout, zero label reduced)."""
    root = _require_dir(_voc_root(Path(root), "2010"), CONTEXT_LAYOUT)
    ids = _read_lines(root / "ImageSets" / "SegmentationContext" / f"{split}.txt", CONTEXT_LAYOUT)
    ann = root / "SegmentationClassContext"
    pairs = [(root / "JPEGImages" / f"{i}.jpg", ann / f"{i}.png") for i in ids]
    return SegmentationDataset(pairs, num_classes=59, reduce_zero_label=True, name=f"pascal_context/{split}", **kw)


ADE_LAYOUT = """  <root>/images/{training,validation}/ADE_*.jpg
  <root>/annotations/{training,validation}/ADE_*.png   (0 = other, 1..150 the classes)
  where <root> is ADEChallengeData2016 (or its parent); split train|val"""


def ade20k(root, split: str = "train", **kw) -> SegmentationDataset:
    """ADE20K (ADEChallengeData2016), 150 classes, zero label reduced."""
    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    folder = {"train": "training", "val": "validation"}.get(split)
    if folder is None:
        raise ValueError(f"ade20k split must be 'train' or 'val', got {split!r}")
    images = _require_dir(root / "images" / folder, ADE_LAYOUT)
    ann = _require_dir(root / "annotations" / folder, ADE_LAYOUT)
    pairs = [(p, ann / f"{p.stem}.png") for p in sorted(images.glob("*.jpg"))]
    return SegmentationDataset(pairs, num_classes=150, reduce_zero_label=True, name=f"ade20k/{split}", **kw)


CITYSCAPES_LAYOUT = """  <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (19 classes, 255 = ignore;
      made by cityscapesscripts' createTrainIdLabelImgs)"""


def cityscapes(root, split: str = "train", **kw) -> SegmentationDataset:
    """Cityscapes fine annotations, 19 train ids."""
    root = Path(root)
    images = _require_dir(root / "leftImg8bit" / split, CITYSCAPES_LAYOUT)
    gt = _require_dir(root / "gtFine" / split, CITYSCAPES_LAYOUT)
    pairs = []
    for p in sorted(images.glob("*/*_leftImg8bit.png")):
        stem = p.name[: -len("_leftImg8bit.png")]
        pairs.append((p, gt / p.parent.name / f"{stem}_gtFine_labelTrainIds.png"))
    return SegmentationDataset(pairs, num_classes=19, name=f"cityscapes/{split}", **kw)


FOLDER_LAYOUT = """  <root>/images/<name>.{jpg,png}
  <root>/masks/<name>.png           (class indices 0..K-1, 255 = ignore)
  <root>/splits/<split>.txt         (one <name> per line)"""


def folder(root, split: str = "train", *, num_classes: int | None = None, **kw) -> SegmentationDataset:
    """A generic folder of images, masks and split lists; ``num_classes`` is required."""
    if not num_classes:
        raise ValueError("the folder dataset needs num_classes")
    root = _require_dir(Path(root), FOLDER_LAYOUT)
    names = _read_lines(root / "splits" / f"{split}.txt", FOLDER_LAYOUT)
    pairs = []
    for n in names:
        image = next(
            (
                root / "images" / f"{n}{ext}"
                for ext in (".jpg", ".png", ".jpeg")
                if (root / "images" / f"{n}{ext}").is_file()
            ),
            root / "images" / f"{n}.jpg",
        )
        pairs.append((image, root / "masks" / f"{n}.png"))
    return SegmentationDataset(pairs, num_classes=num_classes, name=f"folder/{split}", **kw)


DATASETS: dict[str, Callable[..., SegmentationDataset]] = {
    "voc": voc,
    "pascal_context": pascal_context,
    "ade20k": ade20k,
    "cityscapes": cityscapes,
    "folder": folder,
}


class AnimalScenes(SegmentationDataset):
    """The cached animal-scenes split as a dataset (11 classes: background + 10 animals)."""

    def __init__(self, root=None, split: str = "train", *, seed: int = 0, transform=None, **_) -> None:
        if split not in scenes.SPLITS:
            raise ValueError(f"animal-scenes split must be one of {tuple(scenes.SPLITS)}, got {split!r}")
        with np.load(scenes.cached(root, seed)) as f:
            if str(f["version"]) != scenes.VERSION:
                found, expected = f["version"], scenes.VERSION
                raise ValueError(f"cache {root} holds {found}, expected {expected}: delete it to regenerate")
            self.images, self.masks = f[f"{split}_images"], f[f"{split}_masks"]
        super().__init__(
            [(Path(f"{split}/{i}"), Path(f"{split}/{i}")) for i in range(len(self.images))],
            num_classes=11,
            transform=transform,
            class_names=CLASSES,
            name=f"animal-scenes/{split}",
        )

    def read(self, index: int):
        return self.images[index], self.masks[index].astype(np.int64)


DATASETS["animal-scenes"] = AnimalScenes


def build_dataset(name: str, root, split: str, **kw) -> SegmentationDataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](root, split, **kw)
