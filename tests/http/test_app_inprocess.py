"""App behaviour that needs a controllable engine: OOM, a full warm-up queue, bad configuration.

These use Flask's test client with an injected engine (the gunicorn tests cover the real
server); the images still come over HTTP from the fake Label Studio.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from backend.autoannotate.annotator import AutoAnnotator
from backend.engines.engine import EngineUnavailable
from backend.engines.grabcut import GrabCutEngine
from backend.settings import Settings
from backend.web.app import create_app
from tests.support.samples import LS_TOKEN, sample


class ScriptedEngine(GrabCutEngine):
    """GrabCut, except that encode can be held and decode can run out of GPU memory."""

    model_id = "scripted"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.oom = False

    def encode(self, image: np.ndarray):
        self.release.wait(30)
        return super().encode(image)

    def decode(self, embedding, **kw):
        if self.oom:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().decode(embedding, **kw)


def make_client(fake_ls, engine, **overrides):
    settings = Settings(label_studio_url=fake_ls.url, label_studio_api_key=LS_TOKEN, **overrides)
    return create_app(settings, engine=engine).test_client()


def metric(client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_gpu_out_of_memory_is_503_with_retry_after(fake_ls):
    engine = ScriptedEngine()
    client = make_client(fake_ls, engine)
    engine.oom = True
    response = client.post("/predict", json=sample("predict_interactive_request.json"))
    assert response.status_code == 503 and response.json["error"] == "overloaded"
    assert response.headers["Retry-After"].isdigit()
    engine.oom = False
    assert client.post("/predict", json=sample("predict_interactive_request.json")).status_code == 200


def warmup_threads() -> int:
    return sum(t.name == "warmup" for t in threading.enumerate())


def test_full_warmup_queue_drops_and_counts_without_new_threads(fake_ls):
    engine = ScriptedEngine()
    engine.release.clear()  # the worker stays busy with the first image
    for i in range(6):
        fake_ls.add(f"/data/upload/1/warm{i}.png", np.full((20, 30, 3), 40 * i, np.uint8))
    client = make_client(fake_ls, engine, warm_queue_size=2)
    body = sample("predict_batch_request.json")
    body["tasks"] = [{"id": i, "data": {"image": f"/data/upload/1/warm{i}.png"}} for i in range(6)]
    workers_before = warmup_threads()
    response = client.post("/predict", json=body)
    assert response.status_code == 200 and len(response.json["results"]) == 6
    assert warmup_threads() == workers_before + 1  # one worker for this app, whatever the load
    # one taken by the worker, two waiting, three dropped (the worker may not have taken one yet)
    assert metric(client, "sam_warmup_dropped_total") in (3.0, 4.0)
    engine.release.set()
    client.application.extensions["sam_backend"].warmup.join()
    assert metric(client, "sam_warmup_done_total") >= 2


def test_only_request_threads_take_cold_slots_and_a_cached_click_never_does(fake_ls):
    client = make_client(fake_ls, ScriptedEngine(), threads=3)
    backend = client.application.extensions["sam_backend"]
    assert backend.cold_slots.limit == 1  # THREADS - 2
    click = sample("predict_interactive_request.json")
    image = click["tasks"][0]["data"]["image"]
    fake_ls.add("/data/upload/1/other.png", np.full((24, 32, 3), 90, np.uint8))
    with backend.cold_slots.enter():  # a cold click is in progress
        refused = client.post("/predict", json=click)
        assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
        assert "uncached images" in refused.json["message"]
        # The warm-up thread and an RQ worker's annotator are no request threads: never refused.
        batch = {**sample("predict_batch_request.json"), "tasks": [{"id": 1, "data": {"image": image}}]}
        assert client.post("/predict", json=batch).status_code == 200
        backend.warmup.join()
        assert (
            AutoAnnotator(backend).warm({"id": 2, "data": {"image": "/data/upload/1/other.png"}}, "image") == "computed"
        )
        hit = client.post("/predict", json=click)  # warmed: a cache hit needs no slot
        assert hit.status_code == 200 and hit.json["results"][0]["result"]


def test_a_click_refuses_an_image_of_another_size_from_its_header(fake_ls):
    client = make_client(fake_ls, ScriptedEngine())
    click = sample("predict_interactive_request.json")  # LS shows the image as 320x240
    click["tasks"][0]["data"]["image"] = "/data/upload/1/resized.png"
    fake_ls.add("/data/upload/1/resized.png", np.zeros((1200, 1600, 3), np.uint8))
    response = client.post("/predict", json=click)
    assert response.status_code == 422
    assert "shows this image as 320x240 but the file is 1600x1200" in response.json["message"]
    assert metric(client, "sam_encoder_seconds_count") == 0, "refused before its pixels were decoded and encoded"


def test_one_bad_task_in_a_batch_does_not_fail_the_others(fake_ls):
    client = make_client(fake_ls, ScriptedEngine())
    body = sample("predict_batch_request.json")
    body["tasks"][1]["data"] = {"image": "ftp://elsewhere/x.png"}
    body["tasks"][2]["data"] = {}
    response = client.post("/predict", json=body)
    assert response.status_code == 200 and response.json["results"] == [[], [], []]


def test_too_many_tasks_is_refused(fake_ls):
    client = make_client(fake_ls, ScriptedEngine(), max_tasks_per_request=2)
    response = client.post("/predict", json=sample("predict_batch_request.json"))
    assert response.status_code == 400 and "MAX_TASKS_PER_REQUEST" in response.json["message"]


def test_setup_credentials_are_used_when_the_environment_has_none(fake_ls):
    client = create_app(Settings(sam_engine="grabcut")).test_client()
    before = client.post("/predict", json=sample("predict_interactive_request.json"))
    assert before.status_code == 424 and "LABEL_STUDIO_URL" in before.json["fix"]
    setup = sample("setup_request.json")
    assert client.post("/setup", json={**setup, "hostname": fake_ls.url}).status_code == 200
    assert client.post("/predict", json=sample("predict_interactive_request.json")).status_code == 200


@pytest.mark.parametrize(
    "overrides, words",
    [
        (
            {"sam_checkpoint": "/nowhere/sam_vit_b_01ec64.pth"},
            ["/nowhere/sam_vit_b_01ec64.pth", "make checkpoint", "SAM_ENGINE=grabcut"],
        ),
        ({"sam_model": "vit_x"}, ["vit_x"]),
        ({"sam_engine": "magic"}, ["magic", "grabcut"]),
    ],
)
def test_bad_engine_configuration_fails_at_start_with_the_fix(overrides, words):
    with pytest.raises(EngineUnavailable) as refused:
        create_app(Settings(**overrides))
    text = refused.value.message + " " + refused.value.fix
    assert all(word in text for word in words), text


def test_a_checkpoint_that_will_not_load_makes_health_fail_with_the_reason(fake_ls, tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a state dict")
    client = make_client(fake_ls, None, sam_model="tiny", sam_checkpoint=str(broken), sam_device="cpu")
    response = client.post("/predict", json=sample("predict_interactive_request.json"))
    assert response.status_code == 503 and response.json["error"] == "engine_unavailable"
    health = client.get("/health")
    assert health.status_code == 503 and health.json["status"] == "ERROR" and "broken.pth" in health.json["error"]


def test_missing_checkpoint_stops_gunicorn_with_the_fix_in_its_log(start_backend):
    with pytest.raises(RuntimeError) as failed:
        start_backend({"SAM_ENGINE": "sam", "SAM_CHECKPOINT": "/nowhere/sam_vit_b_01ec64.pth"})
    log = str(failed.value)
    assert "gunicorn exited" in log and "SAM checkpoint not found at /nowhere/sam_vit_b_01ec64.pth" in log
    assert "make checkpoint" in log and "SAM_ENGINE=grabcut" in log
