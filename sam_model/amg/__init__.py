"""Automatic mask generation (the reference AMG, plus a fast mode that decides at low resolution)."""

from sam_model.amg.generator import AutomaticMaskGenerator, MaskSet

__all__ = ["AutomaticMaskGenerator", "MaskSet"]
