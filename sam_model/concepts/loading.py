"""`load_concept_engine`: a concept model from a local folder or the Hugging Face cache, never
downloaded unless the caller allows it.

Both engines are Hugging Face `transformers` models in their standard layout (config.json,
weights, processor and tokenizer files), as `save_pretrained` writes them and the hub holds
them (`IDEA-Research/grounding-dino-tiny`, Apache-2.0; `facebook/sam3`, gated: a token of an
account that accepted its licence). transformers is an optional dependency, imported here.
"""

from __future__ import annotations

import torch

from sam_model.common.checkpoint import CheckpointError, resolve_device
from sam_model.concepts.engine import ConceptEngine

# kind -> the config model types its weights may declare (facebook/sam3 ships the video
# config, whose detector part Sam3Model loads).
MODEL_TYPES = {"grounding-dino": ("grounding-dino",), "sam3": ("sam3", "sam3_video")}
ENGINE_KINDS = tuple(MODEL_TYPES)


def load_concept_engine(
    kind: str,
    source: str,
    device: str = "auto",
    token: str | None = None,
    allow_download: bool = False,
    dtype: torch.dtype = torch.float32,
) -> ConceptEngine:
    """The `kind` engine ("sam3" or "grounding-dino") with the weights at `source`: a local
    folder, or a hub id already in the Hugging Face cache (fetched only if `allow_download`,
    with `token` for gated repositories). In `dtype` (bf16 halves a GPU's time and memory),
    eval mode, on the resolved device."""
    if kind not in MODEL_TYPES:
        raise ValueError(f"concept engine kind must be one of {ENGINE_KINDS}, got {kind!r}")
    if not isinstance(source, str) or not source.strip():
        raise ValueError("source must be a local folder or a Hugging Face hub id")
    target = resolve_device(device)
    try:
        from transformers import AutoConfig
        from transformers.utils import is_torchvision_available
    except ImportError as exc:
        raise ImportError("concept engines need the `transformers` package (the concepts extra)") from exc
    options = {"local_files_only": not allow_download, "token": token}
    try:
        config = AutoConfig.from_pretrained(source, **options)
    except (OSError, ValueError) as exc:
        hint = "" if allow_download else "; downloading is off: allow it (with a token for gated models) to fetch it"
        raise CheckpointError(f"{source}: no {kind} model there ({exc}){hint}") from exc
    if config.model_type not in MODEL_TYPES[kind]:
        raise CheckpointError(f"{source} holds a {config.model_type!r} model, not {kind}")
    model_id = f"{kind}:{source}"
    if kind == "grounding-dino":
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        from sam_model.concepts.grounding_dino import GroundingDinoEngine

        processor = AutoProcessor.from_pretrained(source, **options)
        model = GroundingDinoForObjectDetection.from_pretrained(source, dtype=dtype, **options)
        return GroundingDinoEngine(model.to(target), processor, model_id)
    if not is_torchvision_available():
        raise ImportError("transformers' SAM 3 needs torchvision: install the build that matches the installed torch")
    from transformers import Sam3Model, Sam3Processor

    from sam_model.concepts.sam3 import Sam3Engine

    processor = Sam3Processor.from_pretrained(source, **options)
    model = Sam3Model.from_pretrained(source, dtype=dtype, **options)
    return Sam3Engine(model.to(target), processor, model_id)
