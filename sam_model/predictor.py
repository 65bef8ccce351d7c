"""A stateless SAM predictor: encode an image once, decode many prompts against it.

Unlike the reference predictor there is no "current image": the embedding is a value the
caller keeps (and caches), so one predictor can serve many threads and many images.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .embedding import ImageEmbedding
from .transformer import ImageContext
from .transforms import input_shape, normalize_and_pad, resize_longest_side, scale_coords, upscale_masks

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class DecodeResult:
    """Masks at the original image size, their predicted IoU, and the logits to refine with."""

    masks: np.ndarray  # bool (K, H, W)
    scores: np.ndarray  # float32 (K,)
    low_res_logits: np.ndarray  # float32 (K, 256, 256)


class _ContextCache:
    """The decoder's per-image work (`MaskDecoder.prepare`) for the last few embeddings used.

    Keyed by the embedding object's identity (embeddings are immutable values); a weak
    reference proves the entry still belongs to that object, so a recycled id never aliases.
    Threads may build the same entry at once: both results are equal, one is kept.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[int, tuple[weakref.ref, ImageContext]] = OrderedDict()

    def get(self, embedding: ImageEmbedding, build: Callable[[], ImageContext]) -> ImageContext:
        key = id(embedding)
        with self._lock:
            item = self._items.get(key)
            if item is not None and item[0]() is embedding:
                self._items.move_to_end(key)
                return item[1]
        context = build()
        with self._lock:
            # Entries of embeddings that are gone only hold memory: drop them first.
            for dead in [k for k, (ref, _) in self._items.items() if ref() is None]:
                del self._items[dead]
            self._items[key] = (weakref.ref(embedding), context)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return context


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
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.sam = sam
        self.model_id = model_id
        self.precision = precision
        self.device = sam.pixel_mean.device
        self.img_size: int = sam.image_encoder.img_size
        self._encoder: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(sam.image_encoder) if compile else sam.image_encoder
        )
        pe = sam.prompt_encoder
        self._feature_shape = (1, pe.embed_dim, *pe.image_embedding_size)
        self._mask_shape = (1, *pe.mask_input_size)
        with torch.inference_mode():
            # A pure function of the weights: computed once instead of on every click.
            self._dense_pe = pe.get_dense_pe()
        self._contexts = _ContextCache(context_cache_size)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """HxWx3 uint8 RGB image -> its embedding (features 1x256x64x64 float32).

        `image`: at its original size, as the prompts' coordinates will refer to it; it is
        resized so its longer side is the encoder's input size, normalised and padded here.
        ValueError for another dtype or shape.
        """
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise ValueError("image must be a numpy uint8 array")
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise ValueError(f"image must be HxWx3 RGB, got shape {image.shape}")
        original_size = (int(image.shape[0]), int(image.shape[1]))
        resized = resize_longest_side(image, self.img_size)
        x = normalize_and_pad(resized, self.sam.pixel_mean, self.sam.pixel_std, self.img_size)
        with self._autocast():
            features = self._encoder(x)
        return ImageEmbedding(features.float(), original_size, tuple(resized.shape[:2]), self.model_id)

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
        masks = self._mask(mask_input)
        if points is None and boxes is None and masks is None:
            raise ValueError("give at least one prompt: points, a box or mask_input")
        decoder = self.sam.mask_decoder
        with self._autocast():
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
        if not isinstance(embedding, ImageEmbedding):
            raise ValueError("embedding must be an ImageEmbedding")
        if embedding.model_id != self.model_id:
            raise ValueError(f"embedding is from model {embedding.model_id!r}, this predictor is {self.model_id!r}")
        if not embedding.features.is_floating_point():
            raise ValueError(f"features must be floating point, got {embedding.features.dtype}")
        if tuple(embedding.features.shape) != self._feature_shape:
            raise ValueError(f"features must have shape {self._feature_shape}, got {tuple(embedding.features.shape)}")
        if input_shape(embedding.original_size, self.img_size) != embedding.input_size:
            raise ValueError("embedding input_size does not follow from its original_size")

    def _features(self, embedding: ImageEmbedding) -> torch.Tensor:
        return embedding.features.to(self.device, torch.float32)

    def _points(
        self,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        original: tuple[int, int],
        input_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        if coords is None and labels is None:
            return None
        if coords is None or labels is None:
            raise ValueError("point_coords and point_labels must be given together")
        coords = np.asarray(coords, dtype=np.float64)
        labels = np.asarray(labels)
        if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] < 1:
            raise ValueError(f"point_coords must have shape (N, 2) with N >= 1, got {coords.shape}")
        if labels.shape != (coords.shape[0],):
            raise ValueError(f"point_labels must have shape ({coords.shape[0]},), got {labels.shape}")
        if not np.isfinite(coords).all():
            raise ValueError("point_coords must be finite")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("point_labels must be 1 (foreground) or 0 (background)")
        scaled = scale_coords(coords, original, input_size)
        coords_t = torch.as_tensor(scaled, dtype=torch.float, device=self.device)[None]
        labels_t = torch.as_tensor(labels.astype(np.int32), dtype=torch.int, device=self.device)[None]
        return coords_t, labels_t

    def _box(
        self, box: np.ndarray | None, original: tuple[int, int], input_size: tuple[int, int]
    ) -> torch.Tensor | None:
        if box is None:
            return None
        box = np.asarray(box, dtype=np.float64)
        if box.shape not in ((4,), (1, 4)):
            raise ValueError(f"box must have shape (4,) xyxy, got {box.shape}")
        if not np.isfinite(box).all():
            raise ValueError("box must be finite")
        scaled = scale_coords(box.reshape(2, 2), original, input_size).reshape(1, 4)
        return torch.as_tensor(scaled, dtype=torch.float, device=self.device)

    def _mask(self, mask_input: np.ndarray | None) -> torch.Tensor | None:
        if mask_input is None:
            return None
        mask = torch.as_tensor(np.asarray(mask_input, dtype=np.float32))
        if tuple(mask.shape) != self._mask_shape:
            raise ValueError(f"mask_input must have shape {self._mask_shape} (low-res logits), got {tuple(mask.shape)}")
        if not torch.isfinite(mask).all():
            raise ValueError("mask_input must be finite")
        return mask.to(self.device)[None]
