"""The backend's own processes as production runs them: gunicorn serving `_wsgi:app`, and the RQ worker.

Real processes rather than in-process apps because only they show forking, threads, body
limits and logging as production has them. Each writes its output to a log file the test can
read, and takes only the environment given (plus harmless defaults), never the caller's
SAM_*/REDIS*/LABEL_STUDIO* settings.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
_CALLER_SETTINGS = ("SAM_", "REDIS", "LABEL_STUDIO", "BASIC_AUTH")


class _LoggedProcess:
    """A child process of this repo writing to `log_path`; stop() sends `stop_signal`, then kills after a while."""

    stop_signal = signal.SIGTERM
    stop_timeout_s = 15.0

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(_CALLER_SETTINGS)}
        full_env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"}, **env)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(command, cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Backend(_LoggedProcess):
    """One gunicorn process serving `_wsgi:app` with the given environment, ready when constructed."""

    stop_signal = signal.SIGINT  # quick shutdown; the tests do not need a graceful one

    def __init__(self, env: dict[str, str], log_path: Path, auth: tuple[str, str] | None = None):
        self.auth = auth
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        defaults = {"PORT": str(self.port), "WORKERS": "1", "THREADS": "8"}
        # Loopback only: the command line's --bind overrides gunicorn.conf.py's 0.0.0.0.
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}"]
        super().__init__(command, {**defaults, **env}, log_path)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}):\n{self.log()}")
            try:
                health = requests.get(self.url + "/health", timeout=1, auth=self.auth)
                if health.status_code == 200 and health.json().get("model_loaded"):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        output = self.log()  # read before stop() closes the log file
        self.stop()
        raise RuntimeError(f"gunicorn did not become ready:\n{output}")

    def post(self, path: str, body: object, **kw) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=120, auth=self.auth, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=30, auth=self.auth, **kw)

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample in /metrics (0 when absent)."""
        text = self.get("/metrics").text
        for line in text.splitlines():
            match = re.match(r"^([a-zA-Z_:]+)(\{.*\})? (\S+)$", line)
            if not match or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(match.group(3))
        return 0.0


class Worker(_LoggedProcess):
    """`python -m backend worker`: an RQ worker process with the backend's environment."""

    stop_timeout_s = 30.0  # SIGTERM is RQ's warm shutdown: finish the job, then exit

    def __init__(self, env: dict[str, str], log_path: Path):
        super().__init__([sys.executable, "-m", "backend", "worker"], env, log_path)
