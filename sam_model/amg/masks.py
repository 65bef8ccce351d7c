"""Per-mask arithmetic for AMG: stability, boxes, crop-edge test, RLE, small-region cleanup.

RLE here is the uncompressed COCO form: {"size": [h, w], "counts": [...]}, runs over the
column-major flattened mask, starting with a (possibly empty) run of zeros. Internally the
counts are an int64 array (a noisy mask has ~10^5 runs; Python lists of them cost seconds
per batch); `rle_to_list` gives the JSON-safe form for output.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

Rle = dict[str, Any]


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks binarized at threshold+offset and threshold-offset (the first is inside the second).

    A mask whose area barely moves when the cutoff shifts is a confident one.
    """
    inner = _count_above(logits, threshold + offset)
    outer = _count_above(logits, threshold - offset)
    return inner / outer


def _count_above(logits: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Per-mask count of logits > cutoff, int32. On CPU numpy's count_nonzero is ~4x torch's sum."""
    above = (logits > cutoff).flatten(-2)
    if above.device.type != "cpu":
        return above.sum(dim=-1, dtype=torch.int32)
    return torch.from_numpy(np.count_nonzero(above.numpy(), axis=-1).astype(np.int32))


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., 4) int64 xyxy with inclusive max corners; empty masks give zeros."""
    h, w = masks.shape[-2:]
    if masks.numel() == 0:
        return torch.zeros((*masks.shape[:-2], 4), dtype=torch.int64)
    rows = masks.any(dim=-1).to(torch.uint8)
    cols = masks.any(dim=-2).to(torch.uint8)
    y0 = rows.argmax(dim=-1)
    y1 = (h - 1) - rows.flip(-1).argmax(dim=-1)
    x0 = cols.argmax(dim=-1)
    x1 = (w - 1) - cols.flip(-1).argmax(dim=-1)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1)
    return boxes * rows.any(dim=-1, keepdim=True)


def boxes_near_crop_edge(
    boxes: torch.Tensor, crop_box: list[int], image_box: list[int], atol: float = 20.0
) -> torch.Tensor:
    """True where an (image-frame) box lies within atol of a crop edge that is not also an image edge.

    Such masks are probably cut off by the crop; a neighbouring crop or the full image sees them whole.
    """
    b = boxes.float()
    crop = torch.as_tensor(crop_box, dtype=torch.float32)
    image = torch.as_tensor(image_box, dtype=torch.float32)
    near_crop = (b - crop).abs() <= atol
    near_image = (b - image).abs() <= atol
    return (near_crop & ~near_image).any(dim=1)


def masks_to_rles(
    masks: torch.Tensor, image_hw: tuple[int, int] | None = None, offset_xy: tuple[int, int] = (0, 0)
) -> list[Rle]:
    """Encode (B, h, w) bool masks as RLEs of an image_hw frame where the masks sit at offset_xy.

    Works on the crop-sized masks (no full-frame padding per mask beyond the crop's columns)
    and finds all run edges of the batch in one pass, so cost follows the number of edges.
    """
    b, ch, cw = masks.shape
    h, w = image_hw if image_hw is not None else (ch, cw)
    x0, y0 = offset_xy
    columns = masks.transpose(1, 2).to(torch.int8)  # (B, cw, ch): column-major order
    if ch != h:
        columns = torch.nn.functional.pad(columns, (y0, h - ch - y0))
    flat = columns.reshape(b, cw * h).numpy()
    edges = np.diff(flat, axis=1, prepend=np.int8(0), append=np.int8(0))
    rows, positions = np.nonzero(edges)
    positions = positions + x0 * h
    bounds = np.searchsorted(rows, np.arange(b + 1))
    total = h * w
    out = []
    for i in range(b):
        counts = np.diff(positions[bounds[i] : bounds[i + 1]], prepend=0, append=total)
        if len(counts) > 1 and counts[-1] == 0:
            counts = counts[:-1]
        out.append({"size": [h, w], "counts": counts})
    return out


def rle_to_list(rle: Rle) -> Rle:
    """The same RLE with plain-int list counts (JSON-serialisable, the reference's form)."""
    return {"size": list(rle["size"]), "counts": np.asarray(rle["counts"]).tolist()}


def rle_to_mask(rle: Rle) -> np.ndarray:
    """Decode an uncompressed RLE to an (h, w) bool mask."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(w, h).T


def rle_area(rle: Rle) -> int:
    """Foreground pixels: the odd runs."""
    return int(np.sum(rle["counts"][1::2]))


def rle_to_coco(rle: Rle) -> Rle:
    """Compressed COCO RLE (counts as a JSON-safe str) via pycocotools."""
    from pycocotools import mask as coco_mask

    h, w = rle["size"]
    encoded = coco_mask.frPyObjects(rle, h, w)
    return {"size": list(encoded["size"]), "counts": encoded["counts"].decode("utf-8")}


def remove_small_regions(mask: np.ndarray, min_area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (mode="holes") or drop islands (mode="islands") smaller than min_area; report whether anything qualified.

    Islands: if every island is small the largest one stays, so a mask never vanishes (the
    flag is still set, as in the reference, so NMS then prefers untouched masks).
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    work = (mask != holes).astype(np.uint8)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = sizes < min_area
    if not small.any():
        return mask, False
    keep = np.zeros(n_labels, dtype=bool)
    if holes:
        keep[0] = True  # label 0 of the inverted mask is the mask itself
        keep[1:] = small
    else:
        keep[1:] = ~small
        if not keep.any():
            keep[1 + int(np.argmax(sizes))] = True
    return keep[labels], True
