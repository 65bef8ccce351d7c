"""Our SAM 2 image predictor vs the official `SAM2ImagePredictor` on the same random weights.

The official SAM2Base is built from Meta's Hydra config with every parameter random, saved
as Meta lays its files out (`{"model": state_dict}`, video modules included) and loaded into
ours through `load_sam`, strictly, so this also proves the checkpoint layout.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from sam2.build_sam import build_sam2 as official_build
from sam2.sam2_image_predictor import SAM2ImagePredictor

from sam_model import DecodeResult, ImageEmbedding
from sam_model.common.checkpoint import CheckpointError
from sam_model.families import identify
from sam_model.loading import load_sam
from sam_model.sam2 import SAM2_MODEL_TYPES, Sam2Predictor, build_sam2, pack, unpack
from sam_model.sam2.family import VIDEO_ONLY
from tests.support.images import photo_like
from tests.support.masks import iou
from tests.support.oracle_sam2 import official_config, official_sam2, save_official

FEATURE_ATOL = 1e-4
SCORE_ATOL = 1e-4
LOGIT_ATOL = 1e-3
MIN_IOU = 0.999
TINY = "sam2.1_hiera_tiny"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def state_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[SAM2ImagePredictor, Sam2Predictor, Path]:
    """(official predictor, ours loaded from the official-layout file, that file)."""
    ref = official_sam2(TINY, seed=0)
    path = save_official(ref, tmp_path_factory.mktemp("sam2") / f"{TINY}-random.pt")
    ours = load_sam(TINY, path, device="cpu")
    return SAM2ImagePredictor(ref), Sam2Predictor(ours, f"{TINY}-random"), path


@pytest.fixture(scope="module")
def tiny_v20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An official SAM 2.0 tiny file (its own Hydra config: 2.0's video modules)."""
    return save_official(official_sam2("sam2_hiera_tiny", seed=1), tmp_path_factory.mktemp("sam2") / "v20.pt")


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
        assert iou(ours.masks[k], ref_masks[k].astype(bool)) >= MIN_IOU, f"candidate {k}"


def assert_features_match(ref: SAM2ImagePredictor, emb: ImageEmbedding) -> None:
    image_embed, s1, s0 = unpack(emb.features)
    s0_ref, s1_ref = ref._features["high_res_feats"]
    for name, a, b in (
        ("image_embed", image_embed, ref._features["image_embed"]),
        ("s1", s1, s1_ref),
        ("s0", s0, s0_ref),
    ):
        assert a.shape == b.shape, name
        diff = float((a - b).abs().max())
        assert diff <= FEATURE_ATOL, f"{name}: max abs diff {diff}"


def check_parity(ref: SAM2ImagePredictor, ours: Sam2Predictor, image: np.ndarray, all_prompts: bool) -> None:
    h, w = image.shape[:2]
    ref.set_image(image)
    emb = ours.encode(image)
    assert emb.original_size == (h, w) and emb.input_size == (1024, 1024)
    assert_features_match(ref, emb)
    cases = prompts(h, w) if all_prompts else {"point": prompts(h, w)["point"]}
    for name, kwargs in cases.items():
        for multimask in (True, False):
            ref_out = ref.predict(**kwargs, multimask_output=multimask)
            assert_same(ours.decode(emb, **kwargs, multimask=multimask), *ref_out)
        fractions = ref_out[0].mean(axis=(1, 2))
        assert ((fractions > 0.01) & (fractions < 0.99)).any(), f"{name}: degenerate mask, test proves nothing"
    point = cases["point"]
    ref_masks, ref_scores, ref_low = ref.predict(**point, multimask_output=True)
    best = int(np.argmax(ref_scores))
    one = ours.decode(emb, **point, best_only=True)
    assert_same(one, ref_masks[best : best + 1], ref_scores[best : best + 1], ref_low[best : best + 1])
    # Refinement: the previous low-res logits come back as mask_input with a second click.
    refine = {
        "point_coords": np.array([[0.4 * w, 0.55 * h], [0.8 * w, 0.2 * h]]),
        "point_labels": np.array([1, 0]),
        "mask_input": ref_low[best : best + 1],
    }
    for multimask in (True, False):
        ref_out = ref.predict(**refine, multimask_output=multimask)
        assert_same(ours.decode(emb, **refine, multimask=multimask), *ref_out)


