"""HQ-SAM as a `Family`: how the shared loader builds, recognises and serves its files.

Official files (huggingface.co/lkeab/hq-sam: sam_hq_vit_b.pth, sam_hq_vit_l.pth,
sam_hq_vit_h.pth, and Light HQ-SAM's sam_hq_vit_tiny.pth) are bare state_dicts of a SAM v1
(or MobileSAM) model plus the HQ decoder's parameters; `mask_decoder.hf_token.weight` (the
HQ output token) is what tells them from SAM v1 and MobileSAM files.
"""

from __future__ import annotations

from torch import nn

from sam_model.common.decoding import Predictor
from sam_model.common.family import Family, State
from sam_model.mobile_sam.family import identify as mobile_sam_identify
from sam_model.sam1.build import ENCODER_CONFIGS
from sam_model.sam1.family import finish
from sam_model.sam_hq.model import ENCODER_OF, LIGHT, SamHq, build_sam_hq
from sam_model.sam_hq.predictor import SamHqPredictor

HQ_KEY = "mask_decoder.hf_token.weight"
_BLOCKS = "image_encoder.blocks."
_POS = "image_encoder.pos_embed"


def identify(state: State) -> str | None:
    """The SAM-HQ type of a state_dict, by its encoder: a ViT's width and depth, or MobileSAM's
    TinyViT (Light HQ-SAM); None if not SAM-HQ."""
    if HQ_KEY not in state:
        return None
    if _POS not in state:
        # Light HQ-SAM is MobileSAM's layout plus the HQ decoder: ask MobileSAM without the HQ key.
        encoder_only = {k: v for k, v in state.items() if k != HQ_KEY}
        return LIGHT if mobile_sam_identify(encoder_only) is not None else None
    width = state[_POS].shape[-1]
    depth = len({k[len(_BLOCKS) :].split(".")[0] for k in state if k.startswith(_BLOCKS)})
    return next(
        (
            hq
            for hq, v1 in ENCODER_OF.items()
            if ENCODER_CONFIGS[v1].embed_dim == width and ENCODER_CONFIGS[v1].depth == depth
        ),
        None,
    )


def predictor(model: nn.Module, model_id: str, precision: str, compile: bool) -> Predictor:
    assert isinstance(model, SamHq)
    return SamHqPredictor(model, model_id, precision=precision, compile=compile)


FAMILY = Family(
    name="sam_hq",
    label="SAM-HQ",
    model_types=("sam_hq_vit_b", "sam_hq_vit_l", "sam_hq_vit_h", LIGHT),
    test_types=("sam_hq_tiny",),
    build=build_sam_hq,
    identify=identify,
    predictor=predictor,
    finish=finish,
)
