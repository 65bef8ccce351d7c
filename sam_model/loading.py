"""`load_sam`: any family's official checkpoint file -> its network, checked, on a device.

One path for every family: the file is checked against the registry, read as tensors only,
identified from its keys (so a file of another family, size or release is refused with an
error that names what it is), and adopted by a network built on the meta device, strictly,
with about one copy of the weights in memory.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from sam_model.common.checkpoint import CheckpointError, adopt_state, check_compatible, read_state_dict, resolve_device
from sam_model.common.quantize import apply_quantization, check_quantize
from sam_model.families import family_of, identify, known_families
from sam_model.registry import (
    OFFICIAL_CHECKPOINTS,
    OfficialCheckpoint,
    file_digest,
    official_by_filename,
    recorded_sha256,
)


def verify_official(path: str) -> None:
    """A file with an official name must have that file's size and digest (published or recorded)."""
    official = official_by_filename(os.path.basename(path))
    if official is None:
        return
    size = os.path.getsize(path)
    fix = f"the file is corrupt or partially downloaded; delete it and re-download {official.url}"
    if official.size_bytes is not None and size != official.size_bytes:
        raise CheckpointError(f"{path}: {size} bytes, expected {official.size_bytes} for {official.filename}; {fix}")
    for algorithm, expected in _expected_digests(official, path):
        digest = file_digest(path, algorithm)
        if digest != expected:
            raise CheckpointError(f"{path}: {algorithm} {digest}, expected {expected}; {fix}")


def _expected_digests(official: OfficialCheckpoint, path: str) -> list[tuple[str, str]]:
    if official.md5:
        return [("md5", official.md5)]
    sha256 = official.sha256 or recorded_sha256(path)
    return [("sha256", sha256)] if sha256 else []


def load_sam(
    model_type: str,
    checkpoint_path: str | os.PathLike[str],
    device: str = "auto",
    quantize: str = "none",
    verify_digest: bool = True,
) -> nn.Module:
    """Build `model_type` on the meta device and adopt the checkpoint's (memory-mapped) tensors.

    Returns the model in eval mode with gradients off, fp32, on the resolved device.
    Arguments are validated before the (possibly multi-GB) file is hashed or read.
    """
    checkpoint_path = os.fspath(checkpoint_path)
    family = family_of(model_type)
    target = resolve_device(device)
    check_quantize(quantize, target)
    with torch.device("meta"):
        model = family.build(model_type)
    if not os.path.isfile(checkpoint_path):
        official = official_by_filename(os.path.basename(checkpoint_path)) or OFFICIAL_CHECKPOINTS.get(model_type)
        hint = f"; the official {official.model_type} file is {official.url}" if official else ""
        raise CheckpointError(f"checkpoint not found: {checkpoint_path}{hint}")
    if verify_digest:
        verify_official(checkpoint_path)
    state = read_state_dict(checkpoint_path)
    found = identify(state)
    if found is not None and found != model_type:
        raise CheckpointError(
            f"{checkpoint_path} is a {found} checkpoint ({family_of(found).label}), not {model_type}; "
            f"set SAM_MODEL={found} to use it"
        )
    image_state = family.image_state(state)
    unknown = "" if found else f" It is not a checkpoint of any family sam_model serves ({known_families()})."
    check_compatible(checkpoint_path, model_type, model.state_dict(), image_state, unknown)
    adopt_state(model, image_state)
    family.finish(model)
    model = model.to(target).eval().requires_grad_(False)
    apply_quantization(model, quantize, target)
    return model
