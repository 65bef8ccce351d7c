"""tests/apt_install.sh waits for another apt/dpkg holding the package locks (bounded), where a
bare apt-get fails at once: `make test` on a machine that is still running its own apt."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ("/var/lib/apt/lists/lock", "/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock")
# Takes apt's and dpkg's own (fcntl) locks, as a running apt-get does, for argv[1] seconds.
HOLDER = """
import fcntl, sys, time
files = [open(path, "a") for path in sys.argv[2:]]
for f in files:
    fcntl.lockf(f, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[1]))
"""

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None or shutil.which("redis-server") is None,
    reason="needs root, apt-get and an installed redis-server",
)


def test_waits_for_a_held_package_lock_then_installs() -> None:
    hold_s = 8.0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(hold_s), *LOCKS], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        out = subprocess.run(
            ["bash", str(ROOT / "tests" / "apt_install.sh"), "redis-server"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "APT_LOCK_WAIT_S": "120"},
        )
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 0, out.stderr
    assert "waiting" in out.stdout
    assert waited >= hold_s - 2


def test_gives_up_when_the_lock_is_held_past_the_bound() -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "30", *LOCKS], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        out = subprocess.run(
            ["bash", str(ROOT / "tests" / "apt_install.sh"), "redis-server"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "APT_LOCK_WAIT_S": "3"},
        )
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode != 0
    assert "Could not get lock" in out.stderr
