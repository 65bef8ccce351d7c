"""Hostile and careless input to the concept routes (typed phrases, concepts runs, CONCEPT_MODEL).

A real gunicorn backend serves a tiny random Grounding DINO (tests/support/concept_models.py)
with the weights-free grabcut engine as its SAM, so it starts in seconds; regions are asked as
RectangleLabels, which are Grounding DINO's own boxes. The product's rules: bad input is a
clear JSON 4xx, never a 500; limits are the same whichever way a prompt arrives; a broken
concept model leaves clicks working and /health saying what is wrong.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from backend.concepts.interactive import label_and_phrases
from backend.concepts.labelling import MAX_PHRASES, label_phrases
from tests.support.concept_models import save_in_clean_interpreter
from tests.support.fake_ls import FakeLabelStudio, ls_env
from tests.support.samples import SAMPLE_IMAGES, predict_body, task_of
from tests.support.servers import Backend

THIN_IMAGE = "/data/upload/1/thin-1x5000.png"
UNTOUCHED_IMAGE = "/data/upload/1/only-for-find-similar.png"  # no other test fetches it
CLICK_TOOL = '<KeyPointLabels name="kp" toName="image" smart="true"><Label value="Cat"/></KeyPointLabels>'


def config(labels: tuple[str, ...] = ("Cat", "Dog"), extra: str = "") -> str:
    tags = "".join(f'<Label value="{label}"/>' for label in labels)
    return (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="found" toName="image">{tags}</RectangleLabels>'
        f'<TextArea name="prompt" toName="image" editable="true" smart="true"/>{extra}</View>'
    )


def typed(text: object, to_name: str = "image", value: object = None) -> dict:
    """A submitted smart TextArea region as LS 1.23.2 sends it (tests/fixtures/ls-samples)."""
    region = {"value": {"text": text} if value is None else value, "from_name": "prompt", "to_name": to_name}
    return {"result": [{**region, "type": "textarea"}]}


def click() -> dict:
    region = {"original_width": 320, "original_height": 240, "image_rotation": 0, "is_positive": True}
    value = {"x": 25.0, "y": 25.0, "width": 0.5, "keypointlabels": ["Cat"]}
    return {"result": [{**region, "value": value, "from_name": "kp", "to_name": "image", "type": "keypointlabels"}]}


@pytest.fixture(scope="module")
def fake_ls() -> Iterator[FakeLabelStudio]:
    ls = FakeLabelStudio()
    for path, image in SAMPLE_IMAGES.items():
        ls.add(path, image)
    ls.add(THIN_IMAGE, np.random.default_rng(0).integers(0, 256, (1, 5000, 3), dtype=np.uint8))
    ls.add(UNTOUCHED_IMAGE, SAMPLE_IMAGES[task_of(1)["data"]["image"]])
    yield ls
    ls.close()


@pytest.fixture(scope="module")
def gd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_in_clean_interpreter("grounding-dino", tmp_path_factory.mktemp("gd") / "model")


def concept_env(fake_ls: FakeLabelStudio, model: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return ls_env(
        fake_ls,
        SAM_ENGINE="grabcut",
        CONCEPT_ENGINE="grounding-dino",
        CONCEPT_MODEL=model,
        HF_HOME=str(tmp_path_factory.mktemp("hf-home")),  # empty: only CONCEPT_MODEL can serve
        HF_ENDPOINT="http://127.0.0.1:9",
    )


def served_env(fake_ls, gd_folder, redis_server, tmp_path_factory) -> dict[str, str]:
    """The module backend's settings: Grounding DINO, Redis, and concepts runs on retrieve predictions."""
    return {
        **concept_env(fake_ls, str(gd_folder), tmp_path_factory),
        "REDIS_URL": redis_server.url,
        "AUTO_ANNOTATE_ON_PREDICT": "true",
        "AUTO_ANNOTATE_OPTIONS": json.dumps({"mode": "concepts"}),
    }


@pytest.fixture(scope="module")
def server(fake_ls, gd_folder, redis_server, start_backend, tmp_path_factory) -> Backend:
    return start_backend(served_env(fake_ls, gd_folder, redis_server, tmp_path_factory))


# --- the label a typed text asks for, and the phrases a label is asked by ---------------------


