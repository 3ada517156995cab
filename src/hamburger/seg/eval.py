"""`hamburger seg eval|predict`: whole-image, sliding-window and multi-scale + flip inference; dataset-level mIoU;
palette masks and overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..data.images import load_image
from .metrics import ConfusionMatrix
from .transforms import normalize


def _forward(model: nn.Module, image: torch.Tensor, *, crop: int | None, stride: int | None) -> torch.Tensor:
    """Logits (B, K, H, W) of the whole image, or of overlapping ``crop`` windows averaged where they overlap."""
    if crop is None:
        return model(image)["out"]
    b, _, h, w = image.shape
    stride = stride or max(1, crop * 2 // 3)
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    padded = F.pad(image, (0, pw, 0, ph))  # zero = the mean colour after normalisation
    hh, ww = padded.shape[2:]
    logits = count = None
    rows = list(range(0, max(hh - crop, 0) + 1, stride))
    cols = list(range(0, max(ww - crop, 0) + 1, stride))
    rows += [hh - crop] if rows[-1] != hh - crop else []
    cols += [ww - crop] if cols[-1] != ww - crop else []
    for top in rows:
        for left in cols:
            out = model(padded[:, :, top : top + crop, left : left + crop])["out"]
            if logits is None:
                logits = out.new_zeros(b, out.shape[1], hh, ww)
                count = out.new_zeros(1, 1, hh, ww)
            logits[:, :, top : top + crop, left : left + crop] += out
            count[:, :, top : top + crop, left : left + crop] += 1
    return (logits / count)[:, :, :h, :w]


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    image: torch.Tensor,
    *,
    scales: tuple[float, ...] = (1.0,),
    flip: bool = False,
    crop: int | None = None,
    stride: int | None = None,
) -> torch.Tensor:
    """Summed logits (B, K, H, W) over ``scales`` (and horizontal flips): the paper's multi-scale protocol."""
    h, w = image.shape[2:]
    total = None
    for s in scales:
        size = (max(1, round(h * s)), max(1, round(w * s)))
        x = image if size == (h, w) else F.interpolate(image, size, mode="bilinear", align_corners=False)
        views = [(x, False), (x.flip(-1), True)] if flip else [(x, False)]
        for view, flipped in views:
            out = _forward(model, view, crop=crop, stride=stride)
            out = out.flip(-1) if flipped else out
            out = F.interpolate(out, (h, w), mode="bilinear", align_corners=False) if out.shape[2:] != (h, w) else out
            total = out if total is None else total + out
    return total


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    *,
    device: torch.device | str = "cpu",
    scales: tuple[float, ...] = (1.0,),
    flip: bool = False,
    crop: int | None = None,
    stride: int | None = None,
    max_samples: int | None = None,
    progress: bool = False,
) -> dict:
    """Dataset-level metrics: one confusion matrix over the whole split (sharded over ranks under DDP)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(dataset.num_classes)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    indices = list(range(len(dataset)))[: max_samples or None][rank::world]
    iterator = indices
    if progress:
        from tqdm import tqdm

        iterator = tqdm(indices, unit="img", dynamic_ncols=True)
    for i in iterator:
        image, label = dataset[i]
        logits = predict_logits(model, image[None].to(device), scales=scales, flip=flip, crop=crop, stride=stride)
        matrix.update(logits.argmax(1)[0].cpu(), label)
    matrix.all_reduce()
    model.train(was_training)
    iou = matrix.iou()
    return {
        "miou": matrix.miou(),
        "pixel_accuracy": matrix.pixel_accuracy(),
        "iou": {name: (None if v != v else v) for name, v in zip(dataset.class_names, iou.tolist())},
        "samples": len(list(range(len(dataset)))[: max_samples or None]),
        "table": matrix.table(dataset.class_names),
    }


def palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved), extended to any number of classes; 255 is white."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[i] = (r, g, b)
    colours[255] = (255, 255, 255)
    return colours


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def list_images(inputs: list[str | Path]) -> list[Path]:
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise ValueError(f"input {item} is neither an image file nor a folder")
    if not files:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))}")
    return files


@torch.no_grad()
def predict_files(model: nn.Module, inputs, out: Path, *, num_classes: int, device="cpu", **infer) -> list[Path]:
    """Palette PNG masks (``<name>.png``) and overlays (``<name>_overlay.jpg``) for image files or folders."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    colours = palette(num_classes)
    written = []
    for path in list_images(inputs):
        image = load_image(path)
        x = normalize(torch.from_numpy(image.copy()).permute(2, 0, 1))[None].to(device)
        pred = predict_logits(model, x, **infer).argmax(1)[0].cpu().numpy().astype(np.uint8)
        mask = Image.fromarray(pred, mode="P")
        mask.putpalette(colours.flatten().tolist())
        mask_path = out / f"{path.stem}.png"
        mask.save(mask_path)
        overlay = (0.5 * image + 0.5 * colours[pred]).astype(np.uint8)
        Image.fromarray(overlay).save(out / f"{path.stem}_overlay.jpg", quality=90)
        written.append(mask_path)
    return written


__all__ = ["predict_logits", "evaluate", "predict_files", "palette"]
