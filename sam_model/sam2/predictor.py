"""A stateless SAM 2 image predictor with SamPredictor's interface: encode once, decode many.

Matches `SAM2ImagePredictor` with `build_sam2`'s defaults. Differences from v1 that callers
see only through the numbers: the image is squashed to 1024x1024 (no aspect-preserving pad),
masks are upscaled in one bilinear step, and low-res logits come back clamped to +-32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

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
from sam_model.common.transforms import upscale_masks
from sam_model.sam2.config import IMAGE_SIZE
from sam_model.sam2.grid_decoder import Sam2GridDecoder
from sam_model.sam2.heads import DecoderContext
from sam_model.sam2.model import PACKED_CHANNELS, Sam2, unpack

# torchvision-style normalisation of [0, 1] RGB, as SAM2Transforms applies it.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
MASK_THRESHOLD = 0.0
LOGIT_CLAMP = 32.0
BOX_LABELS = (2, 3)


class Sam2Predictor:
    """Thread-safe encode/decode around a `Sam2` model (held read-only).

    Embeddings are `ImageEmbedding`s whose features pack all three levels into
    (1, 1024, 64, 64) (see `model.pack`), 16 MiB in fp32. Clicks without `mask_input` reuse
    the decoder's per-image work for the `context_cache_size` most recent embeddings.
    """

    def __init__(
        self,
        model: Sam2,
        model_id: str,
        precision: str = "fp32",
        compile: bool = False,
        context_cache_size: int = 4,
    ) -> None:
        check_precision(precision)
        self.model = model
        self.model_id = model_id
        self.precision = precision
        self.device = model.no_mem_embed.device
        self.img_size = IMAGE_SIZE
        self.mask_threshold = MASK_THRESHOLD
        self._encode = torch.compile(model.encode) if compile else model.encode
        pe = model.sam_prompt_encoder
        self._feature_shape = (1, PACKED_CHANNELS, *pe.image_embedding_size)
        self._mask_shape = (1, *pe.mask_input_size)
        self._low_res_side = pe.mask_input_size[0]
        self._mean = torch.tensor(PIXEL_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(PIXEL_STD, device=self.device).view(1, 3, 1, 1)
        with torch.inference_mode():
            self._dense_pe = pe.get_dense_pe()
        self._contexts: ContextCache[DecoderContext] = ContextCache(context_cache_size)

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """HxWx3 uint8 RGB image -> its embedding (image embedding + stride-8 and stride-4 features)."""
        return self.encode_batch([image])[0]

    @torch.inference_mode()
    def encode_batch(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        """Several images in one encoder call; each embedding is the one `encode` gives alone, in order."""
        sizes = [check_image(image) for image in images]
        x = torch.cat([self._preprocess(image) for image in images])
        with autocast(self.device, self.precision):
            features = self._encode(x).float()
        square = (self.img_size, self.img_size)
        return [ImageEmbedding(batch_item(features, i), size, square, self.model_id) for i, size in enumerate(sizes)]

    def _preprocess(self, image: np.ndarray) -> torch.Tensor:
        """SAM2Transforms' order: to [0, 1] float, antialiased bilinear squash to the square, normalise."""
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None]
        x = x.to(torch.float32).div_(255)
        x = F.interpolate(x, (self.img_size, self.img_size), mode="bilinear", align_corners=False, antialias=True)
        return x.sub_(self._mean).div_(self._std)

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
        """Prompts in original-image pixels -> masks; `best_only` keeps (and upscales) one."""
        self.check_embedding(embedding)
        original = embedding.original_size
        points = self._prompt_points(point_coords, point_labels, box, original)
        masks = check_mask_input(mask_input, self._mask_shape, self.device)
        if points is None and masks is None:
            raise ValueError("give at least one prompt: points, a box or mask_input")
        model = self.model
        with autocast(self.device, self.precision):
            sparse, dense = model.sam_prompt_encoder(points=points, boxes=None, masks=masks)
            if masks is None:
                # The dense prompt is then the constant "no mask" embedding: per-image work.
                context = self._contexts.get(embedding, lambda: self._context(embedding, dense))
            else:
                context = self._context(embedding, dense)
            low_res, iou = model.sam_mask_decoder(context, sparse, multimask)
        low_res, iou = low_res[0].float(), iou[0].float()
        if best_only:
            best = int(torch.argmax(iou))
            low_res, iou = low_res[best : best + 1], iou[best : best + 1]
        # The low-res grid covers the whole squashed image: one bilinear step to the original
        # size (upscale_masks' first step is then an identity on the 256x256 grid).
        side = self._low_res_side
        bool_masks = upscale_masks(low_res, (side, side), original, side, MASK_THRESHOLD)
        low_res = low_res.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        return DecodeResult(bool_masks, iou.cpu().numpy(), low_res.cpu().numpy())

    def grid_decoder(self, embedding: ImageEmbedding) -> Sam2GridDecoder:
        """Automatic mask generation's batched single-point decoding on `embedding` (vetted here)."""
        self.check_embedding(embedding)
        return Sam2GridDecoder(self.model, embedding, self._dense_pe, self.img_size)

    def _context(self, embedding: ImageEmbedding, dense: torch.Tensor) -> DecoderContext:
        image_embed, s1, s0 = unpack(embedding.features.to(self.device, torch.float32))
        return self.model.sam_mask_decoder.prepare(image_embed, s1, s0, self._dense_pe, dense)

    def check_embedding(self, embedding: ImageEmbedding) -> None:
        """ValueError unless `embedding` is one this predictor could have made (caches vet stored ones)."""
        check_embedding(embedding, self.model_id, self._feature_shape)
        if embedding.input_size != (self.img_size, self.img_size):
            raise ValueError(f"SAM 2 embeddings have input_size {(self.img_size, self.img_size)}")

    def _prompt_points(
        self,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        original: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Points and box corners as one point prompt in input pixels: the box's corners
        (labels 2, 3) first, as SAM2ImagePredictor orders them."""
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        corners = check_box(box)
        if corners is not None:
            parts.append((corners, np.array(BOX_LABELS)))
        points = check_points(coords, labels)
        if points is not None:
            parts.append(points)
        if not parts:
            return None
        xy = torch.as_tensor(np.concatenate([c for c, _ in parts]), dtype=torch.float32, device=self.device)
        # Same float32 steps as SAM2Transforms.transform_coords: normalise, then scale.
        h, w = original
        xy = torch.stack([xy[:, 0] / w, xy[:, 1] / h], dim=1) * self.img_size
        lab = torch.as_tensor(np.concatenate([lb for _, lb in parts]).astype(np.int32), device=self.device)
        return xy[None], lab[None]
