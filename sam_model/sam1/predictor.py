"""A stateless SAM predictor: encode an image once, decode many prompts against it.

Unlike the reference predictor there is no "current image": the embedding is a value the
caller keeps (and caches), so one predictor can serve many threads and many images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from sam_model.common.decoding import (
    ContextCache,
    DecodeResult,
    autocast,
    batch_item,
    check_box,
    check_embedding,
    check_image,
    check_mask_input,
    check_points,
    check_precision,
)
from sam_model.common.embedding import ImageEmbedding
from sam_model.common.transforms import input_shape, normalize_and_pad, resize_longest_side, scale_coords, upscale_masks
from sam_model.sam1.grid_decoder import Sam1GridDecoder
from sam_model.sam1.transformer import ImageContext


class SamPredictor:
    """Thread-safe encode/decode around a SAM model (held read-only).

    Binds to the model's device at construction: move the model first, then wrap it.
    Clicks without `mask_input` reuse the decoder's prompt-independent work on an embedding
    (~14 MiB each) for the `context_cache_size` most recently used embedding objects.

    Parameters:

    - `sam`: the model (`build_sam` / `load_sam`), in eval mode and on the device to run on;
      never modified.
    - `model_id`: names the weights; stamped on every embedding `encode` makes, and `decode`
      and `check_embedding` refuse embeddings stamped with another (a cache shared by
      several models cannot hand one model's features to another).
    - `precision` ("fp32"): "fp32", "bf16" or "fp16"; the encoder and decoder run under
      `torch.autocast` with that dtype (not for fp32). Features and results are float32
      whatever it is.
    - `compile` (False): wrap the image encoder in `torch.compile`: the first `encode` (and
      each new input shape) pays the compilation.
    - `context_cache_size` (4): how many embeddings' prompt-independent decoder work is
      kept, least recently used dropped first; 0 keeps none (each decode prepares it again).
    """

    def __init__(
        self,
        sam: Any,
        model_id: str,
        precision: str = "fp32",
        compile: bool = False,
        context_cache_size: int = 4,
    ) -> None:
        check_precision(precision)
        self.sam = sam
        self.model_id = model_id
        self.precision = precision
        self.device = sam.pixel_mean.device
        self.img_size: int = sam.image_encoder.img_size
        self.mask_threshold = float(sam.mask_threshold)
        self._encoder: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(sam.image_encoder) if compile else sam.image_encoder
        )
        pe = sam.prompt_encoder
        self._feature_shape = (1, pe.embed_dim, *pe.image_embedding_size)
        self._mask_shape = (1, *pe.mask_input_size)
        with torch.inference_mode():
            # A pure function of the weights: computed once instead of on every click.
            self._dense_pe = pe.get_dense_pe()
        self._contexts: ContextCache[ImageContext] = ContextCache(context_cache_size)

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """HxWx3 uint8 RGB image -> its embedding (features 1x256x64x64 float32).

        `image`: at its original size, as the prompts' coordinates will refer to it; it is
        resized so its longer side is the encoder's input size, normalised and padded here.
        ValueError for another dtype or shape.
        """
        return self.encode_batch([image])[0]

    @torch.inference_mode()
    def encode_batch(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        """Several images in one encoder call (what a GPU shared by a team gains from); each
        embedding is the one `encode` gives for that image alone, in the order given."""
        sizes = [check_image(image) for image in images]
        resized = [resize_longest_side(image, self.img_size) for image in images]
        mean, std = self.sam.pixel_mean, self.sam.pixel_std
        x = torch.cat([normalize_and_pad(r, mean, std, self.img_size) for r in resized])
        with autocast(self.device, self.precision):
            features = self._encoder(x).float()
        return [
            ImageEmbedding(batch_item(features, i), size, tuple(r.shape[:2]), self.model_id)
            for i, (size, r) in enumerate(zip(sizes, resized, strict=True))
        ]

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
        """Prompts in original-image pixels -> masks; `best_only` keeps (and upscales) one.

        - `embedding`: what `encode` returned for the image (or its `ImageEmbedding.from_bytes`
          copy); vetted by `check_embedding`.
        - `point_coords` (N, 2) float, x then y in pixels of the original image, and
          `point_labels` (N,) 1 (foreground) or 0 (background): given together or not at all.
        - `box` (4,) or (1, 4): x0, y0, x1, y1 in pixels of the original image.
        - `mask_input` (1, 256, 256) float: low-res logits of an earlier decode
          (`DecodeResult.low_res_logits[:1]`) to refine; without it the decoder's per-image
          work is reused from the context cache.
        - `multimask` (True): three candidate masks (a lone point is ambiguous: part, object
          or group); False: one mask, SAM's choice for several points or a box.
        - `best_only` (False): keep only the candidate with the highest predicted IoU, so
          only that one is upscaled to the original size (K = 1).

        At least one of points, box or mask_input is needed; ValueError for a missing or
        malformed prompt.
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
            if masks is None:
                # The dense prompt is then the constant "no mask" embedding: per-image work.
                context = self._contexts.get(
                    embedding, lambda: decoder.prepare(self._features(embedding), self._dense_pe, dense)
                )
                low_res, iou = decoder.forward_prepared(context, sparse, multimask)
            else:
                low_res, iou = decoder(
                    image_embeddings=self._features(embedding),
                    image_pe=self._dense_pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=multimask,
                )
        low_res, iou = low_res[0].float(), iou[0].float()
        if best_only:
            best = int(torch.argmax(iou))
            low_res, iou = low_res[best : best + 1], iou[best : best + 1]
        bool_masks = upscale_masks(low_res, input_size, original, self.img_size, self.sam.mask_threshold)
        return DecodeResult(bool_masks, iou.cpu().numpy(), low_res.cpu().numpy())

    def check_embedding(self, embedding: ImageEmbedding) -> None:
        """ValueError unless `embedding` is one this predictor could have made (caches vet stored ones).

        `embedding`: checked for this predictor's `model_id`, float features of the model's
        shape, and an input size that follows from its original size.
        """
        check_embedding(embedding, self.model_id, self._feature_shape)
        if input_shape(embedding.original_size, self.img_size) != embedding.input_size:
            raise ValueError("embedding input_size does not follow from its original_size")

    def grid_decoder(self, embedding: ImageEmbedding) -> Sam1GridDecoder:
        """Automatic mask generation's batched single-point decoding on `embedding` (vetted here)."""
        self.check_embedding(embedding)
        return Sam1GridDecoder(self.sam, embedding, self._features(embedding), self._dense_pe)

    def _features(self, embedding: ImageEmbedding) -> torch.Tensor:
        return embedding.features.to(self.device, torch.float32)

    def _points(
        self,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        original: tuple[int, int],
        input_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        points = check_points(coords, labels)
        if points is None:
            return None
        scaled = scale_coords(points[0], original, input_size)
        coords_t = torch.as_tensor(scaled, dtype=torch.float, device=self.device)[None]
        labels_t = torch.as_tensor(points[1], dtype=torch.int, device=self.device)[None]
        return coords_t, labels_t

    def _box(
        self, box: np.ndarray | None, original: tuple[int, int], input_size: tuple[int, int]
    ) -> torch.Tensor | None:
        corners = check_box(box)
        if corners is None:
            return None
        scaled = scale_coords(corners, original, input_size).reshape(1, 4)
        return torch.as_tensor(scaled, dtype=torch.float, device=self.device)
