"""Load an official-format SAM checkpoint safely and with about one copy of the weights in memory."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

import torch

from .build import ENCODER_CONFIGS, build_sam
from .quantize import apply_quantization, check_quantize
from .registry import file_md5, official_by_filename
from .sam import Sam

DEVICES = ("auto", "cpu", "cuda", "mps")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, unsafe, corrupt or of another model type."""


def resolve_device(device: str = "auto") -> torch.device:
    """auto -> cuda if available, else mps, else cpu; an explicit accelerator must exist."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    cuda_ok = torch.cuda.is_available()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return torch.device("cuda" if cuda_ok else "mps" if mps_ok else "cpu")
    if device == "cuda" and not cuda_ok:
        raise RuntimeError("device 'cuda' requested but CUDA is not available (CPU-only torch or no GPU visible)")
    if device == "mps" and not mps_ok:
        raise RuntimeError("device 'mps' requested but Apple MPS is not available")
    return torch.device(device)


def verify_official(path: str) -> None:
    """If `path` has an official file name, its size and md5 must be the published ones."""
    official = official_by_filename(os.path.basename(path))
    if official is None:
        return
    size = os.path.getsize(path)
    fix = f"the file is corrupt or partially downloaded; delete it and re-download {official.url}"
    if size != official.size_bytes:
        raise CheckpointError(f"{path}: {size} bytes, expected {official.size_bytes} for {official.filename}; {fix}")
    digest = file_md5(path)
    if digest != official.md5:
        raise CheckpointError(f"{path}: md5 {digest}, expected {official.md5}; {fix}")


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """torch.load with weights_only (no arbitrary pickles) and mmap (weights stay file-backed)."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # Pre-zipfile (legacy) serialisation cannot be memory-mapped; read it normally.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load, it holds Python objects other than tensors (weights_only): {e}"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a plain state_dict of tensors, got {type(state).__name__}")
    return dict(state)


def guess_model_type(state: Mapping[str, torch.Tensor]) -> str | None:
    """The model type whose encoder width and depth this state_dict has, if any."""
    pos = state.get("image_encoder.pos_embed")
    if pos is None:
        return None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    return next(
        (name for name, c in ENCODER_CONFIGS.items() if c.embed_dim == pos.shape[-1] and c.depth == depth), None
    )


def check_compatible(
    path: str, model_type: str, expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> None:
    """Raise one readable error listing missing/unexpected keys and shape mismatches."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs {model_type} {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or mismatched):
        return
    guess = guess_model_type(state)
    hint = f" It looks like a {guess} checkpoint; load it with model_type={guess!r}." if guess else ""
    details = "; ".join(
        f"{label} ({len(items)}): {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if items
    )
    raise CheckpointError(f"{path} does not match model type {model_type!r}: {details}.{hint}")


def load_sam(
    model_type: str,
    checkpoint_path: str | os.PathLike[str],
    device: str = "auto",
    quantize: str = "none",
    verify_md5: bool = True,
) -> Sam:
    """Build `model_type` on the meta device and adopt the checkpoint's (memory-mapped) tensors.

    Returns the model in eval mode with gradients off, on the resolved device. Arguments are
    validated before the (possibly multi-GB) file is hashed or read.
    """
    checkpoint_path = os.fspath(checkpoint_path)
    target = resolve_device(device)
    check_quantize(quantize, target)
    with torch.device("meta"):
        sam = build_sam(model_type)
    if not os.path.isfile(checkpoint_path):
        official = official_by_filename(os.path.basename(checkpoint_path))
        hint = f"; download it from {official.url}" if official else ""
        raise CheckpointError(f"checkpoint not found: {checkpoint_path}{hint}")
    if verify_md5:
        verify_official(checkpoint_path)
    state = read_state_dict(checkpoint_path)
    check_compatible(checkpoint_path, model_type, sam.state_dict(), state)
    # assign=True adopts the file's dtype; keep the model fp32 (casting copies only non-fp32 tensors).
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    sam.load_state_dict(state, strict=True, assign=True)
    sam.reset_pixel_stats("cpu")
    sam = sam.to(target).eval().requires_grad_(False)
    apply_quantization(sam, quantize, target)
    return sam
