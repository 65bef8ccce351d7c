"""Our networks against the official implementation: names, shapes and outputs."""

from __future__ import annotations

import pytest
import torch
from segment_anything import sam_model_registry

from sam_model.loading import load_sam
from sam_model.sam1.build import build_sam
from tests.support.oracle import official_sam


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_builder_keys_and_shapes_match_official(model_type: str) -> None:
    with torch.device("meta"):
        ref = {k: v.shape for k, v in sam_model_registry[model_type]().state_dict().items()}
        ours = {k: v.shape for k, v in build_sam(model_type).state_dict().items()}
    assert list(ours) == list(ref)
    assert ours == ref


def test_builder_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="vit_x"):
        build_sam("vit_x")


def test_loaded_model_surface(tiny_pair) -> None:
    _, ours, _ = tiny_pair
    assert not ours.training and not any(p.requires_grad for p in ours.parameters())
    assert ours.image_encoder.img_size == 1024 and ours.mask_threshold == 0.0
    torch.testing.assert_close(ours.pixel_mean.flatten(), torch.tensor([123.675, 116.28, 103.53]))
    torch.testing.assert_close(ours.pixel_std.flatten(), torch.tensor([58.395, 57.12, 57.375]))
    assert "pixel_mean" not in ours.state_dict()


@torch.inference_mode()
def test_tiny_encoder_matches_official(tiny_pair) -> None:
    ref, ours, _ = tiny_pair
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    got, want = ours.image_encoder(x), ref.image_encoder(x)
    assert got.shape == (1, 256, 64, 64)
    assert want.abs().mean() > 0.1  # the comparison below is not between near-zeros
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def _prompts() -> dict[str, dict]:
    g = torch.Generator().manual_seed(2)
    pts = torch.rand(2, 4, 2, generator=g) * 1024
    labels = torch.tensor([[1, 0, 1, -1], [0, 1, 0, 0]])
    boxes = torch.tensor([[10.0, 20.0, 500.0, 700.0], [0.0, 0.0, 1023.0, 1023.0]])
    masks = torch.randn(2, 1, 256, 256, generator=g) * 5
    return {
        "points": dict(points=(pts, labels), boxes=None, masks=None),
        "box": dict(points=None, boxes=boxes, masks=None),
        "points_box": dict(points=(pts[:, :2], labels[:, :2]), boxes=boxes, masks=None),
        "mask": dict(points=None, boxes=None, masks=masks),
        "all": dict(points=(pts, labels), boxes=boxes, masks=masks),
        "nothing": dict(points=None, boxes=None, masks=None),
    }


@pytest.mark.parametrize("kind", list(_prompts()))
@torch.inference_mode()
def test_prompt_encoder_matches_official(tiny_pair, kind: str) -> None:
    ref, ours, _ = tiny_pair
    prompts = _prompts()[kind]
    got_sparse, got_dense = ours.prompt_encoder(**prompts)
    want_sparse, want_dense = ref.prompt_encoder(**prompts)
    torch.testing.assert_close(got_sparse, want_sparse, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_dense, want_dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.prompt_encoder.get_dense_pe(), ref.prompt_encoder.get_dense_pe())


def _decoder_args(ref, kind: str) -> dict:
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(3))
    sparse, dense = ref.prompt_encoder(**_prompts()[kind])
    return dict(
        image_embeddings=emb,
        image_pe=ref.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
    )


@pytest.mark.parametrize("kind", ["points", "points_box", "all"])
@torch.inference_mode()
def test_mask_decoder_tokens_match_official(tiny_pair, kind: str) -> None:
    ref, ours, _ = tiny_pair
    args = _decoder_args(ref, kind)
    got_masks, got_iou = ours.mask_decoder.predict_masks(**args)
    want_masks, want_iou = ref.mask_decoder.predict_masks(**args)
    assert got_masks.shape == (2, 4, 256, 256)
    torch.testing.assert_close(got_masks, want_masks, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_iou, want_iou, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("multimask", [True, False])
@torch.inference_mode()
def test_mask_decoder_forward_selects_like_official(tiny_pair, multimask: bool) -> None:
    ref, ours, _ = tiny_pair
    args = {k: v[:1] for k, v in _decoder_args(ref, "points_box").items()}
    got_masks, got_iou = ours.mask_decoder(**args, multimask_output=multimask)
    want_masks, want_iou = ref.mask_decoder(**args, multimask_output=multimask)
    assert got_masks.shape == (1, 3 if multimask else 1, 256, 256)
    torch.testing.assert_close(got_masks, want_masks, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_iou, want_iou, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@torch.inference_mode()
def test_vit_b_encoder_matches_official(tmp_path) -> None:
    ref = official_sam("vit_b", seed=5)
    path = tmp_path / "vit_b_random.pth"
    torch.save(ref.state_dict(), path)
    ours = load_sam("vit_b", str(path), device="cpu")
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(6))
    got = ours.image_encoder(x)
    want = ref.image_encoder(x)
    assert want.abs().mean() > 0.1
    assert (got - want).abs().max().item() <= 1e-4
