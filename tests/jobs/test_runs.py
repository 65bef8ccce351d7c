"""A run's spec and record in Redis: typed on the way out, checked on the way back in.

Real redis-server, the app in-process (grabcut: no weights), the RQ job function called
directly: what is under test is what Redis holds and how a damaged value is answered.
"""

from __future__ import annotations

import json

import pytest

from backend.autoannotate import jobs, worker
from backend.autoannotate.annotator import ModelIds, RunSpec, RunSpecInvalid, parse_options
from backend.autoannotate.progress import PREFIX, RunProgress, new_run_id
from backend.labelstudio.label_config import OutputTarget
from backend.settings import Settings
from backend.web.app import create_app

SPEC = RunSpec.create(
    7,
    parse_options({"output": "polygon", "points_per_side": 8, "max_masks": 5}),
    OutputTarget("poly", "image", "polygon", "Banana"),
    "image",
    ModelIds("sam-test"),
    ("Banana", "Apple"),
)


def stored(**changes: object) -> str:
    """SPEC as `to_json` writes it, with some keys replaced (None: removed)."""
    data = json.loads(SPEC.to_json())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


def test_a_spec_round_trips_through_json_unchanged():
    assert RunSpec.from_json(SPEC.to_json()) == SPEC
    assert RunSpec.from_json(SPEC.to_json().encode()) == SPEC  # as redis-py returns it
    assert SPEC.model_version == SPEC.options.model_version("sam-test")


@pytest.mark.parametrize(
    "raw, words",
    [
        ("{not json", "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
        ("[]", "keys"),
        (stored(project=None), "keys"),
        (stored(extra=1), "keys"),
        (stored(project="7"), "project"),
        (stored(project=0), "project"),
        (stored(options=["polygon"]), "options"),
        (stored(options={"mode": "masks"}), "options"),
        (stored(options={**json.loads(SPEC.to_json())["options"], "max_masks": "many"}), "max_masks"),
        (
            stored(options={**json.loads(SPEC.to_json())["options"], "amg": {"points_per_side": 10**9}}),
            "points_per_side",
        ),
        (stored(target={"from_name": "poly"}), "target"),
        (stored(target={"from_name": "p", "to_name": "i", "output_type": "mesh", "label": "B"}), "target"),
        (stored(value_key=3), "value_key"),
        (stored(model_version=""), "model_version"),
        (stored(labels=None), "keys"),
        (stored(labels="Banana"), "labels"),
        (stored(labels=["Banana", 3]), "labels"),
        (stored(options={**json.loads(SPEC.to_json())["options"], "prompts": {"Banana": 3}}), "prompts"),
        (stored(options={**json.loads(SPEC.to_json())["options"], "thresholds": {"Banana": 2}}), "thresholds"),
    ],
)
def test_a_damaged_stored_spec_is_a_clear_error_naming_what_is_wrong(raw, words):
    with pytest.raises(RunSpecInvalid) as err:
        RunSpec.from_json(raw)
    assert words in err.value.message and "stored spec is invalid" in err.value.message
    assert err.value.fix and not err.value.retryable


@pytest.fixture()
def settings(redis_server):
    return Settings.from_env({"REDIS_URL": redis_server.url, "SAM_ENGINE": "grabcut"})


def test_a_task_of_a_run_whose_spec_is_damaged_fails_with_the_reason(settings, redis_server, monkeypatch):
    """Before the spec was typed, a damaged value was a KeyError inside the job: the task never counted."""
    monkeypatch.setattr(worker, "_runtime", worker.Runtime(settings))
    progress = RunProgress(redis_server.client())
    run_id = new_run_id()
    progress.create(run_id, total=1, planning=False, spec=SPEC)
    redis_server.client().hset(PREFIX + run_id, "spec", stored(target={"from_name": "poly"}))

    outcome = jobs.run_task(run_id, 5)

    assert outcome["task"] == 5 and "stored spec is invalid" in outcome["failed"]
    status = progress.status(run_id)
    assert (status["state"], status["done"], status["failed"]) == ("finished_with_errors", 0, 1), status
    assert "'target'" in status["errors"][0]["error"] and "start the run again" in status["errors"][0]["error"]


@pytest.mark.parametrize("suffix", [":done", ":failed", ":seconds", ":x", "%0A"])
def test_a_real_run_id_with_a_suffix_is_no_run(settings, redis_server, suffix):
    """`<run id>:done` names the run's set of done tasks in Redis: it must be a 404, not a WRONGTYPE 500."""
    progress = RunProgress(redis_server.client())
    run_id = new_run_id()
    progress.create(run_id, total=2, planning=False, spec=SPEC)
    progress.mark_done(run_id, 1, 0.5)
    progress.mark_failed(run_id, 2, "image gone")
    client = create_app(settings).test_client()

    assert client.get(f"/auto-annotate/{run_id}").get_json()["run_id"] == run_id
    response = client.get(f"/auto-annotate/{run_id}{suffix}")
    assert response.status_code == 404, response.get_json()
    body = response.get_json()
    assert body["error"] == "not_found" and "no auto-annotate run" in body["message"] and "run_id" in body["fix"]
    assert progress.status(run_id + suffix) is None


def test_run_ids_are_32_hex_digits_and_keys_are_built_from_nothing_else(redis_server):
    progress = RunProgress(redis_server.client())
    assert len(new_run_id()) == 32 and new_run_id() != new_run_id()
    with pytest.raises(ValueError):
        progress.mark_done("a" * 31 + ":", 1, 0.1)
    with pytest.raises(ValueError):
        progress.spec(new_run_id().upper())
