"""Well-formed but wrong cache values in Redis, against a real gunicorn backend and redis-server.

A value with a valid checksum can still be unusable: written by another engine or model, of
the wrong shape or dtype, or claiming an absurd image size. Before the fix such an embedding
was kept in the process cache and every click on the image failed (a 500 that stuck); a bad
low-res mask failed the refining click. Now each is a counted miss
(`sam_cache_rejected_total{kind}`), recomputed and overwritten, and clicks 1..3 all succeed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from backend.cache import EmbeddingCache
from backend.cache.logits import LogitsStore, prompt_signature
from backend.engines.grabcut import GrabCutEngine
from backend.images import resolve_image_ref
from sam_model.common.embedding import ImageEmbedding
from sam_model.common.transforms import input_shape
from tests.support.backend_fixtures import redis_server, start_backend  # noqa: F401 - module-scoped fixtures for this module
from tests.support.cached import cached
from tests.support.fake_ls import FakeLabelStudio
from tests.support.images import scene
from tests.support.samples import LS_TOKEN, sample

W, H = 96, 64
CONFIG = sample("predict_interactive_request.json")["label_config"]
MODEL_ID = GrabCutEngine.model_id
# Clicks in percent on the disc drawn at (50%, 50%): LS sends every earlier click again.
CLICKS = [(50.0, 50.0), (52.0, 48.0), (47.0, 53.0), (51.0, 55.0)]


def grabcut_image(dtype: torch.dtype = torch.uint8, shape: tuple[int, ...] = (H, W, 3)) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype)


BAD_EMBEDDINGS: dict[str, ImageEmbedding] = {
    # SAM's features under the GrabCut engine: cv2 fails on a 4-D "image" (the sticky 500).
    "other-engine": ImageEmbedding(
        torch.zeros(1, 256, 64, 64, dtype=torch.float16),
        (H, W),
        input_shape((H, W), 1024),
        "sam-vit_b-sam_vit_b_01ec64-375042383",
    ),
    "other-model-id": ImageEmbedding(grabcut_image(), (H, W), (H, W), "grabcut-opencv-v0"),
    "wrong-shape": ImageEmbedding(grabcut_image(shape=(10, 10, 3)), (H, W), (H, W), MODEL_ID),
    "wrong-dtype": ImageEmbedding(grabcut_image(torch.float32), (H, W), (H, W), MODEL_ID),
    "input-size-mismatch": ImageEmbedding(grabcut_image(shape=(32, 48, 3)), (H, W), (32, 48), MODEL_ID),
    "absurd-original-size": ImageEmbedding(grabcut_image(shape=(341, 512, 3)), (30_000, 45_000), (341, 512), MODEL_ID),
}
BAD_LOGITS: dict[str, np.ndarray] = {
    "logits-small-frame": np.zeros((1, 64, 64), np.float32),
    "logits-wrong-rank": np.zeros((256, 256), np.float32),
    "logits-nan": np.full((1, 256, 256), np.nan, np.float32),
}


def region(x: float, y: float, i: int) -> dict:
    return {
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "id": f"kp{i}",
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": ["Banana"]},
        "from_name": "tag2",
        "to_name": "image",
        "type": "keypointlabels",
        "origin": "manual",
        "is_positive": True,
    }


def click_body(path: str, n_clicks: int) -> dict:
    return {
        "tasks": [{"id": 1, "data": {"image": path}}],
        "label_config": CONFIG,
        "params": {"context": {"result": [region(x, y, i) for i, (x, y) in enumerate(CLICKS[:n_clicks])]}},
    }


def image_key(ls_url: str, path: str) -> str:
    """What SamBackend keys both caches by: the engine's model id and the image's stable key."""
    ref = resolve_image_ref({"id": 1, "data": {"image": path}}, "image", ls_base_url=ls_url)
    return f"{MODEL_ID}|{ref.cache_key}"


def pixels(n_clicks: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.array([(x / 100 * W, y / 100 * H) for x, y in CLICKS[:n_clicks]], np.float32)
    return coords, np.ones(n_clicks, np.int32)


@pytest.fixture(scope="module")
def fake_ls():
    ls = FakeLabelStudio()
    for name in [*BAD_EMBEDDINGS, *BAD_LOGITS]:
        ls.add(f"/data/upload/1/{name}.png", scene(W, H, [(50, 50, 14)], seed=7))
    yield ls
    ls.close()


@pytest.fixture(scope="module")
def server(start_backend, fake_ls, redis_server):  # noqa: F811 - pytest fixtures by name
    return start_backend(
        {
            "SAM_ENGINE": "grabcut",
            "LABEL_STUDIO_URL": fake_ls.url,
            "LABEL_STUDIO_API_KEY": LS_TOKEN,
            "REDIS_URL": redis_server.url,
            "WARM_ON_PREDICT": "false",
        }
    )


def click_three_times(server: Any, path: str, first_clicks: int) -> None:
    for n in range(first_clicks, first_clicks + 3):
        response = server.post("/predict", click_body(path, n))
        assert response.status_code == 200, f"click with {n} points: {response.status_code} {response.text[:300]}"
        (result,) = response.json()["results"][0]["result"]
        assert result["type"] == "brushlabels" and result["value"]["rle"]


@pytest.mark.parametrize("name", list(BAD_EMBEDDINGS))
def test_unusable_embedding_in_redis_is_recomputed_and_overwritten(server, fake_ls, redis_server, name):  # noqa: F811
    path = f"/data/upload/1/{name}.png"
    key = image_key(fake_ls.url, path)
    planter = EmbeddingCache(0, redis_server.url)  # stores whatever it is given, as a buggy peer would
    planter.get_or_compute(key, lambda: BAD_EMBEDDINGS[name])
    before = server.metric("sam_cache_rejected_total", kind="embedding")
    fetches = fake_ls.hits[path]

    click_three_times(server, path, first_clicks=1)

    assert server.metric("sam_cache_rejected_total", kind="embedding") == before + 1  # once: then it was replaced
    assert fake_ls.hits[path] == fetches + 1  # recomputed from the image, once
    stored = cached(planter, key)  # the overwritten value is what the engine makes
    assert stored is not None and stored.model_id == MODEL_ID and stored.original_size == (H, W)
    assert stored.features.dtype == torch.uint8 and tuple(stored.features.shape) == (H, W, 3)
    planter.close()


@pytest.mark.parametrize("name", list(BAD_LOGITS))
def test_unusable_previous_mask_in_redis_is_ignored(server, fake_ls, redis_server, name):  # noqa: F811
    """The first request already has two clicks (the first one went to another process):
    its refinement reads the planted logits of click 1 from Redis."""
    path = f"/data/upload/1/{name}.png"
    planter = LogitsStore(0, redis_server.url)
    planter.put(image_key(fake_ls.url, path), prompt_signature(*pixels(1)), BAD_LOGITS[name])
    before = server.metric("sam_cache_rejected_total", kind="logits")

    click_three_times(server, path, first_clicks=2)

    assert server.metric("sam_cache_rejected_total", kind="logits") == before + 1
    assert planter.get(image_key(fake_ls.url, path), prompt_signature(*pixels(1))) is None  # deleted
    planter.close()


def test_no_traceback_in_the_log(server):
    assert "Traceback" not in server.log()
