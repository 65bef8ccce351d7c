"""Concept engines (sam_model.concepts) against the library they wrap, on tiny random models.

Each engine's tiny model is saved as a transformers folder, loaded through
`load_concept_engine` as real weights would be, and run on the same inputs as a direct call of
the library (its documented usage, same post-processing). That happens in a clean interpreter
(tests/support/concept_models.py says why); the checks here compare what it recorded. The
serialisation and the input checks that need no model run here directly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_model.concepts import ConceptFeatures, Instance, Thresholds
from sam_model.concepts.engine import check_exemplar_box, check_prompts, clip_box
from sam_model.concepts.grounding_dino import caption, token_owners
from tests.support.concept_models import GDINO_PROMPTS, SAM3_PROMPTS, run_in_clean_interpreter

ROOT = Path(__file__).resolve().parents[2]
FP16_SCORE_ATOL = 1e-3
FP16_BOX_ATOL = 0.05  # pixels
FP16_MIN_MASK_AGREEMENT = 0.99
# Shapes of the stored features at the real configurations, as features.py documents them.
REAL_SHAPES = {
    "real.tiny.800x1066": [[1, 192, 100, 134], [1, 384, 50, 67], [1, 768, 25, 34]],
    "real.tiny.800x1333": [[1, 192, 100, 167], [1, 384, 50, 84], [1, 768, 25, 42]],
    "real.base.800x1066": [[1, 256, 100, 134], [1, 512, 50, 67], [1, 1024, 25, 34]],
    "real.base.800x1333": [[1, 256, 100, 167], [1, 512, 50, 84], [1, 1024, 25, 42]],
    "real.1008x1008": [[1, 72 * 72, 1024]],
}
REAL_VALUES = {
    "real.tiny.800x1066": 4_512_000,
    "real.tiny.800x1333": 5_625_600,
    "real.base.800x1066": 6_016_000,
    "real.base.800x1333": 7_500_800,
    "real.1008x1008": 5_308_416,
}


@pytest.fixture(scope="module")
def gdino(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], dict]:
    return run_in_clean_interpreter("grounding-dino", tmp_path_factory.mktemp("grounding-dino"))


@pytest.fixture(scope="module")
def sam3(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], dict]:
    return run_in_clean_interpreter("sam3", tmp_path_factory.mktemp("sam3"))


def ours(arrays: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    return {
        part: arrays[f"{key}.{part}"] for part in ("prompt", "boxes", "scores", "masks") if f"{key}.{part}" in arrays
    }


def assert_same(arrays: dict[str, np.ndarray], key: str, reference: str = "ours") -> None:
    got, want = ours(arrays, key), ours(arrays, reference)
    assert got.keys() == want.keys()
    for part in want:
        np.testing.assert_array_equal(got[part], want[part], err_msg=f"{key}.{part}")


def assert_close(arrays: dict[str, np.ndarray], key: str, threshold: float) -> None:
    """fp16 features: the instances clear of the threshold are found again, nearly equal."""
    got, want = ours(arrays, key), ours(arrays, "ours")
    clear = np.abs(want["scores"] - threshold) > FP16_SCORE_ATOL
    assert clear.sum() >= 1
    for i in np.flatnonzero(clear):
        same_prompt = np.flatnonzero(got["prompt"] == want["prompt"][i])
        assert same_prompt.size, f"instance {i} lost with fp16 features"
        j = same_prompt[np.argmin(np.abs(got["boxes"][same_prompt] - want["boxes"][i]).max(1))]
        np.testing.assert_allclose(got["boxes"][j], want["boxes"][i], atol=FP16_BOX_ATOL)
        assert abs(got["scores"][j] - want["scores"][i]) <= FP16_SCORE_ATOL
        if "masks" in want:
            assert (got["masks"][j] == want["masks"][i]).mean() >= FP16_MIN_MASK_AGREEMENT


def assert_refusals(facts: dict) -> None:
    refusals = {key: fact for key, fact in facts.items() if key.startswith("bad.")}
    assert len(refusals) >= 12
    for key, fact in refusals.items():
        assert "ValueError" in fact["raised"], f"{key}: {fact}"


# Grounding DINO


def test_grounding_dino_loads_strictly(gdino: tuple[dict, dict]) -> None:
    _, facts = gdino
    assert not any(facts["loading_info"].values()), facts["loading_info"]


def test_grounding_dino_boxes_and_scores_equal_the_library(gdino: tuple[dict, dict]) -> None:
    arrays, facts = gdino
    assert len(facts["groups"]) >= 2, "the prompts should need more than one caption"
    boxes = np.concatenate([arrays[f"library.{g}.boxes"] for g in range(len(facts["groups"]))])
    scores = np.concatenate([arrays[f"library.{g}.scores"] for g in range(len(facts["groups"]))])
    got = ours(arrays, "ours")
    assert 0 < len(scores) < 30 * len(facts["groups"]), "the threshold should keep some boxes, not all"
    np.testing.assert_array_equal(got["boxes"], boxes)
    np.testing.assert_array_equal(got["scores"], scores)
    assert "masks" not in got


def test_grounding_dino_labels_each_box_with_its_best_prompt(gdino: tuple[dict, dict]) -> None:
    """Each kept query answers the prompt whose tokens (found by searching the caption) it
    scores highest; prompt indices count across captions."""
    arrays, facts = gdino
    expected = []
    for g, (start, count) in enumerate(facts["groups"]):
        logits = arrays[f"library.{g}.logits"]
        owners = arrays[f"library.{g}.owners"]
        assert set(owners[owners >= 0]) == set(range(count))
        per_prompt = np.stack([logits[:, : owners.size][:, owners == i].max(1) for i in range(count)])
        kept = 1 / (1 + np.exp(-logits.max(1))) > facts["threshold"]
        expected += (start + per_prompt.argmax(0)[kept]).tolist()
    np.testing.assert_array_equal(ours(arrays, "ours")["prompt"], expected)
    assert len(set(expected)) > 1


def test_grounding_dino_reuses_one_backbone_pass(gdino: tuple[dict, dict]) -> None:
    arrays, facts = gdino
    assert facts["passes_after_features"] == 1
    assert facts["passes_after_finds"] == 1, f"{len(GDINO_PROMPTS)} prompts, two finds: one backbone pass"
    assert facts["passes_total"] == 3
    for key in ("ours.again", "ours.after_other", "ours.fresh", "ours.fp32"):
        assert_same(arrays, key)


def test_grounding_dino_features_through_fp16_bytes(gdino: tuple[dict, dict]) -> None:
    arrays, facts = gdino
    assert facts["feature_names"] == ["feature.0", "feature.1", "feature.2", "mask.0", "mask.1", "mask.2", "pixel_mask"]
    np.testing.assert_allclose(arrays["features.0.fp16"], arrays["features.0"], rtol=1e-3, atol=1e-4)
    assert facts["bytes.fp32"] - facts["bytes.fp16"] == 2 * facts["float_values"] > 0  # floats halved, masks kept
    assert_close(arrays, "ours.fp16", facts["threshold"])


def test_grounding_dino_refuses_bad_inputs(gdino: tuple[dict, dict]) -> None:
    _, facts = gdino
    assert_refusals(facts)
    assert "phrase break" in facts["bad.separator"]["message"]
    assert "does not support exemplar" in facts["bad.find_similar"]["message"]
    assert "CheckpointError" in facts["bad.sam3_kind"]["raised"]
    assert "CheckpointError" in facts["bad.missing_folder"]["raised"]
    uncached = facts["bad.uncached_hub_id"]
    assert "CheckpointError" in uncached["raised"] and "downloading is off" in uncached["message"]
    assert facts["connection_attempts"] == 0


def test_grounding_dino_real_feature_sizes(gdino: tuple[dict, dict]) -> None:
    _, facts = gdino
    for key in ("real.tiny.800x1066", "real.tiny.800x1333", "real.base.800x1066", "real.base.800x1333"):
        assert facts[key] == REAL_SHAPES[key]
        assert sum(int(np.prod(shape)) for shape in facts[key]) == REAL_VALUES[key]


# SAM 3


def test_sam3_loads_strictly(sam3: tuple[dict, dict]) -> None:
    _, facts = sam3
    assert not any(facts["loading_info"].values()), facts["loading_info"]


def test_sam3_instances_equal_the_library(sam3: tuple[dict, dict]) -> None:
    arrays, _ = sam3
    got = ours(arrays, "ours")
    for part in ("boxes", "scores", "masks"):
        want = np.concatenate([arrays[f"library.{i}.{part}"] for i in range(len(SAM3_PROMPTS))])
        np.testing.assert_array_equal(got[part], want, err_msg=part)
    counts = [len(arrays[f"library.{i}.scores"]) for i in range(len(SAM3_PROMPTS))]
    np.testing.assert_array_equal(got["prompt"], np.repeat(np.arange(len(SAM3_PROMPTS)), counts))
    assert 0 < sum(counts) < 12 * len(SAM3_PROMPTS), "the threshold should keep some instances, not all"
    assert got["masks"].shape[1:] == (40, 60) and got["masks"].dtype == bool


def test_sam3_exemplar_box_equals_the_library(sam3: tuple[dict, dict]) -> None:
    arrays, _ = sam3
    got = ours(arrays, "ours.similar")
    for part in ("boxes", "scores", "masks"):
        np.testing.assert_array_equal(got[part], arrays[f"library.similar.{part}"], err_msg=part)
    assert len(got["scores"]) > 0 and not got["prompt"].any()


def test_sam3_reuses_one_backbone_pass(sam3: tuple[dict, dict]) -> None:
    arrays, facts = sam3
    assert facts["passes_after_features"] == 1
    assert facts["passes_after_finds"] == 1, "three prompts, an exemplar and another find: one backbone pass"
    assert facts["passes_total"] == 3
    for key in ("ours.again", "ours.after_other", "ours.fresh", "ours.fp32"):
        assert_same(arrays, key)


def test_sam3_features_through_fp16_bytes(sam3: tuple[dict, dict]) -> None:
    arrays, facts = sam3
    assert facts["feature_names"] == ["backbone"]
    np.testing.assert_allclose(arrays["features.0.fp16"], arrays["features.0"], rtol=1e-3, atol=1e-3)
    assert facts["bytes.fp32"] - facts["bytes.fp16"] == 2 * facts["float_values"] > 0  # floats halved, masks kept
    assert_close(arrays, "ours.fp16", facts["threshold"])


def test_sam3_refuses_bad_inputs(sam3: tuple[dict, dict]) -> None:
    _, facts = sam3
    assert_refusals(facts)
    assert "CheckpointError" in facts["bad.grounding_dino_kind"]["raised"]
    assert "inside the" in facts["bad.box_outside"]["message"]
    assert "SAM 3's 32 text tokens" in facts["bad.too_many_tokens"]["message"]


def test_sam3_real_feature_size(sam3: tuple[dict, dict]) -> None:
    _, facts = sam3
    assert facts["real.1008x1008"] == REAL_SHAPES["real.1008x1008"]
    assert int(np.prod(facts["real.1008x1008"][0])) == REAL_VALUES["real.1008x1008"]


# No model needed


def features(dtype: torch.dtype = torch.float32) -> ConceptFeatures:
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "feature.0": torch.randn(1, 8, 5, 7, generator=generator).to(dtype),
        "mask.0": torch.rand(1, 5, 7, generator=generator) > 0.3,
        "empty": torch.zeros(0, 3, dtype=dtype),
    }
    return ConceptFeatures(tensors, (40, 56), (20, 28), "grounding-dino:tiny")


def test_features_round_trip_exactly_in_fp32_and_closely_in_fp16() -> None:
    original = features()
    exact = ConceptFeatures.from_bytes(original.to_bytes(torch.float32))
    assert (exact.original_size, exact.input_size, exact.model_id) == ((40, 56), (20, 28), "grounding-dino:tiny")
    assert list(exact.tensors) == list(original.tensors)
    for name, tensor in original.tensors.items():
        assert exact.tensors[name].dtype == tensor.dtype
        assert torch.equal(exact.tensors[name], tensor)
    half = ConceptFeatures.from_bytes(original.to_bytes())
    assert half.tensors["feature.0"].dtype == torch.float16 and half.tensors["mask.0"].dtype == torch.bool
    torch.testing.assert_close(half.tensors["feature.0"].float(), original.tensors["feature.0"], rtol=1e-3, atol=1e-3)
    assert torch.equal(half.tensors["mask.0"], original.tensors["mask.0"])
    kept = ConceptFeatures.from_bytes(features(torch.bfloat16).to_bytes(None))
    assert torch.equal(kept.tensors["feature.0"], features(torch.bfloat16).tensors["feature.0"])
    assert kept.tensor("feature.0", torch.device("cpu"), torch.float32).dtype == torch.float32
    assert kept.tensor("mask.0", torch.device("cpu"), torch.float32).dtype == torch.bool


def test_corrupt_truncated_or_foreign_bytes_raise_value_error() -> None:
    data = features().to_bytes()
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    for bad in (b"", b"SAMCFT", data[:-1], data[:40], bytes(flipped), b"SAMEMB" + data[6:], data + b"\0"):
        with pytest.raises(ValueError):
            ConceptFeatures.from_bytes(bad)


@pytest.mark.parametrize(
    "build",
    [
        lambda: ConceptFeatures({}, (4, 4), (4, 4), "m"),
        lambda: ConceptFeatures({"x": torch.zeros(2, dtype=torch.int64)}, (4, 4), (4, 4), "m"),
        lambda: ConceptFeatures({"x": torch.zeros(2)}, (0, 4), (4, 4), "m"),
        lambda: ConceptFeatures({"x": torch.zeros(2)}, (4, 4), (4.0, 4), "m"),
        lambda: ConceptFeatures({"": torch.zeros(2)}, (4, 4), (4, 4), "m"),
        lambda: ConceptFeatures({"x": torch.zeros([1] * 9)}, (4, 4), (4, 4), "m"),
        lambda: features().to_bytes(torch.int8),
        lambda: features().tensor("absent", torch.device("cpu"), torch.float32),
        lambda: Thresholds(score=-0.1),
        lambda: Thresholds(score=0.5, mask=2),
        lambda: Thresholds(score=True),
        lambda: Thresholds(score="0.5"),
    ],
)
def test_bad_features_and_thresholds_raise_value_error(build) -> None:
    with pytest.raises(ValueError):
        build()


def test_prompt_and_box_checks() -> None:
    assert check_prompts([" Cat ", "traffic light"]) == ["Cat", "traffic light"]
    for bad in ([], "cat", ["cat", ""], ["cat", None], ("x" * 201,), None):
        with pytest.raises(ValueError):
            check_prompts(bad)
    assert check_exemplar_box(np.array([1, 2, 30, 20]), (20, 30)) == (1.0, 2.0, 30.0, 20.0)
    for bad in ((1, 2, 31, 20), (5, 2, 5, 20), (1, 2, 3), (1, 2, float("inf"), 4), "1234", ("a", 1, 2, 3)):
        with pytest.raises(ValueError):
            check_exemplar_box(bad, (20, 30))
    assert clip_box((-3.5, 2, 40, 25.5), (20, 30)) == (0.0, 2.0, 30.0, 20.0)
    assert Instance(0, (0.0, 0.0, 1.0, 1.0), 0.5).mask is None


def test_grounding_dino_caption_and_token_owners() -> None:
    text, spans = caption(["Cat", "traffic light", "dog"])
    assert text == "cat. traffic light. dog."
    assert [text[a:b] for a, b in spans] == ["cat", "traffic light", "dog"]
    # [CLS] cat . traffic light . dog . [SEP], with their character offsets
    offsets = [(0, 0), (0, 3), (3, 4), (5, 12), (13, 18), (18, 19), (20, 23), (23, 24), (0, 0)]
    assert token_owners(offsets, spans).tolist() == [-1, 0, -1, 1, 1, -1, 2, -1, -1]


def test_importing_the_package_does_not_import_transformers() -> None:
    code = "import sys, sam_model.concepts; print('transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_sam3_runs_in_bf16_close_to_fp32(tmp_path: Path) -> None:
    """What a GPU backend loads (bf16): text and SAM 3's exemplar boxes go through (the boxes
    must reach the model in its dtype), scoring near the fp32 run. (Grounding DINO takes text
    only, through the same casts.)"""
    kind = "sam3"
    from tests.support.concept_models import instances_in_clean_interpreter, save_in_clean_interpreter
    from tests.support.images import photo_like

    folder = save_in_clean_interpreter(kind, tmp_path / "model")
    image = photo_like(64, 96)
    runs = {
        bf16: instances_in_clean_interpreter(kind, folder, image, 0.0, prompts=["cat"], bf16=bf16)
        for bf16 in (False, True)
    }
    assert len(runs[True]["found.scores"]) == len(runs[False]["found.scores"]) > 0
    np.testing.assert_allclose(np.sort(runs[True]["found.scores"]), np.sort(runs[False]["found.scores"]), atol=0.05)
    similar = instances_in_clean_interpreter(kind, folder, image, 0.0, box=(5, 5, 40, 30), bf16=True)
    assert len(similar["found.scores"]) > 0 and similar["found.masks"].dtype == bool
