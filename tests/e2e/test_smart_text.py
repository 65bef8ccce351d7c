"""Labelled pre-annotation from text where annotators use it: a phrase typed in LS's smart TextArea,
in a real browser, answered by our backend with every instance, labelled.

Chromium (driven by smart_text.mjs) logs into a real LS 1.23.2, opens a task of a Cat/Dog brush
project, turns Auto-Annotation on, types "Dog: cat" in the smart TextArea and clicks Add. LS
relays the TextArea region to our backend (Grounding DINO, tiny and random, loaded from its folder
as real weights are; boxes -> masks through the tiny SAM checkpoint; score threshold 0, so random
weights yield instances), draws the answer as suggestions; the script accepts them and submits.

Checked, from what LS relayed, what a person sees and what LS stored:
- LS sent our backend the TextArea region holding the typed text, and got brush regions labelled
  Dog back (the label named before the colon);
- the screenshots before/after the answer differ where the returned masks lie on screen, towards
  Dog's colour (#00FF00), and hardly at all elsewhere on the image;
- the annotation LS saved holds those masks (each matched at IoU > 0.99) as brush regions labelled Dog.
Screenshots stay in artifacts/e2e/smart_text/ (before.png, after_1.png, after_submit.png): a folder of its
own, as test_smart_click's screenshots have the same names.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.integration.support import sam_env
from tests.support.concept_models import save_in_clean_interpreter
from tests.support.e2e import browser_config, ls_task, read_rgb, run_browser
from tests.support.images import png, scene
from tests.support.masks import brush_mask, iou
from tests.support.servers import Backend

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "smart_text.mjs"

# Dog's colour is set so the screenshots can tell its masks; showSubmitButton gives the one-row
# TextArea the Add button an annotator clicks (without it LS 1.23.2 shows none: Enter submits).
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="Cat"/><Label value="Dog" background="#00FF00"/></BrushLabels>
  <TextArea name="prompt" toName="image" editable="true" smart="true" showSubmitButton="true"/>
</View>"""
TYPED = "Dog: cat"
WIDTH, HEIGHT = 480, 360
NODE_TIMEOUT_S = 150


@pytest.fixture(scope="module")
def text_backend(label_studio, tiny_checkpoint, tmp_path_factory) -> Iterator[Backend]:
    """Our backend as an operator sets it up for text prompts next to this LS, the hub out of reach."""
    base = tmp_path_factory.mktemp("e2e-text")
    folder = save_in_clean_interpreter("grounding-dino", base / "model")
    env = {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        **sam_env(tiny_checkpoint),
        "CONCEPT_ENGINE": "grounding-dino",
        "CONCEPT_MODEL": str(folder),
        "HF_HOME": str(tmp_path_factory.mktemp("hf-home")),  # empty: nothing cached
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "CONCEPT_SCORE_THRESHOLD": "0",
    }
    backend = Backend(env, base / "gunicorn.log")
    yield backend
    backend.stop()


