"""What CPU_MEMORY_KEEP_MB buys a click: glibc's own defaults vs freed memory kept.

    python bench/bench_allocator.py [--model vit_b] [--rounds 4] [--clicks 15]

A click's decode (prepared decoder, one point, three candidates, the best upscaled to
1500x1000) timed in fresh processes, alternating: "default" leaves glibc alone (its
dynamic mmap threshold included), "kept" calls `backend.allocator.keep_freed_memory(256)`
first, as every serving process does at start. Same random weights and embedding in
both; prints the median click and the minor page faults per click of each setting.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(model: str, keep_mb: int, clicks: int) -> None:
    """One process, one setting: print 'median_seconds faults_per_click'."""
    from backend.allocator import keep_freed_memory

    keep_freed_memory(keep_mb)
    import numpy as np
    import torch

    from sam_model.common.embedding import ImageEmbedding
    from sam_model.common.transforms import input_shape
    from sam_model.sam1.build import build_sam
    from sam_model.sam1.predictor import SamPredictor

    torch.manual_seed(0)
    predictor = SamPredictor(build_sam(model).eval(), model)
    size = (1000, 1500)
    embedding = ImageEmbedding(torch.randn(1, 256, 64, 64) * 0.5, size, input_shape(size, 1024), model)
    point, label = np.array([[600.0, 450.0]]), np.array([1])
    for _ in range(3):  # build the decoder context, settle the heap
        predictor.decode(embedding, point, label, best_only=True)
    times = []
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(clicks):
        started = time.perf_counter()
        predictor.decode(embedding, point, label, best_only=True)
        times.append(time.perf_counter() - started)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / clicks
    print(statistics.median(times), faults)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_b", choices=("vit_b", "vit_l", "vit_h", "tiny"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clicks", type=int, default=15)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.model, args.child, args.clicks)
        return 0
    settings = {"default": 0, "kept": 256}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, keep_mb in settings.items():
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--model",
                    args.model,
                    "--clicks",
                    str(args.clicks),
                    "--child",
                    str(keep_mb),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            runs[name].append((float(out[0]), float(out[1])))
            print(f"{name:8s} {float(out[0]) * 1000:6.1f} ms, {float(out[1]):7.0f} page faults per click", flush=True)
    medians = {name: statistics.median(s for s, _ in r) for name, r in runs.items()}
    for name, r in runs.items():
        print(
            f"{name:8s} median of {len(r)} processes: {medians[name] * 1000:.1f} ms per click, "
            f"{statistics.median(f for _, f in r):.0f} page faults per click"
        )
    print(f"kept vs default: {medians['default'] / medians['kept']:.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
