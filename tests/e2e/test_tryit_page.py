"""The backend's try-it page in a real browser: open an image, click, see the object's mask.

Chromium (driven by tryit_page.mjs through playwright-core) opens the backend's / as any
browser does, loads a synthetic image with one bright disc through the file picker and
clicks the disc; then Alt-clicks beside it (refinement), drags a box around it and
right-clicks inside the box beside it, clicks once more with polygon output, and presses
"Automatic masks". The backend is GrabCut (meaningful masks, no weights) in gunicorn.

Checked, from what a person sees and what went over the wire:
- the screenshots before/after each click differ inside the disc and hardly around it;
- what the page drew (its overlay canvas) is exactly the brush mask the server sent, decoded
  by the reference decoder: the page's own RLE decoder is right;
- the page sent /predict as Label Studio does (smart keypoints, negative ones after Alt- and
  right-click, a box, the image as a data: URI) and showed the Server-Timing figures and the
  cache level; JSON clients at / still get the health JSON.
Screenshots stay in artifacts/e2e/tryit/ (before, after_click, after_refine, after_box, ...).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from tests.support.e2e import browser_config, read_rgb, run_browser
from tests.support.images import png, scene
from tests.support.masks import brush_mask, iou
from tests.support.servers import Backend

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "tryit_page.mjs"
ARTIFACTS = HERE.parents[1] / "artifacts" / "e2e" / "tryit"
NODE_TIMEOUT_S = 180

WIDTH, HEIGHT = 480, 360
DISC_PCT = (40.0, 55.0)
DISC_RADIUS = 50
NEGATIVE_PCT = (75.0, 20.0)  # background, far from the disc
BOX_PCT = (22.0, 28.0, 58.0, 82.0)  # around the disc, with background inside
RIGHT_PCT = (25.0, 32.0)  # inside the box, off the disc
MARKER_PX = 10  # around a prompt point the page draws its marker: neither mask nor background
BORDER_PX = 3  # the disc's anti-aliased edge on screen belongs to neither side


def disc_mask() -> np.ndarray:
    """The disc exactly as tests.support.images.scene draws it."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.circle(mask, (round(DISC_PCT[0] / 100 * WIDTH), round(DISC_PCT[1] / 100 * HEIGHT)), DISC_RADIUS, 1, -1)
    return mask.astype(bool)


IMAGE_FRAME = {"x": 0.0, "y": 0.0, "width": WIDTH, "height": HEIGHT}  # image pixels: the overlay canvas


