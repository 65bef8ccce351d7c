"""Progress of auto-annotate runs, kept in Redis so any web process can answer GET /auto-annotate/<id>.

Tasks are tracked as set members, not counters: a task redone after a worker died is
counted once, and a task that failed and then succeeded on retry counts as done.

Run ids are 32 lowercase hex digits (`new_run_id`); any other string names no run. Keys are
built from run ids, so without that check `<id>:done` would name a real run's set of done
tasks and be read as a run record (a 500 from Redis' WRONGTYPE).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import redis

from backend.autoannotate.annotator import RunSpec

PREFIX = "sam:aa:"
ERRORS_SHOWN = 100
RUN_ID = re.compile(r"[0-9a-f]{32}")


def new_run_id() -> str:
    return uuid.uuid4().hex


def is_run_id(value: str) -> bool:
    """True for ids `new_run_id` makes; GET /auto-annotate/<anything else> is a 404 without touching Redis."""
    return RUN_ID.fullmatch(value) is not None


class RunProgress:
    """One Redis hash per run plus a set of done tasks and a hash of failed ones."""

    def __init__(self, connection: redis.Redis, ttl_s: int = 7 * 24 * 3600):
        self.redis = connection
        self.ttl_s = ttl_s

    def _keys(self, run_id: str) -> tuple[str, str, str, str]:
        if not is_run_id(run_id):
            raise ValueError(f"not an auto-annotate run id: {run_id[:64]!r}")
        base = PREFIX + run_id
        return base, base + ":done", base + ":failed", base + ":seconds"

    def create(self, run_id: str, total: int, planning: bool, spec: RunSpec) -> None:
        meta, *_ = self._keys(run_id)
        self.redis.hset(
            meta,
            mapping={
                "project": spec.project,
                "total": total,
                "planning": int(planning),
                "created_at": time.time(),
                "spec": spec.to_json(),
            },
        )
        self.redis.expire(meta, self.ttl_s)

    def add_tasks(self, run_id: str, count: int) -> None:
        self.redis.hincrby(self._keys(run_id)[0], "total", count)

    def planning_done(self, run_id: str, error: str = "") -> None:
        self.redis.hset(self._keys(run_id)[0], mapping={"planning": 0, "planning_error": error})

    def mark_done(self, run_id: str, task_id: int, seconds: float) -> None:
        meta, done, failed, timings = self._keys(run_id)
        with self.redis.pipeline() as pipe:
            pipe.sadd(done, task_id)
            pipe.hdel(failed, task_id)
            pipe.hset(timings, task_id, round(seconds, 3))
            for key in (done, failed, timings):
                pipe.expire(key, self.ttl_s)
            pipe.hset(meta, "updated_at", time.time())
            pipe.execute()

    def mark_failed(self, run_id: str, task_id: int, error: str) -> None:
        meta, done, failed, _ = self._keys(run_id)
        with self.redis.pipeline() as pipe:
            pipe.srem(done, task_id)
            pipe.hset(failed, task_id, error)
            pipe.expire(failed, self.ttl_s)
            pipe.hset(meta, "updated_at", time.time())
            pipe.execute()

    def spec(self, run_id: str) -> RunSpec | None:
        """The run's spec, None when the run expired; RunSpecInvalid when what Redis holds is not one."""
        raw = self.redis.hget(self._keys(run_id)[0], "spec")
        return RunSpec.from_json(raw) if raw else None

    def status(self, run_id: str) -> dict[str, Any] | None:
        """The run's state and counts, or None when no such run exists (or it expired, or `run_id` is no run id)."""
        if not is_run_id(run_id):
            return None
        meta_key, done_key, failed_key, timings_key = self._keys(run_id)
        meta = {k.decode(): v.decode() for k, v in self.redis.hgetall(meta_key).items()}
        if not meta:
            return None
        done = self.redis.scard(done_key)
        failed = {int(k): v.decode() for k, v in self.redis.hgetall(failed_key).items()}
        seconds = [float(v) for v in self.redis.hvals(timings_key)]
        total = int(meta["total"])
        planning = meta.get("planning") == "1"
        if meta.get("planning_error"):
            state = "failed"
        elif not planning and done + len(failed) >= total:
            state = "finished" if not failed else "finished_with_errors"
        else:
            state = "running" if done or failed else "queued"
        created = float(meta["created_at"])
        return {
            "run_id": run_id,
            "state": state,
            "project": int(meta["project"]),
            "total": total,
            "done": done,
            "failed": len(failed),
            "planning": planning,
            "planning_error": meta.get("planning_error") or None,
            "errors": [{"task": t, "error": e} for t, e in sorted(failed.items())[:ERRORS_SHOWN]],
            "timings": {
                "elapsed_s": round(float(meta.get("updated_at", created)) - created, 3),
                "task_mean_s": round(sum(seconds) / len(seconds), 3) if seconds else None,
                "task_max_s": max(seconds) if seconds else None,
            },
        }
