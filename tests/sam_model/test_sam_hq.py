"""Our SAM-HQ predictor vs the official segment-anything-hq `SamPredictor` on the same random weights.

The official HQ Sam is built with every parameter random, saved as its files are laid out
(a bare state_dict) and loaded into ours through the shared loader's steps, strictly, so
this also proves the checkpoint layout.
"""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sam_model.amg import AutomaticMaskGenerator
from sam_model.common.checkpoint import CheckpointError
from sam_model.common.decoding import DecodeResult
from sam_model.common.embedding import ImageEmbedding
from sam_model.families import identify
from sam_model.loading import load_sam
from sam_model.sam1.build import build_sam
from sam_model.sam_hq import LIGHT, SamHq, SamHqPredictor, build_sam_hq, pack, unpack
from sam_model.sam_hq.family import FAMILY
from tests.support.amg_records import assert_same_masks
from tests.support.amg_records import sample_image as sample_amg_image
from tests.support.masks import iou
from tests.support.oracle_sam_hq import (
    OfficialHqGenerator,
    OfficialHqPredictor,
    official_build,
    official_sam_hq,
    save_official,
)

FEATURE_ATOL = 1e-4
SCORE_ATOL = 1e-4
LOGIT_ATOL = 1e-3
MIN_IOU = 0.999
TINY = "sam_hq_tiny"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sample_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth blobs plus noise: structure for the encoder, detail for the resize."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 6, 8)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(coarse, (h, w), mode="bilinear", align_corners=False)[0]
    noisy = smooth.permute(1, 2, 0).numpy() + rng.normal(0, 20, (h, w, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def load_pair(tmp: Path, model_type: str, seed: int, std: float) -> tuple[OfficialHqPredictor, SamHqPredictor, Path]:
    ref = official_sam_hq(model_type, seed, std)
    path = save_official(ref, tmp / f"{model_type}.pth")
    ours = load_sam(model_type, path, device="cpu")
    assert isinstance(ours, SamHq) and not any(p.requires_grad for p in ours.parameters())
    return OfficialHqPredictor(ref), SamHqPredictor(ours, f"{model_type}-random"), path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[OfficialHqPredictor, SamHqPredictor, Path]:
    """(official predictor, ours loaded from the official-layout file, that file)."""
    return load_pair(tmp_path_factory.mktemp("sam_hq"), TINY, seed=0, std=0.05)


def prompts(h: int, w: int) -> dict[str, dict]:
    """The prompt kinds annotators send, in original-image pixels."""
    point = {"point_coords": np.array([[0.4 * w, 0.55 * h]]), "point_labels": np.array([1])}
    box = np.array([0.2 * w, 0.25 * h, 0.7 * w, 0.8 * h])
    return {
        "point": point,
        "points_pos_neg": {
            "point_coords": np.array([[0.3 * w, 0.3 * h], [0.6 * w, 0.7 * h], [0.9 * w, 0.1 * h]]),
            "point_labels": np.array([1, 1, 0]),
        },
        "box": {"box": box},
        "point_box": {**point, "box": box},
    }


def assert_same(ours: DecodeResult, ref_masks: np.ndarray, ref_scores: np.ndarray, ref_low: np.ndarray) -> None:
    assert ours.masks.dtype == bool and ours.masks.shape == ref_masks.shape
    np.testing.assert_allclose(ours.scores, ref_scores, atol=SCORE_ATOL, rtol=0)
    np.testing.assert_allclose(ours.low_res_logits, ref_low, atol=LOGIT_ATOL, rtol=0)
    for k in range(len(ref_masks)):
        assert iou(ours.masks[k], ref_masks[k]) >= MIN_IOU, f"candidate {k}"


def assert_features_match(ref: OfficialHqPredictor, emb: ImageEmbedding) -> None:
    image_embed, early = unpack(emb.features)
    for name, a, b in (
        ("image_embed", image_embed, ref.features),
        ("early", early, ref.interm_features[0].permute(0, 3, 1, 2)),
    ):
        assert a.shape == b.shape, name
        diff = float((a - b).abs().max())
        assert diff <= FEATURE_ATOL, f"{name}: max abs diff {diff}"


def assert_not_degenerate(low_res: np.ndarray, input_size: tuple[int, int], name: str) -> None:
    """Logits of both signs over the image's part of the low-res grid (a 1x7 image's mask
    may well be empty; the logits it comes from must not be)."""
    rows, cols = (-(-side // 4) for side in input_size)
    fraction = (low_res[:, :rows, :cols] > 0).mean()
    assert 0.01 < fraction < 0.99, f"{name}: degenerate mask, test proves nothing"


def check_parity(
    ref: OfficialHqPredictor, ours: SamHqPredictor, image: np.ndarray, all_prompts: bool, hq_token_only: bool = False
) -> None:
    h, w = image.shape[:2]
    ref.set_image(image)
    emb = ours.encode(image)
    assert emb.original_size == (h, w) and emb.input_size == ref.input_size
    assert_features_match(ref, emb)
    cases = prompts(h, w) if all_prompts else {"point": prompts(h, w)["point"]}
    for name, kwargs in cases.items():
        for multimask in (True, False):
            ref_out = ref.predict(**kwargs, multimask_output=multimask, hq_token_only=hq_token_only)
            assert_same(ours.decode(emb, **kwargs, multimask=multimask), *ref_out)
            assert_not_degenerate(ref_out[2], emb.input_size, name)
    # Refinement: the previous low-res logits come back as mask_input with a second click.
    _, _, ref_low = ref.predict(**cases["point"], hq_token_only=hq_token_only)
    refine = {
        "point_coords": np.array([[0.4 * w, 0.55 * h], [0.8 * w, 0.2 * h]]),
        "point_labels": np.array([1, 0]),
        "mask_input": ref_low,
    }
    for multimask in (True, False):
        ref_out = ref.predict(**refine, multimask_output=multimask, hq_token_only=hq_token_only)
        assert_same(ours.decode(emb, **refine, multimask=multimask), *ref_out)
    # best_only changes nothing: one mask already.
    one = ours.decode(emb, **cases["point"], best_only=True)
    assert_same(one, *ref.predict(**cases["point"], hq_token_only=hq_token_only))


def test_tiny_matches_official_on_every_prompt_kind(tiny: tuple) -> None:
    ref, ours, _ = tiny
    check_parity(ref, ours, sample_image(1000, 1500, seed=1), all_prompts=True)


def test_tiny_hq_token_only_matches_official(tiny: tuple) -> None:
    ref, ours, _ = tiny
    hq_only = SamHqPredictor(ours.sam, ours.model_id, hq_token_only=True)
    check_parity(ref, hq_only, sample_image(700, 500, seed=3), all_prompts=True, hq_token_only=True)


def test_hq_token_only_default_is_the_official_default(tiny: tuple) -> None:
    official = inspect.signature(OfficialHqPredictor.predict).parameters["hq_token_only"].default
    assert tiny[1].hq_token_only is official is False


@pytest.mark.parametrize(
    "h, w", [(1300, 700), (48, 64), (1, 7), (1024, 1024)], ids=["portrait", "small", "sliver", "square"]
)
def test_tiny_matches_official_on_image_shapes(tiny: tuple, h: int, w: int) -> None:
    ref, ours, _ = tiny
    check_parity(ref, ours, sample_image(h, w, seed=h * w), all_prompts=False)


def test_the_hq_mask_matters(tiny: tuple) -> None:
    """SAM's mask plus the HQ mask differs from the HQ mask alone: both paths are live."""
    _, ours, _ = tiny
    emb = ours.encode(sample_image(240, 320, seed=8))
    point = {"point_coords": np.array([[130, 120]]), "point_labels": np.array([1])}
    both = ours.decode(emb, **point)
    alone = SamHqPredictor(ours.sam, ours.model_id, hq_token_only=True).decode(emb, **point)
    assert np.abs(both.low_res_logits - alone.low_res_logits).max() > 0.1
    np.testing.assert_array_equal(both.scores, alone.scores)


def test_different_prompts_give_different_masks(tiny: tuple) -> None:
    """The IoU bar discriminates: two clicks far apart must not pass as 'the same mask'."""
    _, ours, _ = tiny
    emb = ours.encode(sample_image(480, 640, seed=2))
    a = ours.decode(emb, np.array([[60, 60]]), np.array([1]))
    b = ours.decode(emb, np.array([[600, 420]]), np.array([1]))
    assert iou(a.masks[0], b.masks[0]) < MIN_IOU


def test_light_hq_sam_matches_official(tmp_path: Path) -> None:
    """sam_hq_vit_tiny: MobileSAM's TinyViT-5M encoder, its second stage as early features."""
    ref, ours, _ = load_pair(tmp_path, LIGHT, seed=4, std=0.02)
    check_parity(ref, ours, sample_image(600, 900, seed=9), all_prompts=True)


@pytest.mark.slow
def test_vit_b_matches_official(tmp_path: Path) -> None:
    ref, ours, _ = load_pair(tmp_path, "sam_hq_vit_b", seed=1, std=0.02)
    check_parity(ref, ours, sample_image(1000, 1500, seed=2), all_prompts=True)


@pytest.mark.parametrize("model_type", FAMILY.model_types + FAMILY.test_types)
def test_parameters_are_the_official_ones(model_type: str) -> None:
    """Same keys and shapes as the official model of that size, and the file identifies as it."""
    # The official TinyViT's init reads tensor values: build it for real (10M parameters).
    with torch.device("cpu" if model_type == LIGHT else "meta"):
        ref_state = official_build(model_type).state_dict()
    with torch.device("meta"):
        ours = build_sam_hq(model_type).state_dict()
    assert set(ours) == set(ref_state)
    assert all(ours[k].shape == ref_state[k].shape for k in ours)
    assert FAMILY.identify(ref_state) == model_type
    assert identify(ref_state) == model_type, "the shared identify must ask SAM-HQ before SAM v1 and MobileSAM"


@pytest.mark.parametrize("v1_type", ["vit_b", "vit_h", "tiny"])
def test_sam_v1_files_are_not_hq(v1_type: str) -> None:
    with torch.device("meta"):
        state = build_sam(v1_type).state_dict()
    assert FAMILY.identify(state) is None


def test_files_of_another_family_or_size_are_named(tiny: tuple, tiny_checkpoint: Path) -> None:
    path = tiny[2]
    with pytest.raises(CheckpointError, match=r"is a sam_hq_tiny checkpoint \(SAM-HQ\), not tiny; set SAM_MODEL"):
        load_sam("tiny", path, device="cpu")
    with pytest.raises(CheckpointError, match=r"is a sam_hq_tiny checkpoint \(SAM-HQ\), not sam_hq_vit_b"):
        load_sam("sam_hq_vit_b", path, device="cpu")
    with pytest.raises(CheckpointError, match=r"is a tiny checkpoint \(SAM v1\), not sam_hq_tiny"):
        load_sam(TINY, tiny_checkpoint, device="cpu")


def test_a_vit_b_hq_file_loaded_as_vit_b_is_named(tmp_path: Path) -> None:
    """The full-size layout (zeros: only keys and shapes matter before anything is adopted)."""
    with torch.device("meta"):
        shapes = build_sam_hq("sam_hq_vit_b").state_dict()
    path = tmp_path / "hq_b.pth"
    torch.save({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}, path)
    with pytest.raises(CheckpointError, match=r"is a sam_hq_vit_b checkpoint \(SAM-HQ\), not vit_b"):
        load_sam("vit_b", path, device="cpu")


def test_hq_keys_are_strict(tiny: tuple, tmp_path: Path) -> None:
    state = torch.load(tiny[2], map_location="cpu", weights_only=True)
    path = tmp_path / "changed.pth"
    torch.save({k: v for k, v in state.items() if k != "mask_decoder.embedding_maskfeature.3.bias"}, path)
    with pytest.raises(CheckpointError, match=r"missing \(1\): mask_decoder\.embedding_maskfeature\.3\.bias"):
        load_sam(TINY, path, device="cpu")


AMG_CASES: list[dict[str, Any]] = [
    dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0),
    # Batches that do not divide the grid; the IoU filter drops masks before their logits exist.
    dict(points_per_side=5, points_per_batch=7, pred_iou_thresh=0.05, stability_score_thresh=0.0, box_nms_thresh=1.0),
]


@pytest.mark.parametrize("settings", AMG_CASES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_amg_exact_mode_matches_the_official_hq_generator(tiny: tuple, settings: dict[str, Any]) -> None:
    """One mask per grid point (SAM's best + HQ), as the official generator makes them. With
    random weights the scores are arbitrary and masks overlap wholesale: thresholds are low and
    box NMS is off, so what is compared is every step, not the weights' judgement."""
    ref, ours, _ = tiny
    image = sample_amg_image(240, 360)
    theirs = OfficialHqGenerator(ref.model, output_mode="coco_rle", **settings).generate(image)
    mine = AutomaticMaskGenerator(ours, output_mode="coco_rle", mode="exact", **settings).generate(image)
    assert len(theirs) >= 10  # many masks kept, or the case proves little
    if settings["pred_iou_thresh"] > 0:
        assert len(theirs) < settings["points_per_side"] ** 2, "the IoU filter must drop some masks"
    assert_same_masks(mine, theirs)


def test_amg_defaults_are_the_official_generators() -> None:
    """HQ-SAM's generator keeps SAM v1's defaults: the family overrides none of ours."""
    official = inspect.signature(OfficialHqGenerator.__init__).parameters
    ours = inspect.signature(AutomaticMaskGenerator.__init__).parameters
    assert FAMILY.amg_defaults == {}
    shared = [name for name in official if name in ours and name not in ("self", "output_mode")]
    assert len(shared) >= 10 and all(official[n].default == ours[n].default for n in shared)


def test_pack_round_trip_is_exact() -> None:
    e, early = torch.randn(1, 256, 64, 64), torch.randn(1, 768, 64, 64)
    packed = pack(e, early)
    assert packed.shape == (1, 1024, 64, 64)
    for a, b in zip(unpack(packed), (e, early), strict=True):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def embedding(tiny: tuple) -> ImageEmbedding:
    return tiny[1].encode(sample_image(120, 160, seed=5))


def test_embedding_bytes_round_trip(tiny: tuple, embedding: ImageEmbedding) -> None:
    """The cache's bytes carry both maps: fp32 bytes decode identically, fp16 nearly."""
    ours = tiny[1]
    assert embedding.features.shape == (1, 256 + 64, 64, 64)
    point = {"point_coords": np.array([[60, 50]]), "point_labels": np.array([1])}
    direct = ours.decode(embedding, **point)
    exact = ours.decode(ImageEmbedding.from_bytes(embedding.to_bytes(dtype=None)), **point)
    np.testing.assert_array_equal(direct.masks, exact.masks)
    np.testing.assert_array_equal(direct.scores, exact.scores)
    half = ours.decode(ImageEmbedding.from_bytes(embedding.to_bytes()), **point)
    assert iou(direct.masks[0], half.masks[0]) > 0.99
    np.testing.assert_allclose(direct.scores, half.scores, atol=1e-2)


def test_bf16_on_cpu_when_asked(tiny: tuple, embedding: ImageEmbedding) -> None:
    ours = tiny[1]
    bf16 = SamHqPredictor(ours.sam, ours.model_id, precision="bf16")
    emb = bf16.encode(sample_image(120, 160, seed=5))
    assert emb.features.dtype == torch.float32
    a, b = embedding.features.double().flatten(), emb.features.double().flatten()
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
    first = bf16.decode(emb, np.array([[60, 50]]), np.array([1]))
    refined = bf16.decode(emb, np.array([[60, 50]]), np.array([1]), mask_input=first.low_res_logits, multimask=False)
    assert first.masks.shape == refined.masks.shape == (1, 120, 160)
    assert refined.scores.dtype == np.float32 and refined.low_res_logits.dtype == np.float32


def test_concurrent_decodes_match_serial(tiny: tuple, embedding: ImageEmbedding) -> None:
    """No hidden per-image state: threads on different images get their own answers."""
    ours = tiny[1]
    embs = [embedding, ours.encode(sample_image(90, 200, seed=6))]
    point = {"point_coords": np.array([[50, 40]]), "point_labels": np.array([1])}
    serial = [ours.decode(e, **point).masks for e in embs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        parallel = list(pool.map(lambda e: ours.decode(e, **point).masks, embs * 3))
    for i, masks in enumerate(parallel):
        np.testing.assert_array_equal(masks, serial[i % 2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "at least one prompt"),
        ({"point_coords": np.array([[1.0, 2.0]])}, "together"),
        ({"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([2])}, "1 .foreground. or 0"),
        ({"box": np.array([1.0, 2.0, np.inf, 4.0])}, "box must be finite"),
        ({"mask_input": np.zeros((256, 256))}, "mask_input must have shape"),
    ],
)
def test_decode_rejects_bad_prompts(tiny: tuple, embedding: ImageEmbedding, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny[1].decode(embedding, **kwargs)


def test_decode_rejects_foreign_embeddings(tiny: tuple, embedding: ImageEmbedding) -> None:
    ours = tiny[1]
    point = {"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([1])}
    other = ImageEmbedding(embedding.features, embedding.original_size, embedding.input_size, "vit_b")
    with pytest.raises(ValueError, match="from model 'vit_b'"):
        ours.decode(other, **point)
    v1_shaped = ImageEmbedding(torch.zeros(1, 256, 64, 64), (120, 160), (768, 1024), ours.model_id)
    with pytest.raises(ValueError, match="features must have shape"):
        ours.decode(v1_shaped, **point)
