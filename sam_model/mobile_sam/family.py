"""MobileSAM (Zhang et al., 2023): SAM v1 with a TinyViT-5M encoder, the official `mobile_sam.pt`.

Its prompt encoder, mask decoder and 256x64x64 embedding are SAM v1's, so SAM v1's predictor,
loading steps and automatic mask generator serve it unchanged.
"""

from __future__ import annotations

from sam_model.common.family import Family, State
from sam_model.mobile_sam.build import MODEL_TYPE, build_mobile_sam
from sam_model.mobile_sam.tiny_vit import TINY_VIT_5M
from sam_model.sam1.family import finish, predictor

_ENCODER = "image_encoder."
# SAM-HQ's light model also pairs TinyViT-5M with SAM v1's decoder, plus its HQ token.
_HQ_TOKEN = "mask_decoder.hf_token.weight"


def _stage_shape(state: State, stage: int) -> tuple[int, int] | None:
    """(width, block count) of one TinyViT stage in `state`, None without its first block."""
    prefix = f"{_ENCODER}layers.{stage}.blocks."
    first = state.get(f"{prefix}0.conv1.c.weight" if stage == 0 else f"{prefix}0.attn.proj.weight")
    if first is None or first.ndim < 2:
        return None
    width = first.shape[1] if stage == 0 else first.shape[0]
    depth = len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})
    return width, depth


def identify(state: State) -> str | None:
    """MODEL_TYPE for a state_dict with TinyViT-5M's stages and no SAM-HQ token, else None."""
    if _HQ_TOKEN in state:
        return None
    stages = [_stage_shape(state, i) for i in range(len(TINY_VIT_5M.depths))]
    expected = list(zip(TINY_VIT_5M.embed_dims, TINY_VIT_5M.depths, strict=True))
    return MODEL_TYPE if stages == expected else None


FAMILY = Family(
    name="mobile_sam",
    label="MobileSAM",
    model_types=(MODEL_TYPE,),
    build=build_mobile_sam,
    identify=identify,
    predictor=predictor,
    finish=finish,
)
