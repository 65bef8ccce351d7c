"""Where AMG prompts and crops go: normalized point grids and crop boxes per crop layer."""

from __future__ import annotations

import math
from itertools import product

import numpy as np


def point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) xy points in [0, 1], each at the centre of its cell, row by row (y outer)."""
    centres = (np.arange(n_per_side, dtype=np.float64) + 0.5) / n_per_side
    xs, ys = np.meshgrid(centres, centres, indexing="xy")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per layer (0 = full image); layer i has n_per_side // downscale**i points a side."""
    return [point_grid(int(n_per_side / downscale**i)) for i in range(n_layers + 1)]


def _crop_length(full: int, n_crops: int, overlap: int) -> int:
    return math.ceil((overlap * (n_crops - 1) + full) / n_crops)


def crop_boxes(image_hw: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (xyxy, ints) and their layer index: the full image, then 2^i x 2^i crops per layer i.

    Neighbouring crops overlap by `overlap_ratio` of the short side (halved each layer) so an
    object cut by one crop edge is whole in a neighbour; order is column-major (x outer), as
    the reference's, which matters because crop NMS breaks ties by order.
    """
    h, w = image_hw
    boxes, layers = [[0, 0, w, h]], [0]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * min(h, w) * 2 / n)
        cw, ch = _crop_length(w, n, overlap), _crop_length(h, n, overlap)
        xs = [int((cw - overlap) * i) for i in range(n)]
        ys = [int((ch - overlap) * i) for i in range(n)]
        for x0, y0 in product(xs, ys):
            boxes.append([x0, y0, min(x0 + cw, w), min(y0 + ch, h)])
            layers.append(layer)
    return boxes, layers