def test_tiny_matches_official_on_every_prompt_kind(tiny: tuple) -> None:
    ref, ours, _ = tiny
    check_parity(ref, ours, photo_like(1000, 1500, seed=1), all_prompts=True)


@pytest.mark.parametrize(
    "h, w", [(1300, 700), (48, 64), (1, 7), (1024, 1024)], ids=["portrait", "small", "sliver", "square"]
)
def test_tiny_matches_official_on_image_shapes(tiny: tuple, h: int, w: int) -> None:
    ref, ours, _ = tiny
    check_parity(ref, ours, photo_like(h, w, seed=h * w), all_prompts=False)


@pytest.mark.slow
def test_tiny_matches_official_on_a_large_photo(tiny: tuple) -> None:
    """Strong antialiased downscaling (4000x3000) and a long final upscale."""
    ref, ours, _ = tiny
    check_parity(ref, ours, photo_like(3000, 4000, seed=7), all_prompts=False)


@pytest.mark.parametrize("thresh, branch", [(0.0, "single token"), (2.0, "best multimask")])
def test_single_mask_stability_fallback_matches_both_ways(tiny: tuple, thresh: float, branch: str) -> None:
    """`build_sam2`'s dynamic single mask: forced to each branch, both sides agree."""
    ref, ours, _ = tiny
    ref_decoder, our_decoder = ref.model.sam_mask_decoder, ours.model.sam_mask_decoder
    before = ref_decoder.dynamic_multimask_stability_thresh
    assert (before, our_decoder.stability_thresh, our_decoder.stability_delta) == (0.98, 0.98, 0.05)
    image = photo_like(300, 400, seed=11)
    ref.set_image(image)
    emb = ours.encode(image)
    point = prompts(300, 400)["point"]
    multi = ours.decode(emb, **point, multimask=True)
    try:
        ref_decoder.dynamic_multimask_stability_thresh = our_decoder.stability_thresh = thresh
        single = ours.decode(emb, **point, multimask=False)
        assert_same(single, *ref.predict(**point, multimask_output=False))
    finally:
        ref_decoder.dynamic_multimask_stability_thresh = our_decoder.stability_thresh = before
    best_multi = float(multi.scores.max())
    if branch == "best multimask":
        assert single.scores[0] == pytest.approx(best_multi, abs=SCORE_ATOL)
    else:
        assert single.scores[0] != pytest.approx(best_multi, abs=SCORE_ATOL)


def test_confident_logits_are_clamped_like_official(tiny: tuple) -> None:
    """Hypernetworks scaled up on both sides push logits past +-32, where both clamp."""
    ref, ours, _ = tiny
    image = photo_like(200, 300, seed=12)
    ref.set_image(image)
    emb = ours.encode(image)
    layers = [
        mlp.layers[-1]
        for decoder in (ref.model.sam_mask_decoder, ours.model.sam_mask_decoder)
        for mlp in decoder.output_hypernetworks_mlps
    ]
    saved = [layer.weight.clone() for layer in layers]
    point = prompts(200, 300)["point"]
    try:
        with torch.no_grad():
            for layer in layers:
                layer.weight.mul_(100)
        ref_out = ref.predict(**point)
        result = ours.decode(emb, **point)
    finally:
        with torch.no_grad():
            for layer, weight in zip(layers, saved, strict=True):
                layer.weight.copy_(weight)
    assert np.abs(ref_out[2]).max() == 32.0
    assert_same(result, *ref_out)


def test_different_prompts_give_different_masks(tiny: tuple) -> None:
    """The IoU bar discriminates: two clicks far apart must not pass as 'the same mask'."""
    _, ours, _ = tiny
    emb = ours.encode(photo_like(240, 320, seed=2))
    a = ours.decode(emb, np.array([[40, 40]]), np.array([1]), best_only=True)
    b = ours.decode(emb, np.array([[280, 200]]), np.array([1]), best_only=True)
    assert iou(a.masks[0], b.masks[0]) < MIN_IOU


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["sam2.1_hiera_base_plus", "sam2.1_hiera_large"])
def test_larger_sizes_match_official(model_type: str) -> None:
    """Other head counts and window sizes (b+: 2 heads; large: windows 8/4/16/8)."""
    ref = official_sam2(model_type, seed=3, std=0.03)
    with torch.device("meta"):
        model = build_sam2(model_type)
    wanted = model.state_dict()
    state = {k: v for k, v in ref.state_dict().items() if k in wanted}
    model.load_state_dict(state, strict=True, assign=True)
    check_parity(SAM2ImagePredictor(ref), Sam2Predictor(model.eval(), model_type), photo_like(600, 800, seed=4), False)


