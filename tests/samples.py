"""Where the captured Label Studio requests live: tests/fixtures/ls-samples, inside the repo.

They are bodies captured from a real Label Studio 1.23.2 (see that folder's README), copied
here so a fresh clone passes its tests with nothing beside it.
"""
import json
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "fixtures" / "ls-samples"


def sample(name: str):
    """One captured LS body, parsed."""
    return json.loads((SAMPLES / name).read_text())
