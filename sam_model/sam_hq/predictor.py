"""A stateless HQ-SAM predictor: SamPredictor's interface and preprocessing, HQ-SAM's decoder.

Matches segment-anything-hq's `SamPredictor`. What callers see differently from SAM v1:
every decode returns ONE mask (K = 1) as the reference does: with `multimask` SAM's best
of its three candidates (by predicted IoU, which is the score), else its single-mask
output; the HQ token's mask is added to it, or replaces it with `hq_token_only`.
"""

from __future__ import annotations

import numpy as np
import torch

from sam_model.common.decoding import ContextCache, DecodeResult, autocast, check_mask_input
from sam_model.common.embedding import ImageEmbedding
from sam_model.common.transforms import upscale_masks
from sam_model.sam1.predictor import SamPredictor
from sam_model.sam_hq.grid_decoder import SamHqGridDecoder
from sam_model.sam_hq.mask_decoder import HqContext
from sam_model.sam_hq.model import EMBED_CHANNELS, SamHq, unpack


class SamHqPredictor(SamPredictor):
    """Thread-safe encode/decode around a `SamHq` model (held read-only).

    Parameters are `SamPredictor`'s, plus `hq_token_only` (False, the reference's default):
    True returns the HQ token's mask alone instead of SAM's mask plus it.

    Embeddings pack the image embedding and the encoder's early features (see
    `sam_hq.model`). The per-image decoder work that every click reuses from the context
    cache (mask refinements included) is the transformer's first block and the 256x256
    "HQ features", ~22 MiB per embedding.
    """

    def __init__(
        self,
        sam: SamHq,
        model_id: str,
        precision: str = "fp32",
        compile: bool = False,
        context_cache_size: int = 4,
        hq_token_only: bool = False,
    ) -> None:
        super().__init__(sam, model_id, precision, compile=False, context_cache_size=context_cache_size)
        self.hq_token_only = hq_token_only
        self._encoder = torch.compile(sam.encode) if compile else sam.encode
        early_channels = sam.mask_decoder.compress_vit_feat[0].in_channels
        self._feature_shape = (1, EMBED_CHANNELS + early_channels, *sam.prompt_encoder.image_embedding_size)
        with torch.inference_mode():
            _, self._no_mask_dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
        self._contexts: ContextCache[HqContext] = ContextCache(context_cache_size)

    @torch.inference_mode()
    def decode(
        self,
        embedding: ImageEmbedding,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
        best_only: bool = False,
    ) -> DecodeResult:
        """Prompts in original-image pixels -> one mask (K = 1), as `SamPredictor.decode` takes them.

        `multimask` chooses which SAM output the HQ mask refines (see the module docstring);
        `best_only` changes nothing, the result already holds a single mask.
        """
        self.check_embedding(embedding)
        original, input_size = embedding.original_size, embedding.input_size
        points = self._points(point_coords, point_labels, original, input_size)
        boxes = self._box(box, original, input_size)
        masks = check_mask_input(mask_input, self._mask_shape, self.device)
        if points is None and boxes is None and masks is None:
            raise ValueError("give at least one prompt: points, a box or mask_input")
        decoder = self.sam.mask_decoder
        with autocast(self.device, self.precision):
            sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
            context = self._contexts.get(embedding, lambda: self._context(embedding))
            if masks is None:
                low_res, iou = decoder.forward_prepared(context, sparse, multimask, self.hq_token_only)
            else:
                low_res, iou = decoder(
                    image_embeddings=self._unpacked(embedding)[0],
                    image_pe=self._dense_pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=multimask,
                    hq_token_only=self.hq_token_only,
                    hq_features=context.hq_features,
                )
        low_res, iou = low_res[0].float(), iou[0].float()
        bool_masks = upscale_masks(low_res, input_size, original, self.img_size, self.sam.mask_threshold)
        return DecodeResult(bool_masks, iou.cpu().numpy(), low_res.cpu().numpy())

    def grid_decoder(self, embedding: ImageEmbedding) -> SamHqGridDecoder:
        """Automatic mask generation's batched single-point decoding on `embedding` (vetted here)."""
        self.check_embedding(embedding)
        return SamHqGridDecoder(self.sam, embedding, self._features(embedding), self._dense_pe, self.hq_token_only)

    def _context(self, embedding: ImageEmbedding) -> HqContext:
        """The decoder's per-image work, for the "no mask" dense prompt."""
        image_embed, early = self._unpacked(embedding)
        return self.sam.mask_decoder.prepare(image_embed, early, self._dense_pe, self._no_mask_dense)

    def _unpacked(self, embedding: ImageEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        """(image embedding, early features), float32 on this predictor's device."""
        image_embed, early = unpack(embedding.features)
        return image_embed.to(self.device, torch.float32), early.to(self.device, torch.float32)
