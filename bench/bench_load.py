"""Team load: N simulated annotators on one backend (gunicorn + Redis), every answer checked.

    python bench/bench_load.py                      # 16 annotators x 20 clicks, GrabCut engine
    python bench/bench_load.py --engine sam         # tiny random-weight SAM (built on the fly)
    python bench/bench_load.py --engine sam --sam-model vit_b --checkpoint checkpoints/sam_vit_b_01ec64.pth

Each annotator (a thread, its own seeded RNG) opens tasks the way LS does (a /predict
without context, which queues the image's encode) and clicks with think time between
actions; clicks on one object accumulate into one context (LS resends every unaccepted
point), so refinement from the previous click's logits is exercised too. Everything runs on
127.0.0.1: a throwaway redis-server, a fake LS serving the images, gunicorn from the repo's
gunicorn.conf.py.

Correctness first: every click's answer must equal the same click computed alone,
sequentially, on a fresh backend before the load (its own Redis database), and again on the
loaded backend after it. Any error or mismatch makes the exit status 1.

Printed: click latency p50/p95/p99 for cache hits (every click after a task's first),
the first click on each task and its encoder wait (first-click latency minus the median hit
latency: time spent waiting for the image's first encode), and throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.fake_ls import FakeLabelStudio, ls_env  # noqa: E402
from tests.support.images import scene  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.samples import sample  # noqa: E402
from tests.support.servers import Backend  # noqa: E402

CONFIG = sample("predict_interactive_request.json")["label_config"]
MAX_POINTS_PER_OBJECT = 3
REQUEST_TIMEOUT_S = 300


@dataclass(frozen=True)
class LoadConfig:
    annotators: int = 16
    clicks: int = 20  # per annotator
    tasks_per_annotator: int = 4
    images: int = 24  # the pool the annotators' tasks come from (overlaps are shared images)
    width: int = 320  # GrabCut's per-click cost grows with pixels (it is the 'decoder' here)
    height: int = 240
    think_min_s: float = 0.2
    think_max_s: float = 1.0
    seed: int = 0
    engine: str = "grabcut"  # grabcut | sam
    sam_model: str = "tiny"
    checkpoint: str = ""
    workers: int = 1
    threads: int = 8


@dataclass(frozen=True)
class Action:
    kind: str  # open | click
    task: int
    think_s: float
    context: tuple = ()  # click: the regions LS sends (every unaccepted point of the object)
    first: bool = False  # click: the first click on this task (its image may still be encoding)


@dataclass
class Outcome:
    annotator: int
    index: int
    action: Action
    status: int = 0
    seconds: float = 0.0
    rle: tuple | None = None
    error: str = ""


@dataclass
class Report:
    config: LoadConfig
    outcomes: list[Outcome] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    server_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def clicks(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action.kind == "click"]

    @property
    def errors(self) -> list[str]:
        return [
            f"annotator {o.annotator} #{o.index} {o.action.kind} task {o.action.task}: {o.status} {o.error}"
            for o in self.outcomes
            if o.error or o.status != 200
        ]


# ---- the scenario ------------------------------------------------------------------------------


def blobs_of(image_index: int) -> list[tuple[float, float, float]]:
    """Objects (x%, y%, radius px) drawn in image `image_index`; clicks land on them."""
    rng = random.Random(1000 + image_index)
    return [(rng.uniform(15, 85), rng.uniform(15, 85), rng.uniform(25, 60)) for _ in range(3)]


def image_path(index: int) -> str:
    return f"/data/upload/1/team-{index:03d}.png"


def task_of(index: int) -> dict:
    return {"id": 1000 + index, "data": {"image": image_path(index)}}


def keypoint(cfg: LoadConfig, x: float, y: float, positive: bool, n: int) -> dict:
    return {
        "original_width": cfg.width,
        "original_height": cfg.height,
        "image_rotation": 0,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": ["Banana"]},
        "is_positive": positive,
        "id": f"kp{n}",
        "from_name": "tag2",
        "to_name": "image",
        "type": "keypointlabels",
        "origin": "manual",
    }


def plan(cfg: LoadConfig, annotator: int) -> list[Action]:
    """One annotator's session: open a task, click its objects (1-3 points each), next task."""
    rng = random.Random(cfg.seed * 1_000_003 + annotator)
    tasks = rng.sample(range(cfg.images), min(cfg.tasks_per_annotator, cfg.images))
    per_task = [cfg.clicks // len(tasks) + (1 if i < cfg.clicks % len(tasks) else 0) for i in range(len(tasks))]
    actions: list[Action] = []
    for task, n_clicks in zip(tasks, per_task, strict=True):
        actions.append(Action("open", task, rng.uniform(cfg.think_min_s, cfg.think_max_s)))
        context: list[dict] = []
        blobs = blobs_of(task)
        for n in range(n_clicks):
            if not context or len(context) >= MAX_POINTS_PER_OBJECT or rng.random() < 0.4:
                context = []  # a new object: the previous region was accepted
                bx, by, _ = rng.choice(blobs)
                point = keypoint(cfg, bx + rng.uniform(-1, 1), by + rng.uniform(-1, 1), True, n)
            else:  # refine: a positive point near the object or a negative one away from it
                positive = rng.random() < 0.5
                bx, by, _ = blobs[0] if positive else blobs[-1]
                point = keypoint(
                    cfg, min(99, max(1, bx + rng.uniform(-2, 2))), min(99, max(1, by + rng.uniform(-2, 2))), positive, n
                )
            context.append(point)
            actions.append(
                Action("click", task, rng.uniform(cfg.think_min_s, cfg.think_max_s), tuple(context), first=(n == 0))
            )
    return actions


def body_of(cfg: LoadConfig, action: Action) -> dict:
    context = {"result": list(action.context)} if action.kind == "click" else None
    return {
        "tasks": [task_of(action.task)],
        "project": "1.1",
        "label_config": CONFIG,
        "params": {"login": None, "password": None, "context": context},
    }


def send(url: str, cfg: LoadConfig, action: Action, outcome: Outcome, session: requests.Session) -> None:
    started = time.perf_counter()
    try:
        response = session.post(url + "/predict", json=body_of(cfg, action), timeout=REQUEST_TIMEOUT_S)
        outcome.status = response.status_code
        if response.status_code != 200:
            outcome.error = response.text[:300]
        elif action.kind == "click":
            regions = response.json()["results"][0]["result"]
            outcome.rle = tuple(tuple(r["value"]["rle"]) for r in regions)
    except (requests.RequestException, ValueError, KeyError, IndexError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.seconds = time.perf_counter() - started


def run_annotator(
    url: str, cfg: LoadConfig, annotator: int, actions: list[Action], out: list[Outcome], start: threading.Barrier
) -> None:
    session = requests.Session()
    start.wait()
    for index, action in enumerate(actions):
        time.sleep(action.think_s)
        outcome = Outcome(annotator, index, action)
        send(url, cfg, action, outcome, session)
        out.append(outcome)


def replay_alone(url: str, cfg: LoadConfig, plans: list[list[Action]]) -> dict[tuple[int, int], tuple | None]:
    """Every click sent one at a time, no think time, no task opening: the answer 'alone'."""
    answers: dict[tuple[int, int], tuple | None] = {}
    session = requests.Session()
    for annotator, actions in enumerate(plans):
        for index, action in enumerate(actions):
            if action.kind != "click":
                continue
            outcome = Outcome(annotator, index, action)
            send(url, cfg, action, outcome, session)
            if outcome.error or outcome.status != 200:
                raise RuntimeError(f"sequential replay failed: {outcome.status} {outcome.error}")
            answers[(annotator, index)] = outcome.rle
    return answers


# ---- the stack ---------------------------------------------------------------------------------


def tiny_checkpoint(directory: Path) -> str:
    import torch

    from sam_model.sam1.build import build_sam

    torch.manual_seed(0)
    path = directory / "sam_tiny_bench.pth"
    torch.save(build_sam("tiny").state_dict(), path)
    return str(path)


def metrics_of(url: str) -> dict[str, float]:
    """The sums of a few /metrics samples (cache levels per source, encoder/decoder counts)."""
    wanted = (
        "sam_embedding_cache_total",
        "sam_encoder_seconds_count",
        "sam_encoder_seconds_sum",
        "sam_decoder_seconds_count",
        "sam_decoder_seconds_sum",
        "sam_warmup_dropped_total",
        "sam_refine_logits_total",
    )
    found: dict[str, float] = {}
    for line in requests.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(wanted):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def run_load(cfg: LoadConfig, workdir: Path, log=print) -> Report:
    """Start Redis, a fake LS and two backends; replay alone, run the team, replay again, compare."""
    ls = FakeLabelStudio()
    for i in range(cfg.images):
        ls.add(image_path(i), scene(cfg.width, cfg.height, blobs_of(i), seed=i))
    env = ls_env(ls, SAM_ENGINE=cfg.engine, WORKERS=str(cfg.workers), THREADS=str(cfg.threads), LOG_LEVEL="WARNING")
    if cfg.engine == "sam":
        env.update(SAM_MODEL=cfg.sam_model, SAM_CHECKPOINT=cfg.checkpoint or tiny_checkpoint(workdir))
    plans = [plan(cfg, a) for a in range(cfg.annotators)]
    report = Report(cfg)
    redis_server = RedisServer().start()
    servers: list[Backend] = []
    try:
        alone_server = Backend({**env, "REDIS_URL": redis_server.url[:-1] + "1"}, workdir / "alone.log")
        servers.append(alone_server)
        log(f"replaying {sum(a.kind == 'click' for p in plans for a in p)} clicks alone (before) ...")
        before = replay_alone(alone_server.url, cfg, plans)
        alone_server.stop()
        server = Backend({**env, "REDIS_URL": redis_server.url}, workdir / "load.log")
        servers.append(server)
        log(f"{cfg.annotators} annotators x {cfg.clicks} clicks ({cfg.engine}) ...")
        outcomes: list[Outcome] = []
        barrier = threading.Barrier(cfg.annotators + 1)
        threads = [
            threading.Thread(target=run_annotator, args=(server.url, cfg, a, plans[a], outcomes, barrier))
            for a in range(cfg.annotators)
        ]
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        report.wall_s = time.perf_counter() - started
        report.outcomes = sorted(outcomes, key=lambda o: (o.annotator, o.index))
        report.server_metrics = metrics_of(server.url)
        log("replaying alone (after) ...")
        after = replay_alone(server.url, cfg, plans)
        for o in report.clicks:
            key = (o.annotator, o.index)
            if o.status == 200 and not (o.rle == before[key] == after[key]):
                report.mismatches.append(
                    f"annotator {o.annotator} click #{o.index} (task {o.action.task}): "
                    f"load {'==' if o.rle == before[key] else '!='} before, "
                    f"{'==' if o.rle == after[key] else '!='} after"
                )
    finally:
        for server in servers:
            server.stop()
        redis_server.close()
        ls.close()
    return report


# ---- reporting ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(report: Report) -> dict[str, Any]:
    clicks = report.clicks
    hits = [o.seconds for o in clicks if not o.action.first and o.status == 200]
    firsts = [o.seconds for o in clicks if o.action.first and o.status == 200]
    opens = [o.seconds for o in report.outcomes if o.action.kind == "open" and o.status == 200]
    hit_median = statistics.median(hits) if hits else 0.0
    waits = [max(0.0, s - hit_median) for s in firsts]
    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    return {
        "annotators": report.config.annotators,
        "clicks": len(clicks),
        "opens": len(opens),
        "errors": len(report.errors),
        "mismatches": len(report.mismatches),
        "hit_ms": {
            "n": len(hits),
            "p50": ms(percentile(hits, 50)),
            "p95": ms(percentile(hits, 95)),
            "p99": ms(percentile(hits, 99)),
            "max": ms(max(hits, default=float("nan"))),
        },
        "first_click_ms": {
            "n": len(firsts),
            "p50": ms(percentile(firsts, 50)),
            "p95": ms(percentile(firsts, 95)),
            "max": ms(max(firsts, default=float("nan"))),
        },
        "encoder_wait_ms": {
            "mean": ms(statistics.fmean(waits)) if waits else None,
            "p95": ms(percentile(waits, 95)),
            "max": ms(max(waits, default=float("nan"))),
        },
        "open_ms": {"p50": ms(percentile(opens, 50)), "p95": ms(percentile(opens, 95))},
        "wall_s": round(report.wall_s, 1),
        "throughput": {
            "clicks_per_s": round(len(clicks) / report.wall_s, 2) if report.wall_s else None,
            "requests_per_s": round(len(report.outcomes) / report.wall_s, 2) if report.wall_s else None,
        },
        "server": report.server_metrics,
        "server_note": "one gunicorn worker's counters (each worker has its own registry)"
        if report.config.workers > 1
        else "the only worker's counters",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = LoadConfig()
    parser.add_argument("--annotators", type=int, default=defaults.annotators)
    parser.add_argument("--clicks", type=int, default=defaults.clicks, help="per annotator")
    parser.add_argument("--tasks-per-annotator", type=int, default=defaults.tasks_per_annotator)
    parser.add_argument("--images", type=int, default=defaults.images)
    parser.add_argument("--size", default=f"{defaults.width}x{defaults.height}", help="WxH of the task images")
    parser.add_argument("--think", default=f"{defaults.think_min_s}-{defaults.think_max_s}", help="seconds, min-max")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--engine", choices=("grabcut", "sam"), default=defaults.engine)
    parser.add_argument("--sam-model", default=defaults.sam_model, help="tiny (random, built here) | vit_b | ...")
    parser.add_argument("--checkpoint", default="", help="SAM state_dict; default: random tiny weights")
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--json", help="also write the summary here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    think_min, think_max = (float(v) for v in args.think.split("-"))
    if args.engine == "sam" and args.sam_model != "tiny" and not args.checkpoint:
        parser.error("--sam-model other than tiny needs --checkpoint")
    cfg = LoadConfig(
        args.annotators,
        args.clicks,
        args.tasks_per_annotator,
        args.images,
        width,
        height,
        think_min,
        think_max,
        args.seed,
        args.engine,
        args.sam_model,
        args.checkpoint,
        args.workers,
        args.threads,
    )
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        report = run_load(cfg, Path(tmp), log=lambda m: print(m, file=sys.stderr, flush=True))
    result = summary(report)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(json.dumps(result, indent=2))
    for line in report.errors[:20] + report.mismatches[:20]:
        print("  " + line)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 1 if report.errors or report.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
