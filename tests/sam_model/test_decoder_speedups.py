"""The decoder's fast paths against the official decoder (the oracle) and against each other.

Folded cross-attention, the per-image `ImageContext` of the first block, the channels-last
upscaling and the predictor's context cache must change speed only: every path is checked
against the official module on the same random weights, and cached against uncached.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from segment_anything.predictor import SamPredictor as RefPredictor

from sam_model import ImageEmbedding, SamPredictor

ATOL = 1e-4
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(seed: int) -> torch.Tensor:
    return torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(seed))


def _points(n: int, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n, 2, generator=g) * 1024, torch.randint(0, 2, (batch, n), generator=g)


# Token counts: 7 (one point + pad), 9 (points + box), and 22 (17 points + pad: 8 heads x 22
# tokens exceed the 128-wide attention, so the folded paths fall back to the plain ones).
PROMPTS = {
    "one_point": dict(points=_points(1), boxes=None),
    "points_box": dict(points=_points(2), boxes=torch.tensor([[10.0, 20.0, 500.0, 700.0]])),
    "box_only": dict(points=None, boxes=torch.tensor([[100.0, 50.0, 900.0, 1000.0]])),
    "many_points": dict(points=_points(17), boxes=None),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", list(PROMPTS))
@torch.inference_mode()
def test_prepared_and_plain_forward_match_official(tiny_pair, kind: str, multimask: bool) -> None:
    ref, ours, _ = tiny_pair
    sparse, dense = ref.prompt_encoder(**PROMPTS[kind], masks=None)
    pe = ref.prompt_encoder.get_dense_pe()
    args = dict(image_embeddings=_image(1), image_pe=pe, sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
    want_masks, want_iou = ref.mask_decoder(**args, multimask_output=multimask)
    assert want_masks.abs().mean() > 0.1
    got_masks, got_iou = ours.mask_decoder(**args, multimask_output=multimask)
    torch.testing.assert_close(got_masks, want_masks, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(got_iou, want_iou, atol=1e-5, rtol=1e-5)
    context = ours.mask_decoder.prepare(args["image_embeddings"], pe, dense)
    got_masks, got_iou = ours.mask_decoder.forward_prepared(context, sparse, multimask)
    torch.testing.assert_close(got_masks, want_masks, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(got_iou, want_iou, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_points", [1, 17])
@torch.inference_mode()
def test_batch_on_one_shared_image_matches_official(tiny_pair, n_points: int) -> None:
    """AMG's call: one image (batch 1), a broadcast "no mask" dense prompt, many prompt sets;
    the prepared path takes the same batch against a batch-1 context."""
    ref, ours, _ = tiny_pair
    # 9 prompt sets: more than one CPU chunk of the prepared path, the last one partial.
    sparse, dense = ref.prompt_encoder(points=_points(n_points, batch=9, seed=4), boxes=None, masks=None)
    assert dense.stride(0) == 0
    pe = ref.prompt_encoder.get_dense_pe()
    args = dict(image_embeddings=_image(2), image_pe=pe, sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
    want_masks, want_iou = ref.mask_decoder(**args, multimask_output=True)
    got_masks, got_iou = ours.mask_decoder(**args, multimask_output=True)
    torch.testing.assert_close(got_masks, want_masks, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(got_iou, want_iou, atol=1e-5, rtol=1e-5)
    context = ours.mask_decoder.prepare(args["image_embeddings"], pe, dense[:1])
    got_masks, got_iou = ours.mask_decoder.forward_prepared(context, sparse, True)
    torch.testing.assert_close(got_masks, want_masks, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(got_iou, want_iou, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("keep", ["some", "none", "all"])
@torch.inference_mode()
def test_iou_filtered_decode_computes_exactly_the_kept_masks(tiny_pair, keep: str) -> None:
    """AMG's call: only masks with predicted IoU above the floor get logits, equal to the
    official decoder's for those masks, in point-major order."""
    ref, ours, _ = tiny_pair
    sparse, dense = ref.prompt_encoder(points=_points(1, batch=10, seed=7), boxes=None, masks=None)
    pe = ref.prompt_encoder.get_dense_pe()
    want_masks, want_iou = ref.mask_decoder(
        image_embeddings=_image(3),
        image_pe=pe,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )
    floor = {"some": float(want_iou.median()), "none": float(want_iou.max()) + 1, "all": None}[keep]
    context = ours.mask_decoder.prepare(_image(3), pe, dense[:1])
    iou, kept, logits = ours.mask_decoder.forward_prepared_above(context, sparse, True, floor)
    torch.testing.assert_close(iou, want_iou, atol=1e-5, rtol=1e-5)
    expected = torch.ones_like(kept) if floor is None else want_iou > floor
    assert torch.equal(kept, expected)
    assert {"some": 0 < int(kept.sum()) < kept.numel(), "none": not kept.any(), "all": bool(kept.all())}[keep]
    assert logits.shape == (int(kept.sum()), 256, 256)
    torch.testing.assert_close(logits, want_masks[kept], atol=ATOL, rtol=1e-4)


