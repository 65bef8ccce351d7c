"""End-to-end click latency: our /predict (gunicorn + Redis) vs the reference pipeline.

    python bench/bench_click.py                              # vit_b, random weights, 1500x1000 and 4000x3000
    python bench/bench_click.py --model sam2.1_hiera_tiny    # SAM 2.1 vs SAM2ImagePredictor (LS's SAM 2 backend)
    python bench/bench_click.py --model mobile_sam           # MobileSAM vs its official predictor
    python bench/bench_click.py --model tiny                 # quick look at the plumbing

Each side runs alone: our backend serves every click of the run first, then it is stopped
and the reference runs in this process on an otherwise idle machine. (Interleaving them let
the server's idle OpenMP threads spin on the cores the reference was using: the reference's
hot predict read ~1 s instead of ~0.1 s.) Torch threads are equal on both sides.

Ours: a real gunicorn serving `_wsgi:app` with a real redis-server and a fake LS serving the
images (all on 127.0.0.1); the time is the HTTP round trip of LS's /predict body until the
whole answer (JSON brush RLE) has arrived; parsing it, LS's work, is done after the clock. Miss = the first click on an image (fetch, decode, encode, decode,
RLE); hit = later clicks on it (the embedding is cached).
Reference: what the LS reference SAM backends do per click, in this process on the same
weights: the official predictor's `predict` (three candidates, all upscaled) + the SDK's
`mask2rle` of the best; "hot" when the image is the one it last set, "cold" when another
annotator's image came in between (`set_image` again: it caches one image per process).
LS's SAM 2 backend calls `set_image` on every request: its click is the "cold" column.
Random weights give noisy masks, so both RLE encoders work harder than on real masks.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "oracle_stubs"))

from label_studio_sdk.converter.brush import mask2rle  # noqa: E402

from tests.support.fake_ls import FakeLabelStudio  # noqa: E402
from tests.support.images import scene  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.samples import LS_TOKEN  # noqa: E402
from tests.support.servers import Backend  # noqa: E402

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<BrushLabels name="mask" toName="image"><Label value="Object"/></BrushLabels>'
    '<KeyPointLabels name="kp" toName="image" smart="true"><Label value="Object"/></KeyPointLabels>'
    '<RectangleLabels name="box" toName="image" smart="true"><Label value="Object"/></RectangleLabels></View>'
)
SIZES = [(1500, 1000), (4000, 3000)]
POINT = (40.0, 45.0)  # percent
BOX = (25.0, 30.0, 30.0, 35.0)  # x, y, width, height percent


def body(path: str, width: int, height: int, with_box: bool) -> dict:
    regions = [
        {
            "type": "keypointlabels",
            "from_name": "kp",
            "to_name": "image",
            "original_width": width,
            "original_height": height,
            "value": {"x": POINT[0], "y": POINT[1], "keypointlabels": ["Object"]},
        }
    ]
    if with_box:
        x, y, w, h = BOX
        regions.append(
            {
                "type": "rectanglelabels",
                "from_name": "box",
                "to_name": "image",
                "original_width": width,
                "original_height": height,
                "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": ["Object"]},
            }
        )
    return {
        "tasks": [{"id": 1, "data": {"image": path}}],
        "label_config": CONFIG,
        "params": {"context": {"result": regions}},
    }


V1_MODELS = ("vit_b", "vit_l", "vit_h", "tiny")
SAM2_MODELS = ("sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large")
MODELS = (*V1_MODELS, *SAM2_MODELS, "mobile_sam")


def reference(model_type: str, directory: Path) -> tuple[Any, Path]:
    """The official predictor on random weights, and those weights saved in the official layout."""
    if model_type in SAM2_MODELS:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        from tests.support.oracle_sam2 import official_sam2, save_official

        model = official_sam2(model_type)
        return SAM2ImagePredictor(model), save_official(model, directory / f"{model_type}_random.pt")
    if model_type == "mobile_sam":
        from tests.support.oracle_mobile_sam import SamPredictor, official_mobile_sam
        from tests.support.oracle_mobile_sam import save_official as save_mobile

        model = official_mobile_sam()
        return SamPredictor(model), save_mobile(model, directory / "mobile_sam_random.pt")
    from segment_anything import SamPredictor

    from tests.support.oracle import official_sam

    model = official_sam(model_type)
    torch.save(model.state_dict(), directory / f"{model_type}_random.pth")
    return SamPredictor(model), directory / f"{model_type}_random.pth"


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def click(backend: Backend, path: str, width: int, height: int, with_box: bool) -> float:
    """Seconds from sending LS's /predict body to having the whole answer; the answer is
    checked after the clock stops (parsing it is Label Studio's work, not the backend's)."""
    started = time.perf_counter()
    response = backend.post("/predict", body(path, width, height, with_box))
    seconds = time.perf_counter() - started
    _ok(response)
    return seconds


def reference_click(ref: Any, width: int, height: int, with_box: bool) -> tuple[float, float]:
    """The reference backend's click: predict, pick the best candidate, SDK mask2rle.

    Returns (predict seconds, mask2rle seconds): on random weights the masks are noise and
    the SDK's RLE dominates, which real, smooth masks would not do (DESIGN.md: 14 ms at
    1500x1000, 63 ms at 4000x3000), so the two are reported apart."""
    started = time.perf_counter()
    point = np.array([[POINT[0] / 100 * width, POINT[1] / 100 * height]])
    box = None
    if with_box:
        x, y, w, h = BOX
        box = np.array([x / 100 * width, y / 100 * height, (x + w) / 100 * width, (y + h) / 100 * height])
    masks, scores, _ = ref.predict(
        point_coords=point, point_labels=np.array([1]), box=box, multimask_output=not with_box
    )
    predicted = time.perf_counter()
    mask2rle((masks[int(np.argmax(scores))] * 255).astype(np.uint8))
    return predicted - started, time.perf_counter() - predicted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_b", choices=MODELS)
    parser.add_argument("--clicks", type=int, default=5, help="timed cache-hit clicks per case and side")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(
        f"model {args.model} (random weights), torch {torch.__version__}, {threads} threads both sides, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"load average {os.getloadavg()[0]:.1f}; each side alone (backend stopped before the reference runs)",
        flush=True,
    )
    images = {size: scene(*size, [(POINT[0], POINT[1], min(size) // 5)], seed=size[0]) for size in SIZES}
    cases = [(size, with_box) for size in SIZES for with_box in (False, True)]
    ours: dict[tuple, list[float]] = {}
    misses: dict[tuple[int, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ref, checkpoint = reference(args.model, Path(tmp))
        with RedisServer() as redis_server:
            ls = FakeLabelStudio()
            for (w, h), image in images.items():
                ls.add(f"/data/upload/1/bench_{w}x{h}.png", image)
            backend = Backend(
                {
                    "SAM_ENGINE": "sam",
                    "SAM_MODEL": args.model,
                    "SAM_CHECKPOINT": str(checkpoint),
                    "REDIS_URL": redis_server.url,
                    "LABEL_STUDIO_URL": ls.url,
                    "LABEL_STUDIO_API_KEY": LS_TOKEN,
                    "THREADS": "2",
                    "OMP_NUM_THREADS": str(threads),  # as the reference has
                },
                Path(tmp) / "gunicorn.log",
            )
            try:
                for (w, h), _ in images.items():
                    path = f"/data/upload/1/bench_{w}x{h}.png"
                    misses[(w, h)] = click(backend, path, w, h, False)
                    click(backend, path, w, h, True)  # the box prompt's own first decode
                    for with_box in (False, True):
                        ours[((w, h), with_box)] = [click(backend, path, w, h, with_box) for _ in range(args.clicks)]
            finally:
                backend.stop()
                ls.close()
        time.sleep(2)  # the server's threads are gone; let the machine settle
        hot: dict[tuple, list[tuple[float, float]]] = {}
        colds: dict[tuple[int, int], float] = {}
        for (w, h), image in images.items():
            colds[(w, h)] = timed(lambda: (ref.set_image(image), reference_click(ref, w, h, False)))
            for with_box in (False, True):
                hot[((w, h), with_box)] = [reference_click(ref, w, h, with_box) for _ in range(args.clicks)]
    print(
        "\n| image | prompt | ours, cache hit (HTTP, RLE, JSON) | reference, same image: predict + mask2rle "
        "| ratio | ratio, reference predict only | ours, first click | reference, image changed | ratio vs our hit |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size, with_box in cases:
        mine = statistics.median(ours[(size, with_box)])
        predict = statistics.median(p for p, _ in hot[(size, with_box)])
        rle = statistics.median(r for _, r in hot[(size, with_box)])
        cold = colds[size]
        print(
            f"| {size[0]}x{size[1]} | {'point+box' if with_box else 'point (best of 3)'} | {mine * 1000:.0f} ms "
            f"| {predict * 1000:.0f} + {rle * 1000:.0f} ms | {(predict + rle) / mine:.1f}x | {predict / mine:.1f}x "
            f"| {misses[size]:.1f} s | {cold:.1f} s | {cold / mine:.0f}x |"
        )
    return 0


def _ok(response) -> None:
    if response.status_code != 200 or not response.json()["results"][0]["result"]:
        raise SystemExit(f"/predict failed: {response.status_code} {response.text[:300]}")


if __name__ == "__main__":
    sys.exit(main())
