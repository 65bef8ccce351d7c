"""What every family's predictor shares: the result type, the precision switch, the per-image
decoder cache and the checks on images, prompts and embeddings.

Each family's predictor (`sam1.SamPredictor`, `sam2.Sam2Predictor`, ...) maps prompts into
its own input space and runs its own networks; the rules for what a valid prompt is live
here once, so every family refuses the same inputs with the same message.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
import torch

from sam_model.common.embedding import ImageEmbedding

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Context = TypeVar("Context")


@dataclass(frozen=True)
class DecodeResult:
    """Masks at the original image size, their predicted IoU, and the logits to refine with."""

    masks: np.ndarray  # bool (K, H, W)
    scores: np.ndarray  # float32 (K,)
    low_res_logits: np.ndarray  # float32 (K, 256, 256)


class Predictor(Protocol):
    """The interface the backend serves every family through (stateless, thread-safe)."""

    model_id: str
    img_size: int

    def encode(self, image: np.ndarray) -> ImageEmbedding: ...

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]: ...

    def decode(
        self,
        embedding: ImageEmbedding,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
        best_only: bool = False,
    ) -> DecodeResult: ...

    def check_embedding(self, embedding: ImageEmbedding) -> None: ...


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast to `precision` on `device`; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def batch_item(batch: torch.Tensor, i: int) -> torch.Tensor:
    """Item i of an encoder batch as (1, ...) features holding only their own memory (a cached
    embedding must not keep its batch-mates' features alive)."""
    item = batch[i : i + 1]
    return item if batch.shape[0] == 1 else item.clone()


class ContextCache(Generic[Context]):
    """A decoder's per-image work (its `prepare`) for the last few embeddings used.

    Keyed by the embedding object's identity (embeddings are immutable values); a weak
    reference proves the entry still belongs to that object, so a recycled id never aliases.
    Threads may build the same entry at once: both results are equal, one is kept.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[int, tuple[weakref.ref, Context]] = OrderedDict()

    def get(self, embedding: ImageEmbedding, build: Callable[[], Context]) -> Context:
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


def check_image(image: np.ndarray) -> tuple[int, int]:
    """The (h, w) of an HxWx3 uint8 RGB image; ValueError for anything else."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("image must be a numpy uint8 array")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"image must be HxWx3 RGB, got shape {image.shape}")
    return int(image.shape[0]), int(image.shape[1])


def check_points(coords: np.ndarray | None, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(N, 2) float64 pixel coordinates and (N,) 0/1 labels, given together, or None for neither."""
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
    return coords, labels.astype(np.int32)


def check_box(box: np.ndarray | None) -> np.ndarray | None:
    """A box as its two corners, (2, 2) float64 [[x0, y0], [x1, y1]], or None."""
    if box is None:
        return None
    box = np.asarray(box, dtype=np.float64)
    if box.shape not in ((4,), (1, 4)):
        raise ValueError(f"box must have shape (4,) xyxy, got {box.shape}")
    if not np.isfinite(box).all():
        raise ValueError("box must be finite")
    return box.reshape(2, 2)


def check_mask_input(
    mask_input: np.ndarray | None, shape: tuple[int, ...], device: torch.device
) -> torch.Tensor | None:
    """Low-res logits of an earlier decode as a (1, *shape) float tensor on `device`, or None."""
    if mask_input is None:
        return None
    mask = torch.as_tensor(np.asarray(mask_input, dtype=np.float32))
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask_input must have shape {shape} (low-res logits), got {tuple(mask.shape)}")
    if not torch.isfinite(mask).all():
        raise ValueError("mask_input must be finite")
    return mask.to(device)[None]


def check_embedding(embedding: ImageEmbedding, model_id: str, feature_shape: tuple[int, ...]) -> None:
    """ValueError unless `embedding` is a float embedding of `model_id` with features of `feature_shape`."""
    if not isinstance(embedding, ImageEmbedding):
        raise ValueError("embedding must be an ImageEmbedding")
    if embedding.model_id != model_id:
        raise ValueError(f"embedding is from model {embedding.model_id!r}, this predictor is {model_id!r}")
    if not embedding.features.is_floating_point():
        raise ValueError(f"features must be floating point, got {embedding.features.dtype}")
    if tuple(embedding.features.shape) != feature_shape:
        raise ValueError(f"features must have shape {feature_shape}, got {tuple(embedding.features.shape)}")