def circles(frame: dict, shape: tuple[int, int], points_pct, radius_px: float) -> np.ndarray:
    """Pixels of a frame (the screenshot, or IMAGE_FRAME) within `radius_px` image pixels of any
    point (percent of the image); `frame` is where the image lies in it (getBoundingClientRect)."""
    scale = frame["width"] / WIDTH
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    hit = np.zeros(shape, bool)
    for xp, yp in points_pct:
        cx, cy = frame["x"] + xp / 100 * frame["width"], frame["y"] + yp / 100 * frame["height"]
        hit |= (xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= (radius_px * scale) ** 2
    return hit


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


@pytest.fixture(scope="module")
def backend(tmp_path_factory) -> Iterator[Backend]:
    server = Backend({"SAM_ENGINE": "grabcut"}, tmp_path_factory.mktemp("tryit-backend") / "gunicorn.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def report(backend, browser_tools, tmp_path_factory) -> dict:
    """Run the browser once; every test below reads what it saw."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    image_path = tmp_path_factory.mktemp("tryit-image") / "disc.png"
    image_path.write_bytes(png(scene(WIDTH, HEIGHT, [(*DISC_PCT, DISC_RADIUS)], seed=21)))
    config = browser_config(
        ARTIFACTS,
        browser_tools["chromium"],
        url=backend.url,
        imagePath=str(image_path),
        clickPct=list(DISC_PCT),
        negativePct=list(NEGATIVE_PCT),
        boxPct=list(BOX_PCT),
        rightPct=list(RIGHT_PCT),
        timeoutMs=60000,
    )
    return run_browser(SCRIPT, config, browser_tools["node"], ARTIFACTS, NODE_TIMEOUT_S)


def predict_calls(report: dict) -> list[dict]:
    calls = [c for c in report["calls"] if c["path"] == "/predict"]
    assert all(c["status"] == 200 for c in calls), [(c["status"], c["response"]) for c in calls]
    return calls


def overlay(report: dict, name: str) -> np.ndarray:
    """The alpha channel of the page's overlay canvas (image pixels) after that step."""
    (found,) = [o for o in report["overlays"] if o["name"] == name]
    assert (found["width"], found["height"]) == (WIDTH, HEIGHT)
    return np.frombuffer(base64.b64decode(found["alpha"]), np.uint8).reshape(HEIGHT, WIDTH)


def drawn_mask(report: dict, name: str) -> np.ndarray:
    """Where the page painted the mask: half-transparent pixels (prompt markers are opaque)."""
    alpha = overlay(report, name)
    return (alpha > 100) & (alpha < 160)


def test_json_clients_keep_the_health_answer_at_root(backend):
    for accept in (None, "*/*", "application/json"):
        headers = {"Accept": accept} if accept else {}
        response = requests.get(backend.url + "/", headers=headers, timeout=10)
        assert response.headers["Content-Type"].startswith("application/json"), accept
        assert response.json() == requests.get(backend.url + "/health", timeout=10).json()
    page = requests.get(backend.url + "/", headers={"Accept": "text/html,*/*;q=0.8"}, timeout=10)
    assert page.headers["Content-Type"].startswith("text/html") and "try/assets/tryit.js" in page.text


def test_the_page_opens_at_root_and_shows_the_model(report):
    assert report["landing"]["status"] == 200 and report["landing"]["contentType"].startswith("text/html")
    texts = report["texts"]
    assert "grabcut-opencv" in texts["badge"] and "grabcut-opencv" in texts["model"]
    assert "cpu" in texts["model"]  # GrabCut runs on the CPU, as loaded
    assert "sam2.1_hiera_tiny" in texts["models"] and "vit_h" in texts["models"]  # the loadable models
    assert texts["conceptDisabled"] and "no concept engine" in texts["concept"]
    unexpected = [e for e in report["consoleErrors"] if "status of 422" not in e]  # automatic masks, below
    assert not unexpected, unexpected


def test_click_on_the_disc_covers_it_on_screen_and_nothing_around(report):
    before = read_rgb(ARTIFACTS / "before.png")
    frame, shape = report["image"], before.shape[:2]
    inside = circles(frame, shape, [DISC_PCT], DISC_RADIUS)
    # A square of 5 radii around the disc, inside the image: the side panel changes too.
    scale = frame["width"] / WIDTH
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    cx, cy = frame["x"] + DISC_PCT[0] / 100 * frame["width"], frame["y"] + DISC_PCT[1] / 100 * frame["height"]
    window = (np.abs(xs + 0.5 - cx) <= 2.5 * DISC_RADIUS * scale) & (np.abs(ys + 0.5 - cy) <= 2.5 * DISC_RADIUS * scale)
    for name, prompts in (("after_click", [DISC_PCT]), ("after_refine", [DISC_PCT, NEGATIVE_PCT])):
        changed = np.abs(read_rgb(ARTIFACTS / f"{name}.png") - before).max(axis=2) > 40
        markers = circles(frame, shape, prompts, MARKER_PX)
        core = inside & ~dilate(~inside, BORDER_PX) & ~markers
        far = window & ~inside & ~dilate(inside, BORDER_PX) & ~markers
        print(f"{name}: {changed[core].mean():.3f} of the disc changed on screen, {changed[far].mean():.4f} around it")
        assert changed[core].mean() > 0.9, f"{name}: only {changed[core].mean():.1%} of the disc changed on screen"
        assert changed[far].mean() < 0.03, (
            f"{name}: {changed[far].mean():.1%} of the background around the disc changed"
        )


def test_the_page_asks_predict_as_label_studio_does(report):
    first, refine, box, right, polygon = predict_calls(report)
    for call in (first, refine, box, right, polygon):
        (task,) = call["request"]["tasks"]
        assert task["data"]["image"].startswith("data:image/png;base64,")
        assert call["request"]["params"]["context"]["result"], call["request"]
    (point,) = first["request"]["params"]["context"]["result"]
    assert (point["type"], point["is_positive"], point["to_name"]) == ("keypointlabels", True, "image")
    assert (point["original_width"], point["original_height"]) == (WIDTH, HEIGHT)
    assert abs(point["value"]["x"] - DISC_PCT[0]) < 0.5 and abs(point["value"]["y"] - DISC_PCT[1]) < 0.5
    kept, negative = refine["request"]["params"]["context"]["result"]
    assert kept == point and (negative["type"], negative["is_positive"]) == ("keypointlabels", False)
    assert abs(negative["value"]["x"] - NEGATIVE_PCT[0]) < 0.5 and abs(negative["value"]["y"] - NEGATIVE_PCT[1]) < 0.5
    (rect,) = box["request"]["params"]["context"]["result"]
    assert rect["type"] == "rectanglelabels"
    got = (rect["value"]["x"], rect["value"]["y"], rect["value"]["x"] + rect["value"]["width"])
    assert np.allclose(got, (BOX_PCT[0], BOX_PCT[1], BOX_PCT[2]), atol=0.5), rect["value"]
    assert [r["type"] for r in right["request"]["params"]["context"]["result"]] == ["rectanglelabels", "keypointlabels"]
    assert right["request"]["params"]["context"]["result"][1]["is_positive"] is False
    assert "<PolygonLabels" in polygon["request"]["label_config"]
    assert polygon["response"]["results"][0]["result"][0]["type"] == "polygonlabels"


def test_what_the_page_draws_is_the_servers_mask(report):
    disc = disc_mask()
    first, refine, box, right, _ = predict_calls(report)
    steps = (
        ("after_click", first, [DISC_PCT]),
        ("after_refine", refine, [DISC_PCT, NEGATIVE_PCT]),
        ("after_box", box, []),
        ("after_right_click", right, [RIGHT_PCT]),
    )
    for name, call, points in steps:
        (region,) = call["response"]["results"][0]["result"]
        served = brush_mask(region)
        assert iou(served, disc) > 0.8, f"{name}: the server's mask vs the disc: IoU {iou(served, disc):.3f}"
        # Exact, away from what the page draws over the mask: point markers and the box outline.
        hidden = circles(IMAGE_FRAME, served.shape, points, MARKER_PX)
        if name in ("after_box", "after_right_click"):
            x0, y0, x1, y1 = (round(v / 100 * s) for v, s in zip(BOX_PCT, (WIDTH, HEIGHT, WIDTH, HEIGHT), strict=True))
            outline = np.zeros(served.shape, np.uint8)
            cv2.rectangle(outline, (x0, y0), (x1, y1), 1, 1)
            hidden |= dilate(outline, BORDER_PX)
        wrong = (drawn_mask(report, name) != served) & ~hidden
        assert not wrong.any(), f"{name}: {wrong.sum()} pixels drawn differently from the server's brush mask"
    marker = circles(IMAGE_FRAME, disc.shape, [DISC_PCT], MARKER_PX)
    polygon_iou = iou(drawn_mask(report, "after_polygon") & ~marker, disc & ~marker)
    assert polygon_iou > 0.8, f"the polygons drawn vs the disc: IoU {polygon_iou:.3f}"


def test_the_page_shows_the_clicks_timings_and_cache_level(report):
    first, refine, *_ = predict_calls(report)
    timing = {entry.split(";")[0].strip(): entry for entry in first["serverTiming"].split(",")}
    assert timing["cache"].endswith("desc=computed") and {"fetch", "encode", "decode", "output"} <= set(timing)
    assert "desc=local" in refine["serverTiming"] and "encode" not in refine["serverTiming"]
    texts = report["texts"]["timings"]  # after the refinement: a hit in this process
    assert "process" in texts and "decode" in texts and "round trip" in texts


def test_automatic_masks_tell_why_grabcut_cannot(report):
    (call,) = [c for c in report["calls"] if c["path"] == "/try/automatic-masks"]
    assert call["status"] == 422 and call["request"]["image"].startswith("data:image/png;base64,")
    assert "needs SAM" in report["texts"]["amg"]
