"""The official HQ-SAM (PyPI `segment-anything-hq==0.3`, test-only) with every weight random.

Shared by the SAM-HQ parity tests and bench/bench_sam_hq.py: both compare ours with the
reference on exactly these weights. Official init leaves rel-pos tables, pos_embed and the
HQ token at zero and norms at identity; randomising all of them makes parity exercise
those paths. Import after tests/oracle_stubs is on sys.path (tests/conftest.py and bench/ do).
The package imports its TinyViT (Light HQ-SAM) at import time, and with it `timm` (a
test-only dependency, installed --no-deps like the oracles).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from sam_model.sam1.build import ENCODER_CONFIGS
from sam_model.sam_hq import ENCODER_OF, LIGHT
from tests.support.oracle import randomize

# Real timm warns that the package imports its deprecated paths and re-registers timm's own
# TinyViT names; neither matters to the oracle.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    warnings.filterwarnings("ignore", message="Overwriting tiny_vit", category=UserWarning)
    from segment_anything_hq.automatic_mask_generator import SamAutomaticMaskGenerator as OfficialHqGenerator
    from segment_anything_hq.build_sam import _build_sam, build_sam_vit_t
    from segment_anything_hq.predictor import SamPredictor as OfficialHqPredictor

__all__ = ["OfficialHqGenerator", "OfficialHqPredictor", "official_build", "official_sam_hq", "save_official"]


def official_build(model_type: str) -> nn.Module:
    """The reference HQ Sam at our `model_type` config, with the official init."""
    if model_type == LIGHT:
        return build_sam_vit_t()
    cfg = ENCODER_CONFIGS[ENCODER_OF[model_type]]
    return _build_sam(
        encoder_embed_dim=cfg.embed_dim,
        encoder_depth=cfg.depth,
        encoder_num_heads=cfg.num_heads,
        encoder_global_attn_indexes=list(cfg.global_attn_indexes),
    )


def official_sam_hq(model_type: str, seed: int = 0, std: float = 0.05) -> nn.Module:
    """`official_build` with every parameter random; norm scales near 1 keep activations O(1)
    (BatchNorm weights included: "Norm" in the class name).

    Seeded before building: the prompt encoder's Gaussian matrix is a buffer drawn at init."""
    torch.manual_seed(seed)
    return randomize(official_build(model_type), std)


def save_official(ref: nn.Module, path: Path) -> Path:
    """Write `ref` the way the HQ-SAM files are laid out: a bare state_dict."""
    torch.save(ref.state_dict(), path)
    return path
