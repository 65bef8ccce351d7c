"""Ours vs the official segment-anything predictor, same random weights, one run.

    python bench/bench_model.py [--model vit_b] [--quick] [--repeats 3] [--clicks 7] [--clicks-only]

The official model is built with random weights and saved as a .pth in a temp dir; ours
loads that file through `load_sam` (strict), so both run the same function. Prints the
encoder time (ours vs `SamPredictor.set_image`, 1500x1000 image), the one-click decode +
postprocess time at 1500x1000 and 4000x3000 (ours vs `predict`) and the upscale alone,
their ratios, the CPU's fp32 GEMM rate and the encoder floor it implies, and an int8
encoder line. On a shared machine use the ratios: both sides run interleaved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "oracle_stubs"))  # lets the oracle import here
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from segment_anything.predictor import SamPredictor as RefPredictor  # noqa: E402

from sam_model import ImageEmbedding, SamPredictor, load_sam  # noqa: E402
from sam_model.common.transforms import upscale_masks  # noqa: E402
from sam_model.sam1.build import ENCODER_CONFIGS, EncoderConfig  # noqa: E402
from tests.support.oracle import official_sam  # noqa: E402

TOKENS = 64 * 64
WINDOW_TOKENS = 14 * 14
WINDOWS = 5 * 5  # the 64x64 grid padded to 70x70 for 14x14 windows


def encoder_gflop(cfg: EncoderConfig) -> float:
    """Multiply-add FLOPs of one 1024x1024 encoder pass (linear, attention, patch, neck)."""
    c, n = cfg.embed_dim, TOKENS
    linear = 2 * 12 * c * c * n * cfg.depth  # qkv 3C^2 + proj C^2 + MLP 8C^2 per token
    n_global = len(cfg.global_attn_indexes)
    attention = 4 * n * n * c * n_global + 4 * WINDOW_TOKENS**2 * c * WINDOWS * (cfg.depth - n_global)
    patch = 2 * n * c * 3 * 16 * 16
    neck = 2 * n * c * 256 + 2 * n * 256 * 256 * 9
    return (linear + attention + patch + neck) / 1e9


def image(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 6, 8)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(coarse, (h, w), mode="bilinear", align_corners=False)[0]
    return np.clip(smooth.permute(1, 2, 0).numpy() + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired(label: str, ours: Callable[[], object], ref: Callable[[], object], repeats: int) -> None:
    """Alternate the two so drifting load on a shared machine hits both alike."""
    t_ours, t_ref = [], []
    for _ in range(repeats):
        t_ref.append(median_s(ref, 1))
        t_ours.append(median_s(ours, 1))
    o, r = statistics.median(t_ours), statistics.median(t_ref)
    print(f"{label:<52} ours {o * 1e3:9.1f} ms   ref {r * 1e3:9.1f} ms   ref/ours {r / o:5.2f}x", flush=True)


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    return 2 * n**3 / median_s(lambda: torch.mm(a, b), repeats) / 1e9


def set_reference_embedding(ref: RefPredictor, features: torch.Tensor, original: tuple[int, int]) -> None:
    """Point the official predictor at already-computed features (no second encode)."""
    ref.reset_image()
    ref.features = features
    ref.original_size = original
    ref.input_size = ref.transform.get_preprocess_shape(*original, ref.model.image_encoder.img_size)
    ref.is_image_set = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_b", choices=sorted(ENCODER_CONFIGS))
    parser.add_argument("--quick", action="store_true", help="1 encoder run, 3 clicks, no int8")
    parser.add_argument("--repeats", type=int, default=3, help="encoder runs per side")
    parser.add_argument("--clicks", type=int, default=7, help="decode runs per case and side")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--clicks-only", action="store_true", help="one encode (ours, shared with the reference), then the click lines"
    )
    args = parser.parse_args()
    repeats, clicks = (1, 3) if args.quick else (args.repeats, args.clicks)
    torch.set_num_threads(args.threads)
    print(f"model {args.model}, torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs", flush=True)

    if not args.clicks_only:
        gflops = gemm_gflops()
        work = encoder_gflop(ENCODER_CONFIGS[args.model])
        print(f"fp32 GEMM 2048^3: {gflops:.1f} GFLOP/s; encoder {work:.0f} GFLOP -> floor {work / gflops:.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{args.model}_random.pth")
        official = official_sam(args.model, std=0.02)
        torch.save(official.state_dict(), path)
        ours = SamPredictor(load_sam(args.model, path, device="cpu"), model_id=f"{args.model}-random")
        ref = RefPredictor(official)

        photo = image(1000, 1500)
        if args.clicks_only:
            emb = ours.encode(photo)
            set_reference_embedding(ref, emb.features, emb.original_size)
        else:
            paired(
                "encoder, 1500x1000 (encode vs set_image)",
                lambda: ours.encode(photo),
                lambda: ref.set_image(photo),
                repeats,
            )
            emb = ours.encode(photo)
            ref.set_image(photo)
            diff = (emb.features - ref.features).abs().max().item()
            print(f"  features max |ours - ref| = {diff:.2e}")

        if not (args.quick or args.no_int8 or args.clicks_only):
            int8 = SamPredictor(load_sam(args.model, path, device="cpu", quantize="int8"), model_id="int8")
            t_int8 = median_s(lambda: int8.encode(photo), repeats)
            rel = ((int8.encode(photo).features - emb.features).norm() / emb.features.norm()).item()
            print(
                f"{'encoder int8 (ours, quantize=int8), 1500x1000':<52} ours {t_int8 * 1e3:9.1f} ms   rel. L2 error vs fp32 {rel:.3f}"
            )

        for h, w in ((1000, 1500), (3000, 4000)):
            # Timing needs a real embedding, not the image behind it: reuse the one we have.
            sized = ImageEmbedding(emb.features, (h, w), ref.transform.get_preprocess_shape(h, w, 1024), emb.model_id)
            set_reference_embedding(ref, ref.features, (h, w))
            point = {"point_coords": np.array([[0.4 * w, 0.55 * h]]), "point_labels": np.array([1])}
            clicks_box = {
                "point_coords": np.array([[0.4 * w, 0.55 * h], [0.9 * w, 0.1 * h]]),
                "point_labels": np.array([1, 0]),
                "box": np.array([0.2 * w, 0.25 * h, 0.7 * w, 0.8 * h]),
            }
            paired(
                f"click {w}x{h}: 1 point, 3 candidates, best returned",
                lambda: ours.decode(sized, **point, best_only=True),
                lambda: ref.predict(**point, multimask_output=True),
                clicks,
            )
            paired(
                "  same, new embedding object (decoder context built)",
                lambda: ours.decode(
                    ImageEmbedding(sized.features, sized.original_size, sized.input_size, sized.model_id),
                    **point,
                    best_only=True,
                ),
                lambda: ref.predict(**point, multimask_output=True),
                clicks,
            )
            paired(
                f"click {w}x{h}: points + box, 1 mask",
                lambda: ours.decode(sized, **clicks_box, multimask=False),
                lambda: ref.predict(**clicks_box, multimask_output=False),
                clicks,
            )
            low = torch.from_numpy(ref.predict(**point, multimask_output=True)[2])
            paired(
                f"  upscale only {w}x{h}: best of 3 vs all 3",
                lambda: upscale_masks(low[:1], sized.input_size, (h, w), 1024),
                lambda: (ref.model.postprocess_masks(low[None], ref.input_size, (h, w)) > 0).numpy(),
                clicks,
            )


if __name__ == "__main__":
    main()
