"""Image files as arrays, for every task that reads a folder of pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); unreadable or truncated files raise ValueError naming the file.

    High-bit-depth greyscale (16-bit PNGs and TIFFs: PIL modes ``I;16*`` and ``I``) is scaled from 0..65535 to 0..255,
    not clipped at 255 as PIL's ``convert("RGB")`` does; floating-point images are refused (their range is unknown)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode.startswith("I;16") or img.mode == "I":
                return _scaled_grey(np.asarray(img), path)
            if img.mode == "F":
                raise ValueError("floating-point pixels (PIL mode F) have no known range; save it as 8- or 16-bit")
            return np.array(img.convert("RGB"))  # a writable copy
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def _scaled_grey(values: np.ndarray, path: Path) -> np.ndarray:
    """16-bit grey values (H, W) -> RGB uint8 (H, W, 3), rounding v · 255 / 65535."""
    values = values.astype(np.int64)
    if values.min() < 0 or values.max() > 65535:
        raise ValueError(f"integer pixels outside 0..65535 ({values.min()}..{values.max()}) in {path}")
    grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)
