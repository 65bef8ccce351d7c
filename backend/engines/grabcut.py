"""A weights-free engine (SAM_ENGINE=grabcut): OpenCV's classical GrabCut behind SAM's interface.

It lets a newcomer see masks in Label Studio before any checkpoint is downloaded, and keeps
the product usable where weights cannot be fetched. It is not SAM and says so: its
`model_id` ("grabcut-opencv") is what /health and `model_version` report.

Why these choices:
- `encode` stores the image itself, shrunk so its longest side is WORK_SIDE, as a uint8
  tensor in `ImageEmbedding.features`; the embedding cache then holds it like any other
  embedding (<= 768 KiB), and a click never fetches the image again.
- GrabCut runs at that working size (cost grows with pixels) and the mask is upscaled.
- One candidate only: GrabCut has one answer, so `multimask` does not invent others.
- `scores` are prompt agreement, not SAM's predicted IoU: the fraction of the prompts the
  mask honours (each positive point inside, each negative point outside, the mask lying
  within the box), 0 for an empty mask.
- `low_res_logits` follow SAM's frame (256x256 over the image resized to longest side
  1024, top-left aligned, padding negative) so the refinement path (`mask_input`) works
  the same for both engines; here it seeds GrabCut's initial labelling.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from sam_model.common.decoding import DecodeResult
from sam_model.common.embedding import ImageEmbedding

WORK_SIDE = 512
ITERATIONS = 3
LOW_RES = 256
LOGIT = 8.0  # magnitude of the +/- logits written to low_res_logits


class GrabCutEngine:
    """Classical segmentation with the SAM predictor's `encode`/`decode` interface."""

    model_id = "grabcut-opencv"

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Keep a shrunken copy of the image: GrabCut has no learned features to precompute."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 image, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        sh, sw = _work_size(h, w)
        small = image if (sh, sw) == (h, w) else cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        return ImageEmbedding(
            features=torch.from_numpy(np.ascontiguousarray(small)),
            original_size=(h, w),
            input_size=small.shape[:2],
            model_id=self.model_id,
        )

    def check_embedding(self, embedding: ImageEmbedding) -> None:
        """ValueError unless `embedding` is one `encode` could have made (caches vet stored ones)."""
        features = embedding.features
        if embedding.model_id != self.model_id:
            raise ValueError(f"embedding is from model {embedding.model_id!r}, this engine is {self.model_id!r}")
        if features.dtype != torch.uint8 or tuple(features.shape) != (*embedding.input_size, 3):
            raise ValueError(
                f"features must be a uint8 {(*embedding.input_size, 3)} image, "
                f"got {features.dtype} {tuple(features.shape)}"
            )
        if _work_size(*embedding.original_size) != embedding.input_size:
            raise ValueError("embedding input_size does not follow from its original_size")

    def decode(
        self,
        embedding: ImageEmbedding,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
        best_only: bool = False,
    ) -> DecodeResult:
        """Segment from points and/or a box (pixels of the original image); always one mask."""
        image = embedding.features.cpu().numpy().astype(np.uint8)
        h, w = embedding.original_size
        sh, sw = image.shape[:2]
        fx, fy = sw / w, sh / h
        points = np.zeros((0, 2)) if point_coords is None else np.asarray(point_coords, float).reshape(-1, 2)
        labels = np.zeros(0, int) if point_labels is None else np.asarray(point_labels, int).reshape(-1)
        if len(points) != len(labels):
            raise ValueError(f"{len(points)} points but {len(labels)} labels")
        small_points = points * (fx, fy)
        small_box = None if box is None else np.asarray(box, float).reshape(4) * (fx, fy, fx, fy)
        prior = None if mask_input is None else _prior_from_logits(np.asarray(mask_input), (sh, sw))

        small_mask = _grabcut(image, small_points, labels, small_box, prior)
        mask = (
            small_mask
            if (sh, sw) == (h, w)
            else (cv2.resize(small_mask.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR) > 127)
        )
        score = _agreement(mask, points, labels, None if box is None else np.asarray(box, float).reshape(4))
        return DecodeResult(
            masks=mask[None],
            scores=np.array([score], dtype=np.float32),
            low_res_logits=_low_res_logits(small_mask)[None],
        )


def _work_size(h: int, w: int) -> tuple[int, int]:
    """(h, w) of the stored image: the longest side shrunk to WORK_SIDE, never enlarged."""
    scale = min(1.0, WORK_SIDE / max(h, w))
    return (h, w) if scale == 1.0 else (max(1, round(h * scale)), max(1, round(w * scale)))


