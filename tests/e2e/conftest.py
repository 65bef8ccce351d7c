"""Fixtures for the browser test: a real LS, our backend (GrabCut) and Debian's chromium driven by node.

The LS fixture is the integration tests' own (tests/integration/support.py), imported here so
the same LS 1.23.2 from the same cached venv starts the same way. Pytest keys a session fixture
by the folder of the conftest that defines it, so when tests/integration runs in the same
session this folder still starts its own LS (about 15 s with the template database); sharing
one would need the fixture in tests/conftest.py.

Without chromium, node or playwright-core the test skips, naming `tests/e2e/install_browser.sh`;
with REQUIRE_LABEL_STUDIO=1 (set by `make test`) it fails instead, as the integration tests do.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.support import label_studio  # noqa: F401 - re-exported as this folder's fixture
from tests.support.servers import Backend

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARTIFACTS = REPO / "artifacts" / "e2e"
INSTALL = HERE / "install_browser.sh"


def _missing_browser_parts() -> list[str]:
    missing = []
    if not (os.environ.get("E2E_CHROMIUM") or shutil.which("chromium")):
        missing.append("chromium")
    if not shutil.which("node"):
        missing.append("node")
    if not (HERE / "node_modules" / "playwright-core" / "package.json").is_file():
        missing.append("playwright-core (npm ci in tests/e2e)")
    return missing


@pytest.fixture(scope="session")
def browser_tools() -> dict[str, str]:
    """Paths of node and chromium; skip (or fail under make test) when the browser test cannot run."""
    missing = _missing_browser_parts()
    if missing:
        why = f"browser test needs {', '.join(missing)}: run `bash {INSTALL.relative_to(REPO)}`"
        if os.environ.get("REQUIRE_LABEL_STUDIO") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return {
        "node": shutil.which("node") or "node",
        "chromium": os.environ.get("E2E_CHROMIUM") or shutil.which("chromium"),
    }


@pytest.fixture(scope="session")
def e2e_backend(label_studio, tmp_path_factory):  # noqa: F811 - the imported fixture
    """GrabCut (a meaningful mask without weights), configured as an operator would next to this LS."""
    env = {"SAM_ENGINE": "grabcut", "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    backend = Backend(env, tmp_path_factory.mktemp("e2e-backend") / "gunicorn.log")
    yield backend
    backend.stop()


@pytest.fixture
def artifacts() -> Path:
    """artifacts/e2e/ at the repo root (git-ignored): screenshots a person can look at after a run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS
