"""MobileSAM: our TinyViT encoder vs the official one, and encode + one click, same weights.

    python bench/bench_mobile_sam.py [--rounds 3] [--threads N]

One process, one set of random weights (the official model's, loaded into ours through
`load_sam` from its saved state_dict), one fixed 1500x1000 photo-like image. Each side is
warmed up once, then the two are timed alternately, one at a time, `--rounds` times; the best
of each is printed with the ratio. Timed: the image encoder alone on the same preprocessed
1024x1024 tensor, and `set_image` + one single-point `predict` (3 masks, upscaled to the image)
against our `encode` + `decode`. The official model needs the test-only torchvision stand-in
(tests/oracle_stubs) and `mobilesam-mirror` + `timm` installed in the venv.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle_stubs"))

from sam_model.common.transforms import normalize_and_pad, resize_longest_side  # noqa: E402
from sam_model.loading import load_sam  # noqa: E402
from sam_model.mobile_sam import FAMILY  # noqa: E402
from tests.support.images import photo_like  # noqa: E402
from tests.support.oracle_mobile_sam import SamPredictor as RefPredictor  # noqa: E402
from tests.support.oracle_mobile_sam import official_mobile_sam, save_official  # noqa: E402

HEIGHT, WIDTH = 1000, 1500
POINT = (np.array([[0.4 * WIDTH, 0.55 * HEIGHT]]), np.array([1]))


def best_of(rounds: int, sides: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Warm each side up once, then time them alternately; the best wall time of each."""
    for run in sides.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    return {name: min(ts) for name, ts in times.items()}


def report(what: str, times: dict[str, float]) -> None:
    print(
        f"{what}: official {times['official']:.3f} s, ours {times['ours']:.3f} s, "
        f"speed-up x{times['official'] / times['ours']:.2f}",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}, "
        f"mobile_sam, {WIDTH}x{HEIGHT}, best of {args.rounds}"
    )
    ref = official_mobile_sam(seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_official(ref, Path(tmp) / "mobile_sam_random.pt")
        ours = FAMILY.predictor(load_sam("mobile_sam", path, device="cpu"), "mobile_sam", "fp32", False)
    official = RefPredictor(ref)
    img = photo_like(HEIGHT, WIDTH)
    x = normalize_and_pad(resize_longest_side(img, 1024), ours.sam.pixel_mean, ours.sam.pixel_std, 1024)

    with torch.inference_mode():
        diff = (ref.image_encoder(x) - ours.sam.image_encoder(x)).abs().max().item()
        report(
            "encoder",
            best_of(args.rounds, {"official": lambda: ref.image_encoder(x), "ours": lambda: ours.sam.image_encoder(x)}),
        )

    def official_click() -> None:
        official.set_image(img)
        official.predict(*POINT, multimask_output=True)

    def our_click() -> None:
        ours.decode(ours.encode(img), *POINT)

    report("encode + 1 click", best_of(args.rounds, {"official": official_click, "ours": our_click}))
    print(f"max |features - official| on the same input: {diff:.2e}")


if __name__ == "__main__":
    main()
