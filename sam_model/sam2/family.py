"""SAM 2.0 and 2.1 (Meta, 2024): Hiera encoders, the official `sam2*_hiera_*.pt` files.

The files hold the whole SAM2Base, video modules included; only the image path is kept.
Video-only modules are dropped by an explicit list and every other key must match exactly,
so a file of another size or release is refused with an error that says what it is.
"""

from __future__ import annotations

import torch
from torch import nn

from sam_model.common.decoding import Predictor
from sam_model.common.family import Family, State
from sam_model.sam2.config import SAM2_MODEL_TYPES, TRUNKS
from sam_model.sam2.model import Sam2, build_sam2
from sam_model.sam2.predictor import Sam2Predictor

# SAM2Base parameters the image predictor never uses: memory attention and encoder, object
# pointers, temporal encodings, and the object-score head (SAM2ImagePredictor discards it).
VIDEO_ONLY = (
    "memory_attention",
    "memory_encoder",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "no_obj_embed_spatial",
    "mask_downsample",
    "obj_ptr_proj",
    "obj_ptr_tpos_proj",
    "sam_mask_decoder.pred_obj_score_head",
)
# Present only in 2.1 files (its video path added them).
V21_ONLY = ("no_obj_embed_spatial", "obj_ptr_tpos_proj")
_TRUNK_BLOCKS = "image_encoder.trunk.blocks."
_PATCH = "image_encoder.trunk.patch_embed.proj.weight"


def _under(key: str, names: tuple[str, ...]) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)


def identify(state: State) -> str | None:
    """The SAM 2.x model type of this state_dict (size from the trunk, release from 2.1-only keys)."""
    if _PATCH not in state:
        return None
    depth = len({k[len(_TRUNK_BLOCKS) :].split(".")[0] for k in state if k.startswith(_TRUNK_BLOCKS)})
    width = state[_PATCH].shape[0]
    size = next((s for s, t in TRUNKS.items() if t.embed_dim == width and sum(t.stages) == depth), None)
    if size is None:
        return None
    prefix = "sam2.1" if any(_under(k, V21_ONLY) for k in state) else "sam2"
    return f"{prefix}_hiera_{size}"


def image_state(state: State) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not _under(k, VIDEO_ONLY)}


def predictor(model: nn.Module, model_id: str, precision: str, compile: bool) -> Predictor:
    assert isinstance(model, Sam2)
    return Sam2Predictor(model, model_id, precision=precision, compile=compile)


FAMILY = Family(
    name="sam2",
    label="SAM 2",
    model_types=SAM2_MODEL_TYPES,
    build=build_sam2,
    identify=identify,
    predictor=predictor,
    image_state=image_state,
    # SAM2AutomaticMaskGenerator's defaults where they differ from SAM v1's generator.
    amg_defaults={"pred_iou_thresh": 0.8, "stability_score_thresh": 0.95},
)
