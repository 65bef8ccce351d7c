"""Masks -> Label Studio results: brush RLE, polygons, rectangles."""
