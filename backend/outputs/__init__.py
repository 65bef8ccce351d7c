"""Masks -> Label Studio results: brush RLE, polygons, rectangles."""

from backend.outputs.polygons import Polygon, mask_to_polygons
from backend.outputs.regions import (
    OUTPUT_TAGS,
    OUTPUT_TYPES,
    REGION_TYPES,
    OutputType,
    box_region,
    brush_region,
    mask_to_regions,
    polygon_regions,
    rectangle_region,
    region_id,
)
from backend.outputs.rle import decode_values, encode_values, mask_to_rle, rle_to_mask

__all__ = [
    "OUTPUT_TAGS",
    "OUTPUT_TYPES",
    "REGION_TYPES",
    "OutputType",
    "Polygon",
    "box_region",
    "brush_region",
    "decode_values",
    "encode_values",
    "mask_to_polygons",
    "mask_to_regions",
    "mask_to_rle",
    "polygon_regions",
    "rectangle_region",
    "region_id",
    "rle_to_mask",
]
