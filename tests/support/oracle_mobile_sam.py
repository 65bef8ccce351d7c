"""The official MobileSAM (test-only oracle) with every weight random, and its predictor and
automatic mask generator (imported here, where the import's warnings are silenced).

MobileSAM has no official PyPI package; `mobilesam-mirror==1.0.0` packages the upstream
`mobile_sam/` directory (github.com/ChaoningZhang/MobileSAM) byte for byte (every .py
diffed against the repository). Shared by tests/sam_model/test_mobile_sam.py and
bench/bench_mobile_sam.py: both compare ours with the reference on exactly these weights.
Official init leaves attention biases at zero, norms at identity and BatchNorm statistics at
(0, 1); randomising all of them makes parity exercise those paths. Import after
tests/oracle_stubs is on sys.path (tests/conftest.py and bench/ scripts do that).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from tests.support.oracle import randomize

with warnings.catch_warnings():
    # timm's deprecated import path and MobileSAM re-registering timm's TinyViT names.
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", UserWarning)
    from mobile_sam import SamAutomaticMaskGenerator, SamPredictor
    from mobile_sam.build_sam import build_sam_vit_t

__all__ = ["SamAutomaticMaskGenerator", "SamPredictor", "official_mobile_sam", "save_official"]


def official_mobile_sam(seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """The reference Sam as `build_sam_vit_t` makes it, every parameter and BN statistic random."""
    torch.manual_seed(seed)
    return randomize(build_sam_vit_t(), std)


def save_official(ref: torch.nn.Module, path: Path) -> Path:
    """Write `ref` the way `mobile_sam.pt` is laid out: a bare state_dict."""
    torch.save(ref.state_dict(), path)
    return path
