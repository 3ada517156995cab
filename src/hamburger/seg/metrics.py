"""Dataset-level segmentation metrics from a confusion matrix accumulated over the whole split."""

from __future__ import annotations

import torch
import torch.distributed as dist

from .transforms import IGNORE_INDEX


class ConfusionMatrix:
    """K x K counts (rows: ground truth, columns: prediction); pixels labelled ``ignore_index`` are skipped."""

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        keep = target != self.ignore_index
        k = self.num_classes
        idx = target[keep].long().cpu() * k + pred[keep].long().cpu()
        self.matrix += torch.bincount(idx, minlength=k * k).reshape(k, k)

    def all_reduce(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)

    def iou(self) -> torch.Tensor:
        """Per-class IoU; NaN for classes absent from both ground truth and prediction."""
        m = self.matrix.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))

    def miou(self) -> float:
        """Mean IoU over the classes present in the split (ground truth or prediction)."""
        iou = self.iou()
        return float(iou[~iou.isnan()].mean()) if (~iou.isnan()).any() else 0.0

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(self.matrix.diag().sum() / total) if total > 0 else 0.0

    def table(self, class_names) -> list[str]:
        lines = ["| class | IoU |", "|---|---:|"]
        for name, value in zip(class_names, self.iou().tolist()):
            lines.append(f"| {name} | {'-' if value != value else f'{100 * value:.2f}'} |")
        return lines
