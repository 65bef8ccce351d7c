"""docker/Dockerfile and docker/entrypoint.sh, checked without a Docker engine."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_gpu_base_by_default_with_a_cpu_build_arg() -> None:
    assert instructions("ARG")[0] == "BASE_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04"
    assert instructions("FROM") == ["${BASE_IMAGE}"]
    assert "TORCH_INDEX_URL=" in instructions("ARG")


def test_runs_as_an_unprivileged_user() -> None:
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")


def test_healthcheck_hits_health() -> None:
    (check,) = instructions("HEALTHCHECK")
    assert "/health" in check and "--start-period" in check


def test_gunicorn_loads_the_model_after_fork() -> None:
    assert "--preload" not in DOCKERFILE
    assert instructions("CMD") == ['["gunicorn", "-c", "gunicorn.conf.py", "_wsgi:app"]']
    assert re.search(r"^preload_app\s*=\s*False", (ROOT / "gunicorn.conf.py").read_text(), re.MULTILINE)


def test_gunicorn_serves_through_the_slow_client_safe_worker() -> None:
    """gthread would let slow clients hold request threads (see backend/web/server.py)."""
    import runpy

    from gunicorn.config import Config

    from backend.web.server import WaitressWorker

    config = Config()
    config.set("worker_class", runpy.run_path(str(ROOT / "gunicorn.conf.py"))["worker_class"])
    assert config.worker_class is WaitressWorker
    assert re.search(r"^waitress==", (ROOT / "requirements.txt").read_text(), re.MULTILINE)


def test_no_weights_or_venv_in_the_build_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for pattern in (".git", ".venv", "checkpoints/*.pth", "checkpoints/*.part", "docker/.env"):
        assert pattern in ignored


def run_entrypoint(tmp_path: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run([str(ENTRYPOINT), *command], cwd=tmp_path, env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_entrypoint_skips_the_download_for_grabcut_and_the_worker(tmp_path: Path) -> None:
    assert run_entrypoint(tmp_path, "echo", "started", SAM_ENGINE="grabcut").stdout == "started\n"
    assert run_entrypoint(tmp_path, "echo", "started", SAM_SKIP_DOWNLOAD="true").stdout == "started\n"
    assert run_entrypoint(tmp_path, "echo", "started", SAM_CHECKPOINT="/x.pth").stdout == "started\n"
    assert not (tmp_path / "checkpoints").exists()


def test_entrypoint_stops_when_there_is_no_checkpoint(tmp_path: Path) -> None:
    # An unknown model cannot be fetched: the command must not start in SAM's place.
    out = run_entrypoint(tmp_path, "echo", "started", SAM_MODEL="vit_x")
    assert out.returncode == 2 and "started" not in out.stdout
    assert "invalid choice: 'vit_x'" in out.stderr and "SAM_ENGINE=grabcut" in out.stderr
