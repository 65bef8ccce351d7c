"""Fixtures: the official implementation (test-only oracle) with fully random weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from segment_anything.build_sam import _build_sam

from sam_model.build import ENCODER_CONFIGS
from sam_model.checkpoint import load_sam


def official_sam(model_type: str, seed: int = 0) -> torch.nn.Module:
    """The reference Sam of `model_type` with every parameter random.

    The official init leaves rel-pos tables and pos_embed at zero and LayerNorms at identity;
    randomising all of them makes the parity tests exercise those paths.
    """
    cfg = ENCODER_CONFIGS[model_type]
    torch.manual_seed(seed)
    ref = _build_sam(
        encoder_embed_dim=cfg.embed_dim,
        encoder_depth=cfg.depth,
        encoder_num_heads=cfg.num_heads,
        encoder_global_attn_indexes=list(cfg.global_attn_indexes),
    )
    with torch.no_grad():
        for module in ref.modules():
            for name, p in module.named_parameters(recurse=False):
                is_norm_scale = name == "weight" and "LayerNorm" in type(module).__name__
                # Norm scales near 1 keep activations O(1), so tolerances mean something.
                p.copy_(1 + 0.1 * torch.randn_like(p)) if is_norm_scale else p.normal_(0, 0.05)
    return ref.eval()


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, torch.nn.Module, Path]:
    """(official tiny model, ours loaded from its saved state_dict, the .pth path)."""
    ref = official_sam("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny_random.pth"
    torch.save(ref.state_dict(), path)
    ours = load_sam("tiny", str(path), device="cpu")
    return ref, ours, path
