"""The captured Label Studio requests (tests/fixtures/ls-samples) and the images their tasks point at.

They are bodies captured from a real Label Studio 1.23.2 (see that folder's README), copied
here so a fresh clone passes its tests with nothing beside it. Their image paths name an LS
host that does not exist here; `SAMPLE_IMAGES` are what a fake LS serves at those paths.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.images import scene

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "ls-samples"
LS_TOKEN = "harnesstoken0123456789abcdef0123456789ab"  # the legacy token in setup_request.json

# The sample tasks' images, drawn with an object under each sample click.
SAMPLE_IMAGES = {
    "/data/upload/1/cd422a2f-up0.png": scene(320, 240, [(16.5, 78.7, 30), (50, 50, 35)], seed=1),
    "/data/upload/1/3b361a25-up1.png": scene(320, 240, [(25, 25, 30)], seed=2),
    "/data/upload/1/06651767-up2.png": scene(352, 240, [(16.1, 79.1, 30)], seed=3),
    "/data/upload/1/5e0c2f11-up3.png": scene(368, 240, [(11.7, 83.5, 28), (88.3, 83.5, 28)], seed=4),
}
TASK4 = {"id": 4, "data": {"image": "/data/upload/1/5e0c2f11-up3.png"}}


def sample(name: str) -> Any:
    """One captured LS body, parsed."""
    return json.loads((SAMPLES / name).read_text())


# The captured interactive project's label config (brush output, smart keypoints and rectangles).
CONFIG = sample("predict_interactive_request.json")["label_config"]


def predict_body(task: dict, context: dict | None, label_config: str = CONFIG) -> dict:
    """What LS 1.23 sends to /predict for a task and an interactive context."""
    return {
        "tasks": [task],
        "project": "1.1795273927",
        "label_config": label_config,
        "params": {"login": None, "password": None, "context": context},
    }


def task_of(number: int) -> dict:
    tasks = {t["id"]: t for t in sample("predict_batch_request.json")["tasks"]}
    return TASK4 if number == 4 else tasks[number]


def click(x: float, y: float, w: int, h: int, positive: bool = True, **extra) -> dict:
    return {
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "is_positive": positive,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": ["Banana"]},
        "id": f"k{x}{y}",
        "from_name": "tag2",
        "to_name": "image",
        "type": "keypointlabels",
        **extra,
    }
