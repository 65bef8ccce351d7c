"""`box_area` and `batched_nms` with torchvision's documented semantics (greedy, per category)."""

from __future__ import annotations

import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _iou(box: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(box[:2], others[:, :2])
    rb = torch.minimum(box[2:], others[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    return inter / (box_area(box[None])[0] + box_area(others) - inter)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices kept, by descending score; a box is dropped when IoU > threshold with a kept box of its category."""
    order = torch.argsort(scores, descending=True, stable=True)
    keep: list[int] = []
    for i in order.tolist():
        same = [k for k in keep if idxs[k] == idxs[i]]
        if same and bool((_iou(boxes[i].float(), boxes[same].float()) > iou_threshold).any()):
            continue
        keep.append(i)
    return torch.tensor(keep, dtype=torch.int64)
