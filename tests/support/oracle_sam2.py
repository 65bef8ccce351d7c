"""The official SAM 2 (PyPI `sam2==1.1.0`, test-only) with every weight random.

Shared by the SAM 2 parity tests and bench/bench_sam2.py: both compare ours with the
reference on exactly these weights. Official init leaves position embeddings and several
tokens at zero and norms at identity; randomising all of them makes parity exercise those
paths. Import after tests/oracle_stubs is on sys.path (tests/conftest.py and bench/ do).
"""

from __future__ import annotations

from pathlib import Path

import torch
from sam2.build_sam import build_sam2

from sam_model.sam2 import SAM2_CONFIGS
from tests.support.oracle import randomize

_YAML_SIZES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


def official_config(model_type: str) -> str:
    """The official Hydra config for one of our SAM 2 model types."""
    cfg = SAM2_CONFIGS[model_type]
    release = "sam2.1" if cfg.version == "2.1" else "sam2"
    return f"configs/{release}/{release}_hiera_{_YAML_SIZES[cfg.size]}.yaml"


def official_sam2(model_type: str, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """SAM2Base as `build_sam2` makes it (post-processing on), every parameter random."""
    ref = build_sam2(official_config(model_type), ckpt_path=None, device="cpu")
    torch.manual_seed(seed)
    return randomize(ref, std)


def save_official(ref: torch.nn.Module, path: Path) -> Path:
    """Write `ref` the way Meta's files are laid out: {"model": state_dict}."""
    torch.save({"model": ref.state_dict()}, path)
    return path
