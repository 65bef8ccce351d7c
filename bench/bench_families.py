"""Every model family on this machine: first click, cache-hit click, embedding size, peak RSS.

    python bench/bench_families.py [--models vit_b,sam2.1_hiera_tiny,...] [--clicks 5]

One fresh subprocess per model (so each peak RSS is its own), random weights at the real
size (speed does not depend on the values). In each: encode a 1500x1000 photo-like image
(preprocessing included), decode one point with the best mask upscaled and brush-RLE
encoded: that is the first click on a new image minus the image download. Then `--clicks`
more decodes + RLE on the cached embedding (best of them): the cache-hit click minus HTTP
and JSON (bench/bench_click.py measures those, ~5-10 ms). Embedding bytes are what the
Redis cache stores (fp16) and the process LRU holds (fp32). Ours only: no reference here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support.images import photo_like  # noqa: E402

HEIGHT, WIDTH = 1000, 1500


def child(model_type: str, clicks: int) -> dict:
    """Build, encode once, click; report times, sizes and peak RSS of this process."""
    from backend.outputs.rle import mask_to_rle
    from sam_model import family_of

    torch.manual_seed(0)
    family = family_of(model_type)
    with torch.inference_mode():
        model = family.build(model_type).eval()
    params = sum(p.numel() for p in model.parameters())
    predictor = family.predictor(model, model_type, "fp32", False)
    img = photo_like(HEIGHT, WIDTH)
    point = dict(point_coords=np.array([[WIDTH * 0.4, HEIGHT * 0.55]]), point_labels=np.array([1]))
    predictor.decode(predictor.encode(img[:64, :64].copy()), **point, best_only=True)  # warm-up, not timed
    start = time.perf_counter()
    embedding = predictor.encode(img)
    encoded = time.perf_counter()
    mask_to_rle(predictor.decode(embedding, **point, best_only=True).masks[0])
    first = time.perf_counter() - start
    hits = []
    for _ in range(clicks):
        t = time.perf_counter()
        mask_to_rle(predictor.decode(embedding, **point, best_only=True).masks[0])
        hits.append(time.perf_counter() - t)
    return {
        "model": model_type,
        "family": family.label,
        "params_m": params / 1e6,
        "encode_s": encoded - start,
        "first_click_s": first,
        "hit_ms": min(hits) * 1e3,
        "embedding_fp32_mib": len(embedding.to_bytes(None)) / 2**20,
        "embedding_fp16_mib": len(embedding.to_bytes()) / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    from sam_model.families import OFFICIAL_TYPES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(t for t in OFFICIAL_TYPES if not t.startswith("sam2_")))
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.clicks)))
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}; load {os.getloadavg()}; random weights, fp32, "
        f"{WIDTH}x{HEIGHT}"
    )
    print("| SAM_MODEL | family | params | first click (encode) | cache-hit click | embedding fp16 / fp32 | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for model_type in args.models.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--child", model_type, "--clicks", str(args.clicks)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            print(f"| {model_type} | failed: {out.stderr.strip().splitlines()[-1:]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {r['model']} | {r['family']} | {r['params_m']:.0f} M | {r['first_click_s']:.2f} s "
            f"({r['encode_s']:.2f} s) | {r['hit_ms']:.0f} ms | {r['embedding_fp16_mib']:.1f} / "
            f"{r['embedding_fp32_mib']:.1f} MiB | {r['peak_rss_mib']:.0f} MiB |",
            flush=True,
        )


if __name__ == "__main__":
    main()
