"""Reading checkpoint files safely, for every family: tensors only, memory-mapped, strictly matched.

`sam_model.loading.load_sam` drives these steps; a family only says how to build its
network, which keys of a file belong to the image path, and how to recognise its files.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping

import torch
from torch import nn

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


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: a bare state_dict (SAM v1, MobileSAM, SAM-HQ) or
    `{"model": state_dict}` (SAM 2). torch.load with weights_only (no arbitrary pickles) and
    mmap (weights stay file-backed until used)."""
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # Pre-zipfile (legacy) serialisation cannot be memory-mapped; read it normally.
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load, it holds Python objects other than tensors (weights_only): {e}"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
    state = data.get("model", data) if isinstance(data, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict of tensors, got {type(data).__name__}")
    return dict(state)


def check_compatible(
    path: str,
    model_type: str,
    expected: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    hint: str = "",
) -> None:
    """Raise one readable error listing missing/unexpected keys and shape mismatches, then `hint`."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs {model_type} {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or mismatched):
        return
    details = "; ".join(
        f"{label} ({len(items)}): {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if items
    )
    raise CheckpointError(f"{path} does not match model type {model_type!r}: {details}.{hint}")


def adopt_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load `state` into a meta-device `model` by adopting its tensors, kept fp32 (casting
    copies only non-fp32 tensors, so an fp32 file stays memory-mapped)."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
