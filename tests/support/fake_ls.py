"""Fake Label Studios on 127.0.0.1: one that only serves task images, one that also speaks the API.

The sample requests in tests/fixtures/ls-samples point at an LS host that does not exist here;
`FakeLabelStudio` serves their image paths (and counts every request, so tests can prove a
cached click fetched nothing). `FakeLabelStudioAPI`, built on tests.support.fake_http.FakeServer (a
real HTTP server that records every request), serves task images behind the legacy token and
the JSON API the worker calls: /api/projects/<id>/, /api/tasks/<id>/, /api/tasks/?project=,
/api/predictions/ (GET ?task=, POST, DELETE <id>/). Its `predictions_down` makes the predictions
API answer 503, as LS behind a proxy does while it restarts, so tests can watch retries and
failure reports.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from tests.support.fake_http import FakeServer, Reply, Seen
from tests.support.images import png
from tests.support.samples import LS_TOKEN

JSON = {"Content-Type": "application/json"}


class FakeLabelStudio:
    """Serves images at LS paths, demands LS's token, and counts requests per path."""

    def __init__(self, token: str = LS_TOKEN):
        self.token = token
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.auth_seen: set[str] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                fake.hits[self.path] += 1
                fake.auth_seen.add(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != f"Token {fake.token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = fake.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, path: str, image: np.ndarray) -> None:
        """Serve `image` as a PNG at `path`."""
        self.files[path] = png(image)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ls_env(fake_ls: FakeLabelStudio, **extra: str) -> dict[str, str]:
    """The backend's settings for talking to this fake LS, plus `extra`."""
    return {"LABEL_STUDIO_URL": fake_ls.url, "LABEL_STUDIO_API_KEY": LS_TOKEN, **extra}


class FakeLabelStudioAPI:
    """Tasks, images and predictions of one project; counts requests by (method, path)."""

    def __init__(self, label_config: str, token: str = LS_TOKEN, project: int = 1):
        self.server = FakeServer()
        self.token = token
        self.project = project
        self.label_config = label_config
        self.tasks: dict[int, dict] = {}
        self.predictions: dict[int, dict] = {}
        self.predictions_down = False
        self._next_id = 1
        self._lock = threading.Lock()
        self.server.routes[f"/api/projects/{project}/"] = self._guard(
            lambda req: (200, JSON, json.dumps({"id": project, "label_config": self.label_config}).encode())
        )
        self.server.routes["/api/tasks/"] = self._guard(self._list_tasks)
        self.server.routes["/api/predictions/"] = self._guard(self._predictions)

    @property
    def url(self) -> str:
        return self.server.url

    def _guard(self, reply):
        def route(req: Seen) -> Reply:
            if req.headers.get("Authorization") != f"Token {self.token}":
                return 401, JSON, b'{"detail": "Invalid token."}'
            return reply(req)

        return route

    def add_file(self, path: str, body: bytes, content_type: str = "image/png") -> None:
        self.server.routes[path] = self._guard(lambda req: (200, {"Content-Type": content_type}, body))

    def add_raw_route(self, path: str, reply) -> None:
        """An unauthenticated route (redirects, foreign hosts played by LS' own server)."""
        self.server.routes[path] = reply

    def add_task(self, task_id: int, data: dict) -> dict:
        task = {"id": task_id, "project": self.project, "data": data, "annotations": [], "predictions": []}
        self.tasks[task_id] = task
        self.server.routes[f"/api/tasks/{task_id}/"] = self._guard(lambda req: (200, JSON, json.dumps(task).encode()))
        return task

    def _list_tasks(self, req: Seen) -> Reply:
        return 200, JSON, json.dumps({"tasks": list(self.tasks.values()), "total": len(self.tasks)}).encode()

    def _predictions(self, req: Seen) -> Reply:
        if self.predictions_down:
            return 503, {"Content-Type": "text/html"}, b"<html>503 Service Unavailable</html>"
        if req.method == "GET":
            task = int(req.query.get("task", ["0"])[0])
            found = [p for p in self.predictions.values() if p["task"] == task]
            return 200, JSON, json.dumps(found).encode()
        if req.method == "POST":
            body = json.loads(req.body)
            with self._lock:
                pid, self._next_id = self._next_id, self._next_id + 1
                self.predictions[pid] = {"id": pid, **body}
            self.server.routes[f"/api/predictions/{pid}/"] = self._guard(lambda r, pid=pid: self._delete(pid, r))
            return 201, JSON, json.dumps(self.predictions[pid]).encode()
        return 405, JSON, b"{}"

    def _delete(self, pid: int, req: Seen) -> Reply:
        if self.predictions_down:
            return 503, {"Content-Type": "text/html"}, b"<html>503 Service Unavailable</html>"
        if req.method != "DELETE":
            return 405, JSON, b"{}"
        self.predictions.pop(pid, None)
        return 204, {}, b""

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in list(self.server.seen) if r.method == method and r.path == path)

    def close(self) -> None:
        self.server.close()
