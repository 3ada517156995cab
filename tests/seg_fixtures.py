"""Tiny datasets written in each dataset's documented on-disk layout (from the datasets' own documentation and
mmseg's dataset preparation guide, not from this library's readers)."""

from pathlib import Path

import numpy as np
from PIL import Image

VOC_PALETTE = []
for i in range(256):  # the VOC devkit colour map (bit-interleaved)
    c, r, g, b = i, 0, 0, 0
    for j in range(8):
        r, g, b = r | ((c & 1) << (7 - j)), g | (((c >> 1) & 1) << (7 - j)), b | (((c >> 2) & 1) << (7 - j))
        c >>= 3
    VOC_PALETTE += [r, g, b]


def _rng(seed):
    return np.random.default_rng(seed)


def _jpg(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)


def _png_rgb(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _labels(h, w, values, seed, border=False):
    lab = _rng(seed).choice(np.asarray(values, dtype=np.uint8), size=(h, w))
    if border:
        lab[0, :] = 255  # VOC marks object borders with 255
    return lab


def _png_palette(path: Path, lab: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(lab, mode="P")
    img.putpalette(VOC_PALETTE)
    img.save(path)


def _png_grey(path: Path, lab: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(lab, mode="L").save(path)


def write_voc(root: Path, n_train=6, n_val=3, h=40, w=48) -> Path:
    """VOCdevkit/VOC2012 with palette SegmentationClass, SBD's greyscale SegmentationClassAug and split lists."""
    voc = root / "VOCdevkit" / "VOC2012"
    ids = [f"2007_{i:06d}" for i in range(n_train + n_val)]
    aug_only = [f"2008_{i:06d}" for i in range(2)]
    for k, i in enumerate(ids + aug_only):
        _jpg(voc / "JPEGImages" / f"{i}.jpg", h, w, k)
        lab = _labels(h, w, [0, 1, 7, 15], k, border=True)
        if i in ids:
            _png_palette(voc / "SegmentationClass" / f"{i}.png", lab)
        lab_aug = lab.copy()
        lab_aug[0, :] = 255
        _png_grey(voc / "SegmentationClassAug" / f"{i}.png", lab_aug)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("\n".join(ids[:n_train]) + "\n")
    (sets / "val.txt").write_text("\n".join(ids[n_train:]) + "\n")
    (sets / "trainval.txt").write_text("\n".join(ids) + "\n")
    (sets / "trainaug.txt").write_text("\n".join(ids[:n_train] + aug_only) + "\n")
    return root


def write_pascal_context(root: Path, h=30, w=34) -> Path:
    """VOCdevkit/VOC2010 with mmseg's SegmentationClassContext (0 = background, 1..59) and SegmentationContext lists."""
    voc = root / "VOCdevkit" / "VOC2010"
    ids = ["2008_000002", "2008_000003", "2008_000007"]
    for k, i in enumerate(ids):
        _jpg(voc / "JPEGImages" / f"{i}.jpg", h, w, 10 + k)
        _png_grey(voc / "SegmentationClassContext" / f"{i}.png", _labels(h, w, [0, 1, 30, 59], k))
    sets = voc / "ImageSets" / "SegmentationContext"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (sets / "val.txt").write_text(ids[2] + "\n")
    return root


def write_ade20k(root: Path, h=36, w=30) -> Path:
    """ADEChallengeData2016/{images,annotations}/{training,validation}; annotation 0 = other, 1..150 the classes."""
    ade = root / "ADEChallengeData2016"
    for split, prefix, n in (("training", "ADE_train", 3), ("validation", "ADE_val", 2)):
        for k in range(n):
            name = f"{prefix}_{k + 1:08d}"
            _jpg(ade / "images" / split / f"{name}.jpg", h, w, 20 + k)
            _png_grey(ade / "annotations" / split / f"{name}.png", _labels(h, w, [0, 1, 75, 150], k))
    return root


def write_cityscapes(root: Path, h=32, w=64) -> Path:
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png and
    gtFine/<split>/<city>/*_gtFine_{labelTrainIds,labelIds,color}.png."""
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("frankfurt",))):
        for c, city in enumerate(cities):
            for f in range(2):
                stem = f"{city}_{c:06d}_{f:06d}"
                _png_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", h, w, 30 + c * 2 + f)
                gt = root / "gtFine" / split / city
                _png_grey(gt / f"{stem}_gtFine_labelTrainIds.png", _labels(h, w, [0, 5, 18, 255], f))
                _png_grey(gt / f"{stem}_gtFine_labelIds.png", _labels(h, w, [7, 26, 33], f))
                _png_rgb(gt / f"{stem}_gtFine_color.png", h, w, f)
    return root


def write_folder(root: Path, n=8, h=32, w=32, classes=3) -> Path:
    """images/, masks/ and splits/{train,val}.txt."""
    names = [f"sample_{i}" for i in range(n)]
    for k, name in enumerate(names):
        _png_rgb(root / "images" / f"{name}.png", h, w, 40 + k)
        _png_grey(root / "masks" / f"{name}.png", _labels(h, w, list(range(classes)) + [255], k))
    (root / "splits").mkdir(parents=True, exist_ok=True)
    (root / "splits" / "train.txt").write_text("\n".join(names[: n - 2]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(names[n - 2 :]) + "\n")
    return root
