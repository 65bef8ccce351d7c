"""Automatic mask generation: ours (exact, fast) vs the official generator, same weights, one run.

    python bench/bench_amg.py [--family sam1|sam2.1] [--model M] [--pps 32 16] [--thresholds default zero]
                              [--quick] [--max-batches N] [--json out.json]

`--family sam1` (the default) compares with segment_anything's SamAutomaticMaskGenerator
(vit_b unless `--model`), `--family sam2.1` with sam2's SAM2AutomaticMaskGenerator
(sam2.1_hiera_tiny random weights, built as tests/support/oracle_sam2.py builds them, saved
as Meta's files are and loaded through our loader; official use_m2m stays off, it crashes
in sam2 1.1.0). Each family is timed at its reference's default thresholds
(0.88/0.95 for v1, 0.8/0.95 for SAM 2) and at 0/0.

What is timed is AMG's own work on a 1024x768 image: decoding the point grid, filtering,
upscaling, NMS, encoding masks. The image encoder is excluded for both: the embedding is
computed once with our encoder and handed to ours as `generate(image, embedding=...)`;
the official generator's predictor gets the same features installed and its `set_image`
replaced by a function that reinstalls them (the reference calls set_image per crop), so
its `generate` time is decoder work only. (Encoder parity is tested elsewhere; for SAM 2
the bench also prints how far the installed features are from the official set_image's.)
All three generators share the decoder weights, and the decoder is the same for every
model size, so `--model tiny` measures the same AMG work as vit_b without the long encoder
build. The three are timed one after another in this one process (reference, exact, fast;
never interleaved, nothing else of the bench running meanwhile), with the allocator setting
every serving process applies (CPU_MEMORY_KEEP_MB; `--keep-mb 0` for glibc's defaults).

Cases: `--pps` (32 and 16) x `--thresholds` (default and zero), box NMS 0.7 as default.
Random weights make the default thresholds degenerate (no candidate passes the IoU filter,
so the work is the decoder); at 0/0 every candidate is upscaled, scored and RLE-encoded
before box NMS collapses them, so the output cost is in that figure. `--quick` caps each
case at `--max-batches` batches of 64 points (the first points of the same grid, for all
three implementations) and prints the per-batch time, so a run fits in minutes; the full
pps-32 grid is 16 batches.

Fast vs exact agreement (see `agreement`, v1 only): random weights are degenerate for this (every
stability score is 0 on them), so it runs on a few synthetic images with the constructed
"disc" model of tests/support/disc_model.py (signed-distance logits with spread sharpness
and IoU, holes and islands) behind our predictor, default settings: masks lost/gained, mean matched
IoU; plus, over all candidates, the error of the low-res stability estimate and how many
masks exact mode keeps that fast mode's pre-filter would drop, per threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle_stubs"))

from pycocotools import mask as coco_mask  # noqa: E402

from backend.allocator import keep_freed_memory  # noqa: E402
from backend.settings import Settings  # noqa: E402
from sam_model.amg import AutomaticMaskGenerator  # noqa: E402
from sam_model.amg.generator import LOW_RES_MARGIN  # noqa: E402
from sam_model.amg.grid import point_grid  # noqa: E402
from sam_model.amg.masks import stability_score  # noqa: E402
from tests.support.disc_model import disc_model  # noqa: E402

FAMILIES = ("sam1", "sam2.1")
DEFAULT_MODEL = {"sam1": "vit_b", "sam2.1": "sam2.1_hiera_tiny"}
MODELS = {"sam1": ("vit_b", "vit_l", "vit_h", "tiny"), "sam2.1": ("sam2.1_hiera_tiny",)}
ZERO = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
# Each reference generator's own defaults (box NMS 0.7 for both).
THRESHOLDS = {
    "sam1": {"default": dict(pred_iou_thresh=0.88, stability_score_thresh=0.95), "zero": ZERO},
    "sam2.1": {"default": dict(pred_iou_thresh=0.8, stability_score_thresh=0.95), "zero": ZERO},
}


def synthetic_image(h: int, w: int, seed: int) -> np.ndarray:
    """Gradient plus a few flat discs and rectangles: deterministic, not noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([xx * 255 // w, yy * 255 // h, np.full((h, w), 100)], axis=-1).astype(np.uint8)
    for _ in range(8):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(20, min(h, w) // 4)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.integers(0, 255, 3)
        y0, x0 = rng.integers(0, h - 40), rng.integers(0, w - 40)
        img[y0 : y0 + rng.integers(20, 200), x0 : x0 + rng.integers(20, 200)] = rng.integers(0, 255, 3)
    return img


def models(family: str, model_type: str) -> tuple[Any, Any]:
    """(official model, our predictor) with the same random weights, ours loaded strictly from the saved file."""
    if family == "sam2.1":
        return sam2_models(model_type)
    from sam_model.loading import load_sam
    from sam_model.sam1.predictor import SamPredictor
    from tests.support.oracle import official_sam

    ref = official_sam(model_type, seed=0)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, f"{model_type}_random.pth")
        torch.save(ref.state_dict(), path)
        ours = load_sam(model_type, path, device="cpu")
    return ref, SamPredictor(ours, model_type)


def sam2_models(model_type: str) -> tuple[Any, Any]:
    """(official SAM2Base, our Sam2Predictor): random weights as the SAM 2 parity tests make them."""
    from sam_model.loading import load_sam
    from sam_model.sam2 import Sam2Predictor
    from tests.support.oracle_sam2 import official_sam2, save_official

    ref = official_sam2(model_type, seed=0)
    with tempfile.TemporaryDirectory() as d:
        path = save_official(ref, os.path.join(d, f"{model_type}-random.pt"))
        ours = load_sam(model_type, path, device="cpu")
    return ref, Sam2Predictor(ours, model_type)


def official_generator(family: str, ref: Any, embedding: Any, **settings: Any) -> Any:
    """The reference generator with the encoder taken out: set_image reinstalls fixed features."""
    if family == "sam2.1":
        return official_sam2_generator(ref, embedding, **settings)
    from segment_anything import SamAutomaticMaskGenerator

    gen = SamAutomaticMaskGenerator(ref, **settings)
    predictor = gen.predictor

    def set_image(image: np.ndarray, image_format: str = "RGB") -> None:
        assert image.shape[:2] == embedding.original_size, "bench runs without crop layers"
        predictor.reset_image()
        predictor.original_size, predictor.input_size = embedding.original_size, embedding.input_size
        predictor.features, predictor.is_image_set = embedding.features, True

    predictor.set_image = set_image
    return gen


def sam2_features(embedding: Any) -> dict[str, Any]:
    """Our packed SAM 2 embedding as SAM2ImagePredictor keeps its features (high-res: stride 4, then 8)."""
    from sam_model.sam2 import unpack

    image_embed, s1, s0 = unpack(embedding.features)
    return {"image_embed": image_embed, "high_res_feats": [s0, s1]}


def official_sam2_generator(ref: Any, embedding: Any, **settings: Any) -> Any:
    """SAM2AutomaticMaskGenerator (use_m2m off, its default) whose set_image installs our features."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    gen = SAM2AutomaticMaskGenerator(ref, **settings)
    predictor = gen.predictor
    features = sam2_features(embedding)

    def set_image(image: np.ndarray) -> None:
        assert image.shape[:2] == embedding.original_size, "bench runs without crop layers"
        predictor.reset_predictor()
        predictor._orig_hw = [image.shape[:2]]
        predictor._features, predictor._is_image_set = features, True

    predictor.set_image = set_image
    return gen


def sam2_feature_gap(ref: Any, image: np.ndarray, embedding: Any) -> float:
    """Largest |official set_image feature - ours| over the three levels: what the reference is fed is its own."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    official = SAM2ImagePredictor(ref)
    with torch.inference_mode():
        official.set_image(image)
    theirs, ours = official._features, sam2_features(embedding)
    pairs = [(theirs["image_embed"], ours["image_embed"])] + list(
        zip(theirs["high_res_feats"], ours["high_res_feats"], strict=True)
    )
    return max(float((a - b).abs().max()) for a, b in pairs)


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def match(a: list[dict], b: list[dict]) -> list[float]:
    """Greedy one-to-one pairing by mask IoU (COCO RLEs); the IoUs of the pairs."""
    if not a or not b:
        return []
    ious = np.asarray(coco_mask.iou([r["segmentation"] for r in a], [r["segmentation"] for r in b], [0] * len(b)))
    ious = ious.reshape(len(a), len(b))
    out, used_a, used_b = [], set(), set()
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(b))
        if ious[i, j] <= 0.5:
            break
        if i not in used_a and j not in used_b:
            out.append(float(ious[i, j]))
            used_a.add(i)
            used_b.add(j)
    return out


def speed(
    family: str,
    ref: Any,
    predictor: Any,
    image: np.ndarray,
    embedding: Any,
    pps: int,
    thr: str,
    max_batches: int | None,
) -> dict:
    grid = point_grid(pps)
    if max_batches is not None:
        grid = grid[: 64 * max_batches]
    n_batches = -(-len(grid) // 64)
    settings = dict(
        points_per_side=None, point_grids=[grid], points_per_batch=64, output_mode="coco_rle", **THRESHOLDS[family][thr]
    )
    row: dict[str, Any] = {"points_per_side": pps, "thresholds": thr, "points": len(grid), "batches": n_batches}
    row["load_before"] = os.getloadavg()
    t_ref, out_ref = timed(lambda: official_generator(family, ref, embedding, **settings).generate(image))
    row["reference_s"], row["reference_masks"] = t_ref, len(out_ref)
    for mode in ("exact", "fast"):
        gen = AutomaticMaskGenerator(predictor, mode=mode, **settings)
        t, out = timed(lambda: gen.generate(image, embedding=embedding))
        row[f"{mode}_s"], row[f"{mode}_masks"] = t, len(out)
        row[f"{mode}_speedup"] = t_ref / t
        pairs = match(out, out_ref)
        row[f"{mode}_matched"], row[f"{mode}_mean_iou"] = len(pairs), float(np.mean(pairs)) if pairs else None
    print(
        f"pps {pps:2d} thr {thr:7s} {len(grid):4d} pts {n_batches:2d} batches | ref {t_ref:7.1f}s ({len(out_ref)} masks)"
        f" | exact {row['exact_s']:7.1f}s x{row['exact_speedup']:.2f} ({row['exact_masks']})"
        f" | fast {row['fast_s']:7.1f}s x{row['fast_speedup']:.2f} ({row['fast_masks']})"
        f" | per batch ref/exact/fast {t_ref / n_batches:.2f}/{row['exact_s'] / n_batches:.2f}/{row['fast_s'] / n_batches:.2f}s"
        f" | exact matched to ref {row['exact_matched']} (mean IoU {row['exact_mean_iou'] or 0:.4f})"
        f" | load {row['load_before'][0]:.1f} -> {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return row


def warm_up(family: str, ref: Any, predictor: Any, image: np.ndarray, embedding: Any) -> None:
    """Each generator once on a 2x2 grid, untimed: first-call costs (kernel setup, first
    allocations) stay out of whichever side a case happens to run first."""
    settings = dict(points_per_side=2, output_mode="coco_rle", **THRESHOLDS[family]["zero"])
    official_generator(family, ref, embedding, **settings).generate(image)
    for mode in ("exact", "fast"):
        AutomaticMaskGenerator(predictor, mode=mode, **settings).generate(image, embedding=embedding)
    print("warm-up: each generator once on a 2x2 grid (untimed)", flush=True)


def agreement(predictor: Any, images: list[np.ndarray], pps: int) -> dict:
    """Fast vs exact on the same images: masks lost/gained, mask IoU of pairs, low-res stability error.

    First the two modes with default settings (what a user sees). Then, over every candidate
    mask, the low-resolution stability estimate that fast mode pre-filters on against the
    full-resolution score (computed through the generator's own internal steps): for
    several thresholds, how many masks the pre-filter drops that exact mode keeps (with
    the LOW_RES_MARGIN fast mode uses, and with no margin).
    """
    default = dict(points_per_side=pps, output_mode="coco_rle")
    lost = gained = exact_total = 0
    matched: list[float] = []
    low: list[torch.Tensor] = []
    full: list[torch.Tensor] = []
    for image in images:
        emb = predictor.encode(image)
        exact_gen = AutomaticMaskGenerator(predictor, mode="exact", **default)
        exact = exact_gen.generate(image, embedding=emb)
        fast = AutomaticMaskGenerator(predictor, mode="fast", **default).generate(image, embedding=emb)
        pairs = match(fast, exact)
        exact_total, lost, gained = (
            exact_total + len(exact),
            lost + len(exact) - len(pairs),
            gained + len(fast) - len(pairs),
        )
        matched += pairs
        h, w = emb.original_size
        with torch.inference_mode():
            decoder = exact_gen.predictor.grid_decoder(emb)
            _, _, logits = decoder.decode(point_grid(pps) * np.array([w, h]), None)
            cells = decoder.low_res_cells(logits)
            low.append(stability_score(cells, exact_gen._threshold, exact_gen.stability_score_offset))
            full.append(exact_gen._full_res_masks(decoder, logits, emb.original_size)[0])
    lo, ex = torch.cat(low).nan_to_num().numpy(), torch.cat(full).nan_to_num().numpy()
    gap = np.abs(lo - ex)
    per_threshold = {
        str(t): {
            "exact_keeps": int((ex >= t).sum()),
            "dropped_with_margin": int(((ex >= t) & (lo < t - LOW_RES_MARGIN)).sum()),
            "dropped_without_margin": int(((ex >= t) & (lo < t)).sum()),
            "upscaled_with_margin": int((lo >= t - LOW_RES_MARGIN).sum()),
        }
        for t in (0.8, 0.9, 0.95, 0.98)
    }
    out = {
        "images": len(images),
        "points_per_side": pps,
        "default_settings": {
            "exact_masks": exact_total,
            "lost": lost,
            "gained": gained,
            "mean_matched_iou": float(np.mean(matched)) if matched else None,
        },
        "candidates": len(ex),
        "low_res_stability_abs_err_mean": float(gap.mean()),
        "low_res_stability_abs_err_p99": float(np.quantile(gap, 0.99)),
        "low_res_stability_abs_err_max": float(gap.max()),
        "by_stability_threshold": per_threshold,
    }
    d = out["default_settings"]
    print(
        f"fast vs exact, {len(images)} images, pps {pps}, default settings: exact {exact_total} masks, fast lost {lost}"
        f" gained {gained}, mean matched IoU {d['mean_matched_iou']:.5f}",
        flush=True,
    )
    print(
        f"  all {len(ex)} candidates: |low-res - full-res stability| mean {gap.mean():.4f} p99 {out['low_res_stability_abs_err_p99']:.4f}"
        f" max {gap.max():.4f}"
    )
    for t, v in per_threshold.items():
        print(
            f"  stability >= {t}: exact keeps {v['exact_keeps']}; low-res pre-filter drops {v['dropped_with_margin']} of them"
            f" with margin {LOW_RES_MARGIN} ({v['dropped_without_margin']} without); upscaled {v['upscaled_with_margin']}/{len(ex)}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="sam1", choices=FAMILIES)
    parser.add_argument("--model", help="default: vit_b (sam1), sam2.1_hiera_tiny (sam2.1)")
    parser.add_argument("--pps", type=int, nargs="+", default=[32, 16], help="points_per_side of each case")
    parser.add_argument("--thresholds", nargs="+", default=["default", "zero"], choices=["default", "zero"])
    parser.add_argument("--quick", action="store_true", help="cap every case at --max-batches batches of 64 points")
    parser.add_argument("--max-batches", type=int, default=1)
    parser.add_argument("--agreement-images", type=int, default=2, help="sam1 only; 0 skips the agreement pass")
    parser.add_argument("--agreement-pps", type=int, default=16)
    parser.add_argument("--keep-mb", type=int, help="CPU_MEMORY_KEEP_MB for this process (default: the setting's)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    model = args.model or DEFAULT_MODEL[args.family]
    if model not in MODELS[args.family]:
        parser.error(f"--model for {args.family}: one of {MODELS[args.family]}")
    # Every serving process (web and RQ workers) keeps freed memory for reuse; so does this
    # one, for both sides alike, or both re-fault their large temporaries on every batch.
    keep_mb = Settings().cpu_memory_keep_mb if args.keep_mb is None else args.keep_mb
    kept = keep_freed_memory(keep_mb)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()};"
        f" load {os.getloadavg()}; allocator CPU_MEMORY_KEEP_MB={keep_mb} ({'applied' if kept else 'glibc defaults'})"
    )
    ref, predictor = models(args.family, model)
    image = synthetic_image(768, 1024, seed=0)
    with torch.inference_mode():
        t_enc, embedding = timed(lambda: predictor.encode(image))
    print(f"{args.family} {model}: encoder {t_enc:.1f}s (once, excluded from every figure below)", flush=True)
    gap = sam2_feature_gap(ref, image, embedding) if args.family == "sam2.1" else None
    if gap is not None:
        print(f"features installed in the reference vs its own set_image: max |diff| {gap:.2e}", flush=True)
    warm_up(args.family, ref, predictor, image, embedding)
    print(
        "each case: reference, then ours exact, then ours fast, one after another in this process (never interleaved)"
    )
    cap = args.max_batches if args.quick else None
    rows = [
        speed(args.family, ref, predictor, image, embedding, pps, thr, cap)
        for pps in args.pps
        for thr in args.thresholds
    ]
    agree = None
    if args.family == "sam1" and args.agreement_images > 0:
        images = [synthetic_image(768, 1024, seed=s) for s in range(1, 1 + args.agreement_images)]
        agree = agreement(disc_model()[1], images, args.agreement_pps)
    print(f"load after: {os.getloadavg()}")
    if args.json:
        out = {"family": args.family, "model": model, "quick": args.quick, "keep_mb": keep_mb, "encoder_s": t_enc}
        out["feature_gap"] = gap
        with open(args.json, "w") as f:
            json.dump({**out, "cases": rows, "agreement": agree}, f, indent=1)


if __name__ == "__main__":
    main()
