"""Polygons: rasterised back (pixel centres inside the polygon) they cover the mask, IoU >= 0.95."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from backend.outputs.polygons import mask_to_polygons
from tests.support.masks import iou


def rasterise(polygons: list, h: int, w: int) -> np.ndarray:
    """Even-odd fill, a pixel in when its centre (i + .5, j + .5) is inside: how a canvas fills."""
    cy, cx = np.mgrid[:h, :w] + 0.5
    out = np.zeros((h, w), dtype=bool)
    for points in polygons:
        pts = np.asarray(points) * [w / 100, h / 100]
        inside = np.zeros((h, w), dtype=bool)
        for (x1, y1), (x2, y2) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
            if y1 != y2:
                crosses = (cy >= min(y1, y2)) & (cy < max(y1, y2))
                inside ^= crosses & (cx < x1 + (cy - y1) * (x2 - x1) / (y2 - y1))
        out |= inside
    return out


def rasterise_pil(polygons: list, h: int, w: int) -> np.ndarray:
    """Second opinion: PIL, whose integer coordinates are pixel centres (edges included)."""
    image = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(image)
    for points in polygons:
        draw.polygon([(x * w / 100 - 0.5, y * h / 100 - 0.5) for x, y in points], fill=1)
    return np.asarray(image) > 0


def filled(mask: np.ndarray) -> np.ndarray:
    """The mask with holes filled (LS polygons cannot hold holes)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(out, contours, -1, 1, thickness=-1)
    return out > 0


def ellipse(h: int, w: int, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w] + 0.5
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1


def blobs(h: int, w: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).random((h, w)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 8) > 0.5


CASES = [
    ("ellipse", ellipse(300, 400, 200, 150, 150, 80)),
    ("tilted", ellipse(240, 320, 150, 110, 90, 30, 0.6)),
    ("small", ellipse(100, 100, 50, 50, 9, 6)),
    ("wide-image", ellipse(100, 1000, 500, 50, 400, 30)),
    ("blobs", filled(blobs(300, 400, 1))),
    ("blobs2", filled(blobs(200, 200, 7))),
    ("diagonal-band", np.abs(np.subtract.outer(np.arange(200), np.arange(200))) <= 1),
    ("one-pixel-line", np.pad(np.ones((1, 100), bool), ((20, 20), (5, 5)))),
]


@pytest.mark.parametrize("name,mask", CASES, ids=[c[0] for c in CASES])
def test_rasterised_back_matches_mask(name: str, mask: np.ndarray) -> None:
    h, w = mask.shape
    polygons = mask_to_polygons(mask, tolerance_px=1.0, min_area_px=16)
    assert polygons
    assert iou(rasterise(polygons, h, w), mask) >= 0.95


LARGE = [c for c in CASES if c[0] in ("ellipse", "tilted", "wide-image", "blobs")]


@pytest.mark.parametrize("name,mask", LARGE, ids=[c[0] for c in LARGE])
def test_pil_agrees_on_large_shapes(name: str, mask: np.ndarray) -> None:
    """PIL also fills pixels whose centre lies on the outline, so only large shapes compare."""
    h, w = mask.shape
    assert iou(rasterise_pil(mask_to_polygons(mask), h, w), mask) >= 0.95


def test_square_is_exact() -> None:
    mask = np.zeros((50, 60), dtype=bool)
    mask[10:20, 5:15] = True
    before = mask.copy()
    (polygon,) = mask_to_polygons(mask)
    assert np.array_equal(mask, before)  # OpenCV works on a view of a bool mask
    pixels = np.asarray(polygon) * [60 / 100, 50 / 100]
    assert sorted(map(tuple, np.round(pixels, 9))) == [(5, 10), (5, 20), (15, 10), (15, 20)]
    assert np.array_equal(rasterise([polygon], 50, 60), mask)


def test_each_component_is_its_own_polygon_and_small_ones_drop() -> None:
    h, w = 200, 300
    big = [ellipse(h, w, 60, 60, 40, 30), ellipse(h, w, 200, 70, 50, 25), ellipse(h, w, 150, 160, 30, 30)]
    tiny = ellipse(h, w, 280, 180, 1.5, 1.5)  # ~7 px, under min_area_px
    mask = big[0] | big[1] | big[2] | tiny
    polygons = mask_to_polygons(mask, min_area_px=16)
    assert len(polygons) == 3
    raster = [rasterise([p], h, w) for p in polygons]
    for component in big:
        assert max(iou(r, component) for r in raster) >= 0.95
    assert len(mask_to_polygons(mask, min_area_px=0)) == 4


def test_holes_are_filled() -> None:
    ring = ellipse(200, 200, 100, 100, 80, 80) & ~ellipse(200, 200, 100, 100, 40, 40)
    island = ellipse(200, 200, 100, 100, 10, 10)
    polygons = mask_to_polygons(ring | island)
    assert len(polygons) == 1
    assert iou(rasterise(polygons, 200, 200), ellipse(200, 200, 100, 100, 80, 80)) >= 0.95


def test_points_in_percent_within_image() -> None:
    mask = np.ones((30, 40), dtype=bool)
    (polygon,) = mask_to_polygons(mask)
    points = np.asarray(polygon)
    assert points.min() == 0 and points.max() == 100
    assert sorted(map(tuple, points)) == [(0, 0), (0, 100), (100, 0), (100, 100)]


def test_tolerance_trades_points_for_accuracy() -> None:
    mask = ellipse(300, 400, 200, 150, 150, 80)
    fine, coarse = mask_to_polygons(mask, tolerance_px=0.5), mask_to_polygons(mask, tolerance_px=3.0)
    assert len(coarse[0]) < len(fine[0])
    assert iou(rasterise(fine, 300, 400), mask) > iou(rasterise(coarse, 300, 400), mask) >= 0.95


def test_empty_mask_gives_no_polygons() -> None:
    assert mask_to_polygons(np.zeros((10, 10), dtype=bool)) == []
    assert mask_to_polygons(np.zeros((0, 10), dtype=bool)) == []
