"""AMG building blocks against the reference's own utilities (segment_anything.utils.amg, test-only).

Every input here is constructed: random boxes with ties, masks with holes and islands,
empty masks, crops off the origin. The reference is called on the same input and the
outputs must agree exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.utils import amg as ref
from torchvision.ops.boxes import batched_nms as ref_batched_nms  # the test-only stand-in

from sam_model.amg.grid import crop_boxes, layer_point_grids, point_grid
from sam_model.amg.masks import (
    boxes_near_crop_edge,
    masks_to_boxes,
    masks_to_rles,
    remove_small_regions,
    rle_area,
    rle_to_coco,
    rle_to_list,
    rle_to_mask,
    stability_score,
)
from sam_model.amg.nms import batched_nms
from sam_model.common.transforms import input_shape, upscale_logits, upscale_masks


def _blobs(rng: np.random.Generator, n: int, h: int, w: int) -> torch.Tensor:
    """n masks: a few random rectangles and discs each (holes via XOR), some empty, some full-edge."""
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        if i % 7 == 3:
            continue  # empty mask
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(2, max(3, min(h, w) // 3))
            out[i] ^= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        if i % 5 == 0:
            out[i, :, : rng.integers(1, w)] = True  # touches the image's left/top edges
    return torch.from_numpy(out)


@pytest.mark.parametrize("n", [1, 2, 7, 32])
def test_point_grid_matches_reference(n: int) -> None:
    np.testing.assert_allclose(point_grid(n), ref.build_point_grid(n), rtol=0, atol=1e-15)


@pytest.mark.parametrize("n, layers, scale", [(32, 0, 1), (16, 2, 2), (10, 2, 3)])
def test_layer_grids_match_reference(n: int, layers: int, scale: int) -> None:
    ours, theirs = layer_point_grids(n, layers, scale), ref.build_all_layer_point_grids(n, layers, scale)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)


@pytest.mark.parametrize("hw", [(768, 1024), (1000, 1500), (333, 517), (1500, 1000)])
@pytest.mark.parametrize("layers", [0, 1, 2, 3])
@pytest.mark.parametrize("overlap", [512 / 1500, 0.0, 0.5])
def test_crop_boxes_match_reference(hw: tuple[int, int], layers: int, overlap: float) -> None:
    assert crop_boxes(hw, layers, overlap) == ref.generate_crop_boxes(hw, layers, overlap)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_nms_matches_reference(threshold: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    xy = rng.integers(0, 200, (n, 2))
    wh = rng.integers(0, 60, (n, 2))  # zero-size boxes included
    boxes = torch.from_numpy(np.concatenate([xy, xy + wh], axis=1))
    boxes[::17] = boxes[1::17][: len(boxes[::17])]  # exact duplicates
    scores = torch.from_numpy(rng.integers(0, 20, n).astype(np.float32))  # many ties
    cats = torch.from_numpy(rng.integers(0, 3, n))
    ours = batched_nms(boxes.float(), scores, cats, threshold)
    theirs = ref_batched_nms(boxes.float(), scores, cats, iou_threshold=threshold)
    assert ours.tolist() == theirs.tolist()


def test_nms_suppresses_overlaps_and_keeps_score_order() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=torch.float32)
    scores = torch.tensor([0.5, 0.9, 0.1, 0.7])
    assert batched_nms(boxes, scores, torch.zeros(4, dtype=torch.int64), 0.7).tolist() == [1, 2]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0, 2]), 0.7).tolist() == [1, 3, 0, 2]
    assert batched_nms(boxes[:0], scores[:0], torch.zeros(0, dtype=torch.int64), 0.7).tolist() == []


@pytest.mark.parametrize("offset", [1.0, 0.25])
def test_stability_score_matches_reference(offset: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(20, 96, 128) * 4 + torch.linspace(-8, 8, 128)
    logits[3] = -10  # empty at both cutoffs: NaN in both
    ours = stability_score(logits, 0.0, offset)
    theirs = ref.calculate_stability_score(logits, 0.0, offset)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)


def test_boxes_match_reference() -> None:
    masks = _blobs(np.random.default_rng(1), 40, 57, 83)
    torch.testing.assert_close(masks_to_boxes(masks), ref.batched_mask_to_box(masks), rtol=0, atol=0)
    assert masks_to_boxes(masks[:1, :0]).tolist() == [[0, 0, 0, 0]]
    assert masks_to_boxes(masks[:0]).shape == (0, 4)


def test_crop_edge_filter_matches_reference() -> None:
    rng = np.random.default_rng(2)
    crop, image = [100, 50, 400, 350], [0, 0, 420, 360]
    local = torch.from_numpy(rng.integers(-30, 330, (500, 4)))
    image_frame = local + torch.tensor([100, 50, 100, 50])
    ours = boxes_near_crop_edge(image_frame, crop, image)
    theirs = ref.is_box_near_crop_edge(local, crop, image)
    assert ours.tolist() == theirs.tolist()
    assert 0 < int(ours.sum()) < len(ours)


def test_rle_round_trip_matches_reference() -> None:
    masks = _blobs(np.random.default_rng(3), 30, 61, 47)
    masks[4] = True  # starts with foreground: leading zero-length run
    ours, theirs = masks_to_rles(masks), ref.mask_to_rle_pytorch(masks)
    assert [rle_to_list(r) for r in ours] == theirs
    for rle, mask in zip(ours, masks.numpy(), strict=True):
        np.testing.assert_array_equal(rle_to_mask(rle), mask)
        np.testing.assert_array_equal(rle_to_mask(rle), ref.rle_to_mask(rle))
        assert rle_area(rle) == ref.area_from_rle(rle) == int(mask.sum())
        assert rle_to_coco(rle) == ref.coco_encode_rle(rle)


@pytest.mark.parametrize("box", [[0, 0, 47, 61], [13, 0, 40, 61], [0, 9, 47, 50], [5, 7, 33, 44], [20, 30, 70, 91]])
def test_rle_of_crop_placed_in_image_matches_padded_reference(box: list[int]) -> None:
    h, w = 91, 70
    x0, y0, x1, y1 = box
    masks = _blobs(np.random.default_rng(4), 12, y1 - y0, x1 - x0)
    masks[2] = True  # touches all crop edges
    padded = ref.uncrop_masks(masks, box, h, w)
    ours = [rle_to_list(r) for r in masks_to_rles(masks, (h, w), (x0, y0))]
    assert ours == ref.mask_to_rle_pytorch(padded)


def _regions_mask() -> np.ndarray:
    """A big square with small and large holes, plus small and large islands."""
    m = np.zeros((80, 90), dtype=bool)
    m[10:60, 10:60] = True
    m[20:23, 20:23] = False  # 9-pixel hole
    m[30:45, 30:45] = False  # 225-pixel hole
    m[70:72, 70:72] = True  # 4-pixel island
    m[65:78, 5:20] = True  # 195-pixel island
    m[0, 89] = True  # corner pixel island
    return m


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area", [0, 1, 5, 10, 100, 300, 10_000])
def test_remove_small_regions_matches_reference(mode: str, area: int) -> None:
    mask = _regions_mask()
    ours, ours_changed = remove_small_regions(mask, area, mode)
    theirs, theirs_changed = ref.remove_small_regions(mask, area, mode)
    np.testing.assert_array_equal(ours, theirs)
    assert ours_changed == theirs_changed


def test_remove_small_regions_keeps_largest_island_and_empty_masks() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[1:3, 1:3] = True
    mask[10:13, 10:13] = True
    out, changed = remove_small_regions(mask, 100, "islands")
    assert changed and out.sum() == 9 and out[11, 11]
    empty = np.zeros((5, 5), dtype=bool)
    assert remove_small_regions(empty, 100, "islands")[1] is False
    with pytest.raises(ValueError):
        remove_small_regions(mask, 1, "both")


@pytest.mark.parametrize("hw", [(300, 400), (517, 300), (768, 1024), (1000, 1500), (1, 7)])
def test_amg_upscales_as_the_reference_and_the_predictor(hw: tuple[int, int]) -> None:
    """One upscaling for everyone: exact mode's is the reference's two torch bilinear steps
    bit for bit; fast mode's (OpenCV, whole frame) thresholds to exactly the predictor's
    masks (OpenCV in column bands above 512 columns)."""
    torch.manual_seed(0)
    low = F.interpolate(torch.randn(1, 3, 16, 16) * 4, (256, 256), mode="bilinear", align_corners=False)[0]
    input_size = input_shape(hw, 1024)
    big = F.interpolate(low[:, None], (1024, 1024), mode="bilinear", align_corners=False)
    big = big[..., : input_size[0], : input_size[1]]
    reference = F.interpolate(big, hw, mode="bilinear", align_corners=False)[:, 0]
    assert torch.equal(upscale_logits(low, input_size, hw, 1024), reference)
    fast = upscale_logits(low, input_size, hw, 1024, opencv=True)
    np.testing.assert_array_equal((fast > 0).numpy(), upscale_masks(low, input_size, hw, 1024))
    assert (fast - reference).abs().max() < 1e-3
