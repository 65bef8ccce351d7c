"""Opt-in int8 dynamic quantization of the image encoder's Linear layers (CPU only).

Weights are stored int8 per-channel; activations are quantized per call. The encoder's
matmuls (qkv, proj, MLP) are ~75% of its FLOPs, so they are what is worth quantizing;
the convolutions, attention and the small decoder stay fp32.

torch.ao.quantization.quantize_dynamic is deprecated upstream in favour of torchao, but in
torch 2.13 it is still the path with fast x86 (fbgemm/onednn) int8 kernels and no extra
dependency; its deprecation warnings are silenced here, once, on purpose.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

QUANTIZE_MODES = ("none", "int8")


def quantize_encoder_int8(encoder: nn.Module) -> nn.Module:
    """Return `encoder` with every nn.Linear replaced by a dynamic int8 Linear (in place)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(encoder, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


def check_quantize(mode: str, device: torch.device) -> None:
    """Fail before any weights are read when the mode is unknown or not runnable on `device`."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {mode!r}")
    if mode == "int8" and device.type != "cpu":
        raise ValueError(f"int8 quantization runs on CPU only; the model is on {device}")


def apply_quantization(sam: nn.Module, mode: str, device: torch.device) -> None:
    """Quantize `sam.image_encoder` according to `mode` ("none" or "int8")."""
    check_quantize(mode, device)
    if mode == "int8":
        sam.image_encoder = quantize_encoder_int8(sam.image_encoder)
