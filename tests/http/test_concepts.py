"""Concept engines through the real server (Grounding DINO + SAM 2.1 tiny, random weights).

The Grounding DINO model is a tiny random configuration saved with `save_pretrained` and loaded
by the backend from that folder, exactly as a downloaded model; the SAM checkpoint is random
weights in the official layout. What the backend answers is compared with the engine run alone
in a clean interpreter (tests/support/concept_models.py) and SAM's own box decode.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from backend.concepts.labelling import LabelledPhrase, keep_instances
from sam_model.concepts import Instance
from tests.support.concept_models import instances_in_clean_interpreter, save_in_clean_interpreter
from tests.support.fake_ls import ls_env
from tests.support.family_checkpoints import FAMILY_CHECKPOINTS, predictor_for
from tests.support.masks import brush_mask
from tests.support.samples import SAMPLE_IMAGES, predict_body, sample, task_of
from tests.support.torch_threads import torch_threads

GD_THRESHOLD = 0.35  # GroundingDinoEngine.default_thresholds: what a typed phrase uses
RUN_OPTIONS = {"mode": "concepts", "score_threshold": 0.0, "prompts": {"Dog": "dog . red car"}}


def config(output_tag: str) -> str:
    return (
        '<View><Image name="image" value="$image"/>'
        f'<{output_tag} name="found" toName="image"><Label value="Cat"/><Label value="Dog"/></{output_tag}>'
        '<TextArea name="prompt" toName="image" editable="true" smart="true"/></View>'
    )


def typed(text, to_name: str = "image") -> dict:
    """A submitted smart TextArea as LS 1.23.2 sends it (the captured body, another text)."""
    context = copy.deepcopy(sample("predict_textarea_request.json")["params"]["context"])
    context["result"][0]["value"]["text"] = text
    context["result"][0]["to_name"] = to_name
    return context


@pytest.fixture(scope="module")
def gd_case(tmp_path_factory, fake_ls, redis_server, start_backend):
    """(Grounding DINO folder, SAM checkpoint, a backend serving both with concept pre-annotation on predict)."""
    folder = save_in_clean_interpreter("grounding-dino", tmp_path_factory.mktemp("gd") / "model")
    checkpoint = FAMILY_CHECKPOINTS["sam2.1_hiera_tiny"](tmp_path_factory.mktemp("sam"))
    server = start_backend(
        ls_env(
            fake_ls,
            SAM_MODEL="sam2.1_hiera_tiny",
            SAM_CHECKPOINT=str(checkpoint),
            SAM_DEVICE="cpu",
            REDIS_URL=redis_server.url,
            CONCEPT_ENGINE="grounding-dino",
            CONCEPT_MODEL=str(folder),
            HF_HOME=str(tmp_path_factory.mktemp("hf-home")),  # an empty cache: only the folder can serve
            HF_ENDPOINT="http://127.0.0.1:9",
            AUTO_ANNOTATE_ON_PREDICT="true",
            AUTO_ANNOTATE_OPTIONS=json.dumps(RUN_OPTIONS),
        )
    )
    return folder, checkpoint, server


def expected(folder: Path, image: np.ndarray, phrases: list[LabelledPhrase], threshold: float, overlap=0.7, cap=50):
    """The engine alone on the image, then the documented selection rule."""
    found = instances_in_clean_interpreter(
        "grounding-dino", folder, image, threshold, prompts=[p.phrase for p in phrases]
    )
    instances = [
        Instance(int(i), tuple(box), float(score))
        for i, box, score in zip(found["found.prompt"], found["found.boxes"], found["found.scores"], strict=True)
    ]
    return keep_instances(instances, phrases, lambda _: threshold, overlap, cap)


def box_of(region: dict) -> np.ndarray:
    v, w, h = region["value"], region["original_width"], region["original_height"]
    return np.array([v["x"] * w, v["y"] * h, (v["x"] + v["width"]) * w, (v["y"] + v["height"]) * h]) / 100


def test_health_names_the_concept_engine(gd_case) -> None:
    folder, _, server = gd_case
    concepts = server.get("/health").json()["concepts"]
    assert concepts["engine"] == "grounding-dino" and concepts["model"] == str(folder)
    assert concepts["find_similar"] is False


def test_the_captured_textarea_body_is_answered_with_its_labels(gd_case) -> None:
    _, _, server = gd_case
    body = sample("predict_textarea_request.json")  # "red car", as LS 1.23.2 sent it
    body["tasks"] = [task_of(4)]  # the captured task's image is not in the fake LS
    answer = server.post("/predict", body)
    assert answer.status_code == 200, answer.text
    labels = {r["value"]["brushlabels"][0] for r in answer.json()["results"][0]["result"]}
    assert labels == {"Cat"}  # no label named in "red car": the control's first


def test_typed_phrase_boxes_are_the_engines(gd_case) -> None:
    folder, _, server = gd_case
    task = task_of(4)
    image = SAMPLE_IMAGES[task["data"]["image"]]
    answer = server.post("/predict", predict_body(task, typed(["cat"]), config("RectangleLabels")))
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["results"]
    want = expected(folder, image, [LabelledPhrase("cat", "Cat")], GD_THRESHOLD)
    assert want, "the random model finds nothing above the default threshold: the test would prove nothing"
    regions = prediction["result"]
    assert len(regions) == len(want)
    for region, item in zip(regions, want, strict=True):
        assert region["type"] == "rectanglelabels" and region["value"]["rectanglelabels"] == ["Cat"]
        np.testing.assert_allclose(box_of(region), item.instance.box_xyxy, atol=1e-3)
        assert region["score"] == pytest.approx(item.instance.score)
    assert prediction["model_version"].startswith(f"grounding-dino:{folder}+sam-sam2.1_hiera_tiny-")


def test_typed_phrase_masks_are_sam_box_prompts_with_the_typed_label(gd_case) -> None:
    folder, checkpoint, server = gd_case
    task = task_of(4)
    image = SAMPLE_IMAGES[task["data"]["image"]]
    body = predict_body(task, typed(["a first try", "Dog: cat . dog"]), config("BrushLabels"))
    (prediction,) = server.post("/predict", body).json()["results"]
    phrases = [LabelledPhrase("cat", "Dog"), LabelledPhrase("dog", "Dog")]
    want = expected(folder, image, phrases, GD_THRESHOLD)
    assert want and len(prediction["result"]) == len(want)
    with torch_threads(1):
        predictor = predictor_for("sam2.1_hiera_tiny", checkpoint)
        embedding = predictor.encode(image)
        for region, item in zip(prediction["result"], want, strict=True):
            box = np.asarray(item.instance.box_xyxy, np.float32)
            mask = predictor.decode(embedding, point_coords=None, point_labels=None, box=box, multimask=False).masks[0]
            assert region["value"]["brushlabels"] == ["Dog"]
            np.testing.assert_array_equal(brush_mask(region), mask)


def test_second_phrase_on_an_image_reuses_its_features(gd_case) -> None:
    _, _, server = gd_case
    task = task_of(1)
    counts = {level: server.metric("sam_embedding_cache_total", level=level, source="concept-features")
              for level in ("computed", "local")}  # fmt: skip
    for phrase in ("cat", "dog"):
        assert server.post("/predict", predict_body(task, typed([phrase]), config("BrushLabels"))).status_code == 200
    computed = server.metric("sam_embedding_cache_total", level="computed", source="concept-features")
    local = server.metric("sam_embedding_cache_total", level="local", source="concept-features")
    assert (computed - counts["computed"], local - counts["local"]) == (1, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ([""], "empty"),
        (["   "], "empty"),
        ([" . . "], "no phrase"),
        (["x" * 10_000], "longer than"),
        ([], "non-empty list"),
        ("cat", None),  # a bare string is taken as one text
        ([1], "non-empty list"),
        (["Dog: "], "no phrase"),
    ],
)
def test_bad_typed_text_gets_a_clear_400(gd_case, text, message) -> None:
    _, _, server = gd_case
    answer = server.post("/predict", predict_body(task_of(1), typed(text), config("BrushLabels")))
    if message is None:
        assert answer.status_code == 200
        return
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["message"]


def test_typed_text_for_an_unknown_image_is_a_400(gd_case) -> None:
    _, _, server = gd_case
    answer = server.post("/predict", predict_body(task_of(1), typed(["cat"], to_name="photo"), config("BrushLabels")))
    assert answer.status_code == 400 and "photo" in answer.json()["message"]


def test_retrieve_predictions_labels_every_label(gd_case) -> None:
    folder, _, server = gd_case
    task = task_of(4)
    image = SAMPLE_IMAGES[task["data"]["image"]]
    body = {**predict_body(task, None, config("RectangleLabels")), "params": {"context": None}}
    (prediction,) = server.post("/predict", body).json()["results"]
    phrases = [LabelledPhrase("Cat", "Cat"), LabelledPhrase("dog", "Dog"), LabelledPhrase("red car", "Dog")]
    want = expected(folder, image, phrases, 0.0)
    assert {item.label for item in want} == {"Cat", "Dog"}, "random weights should find both at threshold 0"
    got = [(r["value"]["rectanglelabels"][0], r["score"]) for r in prediction["result"]]
    assert got == [(item.label, pytest.approx(item.instance.score)) for item in want]
    assert "-concepts-" in prediction["model_version"]


def test_a_mapping_naming_an_unknown_label_is_a_400(tmp_path_factory, fake_ls, start_backend, gd_case) -> None:
    folder, checkpoint, _ = gd_case
    options = {"mode": "concepts", "prompts": {"Horse": "horse"}}
    server = start_backend(
        ls_env(
            fake_ls,
            SAM_MODEL="sam2.1_hiera_tiny",
            SAM_CHECKPOINT=str(checkpoint),
            CONCEPT_ENGINE="grounding-dino",
            CONCEPT_MODEL=str(folder),
            HF_HOME=str(tmp_path_factory.mktemp("hf-home")),
            AUTO_ANNOTATE_ON_PREDICT="true",
            AUTO_ANNOTATE_OPTIONS=json.dumps(options),
        )
    )
    body = {**predict_body(task_of(1), None, config("BrushLabels")), "params": {"context": None}}
    answer = server.post("/predict", body)
    assert answer.status_code == 400
    assert "'Horse'" in answer.json()["message"] and "Cat, Dog" in answer.json()["fix"]


def test_typed_text_without_a_concept_engine_says_how_to_get_one(fake_ls, start_backend) -> None:
    server = start_backend(ls_env(fake_ls, SAM_ENGINE="grabcut"))
    answer = server.post("/predict", predict_body(task_of(1), typed(["cat"]), config("BrushLabels")))
    assert answer.status_code == 422 and "CONCEPT_ENGINE" in answer.json()["fix"]


def test_find_all_similar_with_grounding_dino_says_it_needs_sam3(gd_case) -> None:
    _, _, server = gd_case
    context = {
        "result": [
            {
                "original_width": 320,
                "original_height": 240,
                "image_rotation": 0,
                "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0, "rectanglelabels": ["Cat"]},
                "from_name": "similar",
                "to_name": "image",
                "type": "rectanglelabels",
            }
        ]
    }
    answer = server.post("/predict", predict_body(task_of(1), context, config("BrushLabels")))
    assert answer.status_code == 422 and "sam3" in answer.json()["fix"]