@pytest.mark.parametrize("model_type", SAM2_MODEL_TYPES)
def test_parameters_are_the_official_image_path(model_type: str) -> None:
    """Every official key is ours (same shape) or on the explicit video-only list, and the
    file identifies as its own model type."""
    ref_state = official_build(official_config(model_type), ckpt_path=None, device="cpu").state_dict()
    with torch.device("meta"):
        ours = build_sam2(model_type).state_dict()
    video = {k for k in ref_state if any(k == p or k.startswith(p + ".") for p in VIDEO_ONLY)}
    assert set(ours) == set(ref_state) - video
    assert all(ours[k].shape == ref_state[k].shape for k in ours)
    assert identify(ref_state) == model_type
    if model_type.startswith("sam2.1"):
        unused = [p for p in VIDEO_ONLY if not any(k == p or k.startswith(p + ".") for k in ref_state)]
        assert not unused, f"video-only entries that match nothing: {unused}"


def test_loads_a_20_file_and_tells_the_releases_apart(tiny: tuple, tiny_v20: Path) -> None:
    _, _, path21 = tiny
    assert identify(state_of(tiny_v20)) == "sam2_hiera_tiny"
    assert identify(state_of(path21)) == TINY
    model = load_sam("sam2_hiera_tiny", tiny_v20, device="cpu")
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(CheckpointError, match=rf"{path21.name} is a sam2\.1_hiera_tiny checkpoint.*SAM_MODEL=sam2\.1"):
        load_sam("sam2_hiera_tiny", path21, device="cpu")
    with pytest.raises(CheckpointError, match=rf"{tiny_v20.name} is a sam2_hiera_tiny checkpoint"):
        load_sam(TINY, tiny_v20, device="cpu")


def test_wrong_size_and_sam_v1_files_are_named(tiny: tuple, tiny_checkpoint: Path) -> None:
    _, _, path21 = tiny
    with pytest.raises(CheckpointError, match=r"is a sam2\.1_hiera_tiny checkpoint \(SAM 2\), not sam2\.1_hiera_small"):
        load_sam("sam2.1_hiera_small", path21, device="cpu")
    with pytest.raises(CheckpointError, match=rf"{tiny_checkpoint.name} is a tiny checkpoint.*SAM_MODEL=tiny"):
        load_sam(TINY, tiny_checkpoint, device="cpu")


def test_image_path_keys_are_strict_video_keys_ignored(tiny: tuple, tmp_path: Path) -> None:
    _, _, path21 = tiny
    state = state_of(path21)

    def load(changed: dict[str, torch.Tensor]) -> None:
        torch.save({"model": changed}, tmp_path / "changed.pt")
        load_sam(TINY, tmp_path / "changed.pt", device="cpu")

    without = {k: v for k, v in state.items() if k != "sam_mask_decoder.conv_s0.bias"}
    with pytest.raises(CheckpointError, match=r"missing \(1\): sam_mask_decoder\.conv_s0\.bias"):
        load(without)
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): sam_mask_decoder\.extra"):
        load({**state, "sam_mask_decoder.extra": torch.zeros(1)})
    resized = {**state, "no_mem_embed": torch.zeros(1, 1, 128)}
    with pytest.raises(CheckpointError, match=r"shape mismatch \(1\): no_mem_embed"):
        load(resized)
    load({k: v for k, v in state.items() if not k.startswith("memory_encoder.")})  # video-only: ignored


class _Payload:
    """Any non-tensor object: weights_only loading must refuse it."""


