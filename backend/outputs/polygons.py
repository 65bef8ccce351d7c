"""Masks -> Label Studio polygons (points in percent of the image size).

Each 8-connected component becomes one polygon: its external outline, simplified with
Douglas-Peucker (``cv2.approxPolyDP``) at ``tolerance_px``. Label Studio polygons are a
single closed ring and cannot hold holes, so holes are filled (an island inside a hole is
inside its outer polygon too). Components whose outline encloses less than ``min_area_px``
pixels are dropped.

Coordinates: LS places a polygon point at ``x% * width / 100`` in a frame where pixel i
spans [i, i+1) (pixel corners). OpenCV traces the centres of boundary pixels, half a pixel
inside the mask's real edge; each traced outline is therefore pushed out by half a pixel
(vertex by vertex, along the bisector of its edges' normals) before conversion, so a
10x10 square comes out as exactly [x, x+10] x [y, y+10] and small blobs keep their area.
"""

from __future__ import annotations

import cv2
import numpy as np

Polygon = list[list[float]]  # [[x%, y%], ...] as in LS value.points

_HALF_PIXEL = 0.5
_AREA_SLACK = 0.05


def mask_to_polygons(mask: np.ndarray, tolerance_px: float = 1.0, min_area_px: float = 16) -> list[Polygon]:
    """One polygon per connected component of ``mask``, largest first, in percent of W/H."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    height, width = mask.shape
    if mask.size == 0:
        return []
    binary = np.ascontiguousarray(mask).view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outlines = []
    for contour in contours:
        _, _, box_w, box_h = cv2.boundingRect(contour)
        if box_w * box_h < min_area_px:  # cannot enclose enough pixels; skip the work
            continue
        outline = _pixel_corner_outline(contour, tolerance_px)
        area = abs(_signed_area(outline))
        if area >= min_area_px:
            outlines.append((area, outline))
    outlines.sort(key=lambda item: -item[0])
    scale = np.array([100.0 / width, 100.0 / height])
    return [np.clip(outline * scale, 0.0, 100.0).tolist() for _, outline in outlines]


def _pixel_corner_outline(contour: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Simplified outline of one contour, in pixel-corner coordinates, as float (N, 2).

    Douglas-Peucker can collapse a shape only a few pixels thick; when the simplified
    outline's area strays more than 5% from the traced one, the tolerance is halved
    (down to none).
    """
    traced = _outline(contour.reshape(-1, 2))
    if traced is None:
        # A line or a dot: its traced outline encloses nothing; take the box around its pixels.
        (cx, cy), (w, h), angle = cv2.minAreaRect(contour.reshape(-1, 2).astype(np.float32))
        box = cv2.boxPoints(((cx + _HALF_PIXEL, cy + _HALF_PIXEL), (w + 1.0, h + 1.0), angle))
        return box.astype(np.float64)
    target = abs(_signed_area(traced))
    tolerance = tolerance_px
    while tolerance >= 0.25:
        simplified = _outline(cv2.approxPolyDP(contour, tolerance, True).reshape(-1, 2))
        if simplified is not None and abs(abs(_signed_area(simplified)) - target) <= _AREA_SLACK * target:
            return simplified
        tolerance /= 2
    return traced


def _outline(points: np.ndarray) -> np.ndarray | None:
    """Pixel-centre points -> outline pushed out to the pixel edges; None if it has no area."""
    centres = points.astype(np.float64) + _HALF_PIXEL  # pixel (i, j) has its centre at (i + .5, j + .5)
    if len(centres) < 3 or _signed_area(centres) == 0:
        return None
    return _push_out(centres, _HALF_PIXEL)


def _push_out(points: np.ndarray, distance: float) -> np.ndarray:
    """Move each vertex of a closed polygon outwards so its edges shift by ``distance``.

    The miter is capped where an edge nearly doubles back, so one-pixel spikes stay put
    rather than shooting out.
    """
    edges = np.roll(points, -1, axis=0) - points
    edges /= np.maximum(np.linalg.norm(edges, axis=1, keepdims=True), 1e-12)
    outward = np.stack([edges[:, 1], -edges[:, 0]], axis=1)  # right-hand normal
    if _signed_area(points) < 0:
        outward = -outward
    before, after = np.roll(outward, 1, axis=0), outward  # edges ending / starting at a vertex
    bisector = before + after
    cos_sum = 1.0 + np.sum(before * after, axis=1, keepdims=True)
    return points + distance * bisector / np.maximum(cos_sum, 0.5)


def _signed_area(points: np.ndarray) -> float:
    """Shoelace area; positive when the outline runs clockwise on screen (y down)."""
    return float(cv2.contourArea(points.astype(np.float32), oriented=True))
