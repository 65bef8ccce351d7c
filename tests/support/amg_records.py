"""Comparing automatic-mask-generator records (ours vs an official generator), and a test image."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask


def sample_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth shapes on a gradient: something an encoder reacts to, deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([xx * 255 // w, yy * 255 // h, np.full((h, w), 90)], axis=-1).astype(np.uint8)
    lo = min(20, min(h, w) // 4)
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(lo, max(lo + 1, min(h, w) // 3))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.integers(0, 255, 3)
    return img


def match(ours: list[dict], theirs: list[dict]) -> list[tuple[int, int, float]]:
    """Pair records prompted by the same point in the same crop, best mask IoU first, one to one.

    Returns (our index, their index, mask IoU) for every pair; unpaired records are absent.
    """

    def key(r: dict) -> tuple:
        return tuple(r["crop_box"]), tuple(np.round(r["point_coords"][0], 6))

    ious = coco_mask.iou([r["segmentation"] for r in ours], [r["segmentation"] for r in theirs], [0] * len(theirs))
    ious = np.asarray(ious).reshape(len(ours), len(theirs))
    same_prompt = np.array([[key(a) == key(b) for b in theirs] for a in ours]).reshape(ious.shape)
    ious = np.where(same_prompt, ious, -1.0)
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        a, b = divmod(int(flat), len(theirs))
        if ious[a, b] < 0:
            break
        if a not in used_a and b not in used_b:
            pairs.append((a, b, float(ious[a, b])))
            used_a.add(a)
            used_b.add(b)
    return pairs


def assert_same_masks(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    pairs = match(ours, theirs)
    assert len(pairs) == len(ours)
    for a, b, iou in pairs:
        assert iou >= 0.99
        for k in ("predicted_iou", "stability_score"):
            assert abs(ours[a][k] - theirs[b][k]) <= 1e-3, (k, ours[a][k], theirs[b][k])
        assert ours[a]["crop_box"] == theirs[b]["crop_box"]
        assert abs(ours[a]["area"] - theirs[b]["area"]) <= 0.01 * max(1, theirs[b]["area"])
