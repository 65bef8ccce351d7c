"""SAM 3 through the real server: typed phrases and "find all similar" (random tiny weights).

The model is a tiny random Sam3Model saved with `save_pretrained`, loaded by the backend from
its folder as real weights would be. transformers' SAM 3 needs torchvision, which has no CPU
build here: the backend process gets the test stand-in at start-up (tests/support/
torchvision_site), as the engine-level tests do. Random weights score every instance near
0.26, so CONCEPT_SCORE_THRESHOLD=0 makes them count.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from backend.concepts.labelling import LabelledPhrase, keep_instances
from sam_model.concepts import Instance
from tests.support.concept_models import instances_in_clean_interpreter, save_in_clean_interpreter
from tests.support.fake_ls import ls_env
from tests.support.masks import brush_mask
from tests.support.samples import SAMPLE_IMAGES, predict_body, sample, task_of

REPO = Path(__file__).resolve().parents[2]
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<BrushLabels name="found" toName="image"><Label value="Cat"/><Label value="Dog"/></BrushLabels>'
    '<RectangleLabels name="similar" toName="image" smart="true" smartOnly="true">'
    '<Label value="Cat"/><Label value="Dog"/></RectangleLabels>'
    '<TextArea name="prompt" toName="image" editable="true" smart="true"/></View>'
)


@pytest.fixture(scope="module")
def sam3_case(tmp_path_factory, fake_ls, redis_server, start_backend):
    folder = save_in_clean_interpreter("sam3", tmp_path_factory.mktemp("sam3") / "model")

    def start():
        return start_backend(
            ls_env(
                fake_ls,
                SAM_ENGINE="grabcut",  # SAM 3 segments by itself: the served SAM model is not used
                CONCEPT_ENGINE="sam3",
                CONCEPT_MODEL=str(folder),
                CONCEPT_SCORE_THRESHOLD="0",
                REDIS_URL=redis_server.url,
                HF_HOME=str(tmp_path_factory.mktemp("hf-home")),
                HF_ENDPOINT="http://127.0.0.1:9",
                PYTHONPATH=f"{REPO / 'tests' / 'support' / 'torchvision_site'}:{REPO}",
            )
        )

    return folder, start(), start


def expected(folder: Path, image: np.ndarray, label: str, *, prompts=None, box=None):
    found = instances_in_clean_interpreter("sam3", folder, image, 0.0, prompts=prompts, box=box)
    instances = [
        Instance(int(i), tuple(b), float(s), m)
        for i, b, s, m in zip(
            found["found.prompt"], found["found.boxes"], found["found.scores"], found["found.masks"], strict=True
        )
    ]
    phrases = [LabelledPhrase(p, label) for p in (prompts or [""])]
    return keep_instances(instances, phrases, lambda _: 0.0, 0.7, 50)


def typed(text: str) -> dict:
    return {"result": [{"value": {"text": [text]}, "from_name": "prompt", "to_name": "image", "type": "textarea"}]}


def example_box(x: float, y: float, w: float, h: float, label: str, size: tuple[int, int]) -> dict:
    """A box drawn with the find-all-similar tool: the captured LS 1.23.2 body, moved and resized."""
    context = copy.deepcopy(sample("predict_rectangle_similar_control_request.json")["params"]["context"])
    region = context["result"][0]
    region["original_width"], region["original_height"] = size
    region["value"].update(x=x, y=y, width=w, height=h, rectanglelabels=[label])
    return context


def test_health_says_sam3_finds_similar(sam3_case) -> None:
    _, server, _ = sam3_case
    concepts = server.get("/health").json()["concepts"]
    assert concepts["engine"] == "sam3" and concepts["find_similar"] is True


def test_typed_phrase_masks_are_sam3s(sam3_case) -> None:
    folder, server, _ = sam3_case
    task = task_of(4)
    image = SAMPLE_IMAGES[task["data"]["image"]]
    answer = server.post("/predict", predict_body(task, typed("black dog"), CONFIG))
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["results"]
    want = expected(folder, image, "Dog", prompts=["black dog"])
    assert want and len(prediction["result"]) == len(want)
    for region, item in zip(prediction["result"], want, strict=True):
        assert region["value"]["brushlabels"] == ["Dog"]
        np.testing.assert_array_equal(brush_mask(region), item.instance.mask)
    assert prediction["model_version"] == f"sam3:{folder}"


def test_an_example_box_finds_the_similar_ones_with_its_label(sam3_case) -> None:
    folder, server, _ = sam3_case
    task = task_of(4)
    image = SAMPLE_IMAGES[task["data"]["image"]]
    h, w = image.shape[:2]
    context = example_box(10.0, 20.0, 30.0, 40.0, "Cat", (w, h))
    (prediction,) = server.post("/predict", predict_body(task, context, CONFIG)).json()["results"]
    box = [0.10 * w, 0.20 * h, 0.40 * w, 0.60 * h]
    want = expected(folder, image, "Cat", box=box)
    assert want and len(prediction["result"]) == len(want)
    for region, item in zip(prediction["result"], want, strict=True):
        assert region["value"]["brushlabels"] == ["Cat"] and region["from_name"] == "found"
        np.testing.assert_array_equal(brush_mask(region), item.instance.mask)


def test_features_computed_by_one_process_serve_another_through_redis(sam3_case) -> None:
    _, first, start = sam3_case
    task = task_of(3)
    assert first.post("/predict", predict_body(task, typed("cat"), CONFIG)).status_code == 200
    second = start()
    before = second.metric("sam_embedding_cache_total", level="redis", source="concept-features")
    answer = second.post("/predict", predict_body(task, typed("dog"), CONFIG))
    assert answer.status_code == 200 and answer.json()["results"][0]["result"]
    after = second.metric("sam_embedding_cache_total", level="redis", source="concept-features")
    assert after - before == 1


def test_a_box_drawn_with_another_tool_is_a_plain_box_prompt(sam3_case) -> None:
    _, server, _ = sam3_case
    task = task_of(4)
    h, w = SAMPLE_IMAGES[task["data"]["image"]].shape[:2]
    context = example_box(2.0, 66.0, 20.0, 32.0, "Cat", (w, h))  # around the scene's first disc
    context["result"][0]["from_name"] = "box"
    config = CONFIG.replace('name="similar"', 'name="box"')
    (prediction,) = server.post("/predict", predict_body(task, context, config)).json()["results"]
    assert prediction["model_version"] == "grabcut-opencv" and len(prediction["result"]) == 1
