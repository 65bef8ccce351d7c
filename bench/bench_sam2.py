"""SAM 2 image path: ours vs the official `SAM2ImagePredictor`, same random weights, same run.

    python bench/bench_sam2.py [--model sam2.1_hiera_tiny] [--rounds 2] [--clicks 10]

Each side runs in its own subprocess (ours and the reference alternate, one process per
round) so each one's peak RSS is its own. A child times `set_image` / `encode` of one fixed
1500x1000 photo-like image twice (preprocessing included): the first in a fresh process
(wall and CPU time; ours then also pages in its memory-mapped weights) and the second, what
a running server pays per new image; then `--clicks` single-point predictions (3 masks, upscaled to the
image). Prints medians, the speed ratios and the largest feature difference. The official
model needs the test-only torchvision stand-in (tests/oracle_stubs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle_stubs"))

from tests.support.images import photo_like  # noqa: E402

HEIGHT, WIDTH = 1000, 1500


def child(impl: str, model_type: str, ckpt: str, out: str, clicks: int) -> None:
    """Load one side, encode the image once, click `clicks` times; report times and RSS."""
    img = photo_like(HEIGHT, WIDTH)
    rng = np.random.default_rng(1)
    points = [(np.array([[rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)]]), np.array([1])) for _ in range(clicks)]
    # Both sides get the allocator setting every serving process of ours has (CPU_MEMORY_KEEP_MB):
    # without it each encode re-faults its activations' pages.
    from backend.allocator import keep_freed_memory
    from backend.settings import Settings

    keep_freed_memory(Settings().cpu_memory_keep_mb)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if impl == "ref":
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        from tests.support.oracle_sam2 import official_config

        ref = SAM2ImagePredictor(build_sam2(official_config(model_type), ckpt_path=ckpt, device="cpu"))
        t, cpu = time.perf_counter(), time.process_time()
        ref.set_image(img)
        encode, encode_cpu = time.perf_counter() - t, time.process_time() - cpu
        t = time.perf_counter()
        ref.set_image(img)
        warm = time.perf_counter() - t
        feats = ref._features
        features = [feats["image_embed"], feats["high_res_feats"][1], feats["high_res_feats"][0]]
        click_times = []
        for coords, labels in points:
            t = time.perf_counter()
            ref.predict(coords, labels, multimask_output=True)
            click_times.append(time.perf_counter() - t)
    else:
        from sam_model.loading import load_sam
        from sam_model.sam2 import Sam2Predictor, unpack

        ours = Sam2Predictor(load_sam(model_type, ckpt, device="cpu"), model_type)
        t, cpu = time.perf_counter(), time.process_time()
        emb = ours.encode(img)
        encode, encode_cpu = time.perf_counter() - t, time.process_time() - cpu
        t = time.perf_counter()
        emb = ours.encode(img)
        warm = time.perf_counter() - t
        features = list(unpack(emb.features))
        click_times = []
        for coords, labels in points:
            t = time.perf_counter()
            ours.decode(emb, coords, labels)
            click_times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.save(features, out)
    result = {
        "encode": encode,
        "encode_cpu": encode_cpu,
        "warm": warm,
        "click": statistics.median(click_times),
        "peak_rss_bytes": peak,
        "base": base,
    }
    print(json.dumps(result))


def run_child(impl: str, args: argparse.Namespace, ckpt: str, out: str) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            impl,
            "--model",
            args.model,
            "--ckpt",
            ckpt,
            "--out",
            out,
            "--clicks",
            str(args.clicks),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--clicks", type=int, default=10)
    p.add_argument("--child")
    p.add_argument("--ckpt")
    p.add_argument("--out")
    args = p.parse_args()
    if args.child:
        child(args.child, args.model, args.ckpt, args.out, args.clicks)
        return

    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}, "
        f"{args.model}, {WIDTH}x{HEIGHT}"
    )
    from tests.support.oracle_sam2 import official_sam2, save_official

    impls = ["ref", "ours"]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(save_official(official_sam2(args.model, seed=0), os.path.join(tmp, f"{args.model}-random.pt")))
        results: dict[str, list[dict]] = {i: [] for i in impls}
        for r in range(args.rounds):
            for impl in impls:
                res = run_child(impl, args, ckpt, os.path.join(tmp, f"{impl}.pt"))
                results[impl].append(res)
                print(
                    f"round {r} {impl:4s} encode {res['encode']:.2f} s (CPU {res['encode_cpu']:.2f} s), "
                    f"second encode {res['warm']:.2f} s, "
                    f"click {res['click'] * 1e3:.0f} ms, "
                    f"peak RSS {res['peak_rss_bytes'] / 2**30:.2f} GiB",
                    flush=True,
                )
        feats = {i: torch.load(os.path.join(tmp, f"{i}.pt")) for i in impls}
        diff = max((a - b).abs().max().item() for a, b in zip(feats["ours"], feats["ref"], strict=True))
        med = {
            i: {k: statistics.median(x[k] for x in results[i]) for k in ("encode", "encode_cpu", "warm", "click")}
            for i in impls
        }
        print(
            f"encode: ref {med['ref']['encode']:.2f} s, ours {med['ours']['encode']:.2f} s, "
            f"speed-up x{med['ref']['encode'] / med['ours']['encode']:.2f}; CPU time ref "
            f"{med['ref']['encode_cpu']:.2f} s, ours {med['ours']['encode_cpu']:.2f} s"
        )
        print(
            f"second encode in the process (a server's steady state): ref {med['ref']['warm']:.2f} s, "
            f"ours {med['ours']['warm']:.2f} s, speed-up x{med['ref']['warm'] / med['ours']['warm']:.2f}"
        )
        print(
            f"click:  ref {med['ref']['click'] * 1e3:.0f} ms, ours {med['ours']['click'] * 1e3:.0f} ms, "
            f"speed-up x{med['ref']['click'] / med['ours']['click']:.2f}"
        )
        print(f"max |features - ref| over the three levels: {diff:.2e}")


if __name__ == "__main__":
    main()
