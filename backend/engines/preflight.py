"""`make run`'s first step: check the configuration as the backend will, then make sure the
checkpoint is there (downloading the official one once), before gunicorn starts.

Checking in the backend's own order means a typo in SAM_ENGINE or SAM_MODEL is reported as
that typo, not as a missing checkpoint; a bad number in any setting is named too.

    python -m backend.engines.preflight        exit 0: ready to serve; 1: the message says what to fix
"""

from __future__ import annotations

import sys

from backend.concepts.service import concept_spec
from backend.engines.engine import CHECKPOINT_DIR, check_engine_choice, engine_spec
from backend.errors import BackendError
from backend.settings import Settings
from sam_model.download import CheckpointError, ensure_checkpoint
from sam_model.registry import OFFICIAL_CHECKPOINTS


def prepare(settings: Settings) -> str:
    """Validate `settings`, fetch a missing official checkpoint; what will be served, in words."""
    check_engine_choice(settings)
    concepts = concept_spec(settings)  # a bad CONCEPT_* value is named before any download
    also = "" if concepts is None else f"; concept engine {concepts.model_id} (loaded in the background)"
    if settings.sam_engine == "grabcut":
        return "SAM_ENGINE=grabcut: classical OpenCV GrabCut, not SAM; no checkpoint needed" + also
    if not settings.sam_checkpoint and settings.sam_model in OFFICIAL_CHECKPOINTS:
        ensure_checkpoint(settings.sam_model, CHECKPOINT_DIR)
    spec = engine_spec(settings)  # the checkpoint must exist now; names the fix if not
    return f"serving {spec.model_id}{also}"


def main() -> int:
    try:
        print(prepare(Settings.from_env()))
    except (ValueError, BackendError, CheckpointError) as exc:
        message = exc.message + f" ({exc.fix})" if isinstance(exc, BackendError) else str(exc)
        print(f"make run: {message}", file=sys.stderr)
        print("make run: to try the weights-free engine instead: SAM_ENGINE=grabcut make run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
