"""Masks -> Label Studio result dicts (brushlabels, polygonlabels, rectanglelabels).

Field sets follow what LS 1.23 stores (see tests/fixtures/ls-samples/stored_prediction_task.json):
``id, type, from_name, to_name, original_width, original_height, image_rotation, value``,
plus ``score`` (LS shows a per-region score) and ``readonly: false`` so the annotator can
edit the region. Brush masks must be at the original image size (the RLE has no size of
its own); polygons and rectangles are in percent, so any mask resolution works for them.
"""

from __future__ import annotations

import secrets
from typing import Literal, get_args

import numpy as np

from backend.outputs.polygons import mask_to_polygons
from backend.outputs.rle import mask_to_rle

# The one list of output types, in the interactive path's order of preference (brush is
# exactly what SAM produces, then polygons, rectangles last); everything else derives from it.
OutputType = Literal["brush", "polygon", "rectangle"]
OUTPUT_TYPES: tuple[OutputType, ...] = get_args(OutputType)
# Each type's LS control tag; its lower-cased name is also the region's "type" and value key.
OUTPUT_TAGS: dict[str, str] = {kind: f"{kind.capitalize()}Labels" for kind in OUTPUT_TYPES}
REGION_TYPES: dict[str, str] = {kind: tag.lower() for kind, tag in OUTPUT_TAGS.items()}


def region_id() -> str:
    """A 10-character random id, the shape LS gives its own regions (e.g. "83d3d90936")."""
    return secrets.token_hex(5)


def brush_region(
    mask: np.ndarray,
    *,
    from_name: str,
    to_name: str,
    label: str,
    score: float,
    original_width: int,
    original_height: int,
    image_rotation: float = 0,
    region_id: str | None = None,
) -> dict:
    """A brushlabels region whose RLE is the mask (bool/uint8, shape (original_height, original_width))."""
    if mask.shape != (original_height, original_width):
        raise ValueError(
            f"brush mask shape {mask.shape} is not the original image size "
            f"({original_height}, {original_width}); LS would draw it garbled"
        )
    value = {"format": "rle", "rle": mask_to_rle(mask), REGION_TYPES["brush"]: [label]}
    return _region(
        REGION_TYPES["brush"],
        value,
        from_name,
        to_name,
        score,
        original_width,
        original_height,
        image_rotation,
        region_id,
    )


def polygon_regions(
    mask: np.ndarray,
    *,
    from_name: str,
    to_name: str,
    label: str,
    score: float,
    original_width: int,
    original_height: int,
    image_rotation: float = 0,
    tolerance_px: float = 1.0,
    min_area_px: float = 16,
) -> list[dict]:
    """One polygonlabels region per connected component (holes filled; see polygons.py)."""
    return [
        _region(
            REGION_TYPES["polygon"],
            {"points": points, "closed": True, REGION_TYPES["polygon"]: [label]},
            from_name,
            to_name,
            score,
            original_width,
            original_height,
            image_rotation,
            None,
        )
        for points in mask_to_polygons(mask, tolerance_px=tolerance_px, min_area_px=min_area_px)
    ]


def rectangle_region(
    mask: np.ndarray,
    *,
    from_name: str,
    to_name: str,
    label: str,
    score: float,
    original_width: int,
    original_height: int,
    image_rotation: float = 0,
    region_id: str | None = None,
) -> dict | None:
    """A rectanglelabels region around every pixel of the mask (outer pixel edges); None if empty."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    cols = np.flatnonzero(np.any(mask, axis=0))
    if rows.size == 0:
        return None
    height, width = mask.shape
    box = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
    return box_region(
        box,
        from_name=from_name,
        to_name=to_name,
        label=label,
        score=score,
        original_width=original_width,
        original_height=original_height,
        image_rotation=image_rotation,
        region_id=region_id,
        pixels=(width, height),
    )


def box_region(
    box_xyxy: tuple[float, float, float, float],
    *,
    from_name: str,
    to_name: str,
    label: str,
    score: float,
    original_width: int,
    original_height: int,
    image_rotation: float = 0,
    region_id: str | None = None,
    pixels: tuple[int, int] | None = None,
) -> dict:
    """A rectanglelabels region for a box in pixels of an image of `pixels` (width, height;
    default: the original size), in LS's percent coordinates."""
    width, height = pixels or (original_width, original_height)
    x0, y0, x1, y1 = box_xyxy
    value = {
        "x": x0 * 100.0 / width,
        "y": y0 * 100.0 / height,
        "width": (x1 - x0) * 100.0 / width,
        "height": (y1 - y0) * 100.0 / height,
        "rotation": 0,
        REGION_TYPES["rectangle"]: [label],
    }
    return _region(
        REGION_TYPES["rectangle"],
        value,
        from_name,
        to_name,
        score,
        original_width,
        original_height,
        image_rotation,
        region_id,
    )


def mask_to_regions(
    mask: np.ndarray,
    output_type: OutputType,
    *,
    from_name: str,
    to_name: str,
    label: str,
    score: float,
    original_width: int,
    original_height: int,
    image_rotation: float = 0,
    tolerance_px: float = 1.0,
    min_area_px: float = 16,
) -> list[dict]:
    """The regions of one mask in the requested output type; [] for an empty mask."""
    if not np.any(mask):
        return []
    common = dict(
        from_name=from_name,
        to_name=to_name,
        label=label,
        score=score,
        original_width=original_width,
        original_height=original_height,
        image_rotation=image_rotation,
    )
    if output_type == "brush":
        return [brush_region(mask, **common)]
    if output_type == "polygon":
        return polygon_regions(mask, tolerance_px=tolerance_px, min_area_px=min_area_px, **common)
    if output_type == "rectangle":
        return [rectangle_region(mask, **common)]
    raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")


def _region(
    kind: str,
    value: dict,
    from_name: str,
    to_name: str,
    score: float,
    original_width: int,
    original_height: int,
    image_rotation: float,
    rid: str | None,
) -> dict:
    return {
        "id": rid or region_id(),
        "type": kind,
        "from_name": from_name,
        "to_name": to_name,
        "original_width": int(original_width),
        "original_height": int(original_height),
        "image_rotation": image_rotation,
        "value": value,
        "score": float(score),
        "readonly": False,
    }