def test_a_label_without_word_characters_does_not_take_every_text() -> None:
    """A label such as "🐈" or "+" has no words: it must not match every text ahead of the label
    the text names (today set() <= words is always true, so "black dog" became 🐈)."""
    assert label_and_phrases("black dog", ["🐈", "Dog"])[0] == "Dog"
    assert label_and_phrases("black dog", ["+", "Dog"])[0] == "Dog"


def test_a_label_with_a_dot_is_asked_by_its_whole_name() -> None:
    """An unmapped label "St. Bernard" is one prompt, not "St" and "Bernard" (two prompts,
    each labelling its instances St. Bernard). Grounding DINO reads '.' as a phrase break, so the
    dot cannot stay in it."""
    phrases = label_phrases(["St. Bernard", "Dog"], {})
    bernard = [p.phrase for p in phrases if p.label == "St. Bernard"]
    assert len(bernard) == 1 and "Bernard" in bernard[0] and "." not in bernard[0]


# --- typed phrases against the live backend ------------------------------------------------------


def test_typed_text_has_the_phrase_limit_of_label_mappings(server) -> None:
    """A mapping of over MAX_PHRASES prompts is a 400; the same prompts typed must be too (each is
    a pass of the engine's text and decoder stages, on every submit)."""
    text = " . ".join(["cat"] * (MAX_PHRASES + 1))
    assert len(text) <= 1000  # within the typed-text length limit: only the phrase count is over
    answer = server.post("/predict", predict_body(task_of(1), typed([text]), config()))
    assert answer.status_code == 400, answer.text[:300]
    assert "limit" in answer.json()["message"]


def test_a_typed_phrase_on_a_one_pixel_high_image_is_a_4xx_and_the_next_works(server) -> None:
    """A 1x5000 image makes the engine's processor resize to a height of 0 (a ValueError from
    transformers); the annotator must hear that the image cannot be used, not "a bug"."""
    answer = server.post("/predict", predict_body({"id": 9, "data": {"image": THIN_IMAGE}}, typed(["cat"]), config()))
    assert answer.status_code in (400, 422), answer.text[:300]
    assert answer.json()["error"] != "internal_error"
    again = server.post("/predict", predict_body(task_of(1), typed(["cat"]), config()))
    assert again.status_code == 200, again.text[:300]


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (typed(None, value="cat"), "value.text"),
        (typed({"text": "cat"}), "value.text"),
        (typed([["cat"]]), "value.text"),
        (typed(["\x00"]), "no tokens"),
        (typed(["\u200b"]), "no tokens"),
        (typed(["Cat:"]), "no phrase"),
        (typed(["cat"], to_name="prompt"), "no <Image name='prompt'>"),
    ],
    ids=[
        "value-not-object",
        "text-object",
        "nested-list",
        "nul",
        "zero-width-space",
        "label-colon-only",
        "to-textarea",
    ],
)
def test_malformed_typed_text_is_a_clear_400(server, context, message) -> None:
    """Regression guard: each was a clear 400 when reviewed."""
    answer = server.post("/predict", predict_body(task_of(1), context, config()))
    assert answer.status_code == 400, answer.text[:300]
    assert message in answer.json()["message"]


def test_one_bad_task_of_a_concepts_batch_leaves_the_others_labelled(server) -> None:
    """Regression guard: retrieve predictions in the concepts mode; the thin image's task is an
    empty prediction, its neighbours keep their regions."""
    tasks = [task_of(1), {"id": 9, "data": {"image": THIN_IMAGE}}, task_of(3)]
    body = {**predict_body(task_of(1), None, config()), "tasks": tasks}
    answer = server.post("/predict", body)
    assert answer.status_code == 200, answer.text[:300]
    counts = [len(p["result"]) for p in answer.json()["results"]]
    assert counts[1] == 0 and counts[0] > 0 and counts[2] > 0, counts


# --- the find-all-similar tool ---------------------------------------------------------------------


def similar_region(kind: str, value: dict) -> dict:
    region = {"original_width": 320, "original_height": 240, "image_rotation": 0, "value": value}
    return {"result": [{**region, "from_name": "similar", "to_name": "image", "type": kind}]}


def test_a_point_with_the_similar_tool_says_the_tool_must_draw_boxes(server) -> None:
    """parse_context is called with max_points=0, so a keypoint of the tool is refused as "1 points
    exceed the limit of 0" with "raise MAX_PROMPT_POINTS" as the fix; answer_similar's own message
    ("must be a RectangleLabels") is never reached."""
    context = similar_region("keypointlabels", {"x": 10.0, "y": 10.0, "width": 0.5, "keypointlabels": ["Cat"]})
    answer = server.post("/predict", predict_body(task_of(1), context, config()))
    assert answer.status_code == 400, answer.text[:300]
    assert "RectangleLabels" in answer.json()["message"] and "MAX_PROMPT_POINTS" not in answer.json().get("fix", "")


