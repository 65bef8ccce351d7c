"""Image encoder: ours vs the official segment-anything, same random weights, same run.

    python bench/bench_encoder.py [--model vit_b] [--rounds 2] [--int8]

Each encode runs in its own subprocess (ours and the reference alternate) so that each one's
peak RSS (ru_maxrss, minus the process's RSS just before encoding) is its own. Prints median
and min seconds, the speed ratio, the max abs difference of the embeddings and, with --int8,
int8-vs-fp32 fidelity: the IoU of decoder masks (same prompts) from the two embeddings.
The official model needs the test-only torchvision stand-in (tests/oracle_stubs).
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

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle_stubs"))


def random_official(model_type: str, path: str) -> None:
    """Save an official-format state_dict with every parameter random (rel-pos included)."""
    from tests.support.oracle import official_sam

    torch.save(official_sam(model_type, seed=0).state_dict(), path)


def child(impl: str, model_type: str, ckpt: str, out: str) -> None:
    """Load one implementation, encode one fixed input, report time and RSS, save the embedding."""
    if impl == "ref":
        from segment_anything import sam_model_registry

        model = sam_model_registry[model_type]()
        model.load_state_dict(torch.load(ckpt, weights_only=True))
        model.eval()
    else:
        from sam_model.loading import load_sam

        model = load_sam(model_type, ckpt, device="cpu", quantize="int8" if impl == "ours_int8" else "none")
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.inference_mode():
        t = time.perf_counter()
        emb = model.image_encoder(x)
        seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.save(emb, out)
    print(json.dumps({"seconds": seconds, "encode_rss_bytes": peak - base, "peak_rss_bytes": peak}))


def run_child(impl: str, model_type: str, ckpt: str, out: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", impl, "--model", model_type, "--ckpt", ckpt, "--out", out],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mask_iou_int8_vs_fp32(model_type: str, ckpt: str, emb32: torch.Tensor, emb8: torch.Tensor) -> list[float]:
    """IoU of thresholded decoder masks (all 4 tokens) for a few point/box prompts."""
    from sam_model.loading import load_sam

    sam = load_sam(model_type, ckpt, device="cpu")
    g = torch.Generator().manual_seed(1)
    pe = sam.prompt_encoder.get_dense_pe()
    ious = []
    with torch.inference_mode():
        for i in range(8):
            pts = torch.rand(1, 1 + i % 3, 2, generator=g) * 1024
            labels = torch.ones(1, pts.shape[1])
            box = torch.tensor([[100.0, 150.0, 700.0, 800.0]]) if i % 2 else None
            sparse, dense = sam.prompt_encoder(points=(pts, labels), boxes=box, masks=None)
            m32, _ = sam.mask_decoder.predict_masks(emb32, pe, sparse, dense)
            m8, _ = sam.mask_decoder.predict_masks(emb8, pe, sparse, dense)
            a, b = m32 > sam.mask_threshold, m8 > sam.mask_threshold
            for k in range(a.shape[1]):
                union = (a[:, k] | b[:, k]).sum().item()
                ious.append(1.0 if union == 0 else (a[:, k] & b[:, k]).sum().item() / union)
    return ious


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="vit_b")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--int8", action="store_true", help="also time ours with int8 quantization")
    p.add_argument("--child")
    p.add_argument("--ckpt")
    p.add_argument("--out")
    args = p.parse_args()
    if args.child:
        child(args.child, args.model, args.ckpt, args.out)
        return

    impls = ["ref", "ours"] + (["ours_int8"] if args.int8 else [])
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, f"{args.model}_random.pth")
        random_official(args.model, ckpt)
        results: dict[str, list[dict]] = {i: [] for i in impls}
        for r in range(args.rounds):
            for impl in impls:
                res = run_child(impl, args.model, ckpt, os.path.join(tmp, f"{impl}.pt"))
                results[impl].append(res)
                print(
                    f"round {r} {impl:9s} {res['seconds']:.2f} s, encode +{res['encode_rss_bytes'] / 2**20:.0f} MiB, "
                    f"peak RSS {res['peak_rss_bytes'] / 2**30:.2f} GiB",
                    flush=True,
                )
        emb = {i: torch.load(os.path.join(tmp, f"{i}.pt")) for i in impls}
        med = {i: statistics.median(x["seconds"] for x in results[i]) for i in impls}
        for impl in impls:
            secs = [x["seconds"] for x in results[impl]]
            print(
                f"{impl:9s} median {med[impl]:.2f} s, min {min(secs):.2f} s, "
                f"speed-up vs ref x{med['ref'] / med[impl]:.2f}, "
                f"max |emb - ref| {(emb[impl] - emb['ref']).abs().max().item():.2e}"
            )
        if args.int8:
            ious = mask_iou_int8_vs_fp32(args.model, ckpt, emb["ours"], emb["ours_int8"])
            print(
                f"int8 vs fp32 decoder mask IoU over {len(ious)} masks: mean {statistics.mean(ious):.4f}, "
                f"min {min(ious):.4f}; embedding rel. error "
                f"{((emb['ours_int8'] - emb['ours']).norm() / emb['ours'].norm()).item():.4f}"
            )


if __name__ == "__main__":
    main()