@pytest.fixture(scope="module")
def predictors(tiny_pair) -> tuple[RefPredictor, SamPredictor]:
    ref, ours, _ = tiny_pair
    return RefPredictor(ref), SamPredictor(ours, model_id="tiny-random")


def _embedding(seed: int, size: tuple[int, int] = (480, 640)) -> ImageEmbedding:
    from sam_model.common.transforms import input_shape

    return ImageEmbedding(_image(seed), size, input_shape(size, 1024), "tiny-random")


def _reference(ref: RefPredictor, emb: ImageEmbedding, **prompt) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ref.reset_image()
    ref.features = emb.features
    ref.original_size, ref.input_size = emb.original_size, emb.input_size
    ref.is_image_set = True
    return ref.predict(**prompt, multimask_output=True)


def _click(i: int, h: int = 480, w: int = 640) -> dict:
    rng = np.random.default_rng(i)
    n = 1 + i % 3
    return {"point_coords": rng.uniform(0, 1, (n, 2)) * [w, h], "point_labels": rng.integers(0, 2, n)}


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6, rtol=0)
    np.testing.assert_allclose(a.low_res_logits, b.low_res_logits, atol=1e-5, rtol=0)


def test_cached_click_matches_reference_and_uncached(predictors) -> None:
    ref, ours = predictors
    emb = _embedding(3)
    first = ours.decode(emb, **_click(0))  # builds the context
    again = ours.decode(emb, **_click(0))  # reuses it
    fresh = SamPredictor(ours.sam, ours.model_id).decode(emb, **_click(0))
    _same(first, again)
    _same(first, fresh)
    masks, scores, low = _reference(ref, emb, **_click(0))
    np.testing.assert_allclose(first.scores, scores, atol=ATOL, rtol=0)
    np.testing.assert_allclose(first.low_res_logits, low, atol=1e-3, rtol=1e-4)
    assert (first.masks == masks).mean() > 0.999


def test_mask_input_takes_the_plain_path_and_matches_reference(predictors) -> None:
    ref, ours = predictors
    emb = _embedding(4)
    logits = ours.decode(emb, **_click(1), multimask=False).low_res_logits
    got = ours.decode(emb, **_click(2), mask_input=logits)
    masks, scores, low = _reference(ref, emb, **_click(2), mask_input=logits)
    np.testing.assert_allclose(got.scores, scores, atol=ATOL, rtol=0)
    np.testing.assert_allclose(got.low_res_logits, low, atol=1e-3, rtol=1e-4)
    # And it is not the no-mask answer served from the cached context.
    assert not np.allclose(got.low_res_logits, ours.decode(emb, **_click(2)).low_res_logits, atol=1e-3)


def test_threads_on_one_embedding_match_serial(predictors) -> None:
    """Several request threads click on one (new) embedding at once, racing to build its context."""
    _, ours = predictors
    serial_predictor = SamPredictor(ours.sam, ours.model_id, context_cache_size=0)
    emb = _embedding(5)
    serial = [serial_predictor.decode(emb, **_click(i)) for i in range(8)]
    barrier = threading.Barrier(4)

    def click(i: int):
        if i < 4:
            barrier.wait()
        return ours.decode(emb, **_click(i))

    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(click, range(8)))
    for a, b in zip(parallel, serial, strict=True):
        _same(a, b)


def test_cache_never_serves_another_embeddings_context(predictors) -> None:
    """Embeddings come and go (ids get recycled); each click must see its own features."""
    _, ours = predictors
    small = SamPredictor(ours.sam, ours.model_id, context_cache_size=2)
    plain = SamPredictor(ours.sam, ours.model_id, context_cache_size=0)
    for seed in range(6):
        emb = _embedding(10 + seed)  # the previous one is freed: its id may be reused
        _same(small.decode(emb, **_click(seed)), plain.decode(emb, **_click(seed)))
        del emb
    assert len(small._contexts._items) <= 2
