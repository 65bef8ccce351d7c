"""Helpers shared by the integration tests: the session's Label Studio, project configs, backend settings,
images, smart-tool regions.

`label_studio` is a fixture: tests/integration/conftest.py and tests/e2e/conftest.py import it
to make it theirs (pytest keys a session fixture by the conftest's folder, so each folder that
uses it starts its own LS).
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from backend.engines.grabcut import GrabCutEngine
from tests.integration.label_studio import INSTALL_SCRIPT, LabelStudio, installed, ls_venv
from tests.support.images import png, scene
from tests.support.redis_server import RedisServer
from tests.support.servers import REPO

_ids = itertools.count()

# ---- the session's Label Studio ------------------------------------------------------------------


def _say(config: pytest.Config, line: str) -> None:
    """A line on the terminal even with output captured: startup times are worth seeing in CI logs."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory, request) -> Iterator[LabelStudio]:
    if not installed():
        why = f"Label Studio is not installed in {ls_venv()}: run `bash {INSTALL_SCRIPT.relative_to(REPO)}`"
        if os.environ.get("REQUIRE_LABEL_STUDIO") == "1":  # make test sets it: CI must never skip these
            pytest.fail(why, pytrace=False)
        pytest.skip(why + " (make test does)")
    base = tmp_path_factory.mktemp("label-studio")
    data_dir, files_root = base / "data", base / "files"
    data_dir.mkdir()
    files_root.mkdir()
    template = ls_venv() / "template-data" / "label_studio.sqlite3"
    if template.is_file():  # an already-migrated, empty database: LS starts without migrating
        shutil.copyfile(template, data_dir / "label_studio.sqlite3")
    ls = LabelStudio(data_dir, files_root, base / "label-studio.log")
    ls.start()
    _say(
        request.config,
        f"\nLabel Studio {ls.url} ready in {ls.startup_s:.1f} s "
        f"({'template database' if template.is_file() else 'migrated from scratch'})",
    )
    yield ls
    ls.stop()


# ---- projects and backend settings ------------------------------------------------------------

# The captured project's config (ls-samples/setup_request.json): a brush output, smart
# keypoints and smart rectangles as prompts, two labels.
BRUSH_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image"><Label value="Banana" background="#FF0000"/><Label value="Orange" background="#0d14d3"/></BrushLabels>
  <KeyPointLabels name="tag2" toName="image" smart="true"><Label value="Banana" smart="true" background="#000000" showInline="true"/><Label value="Orange" smart="true" background="#000000" showInline="true"/></KeyPointLabels>
  <RectangleLabels name="tag3" toName="image" smart="true"><Label value="Banana" background="#000000" showInline="true"/><Label value="Orange" background="#000000" showInline="true"/></RectangleLabels>
</View>"""

POLYGON_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <PolygonLabels name="poly" toName="image"><Label value="Banana" background="#FF0000"/><Label value="Orange" background="#0d14d3"/></PolygonLabels>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="Banana" smart="true"/><Label value="Orange" smart="true"/></KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true"><Label value="Banana"/><Label value="Orange"/></RectangleLabels>
</View>"""


def backend_env(ls: LabelStudio, redis_server: RedisServer, **extra: str) -> dict[str, str]:
    """What an operator sets for a backend next to this LS (README: connecting LS)."""
    return {
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.token,
        "REDIS_URL": redis_server.url,
        "JOB_RETRIES": "1",
        **extra,
    }


def sam_env(checkpoint: Path) -> dict[str, str]:
    """Tiny SAM from `checkpoint` on the CPU: the real SAM code path without real weights."""
    return {"SAM_ENGINE": "sam", "SAM_MODEL": "tiny", "SAM_CHECKPOINT": str(checkpoint), "SAM_DEVICE": "cpu"}


# ---- images -------------------------------------------------------------------------------------

# Bright discs on a dark textured background: objects with clear edges for GrabCut.
IMAGES: dict[str, np.ndarray] = {
    "upload0.png": scene(320, 240, [(30, 40, 32), (72, 68, 30)], seed=11),
    "upload1.png": scene(288, 208, [(50, 50, 36)], seed=12),
    "upload2.png": scene(256, 192, [(35, 60, 28)], seed=13),
    "local0.png": scene(304, 224, [(65, 35, 34)], seed=14),
}


