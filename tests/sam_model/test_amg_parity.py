"""AutomaticMaskGenerator against the official SamAutomaticMaskGenerator (test-only oracle).

Two kinds of model drive both generators, ours always through the production predictor:
- a constructed decoder that draws discs (with holes and islands) around each point, with
  spread-out predicted IoU and sharpness (tests/support/disc_model.py), so the default
  filters, box NMS, crop-edge removal, crop NMS and small-region cleanup all act and must
  act identically;
- the real networks with random weights (ours loaded from the official model's saved
  state_dict), where AMG is degenerate, so thresholds are 0 and box NMS is off.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from segment_anything import SamAutomaticMaskGenerator

from sam_model.amg import AutomaticMaskGenerator
from sam_model.common.embedding import ImageEmbedding
from sam_model.sam1.predictor import SamPredictor
from tests.support.amg_records import assert_same_masks, match, sample_image
from tests.support.disc_model import disc_model

RefSettings = dict[str, Any]


class _CountingPredictor(SamPredictor):
    """Our predictor, counting encodes: crop layers encode their crops, a given embedding is reused."""

    calls = 0

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        self.calls += 1
        return super().encode(image)


# --- constructed model -------------------------------------------------------------------


CONSTRUCTED_CASES: list[RefSettings] = [
    dict(points_per_side=8),
    dict(points_per_side=6, pred_iou_thresh=0.9, stability_score_thresh=0.97, box_nms_thresh=0.5),
    dict(points_per_side=4, crop_n_layers=1, crop_n_points_downscale_factor=2),
    dict(points_per_side=4, crop_n_layers=1, min_mask_region_area=400),
    dict(points_per_side=6, min_mask_region_area=400, box_nms_thresh=0.9),
]


@pytest.mark.parametrize("settings", CONSTRUCTED_CASES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_exact_mode_matches_reference_on_constructed_masks(settings: RefSettings) -> None:
    sam, predictor = disc_model()
    image = sample_image(300, 400)
    theirs = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **settings).generate(image)
    ours = AutomaticMaskGenerator(predictor, output_mode="coco_rle", **settings).generate(image)
    # The filters must have had something to do, or the case proves little.
    candidates = settings["points_per_side"] ** 2 * 3 * (1 + 4 * settings.get("crop_n_layers", 0))
    assert 0 < len(theirs) < 0.7 * candidates
    assert_same_masks(ours, theirs)


def test_fast_mode_close_to_exact_on_constructed_masks() -> None:
    _, predictor = disc_model()
    image = sample_image(300, 400)
    settings = dict(points_per_side=10, output_mode="coco_rle")
    exact = AutomaticMaskGenerator(predictor, mode="exact", **settings).generate(image)
    fast = AutomaticMaskGenerator(predictor, mode="fast", **settings).generate(image)
    pairs = match(fast, exact)
    # Fast mode re-checks near-threshold masks at full resolution: nearly the same set.
    assert len(pairs) >= 0.97 * len(exact) and len(fast) <= 1.03 * len(exact)
    assert np.mean([iou for _, _, iou in pairs]) >= 0.99


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_nothing_survives_strict_thresholds(mode: str) -> None:
    _, predictor = disc_model()
    generator = AutomaticMaskGenerator(
        predictor, points_per_side=4, pred_iou_thresh=0.9999, mode=mode, min_mask_region_area=10
    )
    assert generator.generate(sample_image(100, 120)) == []


@pytest.mark.parametrize("output_mode", ["binary_mask", "uncompressed_rle"])
def test_output_modes_agree_with_coco(output_mode: str) -> None:
    _, predictor = disc_model()
    image = sample_image(200, 300)
    coco = AutomaticMaskGenerator(predictor, points_per_side=6, output_mode="coco_rle").generate(image)
    other = AutomaticMaskGenerator(predictor, points_per_side=6, output_mode=output_mode).generate(image)
    assert len(coco) == len(other) > 0
    for a, b in zip(coco, other, strict=True):
        seg = b["segmentation"]
        mask = seg if output_mode == "binary_mask" else coco_mask.decode(coco_mask.frPyObjects(seg, *seg["size"]))
        np.testing.assert_array_equal(coco_mask.decode(a["segmentation"]).astype(bool), np.asarray(mask, dtype=bool))
        assert {k: v for k, v in a.items() if k != "segmentation"} == {
            k: v for k, v in b.items() if k != "segmentation"
        }


def test_bad_arguments_are_refused() -> None:
    _, predictor = disc_model()
    with pytest.raises(ValueError):
        AutomaticMaskGenerator(predictor, points_per_side=None)
    with pytest.raises(ValueError):
        AutomaticMaskGenerator(predictor, output_mode="png")
    with pytest.raises(ValueError):
        AutomaticMaskGenerator(predictor, mode="quick")
    with pytest.raises(ValueError, match="embedding is of"):
        AutomaticMaskGenerator(predictor).generate(
            sample_image(50, 60), embedding=predictor.encode(sample_image(60, 50))
        )
    embedding = predictor.encode(sample_image(50, 60))
    predictor.model_id = "another-model"
    with pytest.raises(ValueError, match="from model"):
        AutomaticMaskGenerator(predictor).generate(sample_image(50, 60), embedding=embedding)


# --- real networks, random weights -------------------------------------------------------


DEGENERATE = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0, output_mode="coco_rle")


@pytest.mark.parametrize(
    "settings",
    [dict(points_per_side=6), dict(points_per_side=2, crop_n_layers=1, crop_nms_thresh=1.0)],
    ids=["no-crops", "crop-layer"],
)
def test_exact_mode_matches_reference_tiny(tiny_pair: tuple, settings: RefSettings) -> None:
    ref_sam, our_sam, _ = tiny_pair
    image = sample_image(480, 640, seed=1)
    theirs = SamAutomaticMaskGenerator(ref_sam, **DEGENERATE, **settings).generate(image)
    predictor = _CountingPredictor(our_sam, "tiny")
    ours = AutomaticMaskGenerator(predictor, **DEGENERATE, **settings).generate(image)
    n_crops = 1 + 4 * settings.get("crop_n_layers", 0)
    assert predictor.calls == n_crops
    assert len(theirs) >= settings["points_per_side"] ** 2 * 3  # at least the whole first layer
    assert_same_masks(ours, theirs)


def test_precomputed_embedding_is_reused(tiny_pair: tuple) -> None:
    _, our_sam, _ = tiny_pair
    image = sample_image(240, 320, seed=2)
    embedding = SamPredictor(our_sam, "tiny").encode(image)
    predictor = _CountingPredictor(our_sam, "tiny")
    generator = AutomaticMaskGenerator(predictor, points_per_side=4, **DEGENERATE)
    with_embedding = generator.generate(image, embedding=embedding)
    assert predictor.calls == 0
    assert with_embedding == generator.generate(image)
    assert predictor.calls == 1


@pytest.mark.slow
def test_exact_mode_matches_reference_vit_b(tmp_path: Any) -> None:
    """Full-size encoder and decoder path; one small grid keeps it near a minute on CPU."""
    from segment_anything import sam_model_registry

    from sam_model.loading import load_sam

    torch.manual_seed(0)
    ref_sam = sam_model_registry["vit_b"]().eval()
    path = tmp_path / "vit_b_random.pth"
    torch.save(ref_sam.state_dict(), path)
    our_sam = load_sam("vit_b", str(path), device="cpu")
    image = sample_image(384, 512, seed=3)
    settings = dict(points_per_side=4, **DEGENERATE)
    theirs = SamAutomaticMaskGenerator(ref_sam, **settings).generate(image)
    ours = AutomaticMaskGenerator(SamPredictor(our_sam, "vit_b"), **settings).generate(image)
    assert len(theirs) == 48
    assert_same_masks(ours, theirs)
    assert math.isfinite(ours[0]["predicted_iou"])
