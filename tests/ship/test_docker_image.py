"""docker/Dockerfile, docker/entrypoint.sh and .dockerignore, checked by what they do, without a Docker engine.

The Dockerfile is read the way `docker build` reads it (line continuations, ARG defaults and
--build-arg overrides, the last USER/CMD wins), then its parts are run here: the CMD through
gunicorn's own argument and config-file parsing, the HEALTHCHECK command against a local
server, the entrypoint as a shell script, .dockerignore against the files the image needs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from gunicorn.app.wsgiapp import WSGIApplication

from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
COMPOSE = ROOT / "docker" / "docker-compose.yml"


def instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) in order, continuation lines joined and comments dropped, as docker parses them."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def last(keyword: str) -> str:
    (value, *_) = [rest for kw, rest in reversed(instructions()) if kw == keyword] or [""]
    return value


def declared_args() -> dict[str, str]:
    """Every ARG with its default ('' when it has none)."""
    return dict((rest.split("=", 1) + [""])[:2] for kw, rest in instructions() if kw == "ARG")


def base_image(build_args: dict[str, str]) -> str:
    """The image FROM resolves to, given --build-arg values (only ARGs declared before FROM apply)."""
    values: dict[str, str] = {}
    for keyword, rest in instructions():
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            values[name] = build_args.get(name, default)
        elif keyword == "FROM":
            return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), ""), rest)
    raise AssertionError("the Dockerfile has no FROM")


def compose_build_args() -> dict[str, dict[str, str]]:
    """The build args each compose service passes to this Dockerfile (anchors resolved by YAML)."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    return {
        name: dict(service["build"].get("args") or {})
        for name, service in services.items()
        if isinstance(service.get("build"), dict) and service["build"].get("dockerfile") == "docker/Dockerfile"
    }


def test_default_build_is_cuda_and_every_compose_variant_selects_its_base() -> None:
    assert base_image({}).startswith("nvidia/cuda:")
    variants = compose_build_args()
    assert variants, "compose builds nothing from docker/Dockerfile"
    declared = declared_args()
    for service, args in variants.items():
        # docker build ignores an undeclared --build-arg: a renamed ARG would quietly build the GPU image.
        assert set(args) <= set(declared), f"{service} passes build args the Dockerfile never declares"
        cpu = service.endswith("-cpu")
        assert base_image(args).startswith("nvidia/cuda:") != cpu, service
        if cpu:
            assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")


def test_runs_as_an_unprivileged_user() -> None:
    assert last("USER") not in ("", "root", "0")


def run_cmd_through_gunicorn(monkeypatch: pytest.MonkeyPatch) -> WSGIApplication:
    """What gunicorn makes of the image's CMD, with gunicorn's own parser and our config file (cwd = WORKDIR)."""
    argv = json.loads(last("CMD"))
    assert Path(argv[0]).name == "gunicorn", argv
    assert last("WORKDIR") == "/app" and ("COPY", "--chown=sam:sam . /app") in instructions()  # the repo is the cwd
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", argv)
    return WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")


def test_cmd_serves_the_app_with_our_config_and_no_preload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker loads the model after fork (CUDA never starts in the master), through the
    slow-client-safe waitress worker (gthread would let slow clients hold request threads)."""
    from backend.web.server import WaitressWorker

    app = run_cmd_through_gunicorn(monkeypatch)
    assert app.app_uri == "_wsgi:app"
    assert app.cfg.preload_app is False
    assert app.cfg.worker_class is WaitressWorker
    assert app.cfg.timeout > 100  # above LS's /predict timeout: a busy worker is not killed mid-answer
    assert json.loads(last("ENTRYPOINT")) == [f"/app/{ENTRYPOINT.relative_to(ROOT)}"]
    assert re.search(r"^waitress==", (ROOT / "requirements.txt").read_text(), re.MULTILINE)  # the image has it


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(self.status if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def run_healthcheck(port: int) -> int:
    """The HEALTHCHECK's command, run as docker runs it (exec form after CMD), with the image's PORT."""
    options, _, command = last("HEALTHCHECK").partition(" CMD ")
    assert "--start-period" in options  # the first start downloads the checkpoint before /health answers
    argv = ["sh", "-c", command]
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PORT": str(port)}
    return subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False).returncode


def test_healthcheck_passes_only_while_health_answers_200(health_server: ThreadingHTTPServer) -> None:
    port = health_server.server_address[1]
    assert run_healthcheck(port) == 0
    _Health.status = 503
    try:
        assert run_healthcheck(port) != 0
    finally:
        _Health.status = 200
    assert run_healthcheck(free_port()) != 0


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether `docker build` leaves `path` out of the context: the last matching pattern (or one
    matching a parent folder) decides, `!` re-includes, `**` spans folders (moby's patternmatcher)."""
    excluded = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = re.compile(_glob_regex(pattern.lstrip("!").strip("/")))
        if any(regex.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def _glob_regex(glob: str) -> str:
    """`**/` any folders (none included), `**` anything, `*` and `?` within one path element."""
    tokens = re.split(r"(\*\*/|\*\*|\*|\?)", glob)
    wild = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return "".join(wild.get(token, re.escape(token)) for token in tokens)


def test_build_context_holds_the_app_but_no_weights_venvs_or_secrets() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for left_out in (
        ".git/HEAD",
        ".venv/bin/python",
        "checkpoints/sam_vit_b_01ec64.pth",
        "checkpoints/sam2.1_hiera_tiny.pt",
        "checkpoints/x.pth.part",
        "docker/.env",
        "backend/__pycache__/app.cpython-311.pyc",
        "tests/conftest.py",
    ):
        assert dockerignored(left_out, patterns), left_out
    needed = ["requirements.txt", "gunicorn.conf.py", "_wsgi.py", str(ENTRYPOINT.relative_to(ROOT))]
    needed += [str(p.relative_to(ROOT)) for p in [*ROOT.glob("backend/**/*.py"), *ROOT.glob("sam_model/**/*.py")]]
    kept_out = [path for path in needed if dockerignored(path, patterns)]
    assert not kept_out, f"the image needs these, .dockerignore drops them: {kept_out[:5]}"


def test_the_ignore_matcher_follows_docker() -> None:
    """The matcher above, on the rules the context test relies on (else that test proves nothing)."""
    assert dockerignored("a/b/c.pyc", ["**/*.pyc"]) and dockerignored("c.pyc", ["**/*.pyc"])
    assert dockerignored("tests/x/y.py", ["tests"]) and not dockerignored("tests2/y.py", ["tests"])
    assert not dockerignored("checkpoints/keep.pth", ["checkpoints/*.pth", "!checkpoints/keep.pth"])
    assert not dockerignored("a/b.pth", ["*.pth"])  # a top-level glob does not reach into folders


def run_entrypoint(tmp_path: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [str(ENTRYPOINT), *command],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
