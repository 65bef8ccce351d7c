"""docker/docker-compose.yml as docker-compose itself resolves it (offline `config`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.autoannotate.runs import QueueRedisEvicts, check_never_evicts
from backend.settings import Settings
from sam_model import MODEL_TYPES
from tests.integration.label_studio import LS_VERSION
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "docker-compose.yml"
SETTINGS_VARS = {f.name.upper() for f in fields(Settings)}
ENTRYPOINT_VARS = {"SAM_SKIP_DOWNLOAD"}  # read by docker/entrypoint.sh, not by the app
BACKENDS = ("backend-gpu", "backend-cpu")
WORKERS = ("worker-gpu", "worker-cpu")
REDISES = ("redis-cache", "redis-queue")

pytestmark = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (make test installs it with apt-get)",
)


def compose_config(env_file: Path) -> dict[str, Any]:
    """The resolved file, blind to the caller's shell variables and any docker/.env."""
    out = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": os.environ["PATH"]},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    empty = tmp_path_factory.mktemp("compose") / ".env"
    empty.write_text("")
    return compose_config(empty)["services"]


def published(service: dict[str, Any]) -> set[int]:
    return {int(p["published"]) for p in service.get("ports", [])}


def test_services_and_ports(services: dict[str, Any]) -> None:
    assert set(services) == {"label-studio", *REDISES, *BACKENDS, *WORKERS}
    assert published(services["label-studio"]) == {8080}
    for name in BACKENDS:
        assert published(services[name]) == {9090}
    assert not any(published(services[name]) for name in (*REDISES, *WORKERS))


