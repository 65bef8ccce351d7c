"""Geometry between the original image and SAM's square input, both ways.

Forward: resize the longest side to the encoder's input size (PIL bilinear on uint8,
which antialiases when shrinking — the reference feeds exactly that to the encoder),
normalise, pad. Points and boxes are scaled by the same per-axis factors.
Backward: low-res mask logits -> input square -> crop the padding -> original size, the
reference's two bilinear steps (align_corners=False), here only: `upscale_masks` (the
predictor) thresholds one mask at a time so a 24 MP image never holds float copies of
every candidate; `upscale_logits` (AMG, which scores the float logits) returns them.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Columns per block when upscale_masks heightens on CPU (memory bound for huge images).
_BAND = 512


def input_shape(original_size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(h, w) after scaling the longest side to `long_side`, rounded as the reference does."""
    h, w = original_size
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """HxWx3 uint8 -> resized HxWx3 uint8 (PIL bilinear; bit-exact with the reference)."""
    h, w = input_shape(image.shape[:2], long_side)
    return np.array(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BILINEAR))


def normalize_and_pad(
    resized: np.ndarray, pixel_mean: torch.Tensor, pixel_std: torch.Tensor, size: int
) -> torch.Tensor:
    """uint8 HxWx3 -> float 1x3x`size`x`size` on the mean's device, zero-padded bottom/right."""
    x = torch.from_numpy(np.ascontiguousarray(resized)).to(pixel_mean.device)
    x = x.permute(2, 0, 1).unsqueeze(0)
    # Same op order as the reference (uint8 minus float32 promotes to float32): bit-exact.
    x = (x - pixel_mean.view(1, 3, 1, 1)) / pixel_std.view(1, 3, 1, 1)
    h, w = x.shape[-2:]
    return F.pad(x, (0, size - w, 0, size - h))


def scale_coords(coords: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """xy pixels of the original image -> xy pixels of the resized input (float64 math)."""
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] *= input_size[1] / original_size[1]
    out[..., 1] *= input_size[0] / original_size[0]
    return out


def upscale_logits(
    low_res_logits: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    square: int,
    opencv: bool = False,
) -> torch.Tensor:
    """(K,h,w) logits -> (K,H,W) float32 logits at the original size, on the logits' device.

    torch's kernel is the reference's own (AMG's exact mode, accelerators); `opencv`
    (CPU tensors only) is ~2x faster and equal to ~1e-4 (AMG's fast mode on CPU).
    """
    if opencv:
        out = np.empty((low_res_logits.shape[0], *original_size), dtype=np.float32)
        for k, low in enumerate(low_res_logits.detach().float().numpy()):
            for columns, full in _opencv_bands(low, input_size, original_size, square):
                out[k, :, columns] = full
        return torch.from_numpy(out)
    big = F.interpolate(low_res_logits[:, None].float(), (square, square), mode="bilinear", align_corners=False)
    big = big[..., : input_size[0], : input_size[1]]
    return F.interpolate(big, original_size, mode="bilinear", align_corners=False)[:, 0]


def upscale_masks(
    low_res_logits: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    square: int,
    threshold: float = 0.0,
) -> np.ndarray:
    """(K,h,w) logits -> (K,H,W) bool masks at the original size, logits > `threshold`.

    On CPU, OpenCV's float bilinear resize (half-pixel centres, like align_corners=False)
    does each step several times faster than torch's kernel, in bands of columns so the
    float frame in memory is a band, not the whole image; on an accelerator the work stays
    there and only the bool mask crosses to the host.
    """
    out = np.empty((low_res_logits.shape[0], *original_size), dtype=bool)
    if low_res_logits.device.type == "cpu":
        for k, low in enumerate(low_res_logits.detach().float().numpy()):
            for columns, full in _opencv_bands(low, input_size, original_size, square, _BAND):
                np.greater(full, threshold, out=out[k, :, columns])
        return out
    for k in range(low_res_logits.shape[0]):
        full = upscale_logits(low_res_logits[k : k + 1], input_size, original_size, square)
        out[k] = (full[0] > threshold).cpu().numpy()
    return out


def _opencv_bands(
    low: np.ndarray,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    square: int,
    band: int | None = None,
) -> Iterator[tuple[slice, np.ndarray]]:
    """One (h,w) float32 mask's full-size logits as (column slice, H x columns) blocks:
    the whole image at once, or `band` columns at a time."""
    height, width = original_size
    big = cv2.resize(low, (square, square), interpolation=cv2.INTER_LINEAR)
    big = big[: input_size[0], : input_size[1]]
    if band is None or band >= width:
        yield slice(0, width), cv2.resize(big, (width, height), interpolation=cv2.INTER_LINEAR)
        return
    # Bilinear is separable and OpenCV does the horizontal pass first, so widening the
    # rows, then heightening one band of columns at a time, is bit-identical to a single
    # resize while the float frame in memory is a band, not the whole image.
    rows = cv2.resize(big, (width, input_size[0]), interpolation=cv2.INTER_LINEAR)
    for start in range(0, width, band):
        cols = rows[:, start : start + band]
        full = cv2.resize(cols, (cols.shape[1], height), interpolation=cv2.INTER_LINEAR)
        yield slice(start, start + cols.shape[1]), full
