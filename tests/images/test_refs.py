"""resolve_image_ref: every LS URL kind, stable cache keys, clear refusals. Uses the real LS task bodies."""

from __future__ import annotations

import base64
import hashlib

import pytest

from backend.errors import BadRequest, ImageFetchError
from backend.images import resolve_image_ref
from tests.support.samples import sample

LS = "http://127.0.0.1:8080"


def task(value, task_id=1, key="image"):
    return {"id": task_id, "data": {key: value}}


def test_real_batch_request_tasks():
    body = sample("predict_batch_request.json")
    setup = sample("setup_request.json")
    refs = [resolve_image_ref(t, "$image", ls_base_url=setup["hostname"]) for t in body["tasks"]]
    assert [r.kind for r in refs] == ["ls"] * 3
    assert refs[0].url == "http://127.0.0.1:8080/data/upload/1/cd422a2f-up0.png" == refs[0].cache_key


def test_upload_path_joined_with_base_url_and_key_is_the_url():
    for base in (LS, LS + "/"):
        ref = resolve_image_ref(task("/data/upload/1/a.png"), "image", ls_base_url=base)
        assert ref.cache_key == ref.url == LS + "/data/upload/1/a.png"
    assert resolve_image_ref(task("upload/1/a.png"), "image", ls_base_url=LS).url == LS + "/data/upload/1/a.png"


def test_storage_proxy_path():
    ref = resolve_image_ref(task("/storage-data/uploaded/?filepath=upload/1/a.png"), "image", ls_base_url=LS)
    assert ref.kind == "ls" and ref.url == LS + "/storage-data/uploaded/?filepath=upload/1/a.png"


def test_local_files_without_root_go_through_ls():
    ref = resolve_image_ref(task("/data/local-files/?d=set1/a.png"), "image", ls_base_url=LS)
    assert ref.kind == "ls" and ref.cache_key == LS + "/data/local-files/?d=set1/a.png"


@pytest.mark.parametrize("uri", ["s3://bucket/a.png", "gs://bucket/dir/a.jpg", "azure-blob://container/a.png"])
def test_cloud_uri_key_is_the_uri(uri):
    ref = resolve_image_ref(task(uri, 42), "image", ls_base_url=LS)
    assert (ref.kind, ref.cache_key, ref.url, ref.task_id) == ("cloud", uri, uri, 42)


def test_cloud_uri_needs_task_id():
    with pytest.raises(BadRequest, match="no id"):
        resolve_image_ref({"data": {"image": "s3://b/a.png"}}, "image", ls_base_url=LS)


def test_http_url_key_drops_fragment_only():
    ref = resolve_image_ref(task("HTTPS://img.example.com/a.png?v=2#frag"), "image")
    assert ref.kind == "url" and ref.cache_key == "https://img.example.com/a.png?v=2"


def test_data_uri_key_is_sha256_of_bytes():
    payload = b"\x89PNG fake bytes"
    uri = "data:image/png;base64," + base64.b64encode(payload).decode()
    ref = resolve_image_ref(task(uri), "image")
    assert ref.kind == "data" and ref.data == payload
    assert ref.cache_key == "sha256:" + hashlib.sha256(payload).hexdigest()
    unpadded = resolve_image_ref(task(uri.rstrip("=")), "image")
    assert unpadded.cache_key == ref.cache_key


def test_bad_data_uri():
    with pytest.raises(BadRequest):
        resolve_image_ref(task("data:image/png;base64"), "image")
    with pytest.raises(BadRequest, match="base64"):
        resolve_image_ref(task("data:image/png;base64,a"), "image")


def test_missing_value_names_task_and_key():
    with pytest.raises(BadRequest) as err:
        resolve_image_ref(task("/data/upload/1/a.png", key="img"), "$image", ls_base_url=LS)
    assert "task 1" in err.value.message and "data.image" in err.value.message


def test_undefined_key_of_configless_imports():
    ref = resolve_image_ref({"id": 1, "data": {"$undefined$": "/data/upload/1/a.png"}}, "$image", ls_base_url=LS)
    assert ref.url == LS + "/data/upload/1/a.png"


@pytest.mark.parametrize("value", ["ftp://host/a.png", "file:///etc/passwd", "javascript:alert(1)"])
def test_unsupported_schemes(value):
    with pytest.raises(BadRequest, match="unsupported image URL scheme"):
        resolve_image_ref(task(value), "image", ls_base_url=LS)


def test_ls_path_without_base_url_says_what_to_set():
    with pytest.raises(ImageFetchError) as err:
        resolve_image_ref(task("/data/upload/1/a.png"), "image")
    assert "LABEL_STUDIO_URL" in err.value.fix


def test_long_values_shortened_in_source():
    ref = resolve_image_ref(task("https://x.example/" + "a" * 5000), "image")
    assert len(ref.source) < 300 and len(ref.cache_key) > 5000


def test_source_masks_signatures():
    ref = resolve_image_ref(task("https://[2001:DB8::1]:8443/a.png?X-Amz-Signature=s3cr3t&v=2"), "image")
    assert ref.source == "https://[2001:db8::1]:8443/a.png?X-Amz-Signature=***&v=2"
    assert "s3cr3t" in ref.cache_key  # the key is the URL itself; only what is shown is masked


def test_userinfo_refused_without_showing_the_password():
    with pytest.raises(BadRequest) as err:
        resolve_image_ref(task("https://user:pw-s3cr3t@[2001:db8::1]:8443/a.png"), "image")
    assert err.value.status == 400 and "user info" in err.value.message and "pw-s3cr3t" not in err.value.message


@pytest.mark.parametrize("task_id", ["abc", [1], {"id": 1}, 1.5, -3, True, "\u0661"])
def test_cloud_uri_with_a_task_id_that_is_no_integer_is_a_400(task_id):
    with pytest.raises(BadRequest, match="not a non-negative integer") as err:
        resolve_image_ref(task("s3://bucket/a.png", task_id), "image", ls_base_url=LS)
    assert err.value.status == 400


def test_cloud_uri_task_id_as_digit_string():
    assert resolve_image_ref(task("s3://bucket/a.png", "42"), "image", ls_base_url=LS).task_id == 42
