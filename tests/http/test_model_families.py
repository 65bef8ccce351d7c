"""Every model family through the real server: SAM_MODEL picks it, /health names it, a click
and "Retrieve predictions" (AMG) answer exactly what its predictor computes alone.

Checkpoints are random weights in each family's official file layout, made by the official
code where the family has one, so the server loads them exactly as a user's file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.engines.engine import engine_spec
from backend.interactive.prompts import parse_context
from backend.settings import Settings
from sam_model import family_of
from sam_model.amg import AutomaticMaskGenerator
from tests.support.fake_ls import ls_env
from tests.support.family_checkpoints import FAMILY_CHECKPOINTS, predictor_for
from tests.support.masks import brush_mask
from tests.support.samples import SAMPLE_IMAGES, predict_body, sample, task_of
from tests.support.torch_threads import torch_threads

AMG_OPTIONS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module", params=sorted(FAMILY_CHECKPOINTS))
def family_case(request, tmp_path_factory, fake_ls, redis_server, start_backend):
    """(model type, its checkpoint, a backend serving it)."""
    model_type = request.param
    checkpoint = FAMILY_CHECKPOINTS[model_type](tmp_path_factory.mktemp(model_type))
    server = start_backend(
        ls_env(
            fake_ls,
            SAM_ENGINE="sam",
            SAM_MODEL=model_type,
            SAM_CHECKPOINT=str(checkpoint),
            SAM_DEVICE="cpu",
            REDIS_URL=redis_server.url,
            AUTO_ANNOTATE_ON_PREDICT="true",
            AUTO_ANNOTATE_OPTIONS=json.dumps({"amg_mode": "exact", **AMG_OPTIONS}),
        )
    )
    return model_type, checkpoint, server


def test_health_names_family_and_model(family_case) -> None:
    model_type, checkpoint, server = family_case
    body = server.get("/health").json()
    assert body["model"] == model_type and body["family"] == family_of(model_type).label
    # Under AUTO_ANNOTATE_ON_PREDICT the version also names the AMG settings.
    assert body["model_version"].startswith(f"sam-{model_type}-{checkpoint.stem}-{checkpoint.stat().st_size}-amg-")


def test_click_and_refinement_equal_the_predictor_alone(family_case) -> None:
    model_type, checkpoint, server = family_case
    steps = sample("ui_multi_click_task4.json")
    image = SAMPLE_IMAGES[task_of(4)["data"]["image"]]
    with torch_threads(1):
        predictor = predictor_for(model_type, checkpoint)
        embedding = predictor.encode(image)
        previous = None
        for step in steps:
            context = step["context"]
            (prediction,) = server.post("/predict", predict_body(task_of(4), context)).json()["results"]
            prompt = parse_context(context, 64, 16).prompts[0]
            prompts = dict(point_coords=prompt.point_coords, point_labels=prompt.point_labels, box=prompt.box)
            if previous is None:
                expected = predictor.decode(embedding, **prompts, multimask=True, best_only=True)
            else:
                expected = predictor.decode(
                    embedding, **prompts, mask_input=previous.low_res_logits[:1], multimask=False
                )
            np.testing.assert_array_equal(brush_mask(prediction["result"][0]), expected.masks[0])
            assert prediction["score"] == pytest.approx(float(expected.scores[0]), abs=1e-5)
            previous = expected


def test_retrieve_predictions_runs_the_familys_amg(family_case) -> None:
    model_type, checkpoint, server = family_case
    body = sample("predict_batch_request.json")
    task = body["tasks"][0]
    answer = server.post("/predict", {**body, "tasks": [task]}).json()["results"][0]
    image = SAMPLE_IMAGES[task["data"]["image"]]
    with torch_threads(1):
        amg = {**family_of(model_type).amg_defaults, **AMG_OPTIONS}
        masks = AutomaticMaskGenerator(predictor_for(model_type, checkpoint), mode="exact", **amg).generate(image)
    painted = [m for m in masks if m["area"] > 0]  # an empty mask makes no region
    assert painted and len(answer["result"]) == min(len(painted), 50)
    assert answer["model_version"].startswith(f"sam-{model_type}-")


def test_the_familys_amg_defaults_reach_the_engine_spec(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"model": {}}, path)
    spec = engine_spec(Settings(sam_engine="sam", sam_model="sam2.1_hiera_tiny", sam_checkpoint=str(path)))
    assert spec.amg_defaults == family_of("sam2.1_hiera_tiny").amg_defaults and spec.amg_defaults
    assert spec.info["family"] == "SAM 2"
