"""Automatic mask generation: prompt SAM with a grid of points, keep the good, distinct masks.

The algorithm is the reference's (SamAutomaticMaskGenerator): per crop layer a point grid,
decoded in batches into three candidate masks per point; IoU and stability filters; masks
touching an inner crop edge dropped; box NMS within a crop, then between crops preferring
smaller crops; optional cleanup of small holes and islands followed by NMS again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from sam_model.amg.grid import crop_boxes, layer_point_grids
from sam_model.amg.masks import (
    Rle,
    binarize,
    boxes_near_crop_edge,
    masks_to_boxes,
    masks_to_rles,
    remove_small_regions,
    rle_area,
    rle_to_coco,
    rle_to_list,
    rle_to_mask,
    stability_score,
)
from sam_model.amg.nms import batched_nms, box_area
from sam_model.common.decoding import Predictor
from sam_model.common.embedding import ImageEmbedding

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
MODES = ("exact", "fast")
# Full-resolution logits are materialised this many masks at a time: bounds memory at
# ~chunk * 4 MiB * (1 + H*W / 1024^2) instead of holding a whole batch of float masks.
_UPSCALE_CHUNK = 16
# Fast mode drops a mask without upscaling it when its low-resolution stability is below
# the threshold by more than this. On smooth logits (bench_amg's agreement pass) the
# low-res score is within 0.041 of the full-res one for 99% of masks.
LOW_RES_MARGIN = 0.05


class GridDecoder(Protocol):
    """One crop's embedding, decoded a batch of grid points at a time (each family's own)."""

    def decode(self, points: np.ndarray, min_iou: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def upscale(self, logits: torch.Tensor, opencv: bool) -> torch.Tensor: ...

    def low_res_cells(self, logits: torch.Tensor) -> torch.Tensor: ...


class GridPredictor(Predictor, Protocol):
    """A predictor that automatic mask generation can drive."""

    mask_threshold: float

    def grid_decoder(self, embedding: ImageEmbedding) -> GridDecoder: ...


@dataclass
class MaskSet:
    """Candidate masks as columns; boxes, points and crop boxes in the full image's pixels."""

    rles: list[Rle]
    boxes: torch.Tensor  # (N, 4) int64 xyxy, inclusive max corner
    iou: torch.Tensor  # (N,) float32 predicted IoU
    stability: torch.Tensor  # (N,) float32
    points: torch.Tensor  # (N, 2) float64 xy of the prompting point
    crop_boxes: torch.Tensor  # (N, 4) int64 xyxy

    def __len__(self) -> int:
        return len(self.rles)

    def take(self, index: torch.Tensor) -> MaskSet:
        """Rows at `index` (int indices or a bool mask), in that order."""
        rows = torch.arange(len(self))[index].tolist()
        return MaskSet(
            [self.rles[i] for i in rows],
            self.boxes[index],
            self.iou[index],
            self.stability[index],
            self.points[index],
            self.crop_boxes[index],
        )

    @staticmethod
    def concat(parts: list[MaskSet]) -> MaskSet:
        if not parts:
            return MaskSet(
                [],
                torch.zeros(0, 4, dtype=torch.int64),
                torch.zeros(0),
                torch.zeros(0),
                torch.zeros(0, 2, dtype=torch.float64),
                torch.zeros(0, 4, dtype=torch.int64),
            )
        return MaskSet(
            [r for p in parts for r in p.rles],
            torch.cat([p.boxes for p in parts]),
            torch.cat([p.iou for p in parts]),
            torch.cat([p.stability for p in parts]),
            torch.cat([p.points for p in parts]),
            torch.cat([p.crop_boxes for p in parts]),
        )


