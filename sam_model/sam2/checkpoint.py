"""Load an official SAM 2.0 / 2.1 checkpoint (`{"model": state_dict}` of the whole SAM2Base).

Only the image path is kept. Video-only modules are dropped by an explicit list, and every
other key must match the model exactly (names and shapes), so a file of another size,
release or family is refused with an error that says what the file is.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

import torch

from ..checkpoint import CheckpointError, check_compatible, guess_model_type, resolve_device
from .config import SAM2_CONFIGS, TRUNKS
from .model import Sam2, build_sam2

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


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The state_dict in a SAM 2 file (`{"model": ...}`, or a bare state_dict), tensors only."""
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load, it holds Python objects other than tensors: {e}") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
    state = data.get("model", data) if isinstance(data, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected {{'model': state_dict}} of tensors, got {type(data).__name__}")
    return dict(state)


def identify(state: Mapping[str, torch.Tensor]) -> str | None:
    """The model type (SAM_MODEL value) whose checkpoint this is: SAM 2.x or SAM v1, else None."""
    if _PATCH not in state:
        return guess_model_type(state)
    depth = len({k[len(_TRUNK_BLOCKS) :].split(".")[0] for k in state if k.startswith(_TRUNK_BLOCKS)})
    width = state[_PATCH].shape[0]
    size = next((s for s, t in TRUNKS.items() if t.embed_dim == width and sum(t.stages) == depth), None)
    if size is None:
        return None
    prefix = "sam2.1" if any(_under(k, V21_ONLY) for k in state) else "sam2"
    return f"{prefix}_hiera_{size}"


def load_sam2(model_type: str, checkpoint_path: str | os.PathLike[str], device: str = "auto") -> Sam2:
    """Build `model_type` on the meta device and adopt the file's image-path tensors, strictly.

    Returns the model in eval mode with gradients off, fp32, on the resolved device.
    """
    checkpoint_path = os.fspath(checkpoint_path)
    target = resolve_device(device)
    with torch.device("meta"):
        model = build_sam2(model_type)
    if not os.path.isfile(checkpoint_path):
        raise CheckpointError(
            f"checkpoint not found: {checkpoint_path}; download it from {SAM2_CONFIGS[model_type].url}"
        )
    state = read_checkpoint(checkpoint_path)
    found = identify(state)
    if found is None:
        raise CheckpointError(f"{checkpoint_path} is not a recognised SAM 2 checkpoint, so it cannot be {model_type}")
    if found != model_type:
        raise CheckpointError(
            f"{checkpoint_path} is a {found} checkpoint, not {model_type}; set SAM_MODEL={found} to use it"
        )
    image_state = {k: v for k, v in state.items() if not _under(k, VIDEO_ONLY)}
    check_compatible(checkpoint_path, model_type, model.state_dict(), image_state)
    image_state = {k: v.float() if v.is_floating_point() else v for k, v in image_state.items()}
    model.load_state_dict(image_state, strict=True, assign=True)
    return model.to(target).eval().requires_grad_(False)
