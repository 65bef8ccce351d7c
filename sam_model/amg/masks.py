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
    above = binarize(logits, cutoff).flatten(-2)
    if above.device.type != "cpu":
        return above.sum(dim=-1, dtype=torch.int32)
    return torch.from_numpy(np.count_nonzero(above.numpy(), axis=-1).astype(np.int32))


def binarize(logits: torch.Tensor, cutoff: float) -> torch.Tensor:
    """logits > cutoff. On CPU float32, numpy's comparison (~5x torch's on full-size masks);
    both compare in float32, so the result is the same."""
    if logits.device.type != "cpu" or logits.dtype != torch.float32:
        return logits > cutoff
    return torch.from_numpy(np.greater(logits.numpy(), np.float32(cutoff)))


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., 4) int64 xyxy with inclusive max corners; empty masks give zeros."""
    h, w = masks.shape[-2:]
    if masks.numel() == 0:
        return torch.zeros((*masks.shape[:-2], 4), dtype=torch.int64)
    rows = _any(masks, -1).to(torch.uint8)
    cols = _any(masks, -2).to(torch.uint8)
    y0 = rows.argmax(dim=-1)
    y1 = (h - 1) - rows.flip(-1).argmax(dim=-1)
    x0 = cols.argmax(dim=-1)
    x1 = (w - 1) - cols.flip(-1).argmax(dim=-1)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1)
    return boxes * rows.any(dim=-1, keepdim=True)


def _any(masks: torch.Tensor, dim: int) -> torch.Tensor:
    """masks.any(dim); on CPU numpy's reduction, ~8x torch's on full-size bool masks."""
    if masks.device.type != "cpu":
        return masks.any(dim=dim)
    return torch.from_numpy(masks.numpy().any(axis=dim))


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
    and finds all run edges of the batch in one pass over one bool copy (in column order),
    so cost follows the number of edges.
    """
    b, ch, cw = masks.shape
    h, w = image_hw if image_hw is not None else (ch, cw)
    x0, y0 = offset_xy
    columns = masks.transpose(1, 2).numpy()  # (B, cw, ch): column-major order
    if ch == h:
        flat = np.ascontiguousarray(columns).reshape(b, cw * h)
    else:
        padded = np.zeros((b, cw, h), dtype=bool)
        padded[:, :, y0 : y0 + ch] = columns
        flat = padded.reshape(b, cw * h)
    n = cw * h
    # Edge k (0..n) of a mask lies before its pixel k: where that pixel differs from the one
    # before it, with background outside the mask's columns.
    edges = np.empty((b, n + 1), dtype=bool)
    edges[:, 0], edges[:, n] = flat[:, 0], flat[:, -1]
    np.not_equal(flat[:, 1:], flat[:, :-1], out=edges[:, 1:n])
    index = np.flatnonzero(edges)
    bounds = np.searchsorted(index, np.arange(b + 1) * (n + 1))
    # Mask i's edge k has flat index i*(n+1) + k; in the frame it is x0*h + k.
    return [_counts(index[bounds[i] : bounds[i + 1]], x0 * h - i * (n + 1), (h, w)) for i in range(b)]


def _counts(edges: np.ndarray, shift: int, size: tuple[int, int]) -> Rle:
    """One mask's RLE in a `size` frame from its run edges (ascending; `edges + shift` are frame positions)."""
    k, total = len(edges), size[0] * size[1]
    counts = np.empty(k + 1, dtype=np.int64)
    if k == 0:
        counts[0] = total
    else:
        counts[0] = edges[0] + shift
        np.subtract(edges[1:], edges[:-1], out=counts[1:k])
        counts[k] = total - (edges[-1] + shift)
        if counts[k] == 0:
            counts = counts[:k]  # the mask runs to the frame's end: no empty closing run
    return {"size": list(size), "counts": counts}


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
