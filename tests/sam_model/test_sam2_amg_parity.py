"""Our AutomaticMaskGenerator on a SAM 2 predictor vs the official `SAM2AutomaticMaskGenerator`.

Same random weights (the official SAM2Base from Meta's config, saved as Meta's files are and
loaded through our loader), same image. With random weights the decoder's scores are
arbitrary and the masks overlap wholesale, so the IoU threshold is 0 and box NMS is off (as in
the v1 random-weight case): what is compared is every step of the generator — grid, prompt
scaling, batched decoding, one-step upscaling, stability, records — not the weights' judgement
(crop layers are the family-independent part, proven by the v1 parity).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

from sam_model.amg import AutomaticMaskGenerator
from sam_model.amg.grid import point_grid
from sam_model.families import family_of
from sam_model.loading import load_sam
from sam_model.sam2 import Sam2Predictor
from tests.support.amg_records import assert_same_masks, sample_image
from tests.support.oracle_sam2 import official_sam2, save_official

TINY = "sam2.1_hiera_tiny"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Sam2Predictor]:
    ref = official_sam2(TINY, seed=3)
    path = save_official(ref, tmp_path_factory.mktemp("sam2amg") / f"{TINY}-random.pt")
    return ref, Sam2Predictor(load_sam(TINY, path, device="cpu"), TINY)


# Random logits are small: a 0.02 offset spreads stability over ~0.8-0.93, so its filter acts.
DEGENERATE = dict(pred_iou_thresh=0.0, box_nms_thresh=1.0, stability_score_offset=0.02)
CASES: list[dict[str, Any]] = [
    dict(points_per_side=6, stability_score_thresh=0.0, **DEGENERATE),
    dict(points_per_side=5, points_per_batch=7, stability_score_thresh=0.88, **DEGENERATE),
]


@pytest.mark.parametrize("settings", CASES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_exact_mode_matches_the_official_sam2_generator(pair: tuple, settings: dict[str, Any]) -> None:
    ref, ours = pair
    image = sample_image(240, 360)
    theirs = SAM2AutomaticMaskGenerator(ref, output_mode="coco_rle", **settings).generate(image)
    mine = AutomaticMaskGenerator(ours, output_mode="coco_rle", mode="exact", **settings).generate(image)
    assert len(theirs) >= 10  # many masks kept, or the case proves little
    assert_same_masks(mine, theirs)


def test_the_family_defaults_are_the_official_generators() -> None:
    """What auto-annotate applies for SAM 2 where the user sets nothing: SAM2AutomaticMaskGenerator's defaults."""
    import inspect

    official = inspect.signature(SAM2AutomaticMaskGenerator.__init__).parameters
    defaults = family_of(TINY).amg_defaults
    assert defaults and all(official[name].default == value for name, value in defaults.items())


def test_fast_mode_stays_close_on_sam2(pair: tuple) -> None:
    _, ours = pair
    image = sample_image(240, 360, seed=1)
    settings = dict(points_per_side=6, stability_score_thresh=0.88, output_mode="coco_rle", **DEGENERATE)
    exact = AutomaticMaskGenerator(ours, mode="exact", **settings).generate(image)
    fast = AutomaticMaskGenerator(ours, mode="fast", **settings).generate(image)
    assert exact and abs(len(fast) - len(exact)) <= max(1, 0.05 * len(exact))
    assert np.isclose(sum(r["area"] for r in fast), sum(r["area"] for r in exact), rtol=0.05)


def test_iou_filter_keeps_the_unfiltered_logits_of_the_kept_masks(pair: tuple) -> None:
    """The grid decoder's IoU filter (upscaling only kept masks, a few prompts at a time on CPU)
    returns exactly the unfiltered decoder's IoU and, for the masks it keeps, their logits."""
    _, ours = pair
    embedding = ours.encode(sample_image(240, 360, seed=2))
    points = point_grid(5) * np.array([360, 240])  # 25 points: whole chunks and a remainder
    iou, kept_all, logits_all = ours.grid_decoder(embedding).decode(points, None)
    cut = float(iou.median())
    iou_filtered, kept, logits = ours.grid_decoder(embedding).decode(points, cut)
    assert kept_all.all() and len(logits_all) == len(iou) == 3 * len(points)
    torch.testing.assert_close(iou_filtered, iou, rtol=0, atol=1e-6)
    assert torch.equal(kept, iou_filtered > cut) and 0 < int(kept.sum()) < len(kept)
    torch.testing.assert_close(logits, logits_all[kept], rtol=1e-4, atol=1e-4)
