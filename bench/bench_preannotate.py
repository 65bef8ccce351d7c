"""Pre-annotating a project end to end: images per hour through RQ with 1 and 2 workers.

    python bench/bench_preannotate.py                                  # vit_b, sam2.1 tiny, MobileSAM; 12 images
    python bench/bench_preannotate.py --models mobile_sam --images 40 --workers 1,2

Per model and worker count: a fresh queue, N synthetic 1024x768 images in a stand-in Label
Studio (a real HTTP server with LS's API: tasks, files, predictions), `--workers` real
`python -m backend worker` processes (one torch thread each), one run started through the
app's POST /auto-annotate (AMG at `--pps` points per side, the family's default
thresholds), timed from the POST until the run reports finished and every prediction was
posted. Fetch, decode, encode, AMG, brush RLE and the POST are all inside the clock; the
workers' model loading is not (they are started, and warmed on one image, first).
Random weights at the real size: AMG keeps few masks, so the outputs cost less than on real
images; the encoder and decoder cost what they cost.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "oracle_stubs"))

from backend.settings import Settings  # noqa: E402
from backend.web.app import create_app  # noqa: E402
from sam_model import family_of  # noqa: E402
from tests.support.fake_ls import FakeLabelStudioAPI  # noqa: E402
from tests.support.images import png, scene  # noqa: E402
from tests.support.label_configs import BRUSH_WITH_SMART_KEYPOINTS  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.samples import LS_TOKEN  # noqa: E402
from tests.support.worker_pool import Workers  # noqa: E402

WIDTH, HEIGHT = 1024, 768


def checkpoint(model_type: str, directory: Path) -> Path:
    """Random weights at the real size in the family's file layout (v1-style families: a bare
    state_dict; SAM 2: Meta's {"model": ...} from the official config, so the 2.1 keys are there)."""
    if model_type.startswith("sam2"):
        from tests.support.oracle_sam2 import official_sam2, save_official

        return save_official(official_sam2(model_type), directory / f"{model_type}-random.pt")
    torch.manual_seed(0)
    path = directory / f"{model_type}-random.pth"
    torch.save(family_of(model_type).build(model_type).state_dict(), path)
    return path


def run_once(model_type: str, ckpt: Path, n_workers: int, args: argparse.Namespace, tmp: Path) -> float:
    """Seconds from POST /auto-annotate to the last prediction posted, for args.images tasks."""
    ls = FakeLabelStudioAPI(BRUSH_WITH_SMART_KEYPOINTS, token=LS_TOKEN)
    for task in range(1, args.images + 2):  # one more: the warm-up task
        blobs = [(0.3 + 0.04 * (task % 5), 0.4, 0.2), (0.7, 0.6, 0.15)]
        ls.add_file(f"/data/upload/1/p{task}.png", png(scene(WIDTH, HEIGHT, blobs, seed=task)))
        ls.add_task(task, {"image": f"/data/upload/1/p{task}.png"})
    with RedisServer() as redis_server:
        env = {
            "REDIS_URL": redis_server.url,
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": LS_TOKEN,
            "SAM_ENGINE": "sam",
            "SAM_MODEL": model_type,
            "SAM_CHECKPOINT": str(ckpt),
            "SAM_DEVICE": "cpu",
            "RQ_QUEUE": f"bench-{model_type}-{n_workers}",
            "ALLOW_PRIVATE_IMAGE_URLS": "true",
        }
        client = create_app(Settings.from_env(env)).test_client()
        workers = Workers(env, tmp)
        try:
            for _ in range(n_workers):
                workers.start()
            options = {"points_per_side": args.pps, "max_masks": 50}
            warm = start(client, [args.images + 1], options)
            wait(client, warm, args.timeout)
            started = time.perf_counter()
            run = start(client, list(range(1, args.images + 1)), options)
            status = wait(client, run, args.timeout)
            seconds = time.perf_counter() - started
        finally:
            workers.stop_all()
            ls.close()
    if status["state"] != "finished" or ls.count("POST", "/api/predictions/") < args.images + 1:
        raise SystemExit(f"{model_type} with {n_workers} workers did not finish cleanly: {status}")
    return seconds


def start(client, tasks: list[int], options: dict) -> str:
    response = client.post("/auto-annotate", json={"project": 1, "tasks": tasks, "options": options})
    if response.status_code != 202:
        raise SystemExit(f"POST /auto-annotate: {response.status_code} {response.get_json()}")
    return response.get_json()["run_id"]


def wait(client, run_id: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"/auto-annotate/{run_id}").get_json()
        if status["state"] in ("finished", "finished_with_errors", "failed"):
            return status
        time.sleep(0.2)
    raise SystemExit(f"run {run_id} not finished within {timeout_s} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="vit_b,sam2.1_hiera_tiny,mobile_sam")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--pps", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    logging.getLogger("backend").setLevel(logging.WARNING)  # the app's per-request log lines
    print(
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"load {os.getloadavg()[0]:.1f}; {args.images} images {WIDTH}x{HEIGHT}, AMG pps {args.pps}, random weights"
    )
    print("| SAM_MODEL | workers | seconds | images per hour |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for model_type in args.models.split(","):
            ckpt = checkpoint(model_type, tmp)
            for n in (int(w) for w in args.workers.split(",")):
                seconds = run_once(model_type, ckpt, n, args, tmp)
                print(f"| {model_type} | {n} | {seconds:.1f} | {args.images * 3600 / seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
