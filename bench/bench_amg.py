"""Automatic mask generation: ours (exact, fast) vs the official generator, same weights, one run.

    python bench/bench_amg.py [--model vit_b|tiny] [--quick] [--max-batches N] [--json out.json]

What is timed is AMG's own work on a 1024x768 image: decoding the point grid, filtering,
upscaling, NMS, encoding masks. The image encoder is excluded for both: the embedding is
computed once with our encoder and handed to ours as `generate(image, embedding=...)`;
the official generator's predictor gets the same features installed and its `set_image`
replaced by a function that reinstalls them (the reference calls set_image per crop), so
its `generate` time is decoder work only. (Encoder parity is tested elsewhere.) All three
generators share the decoder weights, and the decoder is the same for every model size,
so `--model tiny` measures the same AMG work as vit_b without the long encoder build.

Cases: points_per_side 32 and 16 x thresholds default (0.88/0.95) and zero (0/0), box NMS
0.7 as default. `--quick` caps each case at `--max-batches` batches of 64 points (the first
points of the same grid, for all three implementations) and prints the per-batch time, so
a run fits in minutes; the full pps-32 reference is 16 batches (~177 s unloaded).

Fast vs exact agreement (see `agreement`): random weights are degenerate for this (every
stability score is 0 on them), so it runs on a few synthetic images with the constructed
"disc" decoder of tests/sam_model/test_amg_parity.py (signed-distance logits with spread
sharpness and IoU, holes and islands), default settings: masks lost/gained, mean matched
IoU; plus, over all candidates, the low-res vs full-res stability gap and flips per threshold.
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

from sam_model.amg import AutomaticMaskGenerator  # noqa: E402
from sam_model.amg.grid import point_grid  # noqa: E402

THRESHOLDS = {"default": dict(pred_iou_thresh=0.88, stability_score_thresh=0.95), "zero": dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)}


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


def models(model_type: str) -> tuple[Any, Any]:
    """(official Sam, our predictor) with the same random weights, ours loaded strictly from the saved file."""
    from sam_model.checkpoint import load_sam
    from sam_model.predictor import SamPredictor
    from tests.sam_model.conftest import official_sam

    ref = official_sam(model_type, seed=0)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, f"{model_type}_random.pth")
        torch.save(ref.state_dict(), path)
        ours = load_sam(model_type, path, device="cpu")
    return ref, SamPredictor(ours, model_type)


def official_generator(ref: Any, embedding: Any, **settings: Any) -> Any:
    """The reference generator with the encoder taken out: set_image reinstalls fixed features."""
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


def speed(ref: Any, predictor: Any, image: np.ndarray, embedding: Any, pps: int, thr: str, max_batches: int | None) -> dict:
    grid = point_grid(pps)
    if max_batches is not None:
        grid = grid[: 64 * max_batches]
    n_batches = -(-len(grid) // 64)
    settings = dict(points_per_side=None, point_grids=[grid], points_per_batch=64, output_mode="coco_rle", **THRESHOLDS[thr])
    row: dict[str, Any] = {"points_per_side": pps, "thresholds": thr, "points": len(grid), "batches": n_batches}
    t_ref, out_ref = timed(lambda: official_generator(ref, embedding, **settings).generate(image))
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
        f" | per batch ref/exact/fast {t_ref / n_batches:.1f}/{row['exact_s'] / n_batches:.1f}/{row['fast_s'] / n_batches:.1f}s",
        flush=True,
    )
    return row


def agreement(predictor: Any, images: list[np.ndarray], pps: int) -> dict:
    """Fast vs exact on the same images: masks lost/gained, mask IoU of pairs, stability gap.

    Two passes per image: with the given settings (what a user sees), and with nothing
    filtered (thresholds 0, box NMS off) to pair every candidate and compare fast mode's
    low-resolution stability with exact mode's, and count the masks fast mode would lose
    (exact keeps, fast drops) or gain at several stability thresholds.
    """
    default = dict(points_per_side=pps, output_mode="coco_rle")
    unfiltered = dict(default, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    lost = gained = exact_total = 0
    matched: list[float] = []
    exact_stab: list[float] = []
    fast_stab: list[float] = []
    for image in images:
        emb = predictor.encode(image)
        exact = AutomaticMaskGenerator(predictor, mode="exact", **default).generate(image, embedding=emb)
        fast = AutomaticMaskGenerator(predictor, mode="fast", **default).generate(image, embedding=emb)
        pairs = match(fast, exact)
        exact_total, lost, gained = exact_total + len(exact), lost + len(exact) - len(pairs), gained + len(fast) - len(pairs)
        matched += pairs
        exact = AutomaticMaskGenerator(predictor, mode="exact", **unfiltered).generate(image, embedding=emb)
        fast = AutomaticMaskGenerator(predictor, mode="fast", **unfiltered).generate(image, embedding=emb)
        by_key = {(tuple(r["point_coords"][0]), r["predicted_iou"]): r for r in exact}
        for r in fast:
            exact_stab.append(by_key[(tuple(r["point_coords"][0]), r["predicted_iou"])]["stability_score"])
            fast_stab.append(r["stability_score"])
    ex, fa = np.nan_to_num(np.array(exact_stab)), np.nan_to_num(np.array(fast_stab))
    gap = np.abs(ex - fa)
    per_threshold = {
        str(t): {"exact_keeps": int((ex >= t).sum()), "lost": int(((ex >= t) & (fa < t)).sum()), "gained": int(((ex < t) & (fa >= t)).sum())}
        for t in (0.8, 0.9, 0.95, 0.98)
    }
    out = {
        "images": len(images),
        "points_per_side": pps,
        "default_settings": {"exact_masks": exact_total, "lost": lost, "gained": gained, "mean_matched_iou": float(np.mean(matched)) if matched else None},
        "candidates": len(ex),
        "stability_abs_diff_mean": float(gap.mean()),
        "stability_abs_diff_p99": float(np.quantile(gap, 0.99)),
        "stability_exact_quartiles": [float(q) for q in np.quantile(ex, [0.25, 0.5, 0.75])],
        "by_stability_threshold": per_threshold,
    }
    d = out["default_settings"]
    print(
        f"fast vs exact, {len(images)} images, pps {pps}, default settings: exact {exact_total} masks, fast lost {lost}"
        f" gained {gained}, mean matched IoU {d['mean_matched_iou']}",
        flush=True,
    )
    print(
        f"  all {len(ex)} candidates: |low-res - full-res stability| mean {out['stability_abs_diff_mean']:.4f}"
        f" p99 {out['stability_abs_diff_p99']:.4f}; exact stability quartiles {np.round(out['stability_exact_quartiles'], 3).tolist()}"
    )
    for t, v in per_threshold.items():
        print(f"  stability >= {t}: exact keeps {v['exact_keeps']}, fast loses {v['lost']}, gains {v['gained']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "tiny"])
    parser.add_argument("--quick", action="store_true", help="cap every case at --max-batches batches of 64 points")
    parser.add_argument("--max-batches", type=int, default=1)
    parser.add_argument("--agreement-images", type=int, default=3)
    parser.add_argument("--agreement-pps", type=int, default=16)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; load {os.getloadavg()}")
    ref, predictor = models(args.model)
    image = synthetic_image(768, 1024, seed=0)
    with torch.inference_mode():
        t_enc, embedding = timed(lambda: predictor.encode(image))
    print(f"model {args.model}: encoder {t_enc:.1f}s (once, excluded from every figure below)", flush=True)
    cap = args.max_batches if args.quick else None
    rows = [speed(ref, predictor, image, embedding, pps, thr, cap) for pps in (32, 16) for thr in ("default", "zero")]
    from tests.sam_model.test_amg_parity import disc_model

    images = [synthetic_image(768, 1024, seed=s) for s in range(1, 1 + args.agreement_images)]
    agree = agreement(disc_model()[1], images, args.agreement_pps)
    print(f"load after: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "quick": args.quick, "encoder_s": t_enc, "cases": rows, "agreement": agree}, f, indent=1)


if __name__ == "__main__":
    main()
