"""An official segment-anything Sam (test-only oracle) behind our `SamPredictor`.

The production `AutomaticMaskGenerator` and `SamPredictor` drive our decoder's prepared
path (`prepare`, then `forward_prepared_above`); the official decoder has only `forward`.
`official_predictor` wraps an official Sam, or one assembled from official-signature
parts (tests/support/disc_model.py), so that the production code runs unchanged on the
same modules the official `SamAutomaticMaskGenerator` runs on. Tests and benches only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sam_model.sam1.mask_decoder import iou_above
from sam_model.sam1.predictor import SamPredictor


class _Prepared(NamedTuple):
    """What our `prepare` would precompute, kept as given: the official decoder redoes it per call."""

    image_embeddings: torch.Tensor
    image_pe: torch.Tensor
    dense_prompt_embeddings: torch.Tensor


class PreparedOfficialDecoder(nn.Module):
    """Our decoder's prepared interface over a decoder with the official `forward` signature."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def prepare(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt_embeddings: torch.Tensor
    ) -> _Prepared:
        return _Prepared(image_embeddings, image_pe, dense_prompt_embeddings)

    def forward_prepared_above(
        self, context: _Prepared, sparse_prompt_embeddings: torch.Tensor, multimask_output: bool, min_iou: float | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Our `MaskDecoder.forward_prepared_above` contract: (iou (B, K), kept (B, K), logits of the kept)."""
        logits, iou = self.decoder(
            image_embeddings=context.image_embeddings,
            image_pe=context.image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=context.dense_prompt_embeddings,
            multimask_output=multimask_output,
        )
        kept = iou_above(iou, min_iou)
        return iou, kept, logits[kept]


class OfficialSam(nn.Module):
    """An official Sam laid out as our `Sam`: its encoders and pixel statistics, its decoder wrapped."""

    def __init__(self, official: nn.Module) -> None:
        super().__init__()
        self.image_encoder = official.image_encoder
        self.prompt_encoder = official.prompt_encoder
        self.mask_decoder = PreparedOfficialDecoder(official.mask_decoder)
        self.mask_threshold = float(official.mask_threshold)
        self.register_buffer("pixel_mean", official.pixel_mean, False)
        self.register_buffer("pixel_std", official.pixel_std, False)


def official_predictor(official: nn.Module, model_id: str) -> SamPredictor:
    """Our production predictor around an official Sam (encoding, validation and all)."""
    return SamPredictor(OfficialSam(official), model_id)
