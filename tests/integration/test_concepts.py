"""Labelled pre-annotation from text in a real Label Studio 1.23.2: a project labelled "Cat" and
"Dog" is pre-annotated by one CLI command (RQ worker, Grounding DINO + SAM), and a phrase typed
in the smart TextArea comes back through LS as labelled regions.

The Grounding DINO model is tiny and random, saved with `save_pretrained` and loaded from its
folder as real weights are; thresholds are 0 so random weights yield instances. LS validates
each posted prediction against the label config (its validation feature flag is forced on).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.concepts.labelling import LabelledPhrase, keep_instances
from sam_model.concepts import Instance
from tests.integration.support import IMAGES, backend_env, image_bytes, sam_env
from tests.support.concept_models import instances_in_clean_interpreter, save_in_clean_interpreter
from tests.support.samples import sample
from tests.support.servers import REPO, Backend, Worker

NAMES = ["upload0.png", "upload1.png", "upload2.png"]
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="Cat"/><Label value="Dog"/></BrushLabels>
  <TextArea name="prompt" toName="image" editable="true" rows="2" maxSubmissions="3" showSubmitButton="true" smart="true"/>
</View>"""
OPTIONS = {"score_threshold": 0.0, "prompts": {"Dog": "dog . red car"}, "max_masks": 20}


@pytest.fixture(scope="module")
def concepts_env(label_studio, redis_server, tiny_checkpoint, tmp_path_factory) -> dict[str, str]:
    folder = save_in_clean_interpreter("grounding-dino", tmp_path_factory.mktemp("gd") / "model")
    return backend_env(
        label_studio,
        redis_server,
        **sam_env(tiny_checkpoint),
        CONCEPT_ENGINE="grounding-dino",
        CONCEPT_MODEL=str(folder),
        HF_HOME=str(tmp_path_factory.mktemp("hf-home")),
        HF_ENDPOINT="http://127.0.0.1:9",
    )


@pytest.fixture(scope="module")
def concepts_backend(concepts_env, backends, tmp_path_factory) -> Backend:
    backend = Backend(concepts_env, tmp_path_factory.mktemp("concepts") / "gunicorn.log")
    backends.append(backend)
    return backend


@pytest.fixture(scope="module")
def concepts_worker(concepts_env, tmp_path_factory) -> Iterator[Worker]:
    env = {**concepts_env, "RQ_QUEUE": "concepts"}  # not the session's AMG worker's queue
    worker = Worker(env, tmp_path_factory.mktemp("concepts-worker") / "worker.log")
    time.sleep(0.5)
    if worker.proc.poll() is not None:
        raise RuntimeError(f"worker exited at once:\n{worker.log()}")
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def project(label_studio) -> dict:
    ls = label_studio
    project = ls.create_project("cats and dogs", CONFIG)
    tasks = ls.upload_images(project, {name: image_bytes(name) for name in NAMES})
    names = {t: next(n for n in NAMES if ls.task(t)["data"]["image"].endswith(n)) for t in tasks}
    return {"project": project, "tasks": tasks, "names": names}


def expected(folder: str, name: str, phrases: list[LabelledPhrase], threshold: float, cap: int) -> list:
    """The engine alone on the image, then the documented selection rule."""
    prompts = [p.phrase for p in phrases]
    found = instances_in_clean_interpreter("grounding-dino", Path(folder), IMAGES[name], threshold, prompts=prompts)
    instances = [
        Instance(int(i), tuple(b), float(s))
        for i, b, s in zip(found["found.prompt"], found["found.boxes"], found["found.scores"], strict=True)
    ]
    return keep_instances(instances, phrases, lambda _: threshold, 0.7, cap)


def test_one_command_labels_a_cat_and_dog_project(label_studio, concepts_env, concepts_worker, project) -> None:
    ls = label_studio
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAM_", "REDIS", "LABEL_STUDIO", "CONCEPT"))}
    env.update(concepts_env, OMP_NUM_THREADS="1", RQ_QUEUE="concepts")
    command = [sys.executable, "-m", "backend", "auto-annotate", "--project", str(project["project"]), "--all"]
    command += ["--mode", "concepts", "--options", json.dumps(OPTIONS)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout, done.stderr, concepts_worker.log()[-3000:])
    assert "3 of 3 tasks done, 0 failed" in done.stdout

    phrases = [LabelledPhrase("Cat", "Cat"), LabelledPhrase("dog", "Dog"), LabelledPhrase("red car", "Dog")]
    seen = set()
    for task_id in project["tasks"]:
        (prediction,) = [p for p in ls.predictions(task_id) if "-concepts-" in p["model_version"]]
        assert prediction["model_version"].startswith(f"grounding-dino:{concepts_env['CONCEPT_MODEL']}+sam-tiny-")
        want = expected(concepts_env["CONCEPT_MODEL"], project["names"][task_id], phrases, 0.0, 20)
        got = [(r["value"]["brushlabels"], r["from_name"], r["score"]) for r in prediction["result"]]
        assert got == [([item.label], "tag", pytest.approx(item.instance.score)) for item in want]
        seen |= {item.label for item in want}
    assert seen == {"Cat", "Dog"}


def test_a_typed_phrase_comes_back_through_label_studio(label_studio, concepts_env, concepts_backend, project) -> None:
    ls = label_studio
    ml = ls.connect_ml(project["project"], concepts_backend.url, title="concepts")
    task_id = project["tasks"][0]
    context = copy.deepcopy(sample("predict_textarea_request.json")["params"]["context"])  # as LS sent it
    context["result"][0]["value"]["text"] = ["Dog: cat"]
    answer = ls.interactive(ml["id"], task_id, context)
    assert "errors" not in answer, answer
    regions = answer["data"]["result"]
    phrases = [LabelledPhrase("cat", "Dog")]
    want = expected(concepts_env["CONCEPT_MODEL"], project["names"][task_id], phrases, 0.35, 50)
    assert want and len(regions) == len(want)
    assert all(r["value"]["brushlabels"] == ["Dog"] and r["type"] == "brushlabels" for r in regions)
