"""A random-weight checkpoint per model family, in that family's official file layout.

Made by the official code where the family has one (test-only oracles), so the backend
loads them exactly as it loads a user's downloaded file. Used by the HTTP and real-LS tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def _sam2(directory: Path) -> Path:
    from tests.support.oracle_sam2 import official_sam2, save_official

    return save_official(official_sam2("sam2.1_hiera_tiny", seed=5), directory / "sam2.1_tiny_random.pt")


def _mobile_sam(directory: Path) -> Path:
    from tests.support.oracle_mobile_sam import official_mobile_sam, save_official

    return save_official(official_mobile_sam(seed=5), directory / "mobile_sam_random.pt")


def _sam_hq(directory: Path) -> Path:
    from tests.support.oracle_sam_hq import official_sam_hq, save_official

    return save_official(official_sam_hq("sam_hq_vit_tiny", seed=5), directory / "sam_hq_vit_tiny_random.pth")


# model type -> writes its file into a directory and returns the path
FAMILY_CHECKPOINTS: dict[str, Callable[[Path], Path]] = {
    "sam2.1_hiera_tiny": _sam2,
    "mobile_sam": _mobile_sam,
    "sam_hq_vit_tiny": _sam_hq,
}


def predictor_for(model_type: str, checkpoint: Path):
    """The family's predictor on `checkpoint`, as the backend builds it (fp32, CPU)."""
    from sam_model import family_of, load_sam

    model = load_sam(model_type, checkpoint, device="cpu")
    return family_of(model_type).predictor(model, "reference", "fp32", False)
