"""Property-based fuzzing of the live gunicorn backend against backend/web/openapi.py (schemathesis).

For every described route, schemathesis generates requests that follow the description
(positive) and requests that break it (negative); each must get a response the description
allows: never a 5xx, a documented status, the documented content type and body schema.
Most /predict cases are "deepened" (the project's real label config, an image LS serves,
generated prompt regions on that image, mostly plausible, some hostile) so the fuzzer gets past config parsing into prompts, image
loading and decoding. Examples are bounded (EXAMPLES per route and mode) and every request
has a timeout, so the run is short and cannot hang.

Beyond the description: valid bodies with fields at any depth set to JSON the schemas never
produce (lone surrogates, 400-digit integers, NaN/Infinity), and arbitrary latin-1
Authorization headers; neither may ever get a 5xx.

Network safety: generated task data never leaves 127.0.0.1. Image values with a URL scheme
other than data: / cloud (which go through the fake LS) are rewritten to an LS path.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend.web.openapi import openapi_spec
from tests.support.fake_ls import FakeLabelStudioAPI
from tests.support.images import png, scene
from tests.support.json_paths import leaf_paths, replaced
from tests.support.samples import LS_TOKEN, sample

EXAMPLES = 25
CONFIG = sample("predict_interactive_request.json")["label_config"]
IMAGE, W, H = "/data/upload/1/fuzz.png", 80, 60
LOCAL_SCHEMES = ("", "data", "s3", "gs", "azure-blob", "azure-spi")  # these go to LS (127.0.0.1) or nowhere
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SCHEMA = schemathesis.openapi.from_dict(openapi_spec())
# Negative cases need something to break: a body (a string path parameter cannot be made invalid).
RUNS = [
    (path, method, mode)
    for path, item in openapi_spec()["paths"].items()
    for method, op in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or "requestBody" in op
]


@pytest.fixture(scope="module")
def fake_ls():
    ls = FakeLabelStudioAPI(CONFIG)
    ls.add_file(IMAGE, png(scene(W, H, [(50, 50, 12)], seed=5)))
    ls.add_task(1, {"image": IMAGE})
    yield ls
    ls.close()


@pytest.fixture(scope="module")
def server(start_backend, fake_ls, redis_server):
    return start_backend(
        {
            "SAM_ENGINE": "grabcut",
            "LABEL_STUDIO_URL": fake_ls.url,
            "LABEL_STUDIO_API_KEY": LS_TOKEN,
            "REDIS_URL": redis_server.url,
            "MAX_REQUEST_BYTES": "200000",
            "FETCH_TIMEOUT_S": "5",
            "WARM_QUEUE_SIZE": "4",
        }
    )


def keep_local(body: Any) -> Any:
    """Rewrite task image values that would make the backend connect beyond 127.0.0.1."""
    tasks = body.get("tasks") if isinstance(body, dict) else None
    for task in tasks if isinstance(tasks, list) else []:
        data = task.get("data") if isinstance(task, dict) else None
        for key, value in list(data.items()) if isinstance(data, dict) else []:
            if isinstance(value, str) and (
                urlsplit(value.strip()).scheme.lower() not in LOCAL_SCHEMES
                or value.strip().startswith("//")
                or "\\" in value
            ):
                data[key] = IMAGE
    return body


_PERCENT = st.floats(0, 100)
_COORD = st.one_of(
    _PERCENT, st.floats(-1e12, 1e12), st.integers(-(10**9), 10**9), st.sampled_from(["50", None, [], True])
)
_CLEAN = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["keypointlabels", "keypointlabels", "rectanglelabels"]),
        "to_name": st.just("image"),
        "from_name": st.sampled_from(["tag2", "tag3"]),
        "original_width": st.just(W),
        "original_height": st.just(H),
        "is_positive": st.booleans(),
        "image_rotation": st.sampled_from([0, 90, 270]),
        "value": st.fixed_dictionaries(
            {
                "x": st.floats(0, 60),
                "y": st.floats(0, 60),
                "width": st.floats(0, 40),
                "height": st.floats(0, 40),
                "rotation": st.just(0),
                "keypointlabels": st.sampled_from([["Banana"], ["Orange"]]),
                "rectanglelabels": st.sampled_from([["Banana"], ["Orange"]]),
            }
        ),
    }
)
_HOSTILE = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["keypointlabels", "keypointlabels", "rectanglelabels", "polygonlabels"]),
        "to_name": st.sampled_from(["image", "image", "image", "other"]),
        "from_name": st.sampled_from(["tag2", "tag3", "tag"]),
        "original_width": st.sampled_from([W, W, W, W + 1, 0, "80"]),
        "original_height": st.sampled_from([H, H, H, 1]),
        "is_positive": st.sampled_from([True, True, False, None, "no"]),
        "image_rotation": st.sampled_from([0, 0, 90, 45.5]),
        "value": st.fixed_dictionaries(
            {
                "x": _COORD,
                "y": _COORD,
                "width": _COORD,
                "height": _COORD,
                "rotation": st.sampled_from([0, 0, 30, 370]),
                "keypointlabels": st.sampled_from([["Banana"], ["Orange"], [], ["Nope"]]),
                "rectanglelabels": st.sampled_from([["Banana"], ["Orange"]]),
            }
        ),
    }
)
# A deepened case: the generated body plus LS's real config, the served image and prompt regions on it.
DEEP = st.one_of(
    st.lists(_CLEAN, min_size=1, max_size=1),
    st.lists(_CLEAN, min_size=1, max_size=6),
    st.lists(st.one_of(_CLEAN, _HOSTILE), min_size=1, max_size=4),
    st.none(),
)


def deepen(body: Any, regions: list[dict]) -> Any:
    """Make a generated /predict body reach prompts, image loading and decoding."""
    if not isinstance(body, dict):
        return body
    body["label_config"] = CONFIG
    if not isinstance(body.get("tasks"), list) or not body["tasks"] or not isinstance(body["tasks"][0], dict):
        body["tasks"] = [{"id": 1}]
    body["tasks"][0]["data"] = {"image": IMAGE}
    body["params"] = {"context": {"result": regions}}
    return body


@pytest.mark.parametrize("path, method, mode", RUNS, ids=[f"{m.upper()} {p} {g.value}" for p, m, g in RUNS])
def test_fuzzed_requests_get_documented_answers(server, path, method, mode):
    operation = SCHEMA[path][method]
    seen: list[int] = []

    @settings(
        max_examples=EXAMPLES * (3 if path == "/predict" else 1),
        deadline=None,
        database=None,
        derandomize=True,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), deep=DEEP)
    def run(case, deep: list[dict] | None) -> None:
        if case.body is not None and not isinstance(case.body, (bytes, str)):
            case.body = keep_local(
                deepen(case.body, deep)
                if deep and path == "/predict" and mode is GenerationMode.POSITIVE
                else case.body
            )
        response = case.call(base_url=server.url, timeout=60)
        seen.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    run()
    print(f"{method.upper()} {path} {mode.value}: statuses {sorted(Counter(seen).items())}")
    assert seen, "no request was sent"
    assert server.get("/health").status_code == 200


# Any JSON Python's parser accepts, including what the description's schemas never produce:
# lone surrogates, integers of hundreds of digits, NaN and +-Infinity literals.
_ODD_SCALAR = st.one_of(
    st.sampled_from(
        [
            "\ud800",
            "x\udfff",
            "\udc00\ud800",
            "\ud83d\ude00",
            "",
            10**400,
            -(10**400),
            2**63,
            float("nan"),
            float("inf"),
            float("-inf"),
            None,
            True,
            [],
            {},
        ]
    ),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
)
_ODD_JSON = st.recursive(
    _ODD_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=8), st.just("\ud800")), inner, max_size=3),
    ),
    max_leaves=6,
)


def valid_bodies() -> dict[str, dict]:
    """A body each POST route accepts (LS's captured ones, on the fake LS's image), to mutate."""
    predict = sample("predict_interactive_request.json")
    predict["tasks"][0]["data"]["image"] = IMAGE
    for region in predict["params"]["context"]["result"]:
        region.update(original_width=W, original_height=H)
    return {
        "/predict": predict,
        "/setup": {**sample("setup_request.json"), "hostname": "http://ls.example"},
        "/webhook": {"action": "START_TRAINING", "project": {"id": 1, "title": "p"}},
        "/auto-annotate": {"project": 1, "tasks": [1], "options": {"points_per_side": 4, "max_masks": 3}},
        "/try/automatic-masks": {
            "image": "data:image/png;base64," + base64.b64encode(png(scene(W, H, [(50, 50, 12)], seed=5))).decode(),
            "options": {"points_per_side": 4, "max_masks": 3},
        },
    }


POST_ROUTES = sorted(path for path, item in openapi_spec()["paths"].items() if "post" in item)


@pytest.mark.parametrize("path", POST_ROUTES)
def test_odd_json_at_any_field_never_gets_a_5xx(server, path):
    """A valid body with one to three fields (at any depth) set to odd JSON: always a JSON answer below 500."""
    base = valid_bodies()[path]
    fields = leaf_paths(base)
    seen: list[int] = []

    @settings(
        max_examples=EXAMPLES * 2,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(changes=st.lists(st.tuples(st.sampled_from(fields), _ODD_JSON), min_size=1, max_size=3))
    def run(changes: list[tuple[tuple, Any]]) -> None:
        body = base
        for field_path, value in changes:
            try:
                body = replaced(body, field_path, value)
            except (KeyError, IndexError, TypeError):  # an earlier change removed the path
                continue
        text = json.dumps(keep_local(body))
        response = requests.post(server.url + path, data=text, headers={"Content-Type": "application/json"}, timeout=60)
        seen.append(response.status_code)
        assert response.status_code < 500, f"{path} {text[:300]}: {response.status_code} {response.text[:300]}"
        assert response.headers["Content-Type"].startswith("application/json")

    run()
    print(f"POST {path} odd JSON: statuses {sorted(Counter(seen).items())}")


@settings(
    max_examples=EXAMPLES * 2, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
@given(
    header=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
    scheme=st.sampled_from(["Basic ", "basic ", "Bearer ", "", "Basic  "]),
)
def test_any_authorization_header_is_harmless_without_basic_auth(server, header, scheme):
    """The server runs without BASIC_AUTH: whatever the header holds (latin-1), /health answers 200,
    or the HTTP layer's JSON 400 for a header it cannot read (an empty value, say); never a 5xx."""
    response = requests.get(server.url + "/health", headers={"Authorization": (scheme + header).strip()}, timeout=30)
    assert response.status_code in (200, 400), response.text
    assert response.headers["Content-Type"].startswith("application/json")
    if response.status_code == 400:
        assert "header" in response.json()["message"].lower(), response.text


def test_description_covers_every_route_the_app_serves():
    """Every rule Flask routes (bar static files) is described, with the same methods."""
    from backend.settings import Settings
    from backend.web.app import create_app

    app = create_app(Settings(sam_engine="grabcut"))
    described = openapi_spec()["paths"]
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule == "/openapi.json":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        assert path in described, f"{rule.rule} is served but not in backend/web/openapi.py"
        methods = {m.lower() for m in rule.methods - {"HEAD", "OPTIONS"}}
        assert methods <= set(described[path]), f"{rule.rule}: {methods} vs {set(described[path])}"


def test_served_description_is_the_module_one(server):
    """GET /openapi.json serves exactly backend.web.openapi's description."""
    response = requests.get(server.url + "/openapi.json", timeout=30)
    assert response.status_code == 200 and response.json() == openapi_spec()
