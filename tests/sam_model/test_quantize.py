"""Opt-in int8 encoder quantization: what it replaces, where it refuses, how close it stays."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sam_model.common.quantize import apply_quantization
from sam_model.loading import load_sam


@pytest.fixture(scope="module")
def tiny_int8(tiny_pair):
    _, _, path = tiny_pair
    return load_sam("tiny", str(path), device="cpu", quantize="int8")


def test_only_encoder_linears_are_quantized(tiny_int8) -> None:
    enc_types = {type(m) for m in tiny_int8.image_encoder.modules()}
    assert nn.Linear not in enc_types
    assert any(
        "DynamicQuantizedLinear" in t.__name__ or t.__module__.startswith("torch.ao.nn.quantized") for t in enc_types
    )
    assert any(type(m) is nn.Linear for m in tiny_int8.mask_decoder.modules())


@torch.inference_mode()
def test_int8_embedding_and_masks_stay_close(tiny_pair, tiny_int8) -> None:
    _, fp32, _ = tiny_pair
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(4))
    e32, e8 = fp32.image_encoder(x), tiny_int8.image_encoder(x)
    assert not torch.equal(e32, e8)  # it really runs a different (quantized) path
    assert ((e8 - e32).norm() / e32.norm()).item() < 0.05
    pts = torch.tensor([[[200.0, 300.0]], [[700.0, 650.0]]])
    sparse, dense = fp32.prompt_encoder(points=(pts, torch.ones(2, 1)), boxes=None, masks=None)
    pe = fp32.prompt_encoder.get_dense_pe()
    m32, _ = fp32.mask_decoder.predict_masks(e32, pe, sparse, dense)
    m8, _ = fp32.mask_decoder.predict_masks(e8, pe, sparse, dense)
    a, b = m32 > 0, m8 > 0
    iou = (a & b).sum().item() / max((a | b).sum().item(), 1)
    assert iou > 0.95


def test_int8_refused_off_cpu(tiny_pair) -> None:
    _, fp32, _ = tiny_pair
    with pytest.raises(ValueError, match="CPU only"):
        apply_quantization(fp32, "int8", torch.device("cuda"))


def test_unknown_mode_refused_before_loading(tmp_path) -> None:
    with pytest.raises(ValueError, match="quantize must be one of"):
        load_sam("tiny", str(tmp_path / "never_read.pth"), device="cpu", quantize="int4")
