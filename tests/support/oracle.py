"""The official implementation (segment-anything 1.0, test-only) with every weight random.

Shared by the parity tests and the benchmarks: both compare ours with the reference on
exactly these weights. The official init leaves rel-pos tables and pos_embed at zero and
LayerNorms at identity; randomising all of them makes parity exercise those paths. Import
after tests/oracle_stubs is on sys.path (tests/conftest.py and bench/ scripts do that).
"""

from __future__ import annotations

import torch
from segment_anything.build_sam import _build_sam

from sam_model.sam1.build import ENCODER_CONFIGS


def official_sam(model_type: str, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """The reference Sam at our `model_type` config; norm scales near 1 keep activations O(1)."""
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
                if name == "weight" and "LayerNorm" in type(module).__name__:
                    p.copy_(1 + 0.1 * torch.randn_like(p))
                else:
                    p.normal_(0, std)
    return ref.eval()
