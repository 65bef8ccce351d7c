"""One GPU, a team: encoder latency, cache-hit click and 16 simulated annotators, per model.

    python bench/bench_gpu.py                                   # vit_h and sam2.1_hiera_large on cuda
    python bench/bench_gpu.py --models sam2.1_hiera_large --precisions bf16 --compile
    python bench/bench_gpu.py --device cpu --models tiny --annotators 2 --clicks 2   # smoke run

Random weights at the real size (speed does not depend on the values). For each model and
precision: (1) the encoder alone on a 1500x1000 image at batch 1 and batch 8 (ms per
image, best of --rounds after warm-up, synchronised); (2) a cache-hit click on the server
side: decode one point, best mask upscaled, brush RLE (p50 of --rounds); (3) --annotators
threads, each opening a new image (a cache miss: encoded through the backend's
ServingEngine, batched with the others' when --batch > 1) and then clicking --clicks times
on it: p50/p99 of those clicks, encodes per second, peak GPU memory. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backend.engines.engine import Batching, ServingEngine, spec_for  # noqa: E402
from backend.outputs.rle import mask_to_rle  # noqa: E402
from sam_model import family_of  # noqa: E402

HEIGHT, WIDTH = 1000, 1500


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(n)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best(fn, device: torch.device, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        sync(device)
        started = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - started)
    return times


def measure(model_type: str, precision: str, compile: bool, args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    family = family_of(model_type)
    torch.manual_seed(0)
    model = family.build(model_type).eval().to(device)
    predictor = family.predictor(model, model_type, precision, compile)
    batch = images(8)
    point = dict(point_coords=np.array([[WIDTH * 0.4, HEIGHT * 0.55]]), point_labels=np.array([1]))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    predictor.encode_batch(batch[:1])  # warm-up (and compilation)
    predictor.encode_batch(batch)
    one = min(best(lambda: predictor.encode_batch(batch[:1]), device, args.rounds))
    eight = min(best(lambda: predictor.encode_batch(batch), device, args.rounds)) / len(batch)
    embedding = predictor.encode(batch[0])

    def click() -> None:
        mask_to_rle(predictor.decode(embedding, **point, best_only=True).masks[0])

    click()
    hit = statistics.median(best(click, device, max(args.rounds, 5)))
    team = simulate_team(predictor, args)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"encode_1": one, "encode_8": eight, "hit": hit, **team, "gpu_gib": peak}


def simulate_team(predictor, args: argparse.Namespace) -> dict[str, float]:
    """Annotators open new images at once (misses, batched by the serving engine), then click."""
    serving = ServingEngine(spec_for(predictor), batching=Batching(args.batch, args.window_ms / 1000))
    serving.load()
    pictures = images(args.annotators, seed=1)
    clicks: list[float] = []
    lock = threading.Lock()
    rng = np.random.default_rng(2)
    points = rng.uniform((0, 0), (WIDTH, HEIGHT), (args.annotators, args.clicks, 2))

    def annotator(i: int) -> None:
        embedding = serving.encode(pictures[i])
        for k in range(args.clicks):
            started = time.perf_counter()
            result = serving.decode(
                embedding, point_coords=points[i, k][None], point_labels=np.array([1]), best_only=True
            )
            mask_to_rle(result.masks[0])
            with lock:
                clicks.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(args.annotators) as pool:
        list(pool.map(annotator, range(args.annotators)))
    seconds = time.perf_counter() - started
    ordered = sorted(clicks)
    return {
        "team_p50": ordered[len(ordered) // 2],
        "team_p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "encodes_per_s": args.annotators / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="vit_h,sam2.1_hiera_large")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--compile", action="store_true", help="also measure bf16 with torch.compile")
    parser.add_argument("--annotators", type=int, default=16)
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8, help="encoder batch of the simulated team (1: off)")
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"{name}, torch {torch.__version__}, {args.annotators} annotators x {args.clicks} clicks, batch {args.batch}")
    print(
        "| model | precision | encoder, batch 1 | encoder, batch 8 (per image) | cache-hit click | "
        "team click p50 / p99 | team encodes/s | peak GPU memory |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for model_type in args.models.split(","):
        runs = [(p, False) for p in args.precisions.split(",")] + ([("bf16", True)] if args.compile else [])
        for precision, compile in runs:
            r = measure(model_type, precision, compile, args)
            print(
                f"| {model_type} | {precision}{' + compile' if compile else ''} | {r['encode_1'] * 1e3:.1f} ms "
                f"| {r['encode_8'] * 1e3:.1f} ms | {r['hit'] * 1e3:.1f} ms | {r['team_p50'] * 1e3:.0f} / "
                f"{r['team_p99'] * 1e3:.0f} ms | {r['encodes_per_s']:.1f} | {r['gpu_gib']:.1f} GiB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
