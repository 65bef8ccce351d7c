"""AutomaticMaskGenerator against the official SamAutomaticMaskGenerator (test-only oracle).

Two kinds of model drive both generators:
- a constructed decoder that draws discs (with holes and islands) around each point, with
  spread-out predicted IoU and sharpness, so the default filters, box NMS, crop-edge
  removal, crop NMS and small-region cleanup all act and must act identically;
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
from segment_anything.modeling import Sam
from torch import nn

from sam_model.amg import AutomaticMaskGenerator
from sam_model.embedding import ImageEmbedding
from sam_model.transforms import input_shape

RefSettings = dict[str, Any]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth shapes on a gradient: something an encoder reacts to, deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([xx * 255 // w, yy * 255 // h, np.full((h, w), 90)], axis=-1).astype(np.uint8)
    lo = min(20, min(h, w) // 4)
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(lo, max(lo + 1, min(h, w) // 3))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.integers(0, 255, 3)
    return img


def match(ours: list[dict], theirs: list[dict]) -> list[tuple[int, int, float]]:
    """Pair records prompted by the same point in the same crop, best mask IoU first, one to one.

    Returns (our index, their index, mask IoU) for every pair; unpaired records are absent.
    """
    def key(r: dict) -> tuple:
        return tuple(r["crop_box"]), tuple(np.round(r["point_coords"][0], 6))

    ious = coco_mask.iou([r["segmentation"] for r in ours], [r["segmentation"] for r in theirs], [0] * len(theirs))
    ious = np.asarray(ious).reshape(len(ours), len(theirs))
    same_prompt = np.array([[key(a) == key(b) for b in theirs] for a in ours]).reshape(ious.shape)
    ious = np.where(same_prompt, ious, -1.0)
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        a, b = divmod(int(flat), len(theirs))
        if ious[a, b] < 0:
            break
        if a not in used_a and b not in used_b:
            pairs.append((a, b, float(ious[a, b])))
            used_a.add(a)
            used_b.add(b)
    return pairs


def assert_same_masks(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    pairs = match(ours, theirs)
    assert len(pairs) == len(ours)
    for a, b, iou in pairs:
        assert iou >= 0.99
        for k in ("predicted_iou", "stability_score"):
            assert abs(ours[a][k] - theirs[b][k]) <= 1e-3, (k, ours[a][k], theirs[b][k])
        assert ours[a]["crop_box"] == theirs[b]["crop_box"]
        assert abs(ours[a]["area"] - theirs[b]["area"]) <= 0.01 * max(1, theirs[b]["area"])


class _Adapter:
    """Minimal predictor contract: `.sam` and `.encode(image) -> ImageEmbedding`; counts encodes."""

    def __init__(self, sam: nn.Module, encode: Any) -> None:
        self.sam, self._encode, self.calls = sam, encode, 0

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        self.calls += 1
        return self._encode(image)


# --- constructed model -------------------------------------------------------------------


class _ZeroEncoder(nn.Module):
    img_size = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 256, 64, 64)


class _PointEcho(nn.Module):
    """Prompt encoder whose 'embedding' is the point itself (input-frame pixels)."""

    def forward(self, points: tuple[torch.Tensor, torch.Tensor], boxes: Any, masks: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return points[0].float(), torch.zeros(points[0].shape[0], 1)

    def get_dense_pe(self) -> torch.Tensor:
        return torch.zeros(1, 256, 64, 64)


def _hash01(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    return torch.frac(torch.sin(x * 12.9898 + y * 78.233 + 37.719 * k).abs() * 43758.5453)


class _DiscDecoder(nn.Module):
    """Three masks per point: a disc, a larger disc with a small hole, a disc with a small island.

    Logits are signed distances (input pixels) times a per-point sharpness, so stability
    spreads around 0.95; predicted IoU spreads over [0.75, 1]; neighbours overlap (NMS acts).
    """

    def forward(self, image_embeddings: Any, image_pe: Any, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: Any, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        p = sparse_prompt_embeddings[:, 0, :]
        px, py = p[:, 0, None, None], p[:, 1, None, None]
        c = (torch.arange(256, dtype=torch.float32) + 0.5) * 4
        gx, gy = c[None, None, :], c[None, :, None]

        def dist(dx: float, dy: float) -> torch.Tensor:
            return torch.sqrt((gx - px - dx) ** 2 + (gy - py - dy) ** 2)

        d = dist(0, 0)
        disc = 70 - d
        holed = torch.minimum(110 - d, dist(30, 0) - 9)
        island = torch.maximum(45 - d, 7 - dist(0, 80))
        sharp = torch.stack([0.3 + 4 * _hash01(p[:, 0], p[:, 1], k) for k in range(3)], 1)[..., None, None]
        logits = torch.stack([disc, holed, island], dim=1) * sharp
        iou = torch.stack([0.75 + 0.25 * _hash01(p[:, 1], p[:, 0], k) for k in range(3)], 1)
        return logits, iou


def disc_model() -> tuple[Sam, _Adapter]:
    """(official Sam, our predictor adapter) around the disc decoder; bench_amg uses it too."""
    sam = Sam(_ZeroEncoder(), _PointEcho(), _DiscDecoder()).eval()

    def encode(image: np.ndarray) -> ImageEmbedding:
        hw = (int(image.shape[0]), int(image.shape[1]))
        return ImageEmbedding(torch.zeros(1, 256, 64, 64), hw, input_shape(hw, 1024), "discs")

    return sam, _Adapter(sam, encode)


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
    image = _image(300, 400)
    theirs = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **settings).generate(image)
    ours = AutomaticMaskGenerator(predictor, output_mode="coco_rle", **settings).generate(image)
    # The filters must have had something to do, or the case proves little.
    candidates = settings["points_per_side"] ** 2 * 3 * (1 + 4 * settings.get("crop_n_layers", 0))
    assert 0 < len(theirs) < 0.7 * candidates
    assert_same_masks(ours, theirs)


def test_fast_mode_close_to_exact_on_constructed_masks() -> None:
    sam, predictor = disc_model()
    image = _image(300, 400)
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
    generator = AutomaticMaskGenerator(predictor, points_per_side=4, pred_iou_thresh=0.9999, mode=mode, min_mask_region_area=10)
    assert generator.generate(_image(100, 120)) == []


@pytest.mark.parametrize("output_mode", ["binary_mask", "uncompressed_rle"])
def test_output_modes_agree_with_coco(output_mode: str) -> None:
    _, predictor = disc_model()
    image = _image(200, 300)
    coco = AutomaticMaskGenerator(predictor, points_per_side=6, output_mode="coco_rle").generate(image)
    other = AutomaticMaskGenerator(predictor, points_per_side=6, output_mode=output_mode).generate(image)
    assert len(coco) == len(other) > 0
    for a, b in zip(coco, other):
        seg = b["segmentation"]
        mask = seg if output_mode == "binary_mask" else coco_mask.decode(coco_mask.frPyObjects(seg, *seg["size"]))
        np.testing.assert_array_equal(coco_mask.decode(a["segmentation"]).astype(bool), np.asarray(mask, dtype=bool))
        assert {k: v for k, v in a.items() if k != "segmentation"} == {k: v for k, v in b.items() if k != "segmentation"}


def test_bad_arguments_are_refused() -> None:
    sam, predictor = disc_model()
    with pytest.raises(ValueError):
        AutomaticMaskGenerator(predictor, points_per_side=None)
    with pytest.raises(ValueError):
        AutomaticMaskGenerator(predictor, output_mode="png")
    with pytest.raises(ValueError):
        AutomaticMaskGenerator(predictor, mode="quick")
    with pytest.raises(ValueError, match="embedding is of"):
        AutomaticMaskGenerator(predictor).generate(_image(50, 60), embedding=predictor.encode(_image(60, 50)))
    embedding = predictor.encode(_image(50, 60))
    predictor.model_id = "another-model"
    with pytest.raises(ValueError, match="from model"):
        AutomaticMaskGenerator(predictor).generate(_image(50, 60), embedding=embedding)


# --- real networks, random weights -------------------------------------------------------


def _our_predictor(sam: nn.Module, model_id: str) -> Any:
    from sam_model.predictor import SamPredictor

    return SamPredictor(sam, model_id)


DEGENERATE = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0, output_mode="coco_rle")


@pytest.mark.parametrize(
    "settings",
    [dict(points_per_side=6), dict(points_per_side=2, crop_n_layers=1, crop_nms_thresh=1.0)],
    ids=["no-crops", "crop-layer"],
)
def test_exact_mode_matches_reference_tiny(tiny_pair: tuple, settings: RefSettings) -> None:
    ref_sam, our_sam, _ = tiny_pair
    image = _image(480, 640, seed=1)
    theirs = SamAutomaticMaskGenerator(ref_sam, **DEGENERATE, **settings).generate(image)
    predictor = _Adapter(our_sam, _our_predictor(our_sam, "tiny").encode)
    ours = AutomaticMaskGenerator(predictor, **DEGENERATE, **settings).generate(image)
    n_crops = 1 + 4 * settings.get("crop_n_layers", 0)
    assert predictor.calls == n_crops
    assert len(theirs) >= settings["points_per_side"] ** 2 * 3  # at least the whole first layer
    assert_same_masks(ours, theirs)


def test_precomputed_embedding_is_reused(tiny_pair: tuple) -> None:
    _, our_sam, _ = tiny_pair
    inner = _our_predictor(our_sam, "tiny")
    image = _image(240, 320, seed=2)
    embedding = inner.encode(image)
    predictor = _Adapter(our_sam, inner.encode)
    generator = AutomaticMaskGenerator(predictor, points_per_side=4, **DEGENERATE)
    with_embedding = generator.generate(image, embedding=embedding)
    assert predictor.calls == 0
    assert with_embedding == generator.generate(image)
    assert predictor.calls == 1


@pytest.mark.slow
def test_exact_mode_matches_reference_vit_b(tmp_path: Any) -> None:
    """Full-size encoder and decoder path; one small grid keeps it near a minute on CPU."""
    from segment_anything import sam_model_registry

    from sam_model.checkpoint import load_sam

    torch.manual_seed(0)
    ref_sam = sam_model_registry["vit_b"]().eval()
    path = tmp_path / "vit_b_random.pth"
    torch.save(ref_sam.state_dict(), path)
    our_sam = load_sam("vit_b", str(path), device="cpu")
    image = _image(384, 512, seed=3)
    settings = dict(points_per_side=4, **DEGENERATE)
    theirs = SamAutomaticMaskGenerator(ref_sam, **settings).generate(image)
    ours = AutomaticMaskGenerator(_our_predictor(our_sam, "vit_b"), **settings).generate(image)
    assert len(theirs) == 48
    assert_same_masks(ours, theirs)
    assert math.isfinite(ours[0]["predicted_iou"])
