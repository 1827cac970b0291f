"""Task metrics: accuracy, confusion-matrix mIoU and pixel accuracy, distance errors."""

from __future__ import annotations

import torch

__all__ = ["confusion", "mean_iou", "pixel_accuracy"]


def confusion(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(n_classes, n_classes)`` int64 counts, rows = truth, columns = prediction."""
    flat = target.reshape(-1).long() * n_classes + pred.reshape(-1).long()
    return torch.bincount(flat, minlength=n_classes**2).reshape(n_classes, n_classes)


def mean_iou(conf: torch.Tensor) -> float:
    """Mean over classes of intersection / union, over the classes that occur in the truth
    or the prediction (a class absent from both has no defined IoU)."""
    conf = conf.double()
    inter = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if bool(present.any()) else float("nan")


def pixel_accuracy(conf: torch.Tensor) -> float:
    """Fraction of points whose predicted label is the true one."""
    total = conf.sum()
    return float(conf.diagonal().sum() / total) if int(total) else float("nan")
