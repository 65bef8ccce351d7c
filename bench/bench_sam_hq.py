"""SAM-HQ: ours vs the official segment-anything-hq `SamPredictor`, same random weights, same process.

    python bench/bench_sam_hq.py [--model sam_hq_vit_b] [--rounds 3] [--clicks 5]

Both sides load the same random-weight file (official layout) and see the same 1500x1000
photo-like image. Each side runs alone: a warm-up encode and click, then `--rounds` rounds of
one encode (preprocessing included), the first click after it (ours then builds its per-image
decoder work, which the reference redoes on every click) and `--clicks` more single-point
clicks (multimask, upscaled to the image). Prints the best of the rounds (wall time), the
speed ratios and the largest feature difference. The official model needs the test-only
torchvision stand-in (tests/oracle_stubs).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle_stubs"))

from sam_model.loading import load_sam  # noqa: E402
from sam_model.sam_hq import SamHqPredictor, unpack  # noqa: E402
from tests.support.images import photo_like  # noqa: E402
from tests.support.oracle_sam_hq import OfficialHqPredictor, official_sam_hq, save_official  # noqa: E402

HEIGHT, WIDTH = 1000, 1500


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(encode: Callable[[], object], click: Callable[[int], object], rounds: int, clicks: int) -> dict[str, float]:
    """Best over `rounds` of: one encode, the first click after it, the median of `clicks` more."""
    encode()
    click(0)
    best = {"encode": float("inf"), "first": float("inf"), "click": float("inf")}
    for _ in range(rounds):
        best["encode"] = min(best["encode"], timed(encode))
        best["first"] = min(best["first"], timed(lambda: click(0)))
        best["click"] = min(
            best["click"], float(np.median([timed(lambda i=i: click(i)) for i in range(1, clicks + 1)]))
        )
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="sam_hq_vit_b")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clicks", type=int, default=5)
    args = p.parse_args()
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}, "
        f"{args.model}, {WIDTH}x{HEIGHT}"
    )
    img = photo_like(HEIGHT, WIDTH)
    rng = np.random.default_rng(1)
    points = [np.array([[rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)]]) for _ in range(args.clicks + 1)]
    label = np.array([1])
    ref_model = official_sam_hq(args.model, seed=0, std=0.02)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_official(ref_model, os.path.join(tmp, f"{args.model}.pth"))
        ours = SamHqPredictor(load_sam(args.model, path, device="cpu"), args.model)
    ref = OfficialHqPredictor(ref_model)

    results = {
        "ref": measure(lambda: ref.set_image(img), lambda i: ref.predict(points[i], label), args.rounds, args.clicks)
    }
    state: dict[str, object] = {}

    def encode() -> None:
        state["emb"] = ours.encode(img)

    results["ours"] = measure(encode, lambda i: ours.decode(state["emb"], points[i], label), args.rounds, args.clicks)
    for name, res in results.items():
        print(
            f"{name:4s} encode {res['encode']:.2f} s, first click {res['first'] * 1e3:.0f} ms, "
            f"click {res['click'] * 1e3:.0f} ms"
        )
    r, o = results["ref"], results["ours"]
    print(
        f"speed-up (ref / ours): encode x{r['encode'] / o['encode']:.2f}, first click x{r['first'] / o['first']:.2f}, "
        f"click x{r['click'] / o['click']:.2f}"
    )
    embed, early = unpack(state["emb"].features)
    diff = max(
        (embed - ref.features).abs().max().item(),
        (early - ref.interm_features[0].permute(0, 3, 1, 2)).abs().max().item(),
    )
    print(f"max |features - ref| (embedding, early features): {diff:.2e}")


if __name__ == "__main__":
    main()