def image_bytes(name: str) -> bytes:
    return png(IMAGES[name])


def _smart_region(kind: str, id_prefix: str, size: tuple[int, int], value: dict, from_name: str, **extra: Any) -> dict:
    """The fields every smart region carries, as the UI serialises them (percent values, the image's size)."""
    w, h = size
    return {
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": value,
        **extra,
        "id": f"{id_prefix}{next(_ids)}",
        "from_name": from_name,
        "to_name": "image",
        "type": kind,
        "origin": "manual",
    }


def keypoint(
    x: float, y: float, size: tuple[int, int], positive: bool = True, label: str = "Banana", from_name: str = "tag2"
) -> dict:
    """One smart keypoint exactly in the shape of ls-samples/ui_browser_to_LS_interactive_annotating_body.json."""
    value = {"x": x, "y": y, "width": 0.2086230876216968, "labels": [label], "keypointlabels": [label]}
    return _smart_region("keypointlabels", "kp", size, value, from_name, is_positive=positive)


def rectangle(
    x: float,
    y: float,
    width: float,
    height: float,
    size: tuple[int, int],
    label: str = "Banana",
    from_name: str = "tag3",
) -> dict:
    """A smart rectangle (percent of the image), as the UI serialises it."""
    value = {
        "x": x,
        "y": y,
        "width": width,
        "height": height,
        "rotation": 0,
        "labels": [label],
        "rectanglelabels": [label],
    }
    return _smart_region("rectanglelabels", "rect", size, value, from_name)


def prompt_arrays(regions: list[dict]) -> dict[str, Any]:
    """Decoder arguments computed here, independently of backend.interactive.prompts: percent * size -> pixels."""
    points, labels, box = [], [], None
    for region in regions:
        w, h = region["original_width"], region["original_height"]
        v = region["value"]
        if region["type"] == "keypointlabels":
            points.append((v["x"] / 100 * w, v["y"] / 100 * h))
            labels.append(1 if region.get("is_positive", True) else 0)
        else:
            box = np.array(
                [v["x"] / 100 * w, v["y"] / 100 * h, (v["x"] + v["width"]) / 100 * w, (v["y"] + v["height"]) / 100 * h],
                dtype=np.float32,
            )
    return {
        "point_coords": np.array(points, dtype=np.float32) if points else None,
        "point_labels": np.array(labels, dtype=np.int32) if labels else None,
        "box": box,
    }


def polygon_mask(points_pct: list[list[float]], width: int, height: int) -> np.ndarray:
    """Rasterise an LS polygon (percent coordinates) at the image size."""
    pts = np.array([[x / 100 * width, y / 100 * height] for x, y in points_pct], dtype=np.float64)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def assert_valid_polygon_region(region: dict, from_name: str, label: str) -> None:
    """What LS needs to draw and edit a polygon: percent points, at least a triangle, closed, labelled."""
    assert region["type"] == "polygonlabels" and region["from_name"] == from_name and region["to_name"] == "image"
    value = region["value"]
    assert value["polygonlabels"] == [label]
    assert value.get("closed") is True
    points = value["points"]
    assert len(points) >= 3
    assert all(len(p) == 2 and all(isinstance(c, (int, float)) and 0.0 <= c <= 100.0 for c in p) for p in points)
    assert len({(round(x, 6), round(y, 6)) for x, y in points}) >= 3, "degenerate polygon"


class GrabCutReference:
    """GrabCutEngine in this process replaying a click sequence (logits of step n refine step n+1)."""

    def __init__(self) -> None:
        self.engine = GrabCutEngine()

    def sequence(self, image: str, steps: list[list[dict]]) -> list[np.ndarray]:
        embedding = self.engine.encode(IMAGES[image])
        masks, previous = [], None
        for regions in steps:
            args = prompt_arrays(regions)
            single = previous is None and args["box"] is None and len(args["point_labels"]) == 1
            result = self.engine.decode(embedding, **args, mask_input=previous, multimask=single, best_only=single)
            masks.append(result.masks[0])
            previous = result.low_res_logits[:1]
        return masks
