"""Greedy box NMS in plain torch (no torchvision at runtime)."""

from __future__ import annotations

import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of (N, 4) xyxy boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """(N, N) IoU of xyxy boxes; 0/0 (two empty boxes) stays NaN, which never suppresses."""
    area = box_area(boxes)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    return inter / (area[:, None] + area[None, :] - inter)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, categories: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Indices of kept boxes, highest score first; a box goes when IoU > threshold with a kept box of its category.

    Ties in score keep input order (stable sort), so callers control tie-breaking (crop NMS
    relies on it). The IoU matrix is computed once; the greedy pass is a loop over kept rows.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64)
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes[order].float()
    cats = categories[order]
    overlaps = pairwise_iou(boxes) > iou_threshold
    overlaps &= cats[:, None] == cats[None, :]
    removed = torch.zeros(n, dtype=torch.bool)
    keep = []
    for i in range(n):
        if removed[i]:
            continue
        keep.append(i)
        removed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.int64)]
