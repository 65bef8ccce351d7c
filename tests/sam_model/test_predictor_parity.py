"""Our SamPredictor vs the official segment-anything SamPredictor on the same random weights.

The official model is built with random weights, saved as a .pth, and loaded into ours
through `load_sam` with strict checking, so this also proves the checkpoint layout.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.predictor import SamPredictor as RefPredictor

from sam_model import DecodeResult, ImageEmbedding, SamPredictor, load_sam
from tests.support.masks import iou
from tests.support.oracle import official_sam

SCORE_ATOL = 1e-4
MIN_IOU = 0.999
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load_pair(tmp_path: Path, model_type: str, seed: int, std: float) -> tuple[RefPredictor, SamPredictor]:
    ref = official_sam(model_type, seed, std)
    path = tmp_path / f"{model_type}.pth"
    torch.save(ref.state_dict(), path)
    ours = load_sam(model_type, str(path), device="cpu")
    return RefPredictor(ref), SamPredictor(ours, model_id=f"{model_type}-random")


def test_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth blobs plus noise: structure for the encoder, detail for the resize."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 6, 8)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(coarse, (h, w), mode="bilinear", align_corners=False)[0]
    noisy = smooth.permute(1, 2, 0).numpy() + rng.normal(0, 20, (h, w, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


test_image.__test__ = False  # a helper, not a test


def prompts(h: int, w: int, ref: RefPredictor) -> dict[str, dict]:
    """The prompt kinds annotators send, in original-image pixels."""
    point = {"point_coords": np.array([[0.4 * w, 0.55 * h]]), "point_labels": np.array([1])}
    box = np.array([0.2 * w, 0.25 * h, 0.7 * w, 0.8 * h])
    _, _, logits = ref.predict(**point, multimask_output=False)
    return {
        "point": point,
        "points_neg": {
            "point_coords": np.array([[0.3 * w, 0.3 * h], [0.6 * w, 0.7 * h], [0.9 * w, 0.1 * h]]),
            "point_labels": np.array([1, 1, 0]),
        },
        "box": {"box": box},
        "point_box": {**point, "box": box},
        "mask_input": {**point, "mask_input": logits},
    }


def assert_same(ours: DecodeResult, ref_masks: np.ndarray, ref_scores: np.ndarray, ref_low: np.ndarray) -> None:
    assert ours.masks.dtype == bool and ours.masks.shape == ref_masks.shape
    np.testing.assert_allclose(ours.scores, ref_scores, atol=SCORE_ATOL, rtol=0)
    np.testing.assert_allclose(ours.low_res_logits, ref_low, atol=1e-3, rtol=1e-4)
    for k in range(len(ref_masks)):
        assert iou(ours.masks[k], ref_masks[k]) >= MIN_IOU, f"candidate {k}"


def check_parity(ref: RefPredictor, ours: SamPredictor, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    ref.set_image(image)
    emb = ours.encode(image)
    assert isinstance(emb, ImageEmbedding) and emb.original_size == (h, w)
    assert emb.input_size == ref.input_size
    torch.testing.assert_close(emb.features, ref.features, atol=1e-4, rtol=1e-4)
    for name, kwargs in prompts(h, w, ref).items():
        ref_masks, ref_scores, ref_low = ref.predict(**kwargs, multimask_output=True)
        assert_same(ours.decode(emb, **kwargs), ref_masks, ref_scores, ref_low)
        fractions = ref_masks.mean(axis=(1, 2))
        assert ((fractions > 0.01) & (fractions < 0.99)).any(), f"{name}: degenerate masks, test proves nothing"
        if name in ("point", "point_box"):  # the two calls the backend makes; enough to check the modes
            best = int(np.argmax(ref_scores))
            one = ours.decode(emb, **kwargs, best_only=True)
            assert_same(one, ref_masks[best : best + 1], ref_scores[best : best + 1], ref_low[best : best + 1])
            ref_single = ref.predict(**kwargs, multimask_output=False)
            assert_same(ours.decode(emb, **kwargs, multimask=False), *ref_single)


@pytest.fixture(scope="module")
def predictors(tmp_path_factory: pytest.TempPathFactory) -> tuple[RefPredictor, SamPredictor]:
    return load_pair(tmp_path_factory.mktemp("tiny"), "tiny", seed=0, std=0.05)


@pytest.mark.parametrize(
    "h, w",
    [(480, 640), (517, 300), (48, 64), (3000, 4000), (1024, 1024), (1, 7)],
    ids=["landscape", "portrait", "tiny", "4000x3000", "square", "sliver"],
)
def test_tiny_matches_reference(predictors: tuple[RefPredictor, SamPredictor], h: int, w: int) -> None:
    check_parity(*predictors, test_image(h, w, seed=h * w))


def test_different_prompts_give_different_masks(predictors: tuple[RefPredictor, SamPredictor]) -> None:
    """The IoU bar discriminates: two clicks far apart must not pass as 'the same mask'."""
    _, ours = predictors
    emb = ours.encode(test_image(480, 640, seed=1))
    a = ours.decode(emb, np.array([[100, 100]]), np.array([1]), multimask=False)
    b = ours.decode(emb, np.array([[600, 400]]), np.array([1]), multimask=False)
    assert iou(a.masks[0], b.masks[0]) < MIN_IOU


@pytest.mark.slow
def test_vit_b_matches_reference(tmp_path: Path) -> None:
    ref, ours = load_pair(tmp_path, "vit_b", seed=1, std=0.02)
    check_parity(ref, ours, test_image(1000, 1500, seed=2))


def test_fp16_bytes_round_trip_decodes_like_fp32(predictors: tuple[RefPredictor, SamPredictor]) -> None:
    """The cache stores fp16 bytes; a click on them must give (nearly) the same mask."""
    _, ours = predictors
    emb = ours.encode(test_image(300, 400, seed=3))
    back = ImageEmbedding.from_bytes(emb.to_bytes())
    kwargs = {"point_coords": np.array([[150, 120]]), "point_labels": np.array([1]), "best_only": True}
    a, b = ours.decode(emb, **kwargs), ours.decode(back, **kwargs)
    assert iou(a.masks[0], b.masks[0]) > 0.99
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-2)


def test_concurrent_decodes_match_serial(predictors: tuple[RefPredictor, SamPredictor]) -> None:
    """No hidden per-image state: threads on different images get their own answers."""
    _, ours = predictors
    embs = [ours.encode(test_image(200 + 50 * i, 300, seed=i)) for i in range(3)]
    point = {"point_coords": np.array([[120, 90]]), "point_labels": np.array([1])}
    serial = [ours.decode(e, **point).masks for e in embs]
    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel = list(pool.map(lambda e: ours.decode(e, **point).masks, embs * 2))
    for i, masks in enumerate(parallel):
        np.testing.assert_array_equal(masks, serial[i % 3])


def test_bf16_on_cpu_when_asked(predictors: tuple[RefPredictor, SamPredictor]) -> None:
    _, ours = predictors
    bf16 = SamPredictor(ours.sam, ours.model_id, precision="bf16")
    image = test_image(240, 320, seed=4)
    fp32_emb, bf16_emb = ours.encode(image), bf16.encode(image)
    assert bf16_emb.features.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(fp32_emb.features.flatten(), bf16_emb.features.flatten(), dim=0)
    assert cos > 0.99
    result = bf16.decode(bf16_emb, np.array([[100, 100]]), np.array([1]))
    assert result.masks.shape == (3, 240, 320) and result.scores.dtype == np.float32


def test_compile_constructs(predictors: tuple[RefPredictor, SamPredictor]) -> None:
    """Compiling happens on the first encode (minutes on this CPU); here: it wraps the encoder."""
    _, ours = predictors
    compiled = SamPredictor(ours.sam, ours.model_id, compile=True)
    assert compiled._encoder is not ours.sam.image_encoder and callable(compiled._encoder)


@pytest.fixture(scope="module")
def embedding(predictors: tuple[RefPredictor, SamPredictor]) -> ImageEmbedding:
    return predictors[1].encode(test_image(120, 160, seed=5))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "at least one prompt"),
        ({"point_coords": np.array([[1.0, 2.0]])}, "together"),
        ({"point_coords": np.array([1.0, 2.0]), "point_labels": np.array([1])}, r"\(N, 2\)"),
        ({"point_coords": np.zeros((0, 2)), "point_labels": np.zeros(0)}, "N >= 1"),
        ({"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([1, 0])}, "point_labels must have shape"),
        ({"point_coords": np.array([[np.nan, 2.0]]), "point_labels": np.array([1])}, "finite"),
        ({"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([2])}, "1 .foreground. or 0"),
        ({"box": np.array([1.0, 2.0, 3.0])}, "box must have shape"),
        ({"box": np.array([1.0, 2.0, np.inf, 4.0])}, "box must be finite"),
        ({"mask_input": np.zeros((256, 256))}, "mask_input must have shape"),
        ({"mask_input": np.full((1, 256, 256), np.nan)}, "mask_input must be finite"),
    ],
)
def test_decode_rejects_bad_prompts(
    predictors: tuple[RefPredictor, SamPredictor], embedding: ImageEmbedding, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        predictors[1].decode(embedding, **kwargs)


def test_decode_rejects_foreign_embeddings(
    predictors: tuple[RefPredictor, SamPredictor], embedding: ImageEmbedding
) -> None:
    ours = predictors[1]
    point = {"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([1])}
    other = ImageEmbedding(embedding.features, embedding.original_size, embedding.input_size, "grabcut")
    with pytest.raises(ValueError, match="from model 'grabcut'"):
        ours.decode(other, **point)
    small = ImageEmbedding(torch.zeros(1, 256, 32, 32), embedding.original_size, embedding.input_size, ours.model_id)
    with pytest.raises(ValueError, match="features must have shape"):
        ours.decode(small, **point)
    skewed = ImageEmbedding(embedding.features, (120, 160), (1024, 1024), ours.model_id)
    with pytest.raises(ValueError, match="input_size"):
        ours.decode(skewed, **point)
    with pytest.raises(ValueError, match="ImageEmbedding"):
        ours.decode(embedding.features, **point)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((0, 10, 3), np.uint8),
        [[0, 0, 0]],
    ],
    ids=["float", "gray", "rgba", "empty", "list"],
)
def test_encode_rejects_bad_images(predictors: tuple[RefPredictor, SamPredictor], image: object) -> None:
    with pytest.raises(ValueError):
        predictors[1].encode(image)


def test_unknown_precision_is_rejected(predictors: tuple[RefPredictor, SamPredictor]) -> None:
    with pytest.raises(ValueError, match="precision"):
        SamPredictor(predictors[1].sam, "m", precision="int4")
