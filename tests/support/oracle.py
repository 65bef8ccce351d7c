"""The official implementation (segment-anything 1.0, test-only) with every weight random.

Shared by the parity tests and the benchmarks: both compare ours with the reference on
exactly these weights. The official init leaves rel-pos tables and pos_embed at zero and
LayerNorms at identity; randomising all of them makes parity exercise those paths.
`randomize` does it for every family's oracle. Import
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
    return randomize(ref, std)


def randomize(model: torch.nn.Module, std: float) -> torch.nn.Module:
    """Every parameter of an official model random, in place, and the model in eval mode.

    Norm scales (LayerNorm, BatchNorm: "Norm" in the class name) near 1 keep activations
    O(1); BatchNorm running statistics are random too. eval() comes last: TinyViT's attention
    caches its bias table from the weights when it leaves training mode.
    """
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if name == "weight" and "Norm" in type(module).__name__:
                    p.copy_(1 + 0.1 * torch.randn_like(p))
                else:
                    p.normal_(0, std)
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, std)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()
