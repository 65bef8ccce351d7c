"""Automatic mask generation (the reference AMG, plus a fast mode that decides at low resolution)."""

from .generator import AutomaticMaskGenerator, MaskSet

__all__ = ["AutomaticMaskGenerator", "MaskSet"]