def test_find_all_similar_on_a_box_only_engine_is_refused_before_any_work(server, fake_ls) -> None:
    """Grounding DINO cannot take an exemplar: the 422 is known from CONCEPT_ENGINE alone, yet today
    the image is downloaded and its backbone run (holding a cold slot) before find_similar says so."""
    value = {"x": 10.0, "y": 10.0, "width": 20.0, "height": 20.0, "rotation": 0, "rectanglelabels": ["Cat"]}
    task = {"id": 7, "data": {"image": UNTOUCHED_IMAGE}}
    answer = server.post("/predict", predict_body(task, similar_region("rectanglelabels", value), config()))
    assert answer.status_code == 422, answer.text[:300]
    assert fake_ls.hits[UNTOUCHED_IMAGE] == 0


# --- CONCEPT_MODEL pointing at something that is not a Grounding DINO folder ----------------------


def broken_model(kind: str, root: Path, checkpoint: Path) -> str:
    if kind == "sam-checkpoint":
        return str(checkpoint)
    folder = root / kind
    folder.mkdir()
    if kind == "corrupt-config":
        (folder / "config.json").write_text('{"model_type": "grounding-dino", ')
    return str(folder)


def concepts_error(server: Backend, timeout_s: float = 30.0) -> str | None:
    """What /health says of the concept engine's load once the start-up attempt has ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        concepts = server.get("/health").json()["concepts"]
        if "error" in concepts or concepts["loaded"]:
            return concepts.get("error")
        time.sleep(0.2)
    return None


@pytest.mark.parametrize("kind", ["empty-folder", "sam-checkpoint", "corrupt-config"])
def test_a_broken_concept_model_leaves_clicks_working_and_health_says_why(
    kind, fake_ls, start_backend, tmp_path_factory, tiny_checkpoint
) -> None:
    model = broken_model(kind, tmp_path_factory.mktemp("broken"), tiny_checkpoint)
    broken = start_backend(concept_env(fake_ls, model, tmp_path_factory))
    error = concepts_error(broken)
    assert error is not None and model in error, error
    assert broken.post("/predict", predict_body(task_of(1), click(), config(extra=CLICK_TOOL))).status_code == 200
    answer = broken.post("/predict", predict_body(task_of(1), typed(["cat"]), config()))
    assert answer.status_code == 503 and "CONCEPT_MODEL" in answer.json()["fix"], answer.text[:300]


# --- other weights at the same CONCEPT_MODEL path --------------------------------------------------


def negate_weights(folder: Path) -> None:
    """Rewrite model.safetensors with every float32 weight negated: same layout and size, other
    weights (as when a fine-tuned model replaces the one in a deployment's model folder)."""
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack_from("<Q", data)
    start = 8 + length
    for name, entry in json.loads(data[8:start]).items():
        if name != "__metadata__":
            assert entry["dtype"] == "F32", entry
            first, last = entry["data_offsets"]
            data[start + first : start + last] = (
                np.frombuffer(bytes(data[start + first : start + last]), "<u4") ^ np.uint32(0x8000_0000)
            ).tobytes()
    path.write_bytes(bytes(data))


def test_features_of_other_weights_at_the_same_path_are_not_reused(
    server, fake_ls, gd_folder, redis_server, start_backend, tmp_path_factory
) -> None:
    """The features cache key is the engine kind and CONCEPT_MODEL's path only: after the folder's
    weights change, a backend sharing the Redis takes the old model's features (7 days' TTL) and
    answers from them. The SAM cache names its checkpoint's size for this; features need a
    fingerprint of the weights too. (The module backend loaded its weights at start: unaffected.)"""
    body = predict_body(task_of(2), typed(["cat"]), config())
    assert server.post("/predict", body).status_code == 200  # task 2's features now in Redis
    negate_weights(gd_folder)
    after = start_backend(served_env(fake_ls, gd_folder, redis_server, tmp_path_factory))
    assert after.post("/predict", body).status_code == 200
    levels = {
        level: after.metric("sam_embedding_cache_total", level=level, source="concept-features")
        for level in ("redis", "computed")
    }
    assert levels == {"redis": 0, "computed": 1}