def _grabcut(
    image: np.ndarray,
    points: np.ndarray,
    labels: np.ndarray,
    box: np.ndarray | None,
    prior: np.ndarray | None,
) -> np.ndarray:
    """Run GrabCut at working size; seeds: box outside = background, points = sure disks."""
    h, w = image.shape[:2]
    positive = points[labels == 1]
    if box is None and len(positive) == 0 and prior is None:
        return np.zeros((h, w), bool)

    seeds = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    if prior is not None:
        seeds[prior] = cv2.GC_PR_FGD
    if box is not None:
        x0, y0, x1, y1 = _clip_box(box, w, h)
        inside = np.zeros((h, w), bool)
        inside[y0:y1, x0:x1] = True
        if prior is None:
            seeds[inside] = cv2.GC_PR_FGD
        seeds[~inside] = cv2.GC_BGD
    elif prior is None:
        # No box: the object is assumed to lie around the positive clicks.
        pad = max(8, round(0.15 * max(h, w)))
        x0, y0 = np.floor(positive.min(0)).astype(int) - pad
        x1, y1 = np.ceil(positive.max(0)).astype(int) + pad + 1
        seeds[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = cv2.GC_PR_FGD

    radius = max(2, round(0.01 * max(h, w)))
    for (x, y), label in zip(points, labels, strict=True):
        cv2.circle(seeds, (int(round(x)), int(round(y))), radius, cv2.GC_FGD if label == 1 else cv2.GC_BGD, -1)
    if not np.isin(seeds, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():
        seeds[[0, -1], :] = seeds[:, [0, -1]] = cv2.GC_PR_BGD  # GrabCut needs some background
    if not np.isin(seeds, (cv2.GC_FGD, cv2.GC_PR_FGD)).any():
        return np.zeros((h, w), bool)

    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means draws from this thread's RNG: same prompts, same mask
    cv2.grabCut(
        np.ascontiguousarray(image[..., ::-1]), seeds, None, bgd_model, fgd_model, ITERATIONS, cv2.GC_INIT_WITH_MASK
    )
    mask = np.isin(seeds, (cv2.GC_FGD, cv2.GC_PR_FGD))
    if len(positive):
        mask = _components_with_points(mask, positive)
    return mask


def _clip_box(box: np.ndarray, w: int, h: int) -> tuple[int, int, int, int]:
    """Integer xyxy inside the image, at least one pixel wide and high, corners in any order."""
    x0 = int(np.clip(np.floor(min(box[0], box[2])), 0, w - 1))
    y0 = int(np.clip(np.floor(min(box[1], box[3])), 0, h - 1))
    x1 = int(np.clip(np.ceil(max(box[0], box[2])), x0 + 1, w))
    y1 = int(np.clip(np.ceil(max(box[1], box[3])), y0 + 1, h))
    return x0, y0, x1, y1


def _components_with_points(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Drop blobs no positive click touches: with clicks, the user pointed at the object."""
    count, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    h, w = mask.shape
    xs = np.clip(np.round(points[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(points[:, 1]).astype(int), 0, h - 1)
    keep = np.setdiff1d(components[ys, xs], [0])
    return np.isin(components, keep) if len(keep) else mask


def _agreement(mask: np.ndarray, points: np.ndarray, labels: np.ndarray, box: np.ndarray | None) -> float:
    """Fraction of prompts the mask honours (see the module docstring); 0 when empty."""
    if not mask.any():
        return 0.0
    h, w = mask.shape
    honoured = []
    for (x, y), label in zip(points, labels, strict=True):
        inside = bool(mask[int(np.clip(y, 0, h - 1)), int(np.clip(x, 0, w - 1))])
        honoured.append(inside == (label == 1))
    if box is not None:
        x0, y0, x1, y1 = _clip_box(box, w, h)
        honoured.append(mask[y0:y1, x0:x1].sum() >= 0.95 * mask.sum())
    return float(np.mean(honoured)) if honoured else 0.0


def _frame(h: int, w: int) -> tuple[int, int]:
    """The image's extent inside SAM's 256x256 low-res frame (longest side 1024 -> 256)."""
    scale = LOW_RES / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _low_res_logits(mask: np.ndarray) -> np.ndarray:
    fh, fw = _frame(*mask.shape)
    logits = np.full((LOW_RES, LOW_RES), -LOGIT, np.float32)
    fraction = cv2.resize(mask.astype(np.float32), (fw, fh), interpolation=cv2.INTER_AREA)
    logits[:fh, :fw] = (2.0 * fraction - 1.0) * LOGIT
    return logits


def _prior_from_logits(mask_input: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Positive logits of a previous low-res mask, mapped back onto the working image."""
    logits = mask_input.reshape(LOW_RES, LOW_RES).astype(np.float32)
    h, w = size
    fh, fw = _frame(h, w)
    return cv2.resize(logits[:fh, :fw], (w, h), interpolation=cv2.INTER_LINEAR) > 0