def pixel_centres(report: dict, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each image pixel's centre lies in the screenshot (rows, columns), and which are visible.

    The editor's <img> has the displayed geometry (Konva draws with the same transform); the
    Konva stage is the visible window onto it (the image may be clipped by its container).
    Sampling pixel centres compares the screen with the masks at the masks' own resolution; the
    masks of a random SAM are fine-grained, so a screen-resolution border would leave no core."""
    img, stage = report["image"], report["stage"]
    cx = img["x"] + (np.arange(WIDTH) + 0.5) * img["width"] / WIDTH
    cy = img["y"] + (np.arange(HEIGHT) + 0.5) * img["height"] / HEIGHT
    visible_x = (cx >= stage["x"]) & (cx < stage["x"] + stage["width"])
    visible_y = (cy >= stage["y"]) & (cy < stage["y"] + stage["height"])
    rows, cols = np.clip(np.floor(cy), 0, shape[0] - 1), np.clip(np.floor(cx), 0, shape[1] - 1)
    return rows.astype(int), cols.astype(int), visible_y[:, None] & visible_x[None, :]


def test_a_typed_phrase_in_the_browser_comes_back_as_labelled_masks(
    label_studio, text_backend, browser_tools, artifacts
) -> None:
    started = time.monotonic()
    shots = artifacts / "smart_text"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir()
    ls = label_studio
    project = ls.create_project("e2e typed phrase", CONFIG)
    image = scene(WIDTH, HEIGHT, [(35, 45, 60)], seed=31)  # a yellow disc: no green in the image
    (task,) = ls.upload_images(project, {"pets.png": png(image)})
    ml = ls.connect_ml(project, text_backend.url, title="concepts")
    assert ml["state"] == "CO", ml

    config = browser_config(
        shots,
        browser_tools["chromium"],
        **ls_task(ls, project, task),
        texts=[TYPED],
        waitSuggestions=True,
        submit=True,
        timeoutMs=30000,
        callTimeoutMs=30000,
    )
    report = run_browser(SCRIPT, config, browser_tools["node"], shots, NODE_TIMEOUT_S)

    # (1) What LS relayed: the TextArea region with the typed text; what it got: brush regions labelled Dog.
    (prompt,) = report["prompts"]
    call = prompt["call"]
    assert call is not None, "adding the text made no interactive-annotating call"
    assert call["status"] == 200, call
    (sent,) = call["request"]["context"]["result"]
    assert (sent["type"], sent["from_name"], sent["to_name"]) == ("textarea", "prompt", "image"), sent
    assert sent["value"]["text"] == [TYPED], sent
    regions = call["response"]["data"]["result"]
    assert regions, f"the backend found nothing for {TYPED!r}: {call['response']}"
    assert all(r["type"] == "brushlabels" and r["from_name"] == "tag" for r in regions), regions
    assert all(r["value"]["brushlabels"] == ["Dog"] for r in regions), [r["value"]["brushlabels"] for r in regions]
    masks = [brush_mask(r) for r in regions]
    assert all(m.shape == (HEIGHT, WIDTH) and m.any() for m in masks)
    assert prompt["after"]["suggestions"] == len(regions), prompt["after"]

    # (2) What a person sees: the returned masks drawn where they lie, in Dog's colour.
    before, after = read_rgb(shots / "before.png"), read_rgb(shots / "after_1.png")
    assert before.shape == after.shape
    assert prompt["image"] == report["image"], "the image moved on screen between the screenshots"
    rows, cols, visible = pixel_centres(report, before.shape[:2])
    before, after = before[rows][:, cols], after[rows][:, cols]  # the screen at each image pixel's centre
    union = np.logical_or.reduce(masks)
    # A mask's neighbours take its colour partly (smoothing when scaled up): "away" skips them.
    away = ~cv2.dilate(union.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    inside, outside = union & visible, away & visible
    changed = np.abs(after - before).max(axis=2) > 25
    inside_changed, outside_changed = changed[inside].mean(), changed[outside].mean()
    shift = (after[inside] - before[inside]).mean(axis=0)  # mean RGB change where the masks are
    print(
        f"{len(regions)} regions; screen: {inside_changed:.3f} of the masks' {inside.sum()} visible pixels changed, "
        f"{outside_changed:.4f} of the {outside.sum()} away from them; mean RGB shift inside {shift.round(1).tolist()}"
    )
    assert inside.sum() > 1000 and outside.sum() > 1000, (inside.sum(), outside.sum())
    assert inside_changed > 0.8, f"only {inside_changed:.1%} of the returned masks' pixels changed on screen"
    assert outside_changed < 0.01, f"{outside_changed:.1%} of the image away from the masks changed on screen"
    assert shift[1] > 40 and shift[0] < -15 and shift[2] < -15, f"colour change {shift} is not towards Dog's #00FF00"

    # (3) What LS stored after accepting and submitting: those masks, as brush regions labelled Dog.
    assert report["submitStatus"] == 201, report.get("annotation")
    annotation = ls.get(f"/api/annotations/{report['annotation']['id']}/")
    brushes = [r for r in annotation["result"] if r["type"] == "brushlabels"]
    assert len(brushes) == len(regions), annotation["result"]
    assert all(b["from_name"] == "tag" and b["value"]["brushlabels"] == ["Dog"] for b in brushes), brushes
    saved = [brush_mask(b) for b in brushes]
    unmatched = [i for i, m in enumerate(masks) if not any(iou(m, s) > 0.99 for s in saved)]
    assert not unmatched, f"returned masks {unmatched} are not among the saved ones"
    assert (shots / "after_submit.png").is_file()
    print(f"browser steps {report['steps']}; test body {time.monotonic() - started:.1f} s; screenshots in {shots}")