def test_unsafe_missing_and_foreign_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not found.*segment_anything_2/092824/sam2\.1_hiera_tiny\.pt"):
        load_sam(TINY, tmp_path / "nope.pt", device="cpu")
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "extra": _Payload()}, unsafe)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_sam(TINY, unsafe, device="cpu")
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match="expected a state_dict of tensors"):
        load_sam(TINY, listed, device="cpu")
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"backbone.weight": torch.zeros(2)}}, foreign)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(foreign.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_sam(TINY, truncated, device="cpu")
    with pytest.raises(
        CheckpointError, match=r"does not match model type.*not a checkpoint of any family sam_model serves"
    ):
        load_sam(TINY, foreign, device="cpu")
    with pytest.raises(ValueError, match="unknown model_type 'sam2.1_hiera_huge'"):
        load_sam("sam2.1_hiera_huge", foreign, device="cpu")


def test_pack_round_trip_is_exact() -> None:
    e, s1, s0 = torch.randn(1, 256, 64, 64), torch.randn(1, 64, 128, 128), torch.randn(1, 32, 256, 256)
    packed = pack(e, s1, s0)
    assert packed.shape == (1, 1024, 64, 64)
    for a, b in zip(unpack(packed), (e, s1, s0), strict=True):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def embedding(tiny: tuple) -> ImageEmbedding:
    return tiny[1].encode(photo_like(120, 160, seed=5))


def test_embedding_bytes_round_trip(tiny: tuple, embedding: ImageEmbedding) -> None:
    """The cache's bytes carry every level: fp32 bytes decode identically, fp16 nearly."""
    ours = tiny[1]
    point = {"point_coords": np.array([[60, 50]]), "point_labels": np.array([1])}
    direct = ours.decode(embedding, **point)
    exact = ours.decode(ImageEmbedding.from_bytes(embedding.to_bytes(dtype=None)), **point)
    np.testing.assert_array_equal(direct.masks, exact.masks)
    np.testing.assert_array_equal(direct.scores, exact.scores)
    half = ours.decode(ImageEmbedding.from_bytes(embedding.to_bytes()), **point)
    assert all(iou(a, b) > 0.99 for a, b in zip(direct.masks, half.masks, strict=True))
    np.testing.assert_allclose(direct.scores, half.scores, atol=1e-2)


def test_bf16_on_cpu_when_asked(tiny: tuple, embedding: ImageEmbedding) -> None:
    ours = tiny[1]
    bf16 = Sam2Predictor(ours.model, ours.model_id, precision="bf16")
    emb = bf16.encode(photo_like(120, 160, seed=5))
    assert emb.features.dtype == torch.float32
    a, b = embedding.features.double().flatten(), emb.features.double().flatten()
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
    first = bf16.decode(emb, np.array([[60, 50]]), np.array([1]))
    refined = bf16.decode(
        emb, np.array([[60, 50]]), np.array([1]), mask_input=first.low_res_logits[:1], multimask=False
    )
    assert first.masks.shape == (3, 120, 160) and refined.masks.shape == (1, 120, 160)
    assert refined.scores.dtype == np.float32 and refined.low_res_logits.dtype == np.float32


def test_concurrent_decodes_match_serial(tiny: tuple, embedding: ImageEmbedding) -> None:
    """No hidden per-image state: threads on different images get their own answers."""
    ours = tiny[1]
    embs = [embedding, ours.encode(photo_like(90, 200, seed=6))]
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
        ({"point_coords": np.array([[np.nan, 2.0]]), "point_labels": np.array([1])}, "finite"),
        ({"box": np.array([1.0, 2.0, 3.0])}, "box must have shape"),
        ({"box": np.array([1.0, 2.0, np.inf, 4.0])}, "box must be finite"),
        ({"mask_input": np.zeros((256, 256))}, "mask_input must have shape"),
    ],
)
def test_decode_rejects_bad_prompts(tiny: tuple, embedding: ImageEmbedding, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny[1].decode(embedding, **kwargs)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        (np.zeros((4, 4), np.uint8), "HxWx3"),
        (np.zeros((4, 4, 4), np.uint8), "HxWx3"),
        (np.zeros((0, 4, 3), np.uint8), "HxWx3"),
    ],
)
def test_encode_rejects_bad_images(tiny: tuple, image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny[1].encode(image)


def test_decode_rejects_foreign_embeddings(tiny: tuple, embedding: ImageEmbedding) -> None:
    ours = tiny[1]
    point = {"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([1])}
    other = ImageEmbedding(embedding.features, embedding.original_size, embedding.input_size, "vit_b")
    with pytest.raises(ValueError, match="from model 'vit_b'"):
        ours.decode(other, **point)
    v1_shaped = ImageEmbedding(torch.zeros(1, 256, 64, 64), (120, 160), (768, 1024), ours.model_id)
    with pytest.raises(ValueError, match="features must have shape"):
        ours.decode(v1_shaped, **point)
    padded = ImageEmbedding(embedding.features, (120, 160), (768, 1024), ours.model_id)
    with pytest.raises(ValueError, match="input_size"):
        ours.decode(padded, **point)
