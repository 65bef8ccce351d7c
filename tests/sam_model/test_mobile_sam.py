"""MobileSAM: our TinyViT network, loader and SAM v1 predictor vs the official MobileSAM.

Oracle: `mobilesam-mirror==1.0.0` (a packaging of github.com/ChaoningZhang/MobileSAM whose
`mobile_sam/` .py files, `modeling/tiny_vit_sam.py` and `build_sam.py` included, were diffed
against the repository and are identical), with `timm==1.0.31` for TinyViT's helpers; see
tests/support/oracle_mobile_sam.py. The real MobileSAM configuration (TinyViT-5M) is built with
every weight random, saved as the official bare state_dict and loaded through `load_sam`
strictly, so this also proves the checkpoint layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sam_model.amg import AutomaticMaskGenerator
from sam_model.common.checkpoint import CheckpointError
from sam_model.families import identify
from sam_model.loading import load_sam
from sam_model.mobile_sam import FAMILY, build_mobile_sam
from sam_model.sam1.build import build_sam
from sam_model.sam1.predictor import SamPredictor
from tests.support.amg_records import assert_same_masks
from tests.support.images import scene
from tests.support.masks import iou
from tests.support.oracle_mobile_sam import SamAutomaticMaskGenerator as RefGenerator
from tests.support.oracle_mobile_sam import SamPredictor as RefPredictor
from tests.support.oracle_mobile_sam import official_mobile_sam, save_official

FEATURE_ATOL = 1e-4
SCORE_ATOL = 1e-4
MIN_IOU = 0.999
BLOBS = [(30, 40, 90), (70, 60, 120), (50, 20, 50)]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """(the official model, random weights; its state_dict saved like `mobile_sam.pt`)."""
    ref = official_mobile_sam(seed=1)  # seed 1: no prompt kind gives an empty or full mask
    return ref, save_official(ref, tmp_path_factory.mktemp("mobile_sam") / "mobile_sam_random.pt")


@pytest.fixture(scope="module")
def pair(checkpoint: tuple[torch.nn.Module, Path]) -> tuple[torch.nn.Module, SamPredictor]:
    """(the official model, ours loaded from its file through the real loader)."""
    ref, path = checkpoint
    ours = load_sam("mobile_sam", path, device="cpu")
    return ref, FAMILY.predictor(ours, "mobile_sam-random", "fp32", False)


def test_encoder_matches_reference(pair: tuple[torch.nn.Module, SamPredictor]) -> None:
    ref, ours = pair
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        theirs, mine = ref.image_encoder(x), ours.sam.image_encoder(x)
    assert mine.shape == (1, 256, 64, 64)
    assert theirs.std() > 0.3  # non-degenerate features, so the tolerance means something
    assert (mine - theirs).abs().max() <= FEATURE_ATOL


def prompts(h: int, w: int, ref: RefPredictor) -> dict[str, dict[str, Any]]:
    """The prompt kinds annotators send, in original-image pixels; mask_input refines a decode."""
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


@pytest.mark.parametrize("h, w", [(600, 900), (900, 600)], ids=["landscape", "portrait"])
def test_predictor_matches_reference(pair: tuple[torch.nn.Module, SamPredictor], h: int, w: int) -> None:
    ref_model, ours = pair
    ref = RefPredictor(ref_model)
    image = scene(w, h, BLOBS, seed=h)
    ref.set_image(image)
    embedding = ours.encode(image)
    assert embedding.input_size == ref.input_size and embedding.original_size == (h, w)
    assert (embedding.features - ref.features).abs().max() <= FEATURE_ATOL
    for name, kwargs in prompts(h, w, ref).items():
        for multimask in (True, False):
            masks, scores, low_res = ref.predict(**kwargs, multimask_output=multimask)
            result = ours.decode(embedding, **kwargs, multimask=multimask)
            case = f"{name}, multimask={multimask}"
            assert result.masks.shape == masks.shape, case
            np.testing.assert_allclose(result.scores, scores, atol=SCORE_ATOL, rtol=0, err_msg=case)
            np.testing.assert_allclose(result.low_res_logits, low_res, atol=1e-3, rtol=1e-4, err_msg=case)
            for k in range(len(masks)):
                assert iou(result.masks[k], masks[k]) >= MIN_IOU, f"{case}, candidate {k}"
            fractions = masks.mean(axis=(1, 2))
            assert ((fractions > 0.01) & (fractions < 0.99)).any(), f"{case}: degenerate masks, test proves nothing"


def test_bf16_encodes_close_to_fp32(pair: tuple[torch.nn.Module, SamPredictor]) -> None:
    _, ours = pair
    bf16 = FAMILY.predictor(ours.sam, ours.model_id, "bf16", False)
    image = scene(400, 300, BLOBS)
    fp32_features, bf16_features = ours.encode(image).features, bf16.encode(image).features
    assert bf16_features.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(fp32_features.flatten(), bf16_features.flatten(), dim=0) > 0.99


def test_compile_wraps_the_encoder(pair: tuple[torch.nn.Module, SamPredictor]) -> None:
    """Compiling happens on the first encode (minutes on this CPU); here: it wraps the encoder."""
    _, ours = pair
    compiled = FAMILY.predictor(ours.sam, ours.model_id, "fp32", True)
    assert compiled._encoder is not ours.sam.image_encoder and callable(compiled._encoder)


# --- recognising files -------------------------------------------------------------------


def test_identify_recognises_mobile_sam_only(checkpoint: tuple[torch.nn.Module, Path]) -> None:
    state = checkpoint[0].state_dict()
    assert FAMILY.identify(state) == "mobile_sam" and identify(state) == "mobile_sam"
    assert FAMILY.identify(build_mobile_sam().state_dict()) == "mobile_sam"
    assert FAMILY.identify(build_sam("tiny").state_dict()) is None
    # SAM-HQ's light model: the same TinyViT and decoder plus its HQ token.
    assert FAMILY.identify({**state, "mask_decoder.hf_token.weight": torch.zeros(1, 256)}) is None
    # Another TinyViT (a block fewer in stage 2) is not MobileSAM's encoder.
    fewer = {k: v for k, v in state.items() if not k.startswith("image_encoder.layers.2.blocks.5.")}
    assert FAMILY.identify(fewer) is None


def test_mobile_sam_file_as_vit_b_names_mobile_sam(checkpoint: tuple[torch.nn.Module, Path]) -> None:
    with pytest.raises(CheckpointError, match="mobile_sam"):
        load_sam("vit_b", checkpoint[1], device="cpu")


def test_a_key_missing_is_refused(checkpoint: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    """Strict loading: even the never-run classifier head must be in the file."""
    state = {k: v for k, v in checkpoint[0].state_dict().items() if k != "image_encoder.head.weight"}
    torch.save(state, tmp_path / "no_head.pt")
    with pytest.raises(CheckpointError, match=r"missing \(1\): image_encoder\.head\.weight"):
        load_sam("mobile_sam", tmp_path / "no_head.pt", device="cpu")


# --- automatic masks ---------------------------------------------------------------------


def test_automatic_masks_match_reference(pair: tuple[torch.nn.Module, SamPredictor]) -> None:
    """Random weights make AMG degenerate: thresholds off and NMS off keep every candidate."""
    ref, ours = pair
    settings = dict(
        points_per_side=5, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0, output_mode="coco_rle"
    )
    image = scene(400, 300, BLOBS, seed=1)
    theirs = RefGenerator(ref, **settings).generate(image)
    mine = AutomaticMaskGenerator(ours, mode="exact", **settings).generate(image)
    assert len(theirs) >= 5 * 5 * 3 * 0.9  # nearly every candidate survives, so many masks are compared
    assert_same_masks(mine, theirs)
