"""The weights-free GrabCut engine on synthetic images: a bright disc on a textured background."""

from __future__ import annotations

import time

import numpy as np
import pytest

from backend.engines.grabcut import GrabCutEngine
from sam_model.common.embedding import ImageEmbedding
from tests.support.masks import iou

H, W = 600, 900
CX, CY, R = 520, 280, 110


def disc_image(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy bright disc on a dark, blotchy, noisy background; returns (image, truth mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    truth = (xx - CX) ** 2 + (yy - CY) ** 2 <= R**2
    blotches = np.kron(rng.integers(0, 90, (H // 30, W // 30, 3)), np.ones((30, 30, 1)))
    image = blotches + rng.normal(0, 15, (H, W, 3))
    image[truth] = rng.normal(215, 15, (truth.sum(), 3))
    return np.clip(image, 0, 255).astype(np.uint8), truth


@pytest.fixture(scope="module")
def scene() -> tuple[GrabCutEngine, ImageEmbedding, np.ndarray]:
    image, truth = disc_image()
    engine = GrabCutEngine()
    return engine, engine.encode(image), truth


def test_labels_itself_as_grabcut_not_sam(scene) -> None:
    engine, embedding, _ = scene
    assert engine.model_id == "grabcut-opencv" == embedding.model_id
    assert "sam" not in engine.model_id


def test_embedding_is_a_small_uint8_image_that_survives_the_cache_format(scene) -> None:
    _, embedding, truth = scene
    assert embedding.original_size == (H, W)
    assert max(embedding.input_size) == 512
    assert tuple(embedding.features.shape) == (*embedding.input_size, 3)
    assert embedding.features.dtype.is_floating_point is False
    engine = GrabCutEngine()
    # Default to_bytes casts to fp16: integers 0..255 are exact there, so masks do not change.
    restored = ImageEmbedding.from_bytes(embedding.to_bytes())
    box = np.array([CX - R - 20, CY - R - 20, CX + R + 20, CY + R + 20], float)
    a = engine.decode(embedding, box=box).masks[0]
    b = engine.decode(restored, box=box).masks[0]
    assert np.array_equal(a, b)


def test_box_prompt_finds_the_disc(scene) -> None:
    engine, embedding, truth = scene
    box = np.array([CX - R - 30, CY - R - 25, CX + R + 35, CY + R + 30], float)
    result = engine.decode(embedding, box=box)
    assert result.masks.shape == (1, H, W) and result.masks.dtype == bool
    assert iou(result.masks[0], truth) > 0.8
    assert result.scores.shape == (1,) and result.scores[0] == pytest.approx(1.0)


def test_single_point_finds_the_disc(scene) -> None:
    engine, embedding, truth = scene
    result = engine.decode(embedding, point_coords=np.array([[CX + 10, CY - 15]]), point_labels=np.array([1]))
    assert iou(result.masks[0], truth) > 0.8
    assert result.scores[0] == pytest.approx(1.0)


def test_points_and_box_together(scene) -> None:
    engine, embedding, truth = scene
    result = engine.decode(
        embedding,
        point_coords=np.array([[CX, CY], [40, 40]]),
        point_labels=np.array([1, 0]),
        box=np.array([CX - R - 60, CY - R - 60, CX + R + 60, CY + R + 60], float),
        best_only=True,
    )
    assert iou(result.masks[0], truth) > 0.8


def test_negative_point_inside_the_object_is_honoured(scene) -> None:
    engine, embedding, _ = scene
    result = engine.decode(embedding, point_coords=np.array([[CX, CY], [CX + 60, CY]]), point_labels=np.array([1, 0]))
    assert not result.masks[0][CY, CX + 60]
    assert result.masks[0][CY, CX]


def test_low_res_logits_follow_sams_frame_and_refine(scene) -> None:
    engine, embedding, truth = scene
    first = engine.decode(embedding, point_coords=np.array([[CX, CY]]), point_labels=np.array([1]))
    logits = first.low_res_logits
    assert logits.shape == (1, 256, 256) and logits.dtype == np.float32
    # 900 wide -> 256; 600 high -> 171 rows; the disc centre is positive, padding negative.
    assert logits[0, round(CY * 256 / W), round(CX * 256 / W)] > 0
    assert (logits[0, 180:, :] < 0).all()
    refined = engine.decode(embedding, point_coords=np.array([[CX, CY]]), point_labels=np.array([1]), mask_input=logits)
    assert iou(refined.masks[0], truth) > 0.8


def test_no_positive_prompt_gives_an_empty_mask_with_zero_score(scene) -> None:
    engine, embedding, _ = scene
    result = engine.decode(embedding, point_coords=np.array([[10, 10]]), point_labels=np.array([0]))
    assert not result.masks.any() and result.scores[0] == 0.0


def test_score_drops_when_a_prompt_is_not_honoured(scene) -> None:
    engine, embedding, _ = scene
    # A negative click and a box around the same background region cannot both be satisfied.
    result = engine.decode(
        embedding,
        point_coords=np.array([[CX, CY], [CX, CY]]),
        point_labels=np.array([1, 0]),
        box=np.array([CX - R, CY - R, CX + R, CY + R], float),
    )
    assert result.scores[0] < 1.0


def test_a_click_is_interactive_on_a_large_image() -> None:
    image = np.kron(disc_image(1)[0], np.ones((4, 4, 1), np.uint8))  # 2400x3600
    engine = GrabCutEngine()
    embedding = engine.encode(image)
    start = time.perf_counter()
    result = engine.decode(embedding, point_coords=np.array([[CX * 4, CY * 4]]), point_labels=np.array([1]))
    assert time.perf_counter() - start < 10.0  # full-resolution GrabCut here takes ~50x longer
    assert result.masks.shape == (1, 2400, 3600)
    truth = np.kron(disc_image(1)[1], np.ones((4, 4), bool))
    assert iou(result.masks[0], truth) > 0.8


def test_rejects_non_rgb_input() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        GrabCutEngine().encode(np.zeros((10, 10), np.uint8))
