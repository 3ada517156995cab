"""Image files as arrays, for every task that reads a folder of pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); unreadable or truncated files raise ValueError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return np.array(img.convert("RGB"))  # a writable copy
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
