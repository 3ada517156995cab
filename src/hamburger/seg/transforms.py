"""The paper's segmentation transforms, deterministic per (seed, epoch, sample).

Train: random scale 0.5-2.0 (bilinear image, nearest mask), ImageNet normalisation, pad to the crop size (image 0
after normalisation, label 255), random crop, horizontal flip. Eval: normalisation only. The randomness of a sample
comes from a generator seeded with (seed, epoch, index), so augmentation does not depend on worker count or order,
and a resumed run sees exactly the same crops.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .segmentation import IMAGENET_MEAN, IMAGENET_STD

IGNORE_INDEX = 255


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) -> float (3, H, W), ImageNet statistics."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.float() / 255.0 - mean) / std


class SegTransform:
    """Callable ``(image uint8 (H, W, 3), mask (H, W), index, epoch) -> (image float (3, h, w), mask (h, w))``.

    Args:
        train: apply the random augmentation (else only normalise).
        crop_size: (h, w) of training crops.
        scale_range: random scale range (0.5, 2.0).
        flip: random horizontal flip.
        seed: base seed; the draw of a sample depends on (seed, epoch, index) only.
    """

    def __init__(
        self,
        *,
        train: bool,
        crop_size: int | tuple[int, int] = 512,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        seed: int = 0,
    ) -> None:
        self.train = train
        self.crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.scale_range = scale_range
        self.flip = flip
        self.seed = seed

    def __call__(self, image: np.ndarray, mask: np.ndarray, index: int, epoch: int = 0):
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W) uint8
        lab = torch.from_numpy(np.ascontiguousarray(mask)).long()  # (H, W)
        if not self.train:
            return normalize(img), lab
        g = torch.Generator().manual_seed(hash((self.seed, int(epoch), int(index))) & 0x7FFFFFFF)
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * torch.rand((), generator=g).item()
        h, w = lab.shape
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = F.interpolate(normalize(img)[None], size=size, mode="bilinear", align_corners=False)[0]
        y = F.interpolate(lab[None, None].float(), size=size, mode="nearest")[0, 0].long()
        ch, cw = self.crop
        pad_h, pad_w = max(ch - size[0], 0), max(cw - size[1], 0)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)
            y = F.pad(y, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top = int(torch.randint(0, x.shape[1] - ch + 1, (), generator=g))
        left = int(torch.randint(0, x.shape[2] - cw + 1, (), generator=g))
        x, y = x[:, top : top + ch, left : left + cw], y[top : top + ch, left : left + cw]
        if self.flip and torch.rand((), generator=g).item() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x.contiguous(), y.contiguous()
