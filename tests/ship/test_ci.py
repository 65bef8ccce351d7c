"""The CI entry point runs the README's test command, and a pytest failure fails it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


FAKE_MAKE = """#!/bin/sh
echo "$PWD $*" >> "$MAKE_CALLS"
exit "$MAKE_STATUS"
"""


@pytest.mark.parametrize("status", [0, 2, 5])
def test_ci_run_runs_make_test_at_the_root_and_fails_with_it(tmp_path: Path, status: int) -> None:
    """Run from anywhere, .ci/run runs `make test` in the repo root, and CI's status is make's."""
    fake = tmp_path / "bin" / "make"
    fake.parent.mkdir()
    fake.write_text(FAKE_MAKE)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    env = {
        **os.environ,
        "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
        "MAKE_CALLS": str(calls),
        "MAKE_STATUS": str(status),
    }
    out = subprocess.run(
        [str(ROOT / ".ci" / "run")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert calls.read_text().splitlines() == [f"{ROOT} test"]
    assert (out.returncode == 0) == (status == 0), out.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_fails_when_no_tests_ran() -> None:
    # The stamps are taken as up to date (-o) so this checks only how `make test` treats
    # pytest's status: exit 5 ("no tests ran") must fail the target, hence CI.
    out = subprocess.run(
        [
            "make",
            "-o",
            ".venv/.test-stamp",
            "-o",
            "system-packages",
            "test",
            f"PYTEST_ARGS={Path(__file__).relative_to(ROOT)} -k no_test_has_this_name -p no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "Error 5" in out.stderr  # make's report of pytest's own exit status


def make_run(**env: str) -> subprocess.CompletedProcess[str]:
    """`make run` with the venv taken as installed; these cases stop before gunicorn starts."""
    return subprocess.run(
        ["make", "-o", ".venv/.runtime-stamp", "run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@needs_make
def test_make_run_refuses_to_start_without_a_checkpoint() -> None:
    out = make_run(SAM_ENGINE="sam", SAM_MODEL="tiny", SAM_CHECKPOINT="")
    assert out.returncode != 0
    assert "gunicorn" not in out.stdout
    assert "SAM_MODEL=tiny has no official checkpoint" in out.stderr and "SAM_ENGINE=grabcut make run" in out.stderr


@needs_make
def test_make_run_checks_an_explicit_checkpoint_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    out = make_run(SAM_ENGINE="sam", SAM_CHECKPOINT=str(missing))
    assert out.returncode != 0 and "gunicorn" not in out.stdout
    assert f"SAM checkpoint not found at {missing}" in out.stderr


@needs_make
@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SAM_ENGINE": "bogus"}, "SAM_ENGINE='bogus' is not an engine"),
        ({"SAM_MODEL": "vit_q"}, "SAM_MODEL='vit_q' is not a SAM model"),
        ({"SAM_DEVICE": "gpu"}, "SAM_DEVICE='gpu' is not one of"),
        ({"THREADS": "eight"}, "THREADS='eight' is invalid"),
        ({"CONCEPT_ENGINE": "dino"}, "CONCEPT_ENGINE='dino' is not one of none, grounding-dino, sam3"),
        ({"CONCEPT_ENGINE": "sam3", "CONCEPT_SCORE_THRESHOLD": "2"}, "CONCEPT_SCORE_THRESHOLD='2' must be"),
    ],
)
def test_make_run_names_a_bad_setting_before_looking_for_a_checkpoint(env: dict, named: str) -> None:
    # The checkpoint dir has no vit_b file here: were the name not checked first, the message
    # would be about a missing checkpoint or a failed download.
    out = make_run(**{"SAM_ENGINE": "sam", "SAM_MODEL": "vit_b", "SAM_CHECKPOINT": "", **env})
    assert out.returncode != 0 and "gunicorn" not in out.stdout
    assert named in out.stderr
    assert "checkpoint" not in out.stderr.lower() and "download" not in out.stderr.lower()


def test_preflight_accepts_a_good_configuration(tiny_checkpoint: Path) -> None:
    env = {**os.environ, "SAM_ENGINE": "sam", "SAM_MODEL": "tiny", "SAM_CHECKPOINT": str(tiny_checkpoint)}
    out = subprocess.run(
        [sys.executable, "-m", "backend.engines.preflight"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("serving sam-tiny-")
