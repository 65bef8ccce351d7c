"""Where the captured Label Studio requests live: ../shared/ls-samples, beside the checkout."""
import json
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "ls-samples"


def sample(name: str):
    """One captured LS body, parsed."""
    return json.loads((SAMPLES / name).read_text())
