"""Running the e2e browser scripts (tests/e2e/*.mjs) and reading their screenshots, in one place."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def read_rgb(path: Path) -> np.ndarray:
    """A screenshot as signed RGB, so differences between two of them do not wrap around."""
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def browser_config(out_dir: Path, chromium: str, **settings: object) -> dict:
    """A script's config: its settings, screenshots to out_dir, and a fresh chromium profile there.

    Chromium here needs a fresh profile (user-data dir) per run, so an old one is removed."""
    profile = out_dir / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    return {**settings, "outDir": str(out_dir), "userDataDir": str(profile), "chromium": chromium}


def ls_task(ls: Any, project: int, task: int) -> dict:
    """The settings that let a script log into this LS and open the task."""
    return {"url": ls.url, "username": ls.username, "password": ls.password, "project": project, "task": task}


def run_browser(script: Path, config: dict, node: str, log_dir: Path, timeout_s: float) -> dict:
    """Run a node script; its last stdout line is its JSON report (also kept next to the screenshots).

    The report.json copy leaves out the try-it page's overlays (base64 alpha planes, large)."""
    config_path = log_dir / "config.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.run(
        [node, str(script), str(config_path)], cwd=script.parent, capture_output=True, text=True, timeout=timeout_s
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    (log_dir / "report.json").write_text(json.dumps({k: v for k, v in report.items() if k != "overlays"}, indent=1))
    if proc.returncode != 0:
        raise AssertionError(
            f"browser script failed (exit {proc.returncode}): {report.get('error')}\n"
            f"steps: {report.get('steps')}\nstderr:\n{proc.stderr[-4000:]}\n"
            f"see {log_dir}/failure.png and failure.html"
        )
    return report