class AutomaticMaskGenerator:
    """Whole-image mask proposals from SAM (the reference AMG's parameters and output records).

    `mode="exact"` reproduces the reference: every candidate's logits are upscaled to full
    resolution before the stability score is taken. Only the order of work changes: the
    IoU filter runs on the IoU head first, so the logits of masks it drops are never computed
    (the decoder's upscaling network is skipped for points with no surviving candidate), and
    full-resolution logits live a few masks at a time.

    `mode="fast"`, the serving default, decides on the low-resolution (256x256) logits
    first: after the IoU filter, the stability score is estimated on the part of the
    256x256 grid that covers the image, and masks below the threshold by more than
    LOW_RES_MARGIN are dropped without ever being upscaled (most candidates, with real
    weights). The rest are upscaled with OpenCV on CPU and filtered on the full-resolution
    score as in exact mode, so the output differs from exact mode only by interpolation
    rounding and the rare mask whose low-res estimate is off by more than the margin
    (bench/bench_amg.py reports both). Masks are RLE-encoded per batch in both modes, and
    RLE counts stay numpy arrays until output.

    Parameters (every default but `mode` is the reference's):

    - `predictor`: encodes the crops (and the image, unless `generate` gets its embedding)
      and lends its model's prompt encoder and decoder.
    - `points_per_side` (32): prompt points along each side of the image, a regular grid
      of points_per_side**2 points; None when `point_grids` is given instead.
    - `points_per_batch` (64): points per decoder call (3 candidate masks each); larger
      batches may be faster and hold more memory at once.
    - `pred_iou_thresh` (0.88): keep masks whose predicted IoU (the decoder's own quality
      estimate, 0..1) is above this; 0 or less keeps all.
    - `stability_score_thresh` (0.95): keep masks whose stability score is at least this:
      the IoU (0..1) of the mask cut at mask_threshold + offset and at mask_threshold - offset;
      0 or less keeps all.
    - `stability_score_offset` (1.0): that offset, in logit units.
    - `box_nms_thresh` (0.7): of two masks in one crop whose boxes overlap by more than
      this box IoU, the one with lower predicted IoU is dropped; 1.0 drops none.
    - `crop_n_layers` (0): layers of crops after the whole image; layer i (1..) cuts it
      into 2**i x 2**i overlapping crops, each encoded and prompted on its own.
    - `crop_nms_thresh` (0.7): box IoU for the NMS between crops, where the mask from the
      smaller crop wins.
    - `crop_overlap_ratio` (512/1500): overlap of neighbouring crops in layer 1, as a
      fraction of the image's shorter side; it halves with each further layer.
    - `crop_n_points_downscale_factor` (1): layer i gets points_per_side / factor**i
      points a side.
    - `point_grids` (None): one (N, 2) array per layer (crop_n_layers + 1 of them) of
      prompt points as x, y fractions (0..1) of the crop's width and height; replaces
      `points_per_side`.
    - `min_mask_region_area` (0): in pixels; when positive, holes and islands smaller
      than this are removed from every kept mask, then NMS runs again preferring masks
      left untouched; 0 skips it.
    - `output_mode` ("binary_mask"): a record's "segmentation" as an HxW bool array
      ("binary_mask"), an uncompressed RLE {"size", "counts" list} ("uncompressed_rle")
      or a pycocotools compressed RLE ("coco_rle").
    - `mode` ("exact"; not in the reference): "exact" or "fast", as above.
    """

    def __init__(
        self,
        predictor: GridPredictor,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        mode: str = "exact",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if points_per_batch < 1 or crop_n_layers < 0:
            raise ValueError("points_per_batch must be >= 1 and crop_n_layers >= 0")
        if point_grids is not None:
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(grids) != crop_n_layers + 1:
                raise ValueError(f"point_grids needs one grid per crop layer ({crop_n_layers + 1})")
        else:
            grids = layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        self.predictor = predictor
        self.point_grids = grids
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.mode = mode
        self._threshold = float(predictor.mask_threshold)

    @torch.inference_mode()
    def generate(self, image: np.ndarray, embedding: ImageEmbedding | None = None) -> list[dict[str, Any]]:
        """HxWx3 uint8 RGB image -> mask records (the reference's keys; bbox/crop_box XYWH).

        `embedding`, if given, must be this image's (uncropped) embedding: the full-image
        layer reuses it instead of encoding again; crop layers always encode their crops.
        """
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be an HxWx3 numpy array, got {getattr(image, 'shape', type(image))}")
        image_hw = (int(image.shape[0]), int(image.shape[1]))
        if embedding is not None:
            self.predictor.check_embedding(embedding)
            if tuple(embedding.original_size) != image_hw:
                raise ValueError(f"embedding is of a {embedding.original_size} image, not {image_hw}")
        boxes, layers = crop_boxes(image_hw, self.crop_n_layers, self.crop_overlap_ratio)
        masks = MaskSet.concat(
            [
                self._crop(image, box, layer, embedding if layer == 0 else None)
                for box, layer in zip(boxes, layers, strict=True)
            ]
        )
        if len(boxes) > 1:
            # Same NMS across crops, scored so that the smaller crop's mask wins.
            smaller_first = 1 / box_area(masks.crop_boxes)
            keep = batched_nms(masks.boxes.float(), smaller_first, _zeros(len(masks)), self.crop_nms_thresh)
            masks = masks.take(keep)
        if self.min_mask_region_area > 0:
            masks = self._remove_small_regions(masks)
        return self._records(masks)

    def _crop(self, image: np.ndarray, box: list[int], layer: int, embedding: ImageEmbedding | None) -> MaskSet:
        x0, y0, x1, y1 = box
        if embedding is None:
            embedding = self.predictor.encode(np.ascontiguousarray(image[y0:y1, x0:x1]))
        crop_h, crop_w = embedding.original_size
        points = self.point_grids[layer] * np.array([crop_w, crop_h], dtype=np.float64)
        decoder = self.predictor.grid_decoder(embedding)
        image_hw = (image.shape[0], image.shape[1])
        parts = [
            self._batch(decoder, embedding, points[i : i + self.points_per_batch], box, image_hw)
            for i in range(0, len(points), self.points_per_batch)
        ]
        masks = MaskSet.concat(parts)
        keep = batched_nms(masks.boxes.float(), masks.iou, _zeros(len(masks)), self.box_nms_thresh)
        return masks.take(keep)

    def _batch(
        self,
        decoder: GridDecoder,
        embedding: ImageEmbedding,
        points: np.ndarray,
        box: list[int],
        image_hw: tuple[int, int],
    ) -> MaskSet:
        """One batch of grid points (crop pixels) -> surviving masks, already RLE-encoded."""
        crop_hw = embedding.original_size
        # The reference filters on predicted IoU only when the threshold is positive.
        min_iou = self.pred_iou_thresh if self.pred_iou_thresh > 0 else None
        iou, keep, logits = decoder.decode(points, min_iou)
        prompts = torch.as_tensor(points).repeat_interleave(len(iou) // len(points), dim=0)
        iou, prompts = iou[keep], prompts[keep]
        if self.mode == "fast" and self.stability_score_thresh > 0:
            # Sure losers go before any upscaling; the margin covers the low-res estimate's error.
            cells = decoder.low_res_cells(logits)
            estimate = stability_score(cells, self._threshold, self.stability_score_offset).cpu()
            keep = estimate >= self.stability_score_thresh - LOW_RES_MARGIN
            logits, iou, prompts = logits[keep.to(logits.device)], iou[keep], prompts[keep]
        stability, binary = self._full_res_masks(decoder, logits, crop_hw)
        if self.stability_score_thresh > 0:
            keep = stability >= self.stability_score_thresh
            iou, prompts, stability, binary = iou[keep], prompts[keep], stability[keep], binary[keep]
        x0, y0 = box[0], box[1]
        boxes = masks_to_boxes(binary) + torch.tensor([x0, y0, x0, y0])
        keep = ~boxes_near_crop_edge(boxes, box, [0, 0, image_hw[1], image_hw[0]])
        binary = binary[keep]
        return MaskSet(
            masks_to_rles(binary, image_hw, (x0, y0)),
            boxes[keep],
            iou[keep],
            stability[keep],
            prompts[keep] + torch.tensor([x0, y0], dtype=torch.float64),
            torch.tensor([box], dtype=torch.int64).expand(len(binary), 4),
        )

    def _full_res_masks(
        self, decoder: GridDecoder, logits: torch.Tensor, crop_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stability and binary mask at full size (on CPU), a few masks at a time (bounded memory)."""
        stability = torch.empty(logits.shape[0], dtype=torch.float32)
        binary = torch.empty((logits.shape[0], *crop_hw), dtype=torch.bool)
        # Fast mode on CPU takes OpenCV's kernel (~2x faster, equal to ~1e-4); exact mode
        # keeps torch's, the reference's.
        opencv = self.mode == "fast" and logits.device.type == "cpu"
        for i in range(0, logits.shape[0], _UPSCALE_CHUNK):
            part = slice(i, i + _UPSCALE_CHUNK)
            full = decoder.upscale(logits[part], opencv)
            stability[part] = stability_score(full, self._threshold, self.stability_score_offset).cpu()
            binary[part] = binarize(full, self._threshold).cpu()
        return stability, binary

    def _remove_small_regions(self, masks: MaskSet) -> MaskSet:
        """Fill small holes, drop small islands, then NMS again preferring masks left untouched."""
        if len(masks) == 0:
            return masks
        rles, boxes, untouched = list(masks.rles), masks.boxes.clone(), []
        for i, rle in enumerate(masks.rles):
            mask, filled = remove_small_regions(rle_to_mask(rle), self.min_mask_region_area, "holes")
            mask, dropped = remove_small_regions(mask, self.min_mask_region_area, "islands")
            untouched.append(not (filled or dropped))
            if filled or dropped:
                changed = torch.from_numpy(np.ascontiguousarray(mask))[None]
                rles[i] = masks_to_rles(changed)[0]
                boxes[i] = masks_to_boxes(changed)[0]
        scores = torch.tensor(untouched, dtype=torch.float32)
        threshold = max(self.box_nms_thresh, self.crop_nms_thresh)
        keep = batched_nms(boxes.float(), scores, _zeros(len(masks)), threshold)
        cleaned = MaskSet(rles, boxes, masks.iou, masks.stability, masks.points, masks.crop_boxes)
        return cleaned.take(keep)

    def _records(self, masks: MaskSet) -> list[dict[str, Any]]:
        records = []
        for i, rle in enumerate(masks.rles):
            if self.output_mode == "binary_mask":
                segmentation: Any = rle_to_mask(rle)
            elif self.output_mode == "coco_rle":
                segmentation = rle_to_coco(rle)
            else:
                segmentation = rle_to_list(rle)
            records.append(
                {
                    "segmentation": segmentation,
                    "area": rle_area(rle),
                    "bbox": _xywh(masks.boxes[i]),
                    "predicted_iou": float(masks.iou[i]),
                    "point_coords": [masks.points[i].tolist()],
                    "stability_score": float(masks.stability[i]),
                    "crop_box": _xywh(masks.crop_boxes[i]),
                }
            )
        return records


def _zeros(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.int64)


def _xywh(box: torch.Tensor) -> list[int]:
    x0, y0, x1, y1 = box.tolist()
    return [x0, y0, x1 - x0, y1 - y0]
