"""A real Label Studio 1.23.2 for integration tests: its own venv, a fresh SQLite data dir, one API token.

Why a real LS and not the captured samples: only LS itself shows what it sends when it
connects a backend, calls it from "Retrieve predictions" or the labeling UI's smart tools,
and what it accepts back (stored predictions, local-files permissions, token kinds).

LS lives in a separate venv (tests/integration/install_label_studio.sh) because its pins
(Django, DRF, boto, ...) would fight the backend's own. The tests talk to it over HTTP only.

Facts of LS 1.23.2 this module relies on (read in the installed package):
- `label-studio start --username U --password P --user-token T --enable-legacy-api-token`
  creates the user and its organization with legacy tokens on, and sets the user's token to T
  (server.py `_create_user`); the env LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true does the same.
- /data/local-files/?d=<rel> is served only with LOCAL_FILES_SERVING_ENABLED=true, and only
  for files under a LocalFilesImportStorage path of a project the user can see
  (io_storages/localfiles/views.py), so tests add such a storage before importing tasks.
- An ML backend on 127.0.0.1 is reachable only with ML_BLOCK_LOCAL_IP=false and
  SSRF_PROTECTION_ENABLED=false.
- Prediction validation against the label config is behind the feature flag
  fflag_feat_utc_210_prediction_validation_15082025 (off by default); flags can be forced by an
  environment variable of the same name, and here it is ON so LS checks what we send it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.net import free_port

LS_VERSION = "1.23.2"
REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "tests" / "integration" / "install_label_studio.sh"
PREDICTION_VALIDATION_FLAG = "fflag_feat_utc_210_prediction_validation_15082025"


def ls_venv() -> Path:
    """Where install_label_studio.sh puts LS (same default, same LS_VENV override)."""
    default = Path.home() / ".cache" / "sam-backend" / f"ls-venv-{LS_VERSION}"
    return Path(os.environ.get("LS_VENV") or default)


def installed() -> bool:
    venv = ls_venv()
    return (venv / f".installed-label-studio-{LS_VERSION}").is_file() and (venv / "bin" / "label-studio").is_file()


class LabelStudioError(AssertionError):
    """LS answered something a test did not expect; carries the body so failures explain themselves."""


class LabelStudio:
    """One `label-studio start` process on 127.0.0.1 with a legacy API token, plus API helpers."""

    def __init__(self, data_dir: Path, files_root: Path, log_path: Path, extra_env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.files_root = files_root
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.username = "sam-tests@example.com"
        self.password = secrets.token_hex(12)  # token_urlsafe may start with "-": argparse then reads it as an option
        self.token = secrets.token_hex(20)  # 40 hex chars: the shape of an LS legacy token
        self.startup_s = 0.0
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Token {self.token}"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LABEL_STUDIO", "DJANGO", "SAM_", "REDIS", "VIRTUAL_ENV", "PYTHON"))
        }
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(
                    data_dir
                ),  # else LS's settings import creates ~/.local/share/label-studio
                "LOCAL_FILES_SERVING_ENABLED": "true",
                "LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
                "ML_BLOCK_LOCAL_IP": "false",
                "SSRF_PROTECTION_ENABLED": "false",
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                "LATEST_VERSION_CHECK": "false",  # no internet here; LS would try PyPI
                "COLLECT_ANALYTICS": "false",
                # This 2-core CI box is shared and heavily loaded: LS's 1 s /health and 3 s /setup
                # limits would make connecting flaky for reasons that are not the backend's. The
                # backend's own latency is measured by the HTTP tests.
                "ML_TIMEOUT_HEALTH": "15",
                "ML_TIMEOUT_SETUP": "15",
                PREDICTION_VALIDATION_FLAG: "true",
            }
        )
        env.update(extra_env or {})
        self._env = env
        self._log = open(log_path, "ab")
        self.proc: subprocess.Popen | None = None

    # ---- process ------------------------------------------------------------------------------

    def start(self, timeout_s: float = 240.0) -> LabelStudio:
        """Start LS and wait for /health and for the token to work (migrations run on first start)."""
        binary = ls_venv() / "bin" / "label-studio"
        args = [
            str(binary),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--username",
            self.username,
            "--password",
            self.password,
            "--user-token",
            self.token,
            "--enable-legacy-api-token",
            "--log-level",
            "WARNING",
        ]
        started = time.monotonic()
        self.proc = subprocess.Popen(
            args,
            cwd=self.data_dir,
            env=self._env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = started + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"label-studio exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"label-studio did not answer on {self.url} in {timeout_s} s:\n{self.log_tail()}")
            try:
                if (
                    requests.get(self.url + "/health", timeout=2).ok
                    and self.session.get(self.url + "/api/current-user/whoami", timeout=5).ok
                ):
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log_tail(self, chars: int = 6000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    # ---- HTTP ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, expect: tuple[int, ...] = (200, 201), **kw: Any) -> Any:
        """One API call with the token; an unexpected status fails with LS's answer in the message."""
        kw.setdefault("timeout", 180)
        resp = self.session.request(method, self.url + path, **kw)
        if resp.status_code not in expect:
            raise LabelStudioError(f"{method} {path} -> HTTP {resp.status_code}: {resp.text[:3000]}")
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json() if "json" in resp.headers.get("Content-Type", "") else resp.content

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json=body, **kw) if body is not None else self.request("POST", path, **kw)

    # ---- API helpers (each is what a user's click in the LS UI does) -----------------------

    def create_project(self, title: str, label_config: str) -> int:
        return self.post("/api/projects", {"title": title, "label_config": label_config})["id"]

    def upload_images(self, project: int, files: dict[str, bytes]) -> list[int]:
        """The "Import" dialog with image files: LS stores them and makes one task per file.

        LS reads request.FILES as a dict, so each file needs its own form field name (one
        shared "files" field would import only the last file)."""
        multipart = [(name, (name, data, "image/png")) for name, data in files.items()]
        before = set(self.task_ids(project))
        self.post(f"/api/projects/{project}/import", files=multipart)
        ids = sorted(set(self.task_ids(project)) - before)
        if len(ids) != len(files):
            raise LabelStudioError(f"uploading {len(files)} files made {len(ids)} tasks")
        return ids

    def import_tasks(self, project: int, tasks: list[dict]) -> list[int]:
        """Import JSON tasks (e.g. with /data/local-files/ URLs); returns the new task ids in order."""
        before = set(self.task_ids(project))
        self.post(f"/api/projects/{project}/import", tasks)
        return sorted(set(self.task_ids(project)) - before)

    def add_local_storage(self, project: int, path: Path) -> int:
        """Local-files storage: without one covering the file, LS answers /data/local-files/ with 404."""
        body = {"project": project, "path": str(path), "title": "local files", "use_blob_urls": True}
        return self.post("/api/storages/localfiles", body)["id"]

    def task_ids(self, project: int) -> list[int]:
        ids: list[int] = []
        page = 1
        while True:
            body = self.get(f"/api/tasks?project={project}&page={page}&page_size=100")
            tasks = body["tasks"] if isinstance(body, dict) else body
            ids.extend(t["id"] for t in tasks)
            if len(tasks) < 100:
                return sorted(ids)
            page += 1

    def task(self, task_id: int) -> dict:
        return self.get(f"/api/tasks/{task_id}/")

    def predictions(self, task_id: int) -> list[dict]:
        body = self.get(f"/api/predictions/?task={task_id}")
        return body["results"] if isinstance(body, dict) else body

    def connect_ml(self, project: int, url: str, title: str = "SAM") -> dict:
        """Settings -> Model -> Connect: LS calls the backend's /health and /setup right here."""
        return self.post(
            "/api/ml", {"url": url, "project": project, "title": title, "is_interactive": True, "auth_method": "NONE"}
        )

    def interactive(self, ml_id: int, task_id: int, context: dict) -> dict:
        """What the labeling UI posts on every smart click; LS relays it to the backend's /predict."""
        return self.post(f"/api/ml/{ml_id}/interactive-annotating", {"task": task_id, "context": context})

    def retrieve_predictions(self, project: int, task_ids: list[int]) -> dict:
        """Data Manager: select tasks -> Actions -> Retrieve Predictions."""
        body = {"selectedItems": {"all": False, "included": task_ids}}
        return self.post(f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}", body)
