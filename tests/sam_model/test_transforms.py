"""Pre/post-processing against the reference's own transforms (segment-anything as oracle)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from sam_model.common.transforms import input_shape, normalize_and_pad, resize_longest_side, scale_coords, upscale_masks

SIZES = [(480, 640), (517, 300), (48, 64), (3000, 4000), (1024, 1024), (1, 7), (1023, 1025), (683, 1024)]
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def reference_upscale(low: torch.Tensor, input_size: tuple[int, int], original: tuple[int, int]) -> np.ndarray:
    """segment_anything.modeling.Sam.postprocess_masks followed by the > 0 threshold."""
    x = F.interpolate(low[None], (1024, 1024), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return (F.interpolate(x, original, mode="bilinear", align_corners=False) > 0)[0].numpy()


def smooth_logits(k: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return F.interpolate(torch.randn(1, k, 16, 16) * 4, (256, 256), mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("h, w", SIZES)
def test_input_shape_and_resize_match_reference(h: int, w: int) -> None:
    ref = ResizeLongestSide(1024)
    image = np.random.default_rng(h + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert input_shape((h, w), 1024) == ref.get_preprocess_shape(h, w, 1024)
    np.testing.assert_array_equal(resize_longest_side(image, 1024), ref.apply_image(image))


def test_resize_accepts_non_contiguous_views() -> None:
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    bgr_view = image[..., ::-1]
    np.testing.assert_array_equal(
        resize_longest_side(bgr_view, 1024), ResizeLongestSide(1024).apply_image(np.ascontiguousarray(bgr_view))
    )


def test_normalize_and_pad_is_bit_exact_with_reference_preprocess() -> None:
    resized = np.random.default_rng(1).integers(0, 256, (683, 1024, 3), dtype=np.uint8)
    ours = normalize_and_pad(resized, MEAN, STD, 1024)
    x = torch.as_tensor(resized).permute(2, 0, 1)[None]
    ref = F.pad((x - MEAN) / STD, (0, 0, 0, 1024 - 683))
    assert ours.shape == (1, 3, 1024, 1024) and ours.dtype == torch.float32
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("h, w", SIZES)
def test_scale_coords_matches_reference(h: int, w: int) -> None:
    coords = np.random.default_rng(2).uniform(0, 1, (5, 2)) * [w, h]
    expected = ResizeLongestSide(1024).apply_coords(coords, (h, w))
    ours = scale_coords(coords, (h, w), input_shape((h, w), 1024))
    np.testing.assert_array_equal(ours, expected)
    boxes = coords[:4].reshape(2, 4)
    np.testing.assert_array_equal(
        scale_coords(boxes.reshape(-1, 2, 2), (h, w), input_shape((h, w), 1024)).reshape(-1, 4),
        ResizeLongestSide(1024).apply_boxes(boxes, (h, w)),
    )
    assert coords.dtype == np.float64 and (coords <= max(h, w)).all()  # input left untouched


@pytest.mark.parametrize("h, w", [(480, 640), (517, 300), (48, 64), (3000, 4000), (1, 7), (4000, 6000)])
def test_upscale_matches_reference_two_step_bilinear(h: int, w: int) -> None:
    low = smooth_logits(2, seed=h)
    input_size = input_shape((h, w), 1024)
    ours = upscale_masks(low, input_size, (h, w), 1024)
    ref = reference_upscale(low, input_size, (h, w))
    assert ours.dtype == bool and ours.shape == (2, h, w)
    for k in range(2):
        union = (ours[k] | ref[k]).sum()
        assert union == 0 or (ours[k] & ref[k]).sum() / union >= 0.9999
        assert (ours[k] != ref[k]).mean() < 1e-4


def test_upscale_threshold_is_respected() -> None:
    low = smooth_logits(1, seed=3)
    at_zero = upscale_masks(low, (768, 1024), (300, 400), 1024)
    at_two = upscale_masks(low, (768, 1024), (300, 400), 1024, threshold=2.0)
    assert at_two.sum() < at_zero.sum() and not (at_two & ~at_zero).any()
    np.testing.assert_array_equal(at_zero, reference_upscale(low, (768, 1024), (300, 400)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the accelerator path needs CUDA")
def test_upscale_on_gpu_matches_cpu() -> None:
    low = smooth_logits(3, seed=4)
    gpu = upscale_masks(low.cuda(), (768, 1024), (3000, 4000), 1024)
    cpu = reference_upscale(low, (768, 1024), (3000, 4000))
    assert (gpu != cpu).mean() < 1e-4


def test_upscale_one_mask_to_24_mp_stays_far_below_a_float_frame() -> None:
    """Beyond the bool result, less than half of one float32 frame is ever held (the
    reference holds three float frames plus the bools for a 3-candidate click)."""
    low = smooth_logits(1, seed=5)
    h, w = 4000, 6000
    tracemalloc.start()
    try:
        masks = upscale_masks(low, input_shape((h, w), 1024), (h, w), 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert masks.shape == (1, h, w)
    assert peak - masks.nbytes < 0.5 * h * w * 4
