"""The product where annotators use it: a smart click in LS's labeling UI, in a real browser.

Chromium (driven by smart_click.mjs through playwright-core) logs into a real LS 1.23.2, opens a
task whose image holds one bright disc, turns Auto-Annotation on, picks the smart KeyPoint tool
and its label, and clicks the disc. LS relays the click to our backend (GrabCut, no weights),
draws the returned brush mask as a suggestion; the script accepts it and submits.

Checked here, from what a person would see and what LS stored:
- the screenshots before/after the click differ inside the disc's on-screen position, towards
  the brush label's colour, and hardly at all around it (so the mask is drawn where the object is);
- the annotation LS saved holds a brush region whose mask (decoded with the SDK's reference
  decoder) matches the disc: IoU > 0.8.
Screenshots stay in artifacts/e2e/ (before.png, after_click.png, after_submit.png).
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from tests.integration.support import BRUSH_CONFIG
from tests.support.e2e import browser_config, ls_task, read_rgb, run_browser
from tests.support.images import png, scene
from tests.support.masks import brush_mask, iou

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "smart_click.mjs"

# One object at a known place: a yellow disc (scene's first colour) on a dark textured background.
WIDTH, HEIGHT = 480, 360
DISC_PCT = (40.0, 55.0)
DISC_RADIUS = 50
BRUSH_COLOUR = (255, 0, 0)  # BRUSH_CONFIG: <BrushLabels name="tag"><Label value="Banana" background="#FF0000"/>
NODE_TIMEOUT_S = 240


def disc_mask(width: int, height: int) -> np.ndarray:
    """The disc exactly as tests.support.images.scene draws it."""
    mask = np.zeros((height, width), np.uint8)
    centre = (round(DISC_PCT[0] / 100 * width), round(DISC_PCT[1] / 100 * height))
    cv2.circle(mask, centre, DISC_RADIUS, 1, -1)
    return mask.astype(bool)


def screen_disc(report: dict, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Where the disc is on screen (a boolean mask of the screenshot) and the window analysed around it.

    The window is a square of 5 radii around the disc, inside the Konva stage, so the toolbar,
    bottom bar and side panels (which also change when a suggestion arrives) stay out of it."""
    img, stage = report["image"], report["stage"]
    scale_x, scale_y = img["width"] / WIDTH, img["height"] / HEIGHT
    cx = img["x"] + DISC_PCT[0] / 100 * WIDTH * scale_x
    cy = img["y"] + DISC_PCT[1] / 100 * HEIGHT * scale_y
    r = DISC_RADIUS * scale_x
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    inside = (xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= r**2
    window = (
        (np.abs(xs + 0.5 - cx) <= 2.5 * r)
        & (np.abs(ys + 0.5 - cy) <= 2.5 * r)
        & (xs >= stage["x"])
        & (xs < stage["x"] + stage["width"])
        & (ys >= stage["y"])
        & (ys < stage["y"] + stage["height"])
    )
    return inside, window


def test_smart_click_in_the_browser_gives_the_objects_mask(label_studio, e2e_backend, browser_tools, artifacts):
    started = time.monotonic()
    ls = label_studio
    project = ls.create_project("e2e smart click", BRUSH_CONFIG)
    image = scene(WIDTH, HEIGHT, [(*DISC_PCT, DISC_RADIUS)], seed=21)
    (task,) = ls.upload_images(project, {"disc.png": png(image)})
    ml = ls.connect_ml(project, e2e_backend.url)
    assert ml["state"] == "CO", ml

    config = browser_config(
        artifacts,
        browser_tools["chromium"],
        **ls_task(ls, project, task),
        label="Banana",
        labelIndex=1,  # the KeyPointLabels control's "Banana" (BrushLabels' is the first)
        promptControl="tag2",
        clickPct=list(DISC_PCT),
        timeoutMs=60000,
    )
    report = run_browser(SCRIPT, config, browser_tools["node"], artifacts, NODE_TIMEOUT_S)

    # What the browser sent through LS: one positive smart keypoint of tag2 on the disc.
    (call,) = report["interactive"]
    (prompt,) = call["request"]["context"]["result"]
    assert (prompt["type"], prompt["from_name"], prompt["is_positive"]) == ("keypointlabels", "tag2", True)
    assert abs(prompt["value"]["x"] - DISC_PCT[0]) < 1 and abs(prompt["value"]["y"] - DISC_PCT[1]) < 1, prompt
    assert (prompt["original_width"], prompt["original_height"]) == (WIDTH, HEIGHT)
    (suggested,) = call["response"]["data"]["result"]
    assert (suggested["type"], suggested["from_name"]) == ("brushlabels", "tag")

    # From the screenshots: the mask is drawn over the disc and not around it.
    before, after = read_rgb(artifacts / "before.png"), read_rgb(artifacts / "after_click.png")
    assert before.shape == after.shape
    inside, window = screen_disc(report, before.shape[:2])
    changed = np.abs(after - before).max(axis=2) > 40
    outside = window & ~inside
    # Anti-aliased edge: a ring of 3 px around the disc's outline belongs to neither side.
    border_px = 3
    core = inside & ~_dilate(~inside, border_px)
    far = outside & ~_dilate(inside, border_px)
    inside_changed = changed[core].mean()
    outside_changed = changed[far].mean()
    screen_iou = iou(changed & window, inside & window)
    shift = (after[core] - before[core]).mean(axis=0)  # mean RGB change inside the disc
    print(
        f"screen: {inside_changed:.3f} of the disc changed, {outside_changed:.4f} around it, IoU {screen_iou:.3f}; "
        f"mean RGB shift inside {shift.round(1).tolist()}"
    )
    assert inside_changed > 0.9, f"only {inside_changed:.1%} of the disc changed on screen after the click"
    assert outside_changed < 0.03, f"{outside_changed:.1%} of the background around the disc changed"
    assert screen_iou > 0.8, f"changed pixels vs the disc on screen: IoU {screen_iou:.3f}"
    # Towards the label colour #FF0000 over a yellow disc: green and blue drop, red does not.
    assert shift[1] < -40 and shift[0] > -15, f"colour change {shift} is not towards the brush colour {BRUSH_COLOUR}"

    # What LS saved: the accepted suggestion is a brush region of the Banana label covering the disc.
    annotation = ls.get(f"/api/annotations/{report['annotation']['id']}/")
    brushes = [r for r in annotation["result"] if r["type"] == "brushlabels"]
    assert len(brushes) == 1, annotation["result"]
    (brush,) = brushes
    assert brush["from_name"] == "tag" and brush["value"]["brushlabels"] == ["Banana"]
    assert (brush["original_width"], brush["original_height"]) == (WIDTH, HEIGHT)
    saved_iou = iou(brush_mask(brush), disc_mask(WIDTH, HEIGHT))
    print(f"saved brush vs disc: IoU {saved_iou:.3f}; browser steps {report['steps']}")
    assert saved_iou > 0.8, f"saved brush mask vs the disc: IoU {saved_iou:.3f}"
    assert (artifacts / "after_submit.png").is_file()
    print(f"e2e test body {time.monotonic() - started:.1f} s; screenshots in {artifacts}")


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