def test_label_studio_is_pinned_and_serves_the_shared_files(services: dict[str, Any]) -> None:
    ls = services["label-studio"]
    assert ls["image"] == f"heartexlabs/label-studio:{LS_VERSION}"  # the version the integration tests run
    env = ls["environment"]
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    root = env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    assert any(v.startswith(f"files:{root}") for v in ls["volumes"])
    for name in (*BACKENDS, *WORKERS):
        # Same path in the backend, so /data/local-files/?d=<path> resolves without HTTP.
        assert services[name]["environment"]["LOCAL_FILES_DOCUMENT_ROOT"] == root
        assert f"files:{root}:ro" in services[name]["volumes"]
    assert env["ML_BLOCK_LOCAL_IP"] == "false" and env["SSRF_PROTECTION_ENABLED"] == "false"
    # The planted token is a legacy one; LS 1.23 only accepts those when this is on.
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name in ("label-studio", *REDISES, *BACKENDS):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD"
    assert "/health" in " ".join(services["backend-cpu"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8080/health" in " ".join(services["label-studio"]["healthcheck"]["test"])


def test_start_order_waits_for_health(services: dict[str, Any]) -> None:
    for backend, worker in zip(BACKENDS, WORKERS, strict=True):
        assert services[backend]["depends_on"] == {name: {"condition": "service_healthy"} for name in REDISES}
        assert services[worker]["depends_on"] == {backend: {"condition": "service_healthy"}}


def test_backends_are_reachable_as_backend_and_wired_to_ls_and_redis(services: dict[str, Any]) -> None:
    for name in BACKENDS:
        assert "backend" in services[name]["networks"]["default"]["aliases"]
    for name in (*BACKENDS, *WORKERS):
        env = services[name]["environment"]
        assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
        assert "LABEL_STUDIO_API_KEY" in env
        assert env["REDIS_URL"] == "redis://redis-cache:6379/0"
        assert env["QUEUE_REDIS_URL"] == "redis://redis-queue:6379/0"
        assert env["RQ_QUEUE"] == Settings.rq_queue
        unknown = set(env) - SETTINGS_VARS - ENTRYPOINT_VARS
        assert not unknown, f"not read by backend/settings.py: {unknown}"


def test_gpu_variant_reserves_a_gpu_and_cpu_variant_builds_without_cuda(services: dict[str, Any]) -> None:
    for name in ("backend-gpu", "worker-gpu"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        assert services[name]["profiles"] == ["gpu"]
    for name in ("backend-cpu", "worker-cpu"):
        assert "deploy" not in services[name]
        assert services[name]["profiles"] == ["cpu"]
        assert services[name]["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu")
        assert services[name]["environment"]["SAM_DEVICE"] == "cpu"


def test_workers_run_the_job_worker_and_never_download(services: dict[str, Any]) -> None:
    for name in WORKERS:
        assert services[name]["command"] == ["python", "-m", "backend", "worker"]
        assert services[name]["environment"]["SAM_SKIP_DOWNLOAD"] == "true"


def redis_args(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    assert service["image"] == "redis:7-alpine" and command[0] == "redis-server"
    return command[1:]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (make test installs it)")
@pytest.mark.parametrize(("role", "holds_jobs"), [("redis-queue", True), ("redis-cache", False)])
def test_each_redis_as_compose_runs_it_suits_its_role(services: dict[str, Any], role: str, holds_jobs: bool) -> None:
    """Each Redis started with its compose command on a real redis-server: the backend's own check takes the
    queue one for jobs and refuses the cache one (it would evict them); both are bounded; only the queue persists."""
    args = redis_args(services[role])
    with RedisServer(*args) as server:
        client = server.client()
        settings = Settings(redis_url=server.url, queue_redis_url=server.url)
        if holds_jobs:
            check_never_evicts(client, settings)
        else:
            with pytest.raises(QueueRedisEvicts):
                check_never_evicts(client, settings)
        config = client.config_get("*")
        client.close()
    assert int(config["maxmemory"]) > 0
    # The test server turns snapshots off itself; without --save, Redis's own default takes them.
    snapshots = dict(zip(args[::2], args[1::2], strict=False)).get("--save", "redis's default") != ""
    assert (config["appendonly"] == "yes" or snapshots) == holds_jobs


def test_queue_redis_writes_to_a_named_volume_and_the_cache_to_none(services: dict[str, Any]) -> None:
    """Jobs and runs must survive restarts: the queue Redis's files (its working dir, /data) are a named volume."""
    assert "volumes" not in services["redis-cache"]
    (volume,) = services["redis-queue"]["volumes"]
    assert volume.startswith("queue-data:/data"), volume


def test_env_example_feeds_the_token_to_ls_and_backend(tmp_path: Path) -> None:
    example = (ROOT / "docker" / ".env.example").read_text()
    filled = example.replace("LABEL_STUDIO_API_KEY=\n", "LABEL_STUDIO_API_KEY=tok123\n")
    assert filled != example
    env_file = tmp_path / ".env"
    env_file.write_text(filled)
    services = compose_config(env_file)["services"]
    assert services["label-studio"]["environment"]["LABEL_STUDIO_USER_TOKEN"] == "tok123"
    assert services["backend-gpu"]["environment"]["LABEL_STUDIO_API_KEY"] == "tok123"


def test_readme_compose_steps_work_on_this_file(services: dict[str, Any]) -> None:
    """What the README tells an operator to type names things this stack has: the env file it copies,
    the profiles it starts, and the backend URL to enter in LS (an alias of each backend, its container port)."""
    readme = (ROOT / "README.md").read_text()
    copied = re.findall(r"cp (docker/\S+) docker/\.env", readme)
    assert copied and all((ROOT / path).is_file() for path in copied), copied
    profiles = set(re.findall(r"--profile (\w+)", readme))
    assert profiles and profiles <= {p for service in services.values() for p in service.get("profiles", [])}
    hosts = set(re.findall(r"http://(backend):(\d+)", readme))
    assert hosts, "the README names no backend URL for LS"
    for name in BACKENDS:
        aliases = services[name]["networks"]["default"]["aliases"]
        ports = {int(p["target"]) for p in services[name]["ports"]}
        for host, port in hosts:
            assert host in aliases and int(port) in ports, (name, host, port)


def test_each_profile_serves_one_model_its_worker_shares(services: dict[str, Any]) -> None:
    """The embedding cache keys on the model: a worker on another model than its backend would
    never hit it. The light SAM 2.1 tiny on CPU, SAM 2.1 large on a GPU (README: model table)."""
    models = {name: services[name]["environment"]["SAM_MODEL"] for name in (*BACKENDS, *WORKERS)}
    assert models == {
        "backend-gpu": "sam2.1_hiera_large",
        "worker-gpu": "sam2.1_hiera_large",
        "backend-cpu": "sam2.1_hiera_tiny",
        "worker-cpu": "sam2.1_hiera_tiny",
    }
    assert all(model in MODEL_TYPES for model in models.values())
