"""SAM v1 (Meta, 2023): ViT-B/L/H encoders, the official `sam_vit_*.pth` files."""

from __future__ import annotations

from torch import nn

from sam_model.common.decoding import Predictor
from sam_model.common.family import Family, State
from sam_model.sam1.build import ENCODER_CONFIGS, build_sam
from sam_model.sam1.predictor import SamPredictor
from sam_model.sam1.sam import Sam


def identify(state: State) -> str | None:
    """The v1 model type whose encoder width and depth this state_dict has, if any."""
    pos = state.get("image_encoder.pos_embed")
    if pos is None:
        return None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    return next(
        (name for name, c in ENCODER_CONFIGS.items() if c.embed_dim == pos.shape[-1] and c.depth == depth), None
    )


def finish(model: nn.Module) -> None:
    """Pixel statistics are not in the files: make them real after a meta-device build."""
    assert isinstance(model, Sam)
    model.reset_pixel_stats("cpu")


def predictor(model: nn.Module, model_id: str, precision: str, compile: bool) -> Predictor:
    return SamPredictor(model, model_id, precision=precision, compile=compile)


FAMILY = Family(
    name="sam1",
    label="SAM v1",
    model_types=("vit_b", "vit_l", "vit_h"),
    test_types=("tiny",),
    build=build_sam,
    identify=identify,
    predictor=predictor,
    finish=finish,
)
