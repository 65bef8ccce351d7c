"""Brush RLE: ours vs label_studio_sdk's mask2rle, same masks, same run; prints times and ratios.

    python bench/bench_rle.py [--repeat 3]

The SDK is run once per mask (it takes seconds on noise); ours takes the best of
``--repeat`` runs. Every pair of outputs is checked byte for byte before it is timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from label_studio_sdk.converter.brush import mask2rle  # noqa: E402  (oracle, bench only)

from backend.outputs.rle import mask_to_rle, rle_to_mask  # noqa: E402


def ellipse(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2 <= 1


def noisy(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).random((h, w)) < 0.5


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.1f}; numpy {np.__version__}"
    )
    cases = [
        ("ellipse 1500x1000", ellipse(1000, 1500)),
        ("ellipse 4000x3000", ellipse(3000, 4000)),
        ("noisy 1000x1000", noisy(1000, 1000)),
        ("noisy 4000x3000", noisy(3000, 4000)),
    ]
    print(f"{'mask':<20}{'bytes':>10}{'sdk mask2rle':>14}{'ours':>10}{'ratio':>8}{'decode':>10}")
    for name, mask in cases:
        sdk_s, expected = timed(mask2rle, mask.astype(np.uint8) * 255)
        ours = []
        for _ in range(args.repeat):
            seconds, rle = timed(mask_to_rle, mask)
            ours.append(seconds)
        assert rle == expected, f"{name}: output differs from the SDK"
        decode_s, back = timed(rle_to_mask, rle, *mask.shape)
        assert np.array_equal(back, mask), f"{name}: decode differs"
        best = min(ours)
        print(f"{name:<20}{len(rle):>10}{sdk_s:>13.3f}s{best:>9.3f}s{sdk_s / best:>7.0f}x{decode_s:>9.3f}s", flush=True)


if __name__ == "__main__":
    main()
