"""Grounding DINO (transformers) as a concept engine: labels in, boxes with a label each out.

All prompts of a call go into one caption, "cat. dog. traffic light.", as the model was trained;
each box answers the prompt whose tokens it matches best. Boxes and scores are exactly those
of the library's `post_process_grounded_object_detection`.

Feature reuse: text enters the model in its encoder (image-text fusion), so only the image
backbone (Swin) is independent of the prompts. The library's forward takes pixels, not
backbone output, so the engine wraps the model's backbone module: `features` runs the Swin
once and keeps its maps; `find` replays them through that wrapper while the library's own
forward runs everything after it. Prompts beyond the caption's token limit (max_text_len,
256) go into further captions, each one more pass of the fusion and decoder stages only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from sam_model.common.decoding import check_image
from sam_model.concepts.engine import (
    Instance,
    Thresholds,
    check_features,
    check_prompts,
    check_thresholds,
    clip_box,
)
from sam_model.concepts.features import ConceptFeatures

# BERT's "." and "?" split the caption into phrases (the model's SPECIAL_TOKENS): a prompt
# holding one would be read as two.
SEPARATORS = (".", "?")
Levels = list[tuple[torch.Tensor, torch.Tensor]]


class ReplayableBackbone(nn.Module):
    """The model's backbone (GroundingDinoConvModel), able to hand back stored Swin maps.

    Outside `replaying` it is the library module unchanged. Inside, it returns the stored
    (feature map, mask) levels with their position embeddings, computed as the library does.
    The stored levels are per thread, so concurrent requests cannot see each other's image.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self._local = threading.local()

    @property
    def position_embedding(self) -> nn.Module:
        """The model's forward embeds its extra, downsampled level with this."""
        return self.inner.position_embedding

    def levels(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> Levels:
        """The Swin stages' (feature map, mask) pairs: the part worth keeping."""
        return self.inner.conv_encoder(pixel_values, pixel_mask)

    @contextmanager
    def replaying(self, levels: Levels) -> Iterator[None]:
        self._local.levels = levels
        try:
            yield
        finally:
            self._local.levels = None

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[Levels, list[torch.Tensor]]:
        levels = getattr(self._local, "levels", None)
        if levels is None:
            return self.inner(pixel_values, pixel_mask)
        position = [self.inner.position_embedding(fmap, mask).to(fmap.dtype) for fmap, mask in levels]
        return list(levels), position


class GroundingDinoEngine:
    """Text -> boxes. `model` is a `GroundingDinoForObjectDetection`, `processor` its
    `GroundingDinoProcessor`; the model's backbone is wrapped in `ReplayableBackbone` here."""

    name = "grounding-dino"
    default_thresholds = Thresholds(score=0.35)

    def __init__(self, model: nn.Module, processor: object, model_id: str) -> None:
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        backbone = model.model.backbone
        if not isinstance(backbone, ReplayableBackbone):
            backbone = ReplayableBackbone(backbone)
            model.model.backbone = backbone
        self.backbone = backbone
        self.num_levels = len(backbone.inner.conv_encoder.intermediate_channel_sizes)
        self.max_tokens = int(model.config.max_text_len)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype

    def features(self, image: np.ndarray) -> ConceptFeatures:
        h, w = check_image(image)
        inputs = self.processor.image_processor(images=image, input_data_format="channels_last", return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        pixel_mask = inputs.get("pixel_mask")  # absent when the processor does not pad: all valid
        if pixel_mask is None:
            pixel_mask = torch.ones(pixel_values.shape[:1] + pixel_values.shape[-2:], dtype=torch.long)
        pixel_mask = pixel_mask.to(self.device)
        with torch.inference_mode():
            levels = self.backbone.levels(pixel_values, pixel_mask)
        tensors = {"pixel_mask": pixel_mask[0].bool()}
        for index, (feature_map, mask) in enumerate(levels):
            tensors[f"feature.{index}"] = feature_map
            tensors[f"mask.{index}"] = mask
        return ConceptFeatures(tensors, (h, w), tuple(pixel_values.shape[-2:]), self.model_id)

    def find(
        self, features: ConceptFeatures, prompts: Sequence[str], thresholds: Thresholds | None = None
    ) -> list[Instance]:
        prompts = check_prompts(prompts)
        for prompt in prompts:
            if any(separator in prompt for separator in SEPARATORS):
                raise ValueError(f"prompt {prompt!r} holds '.' or '?', which Grounding DINO reads as a phrase break")
        thresholds = check_thresholds(thresholds, self.default_thresholds)
        check_features(features, self.model_id)
        captions = list(self._captions(prompts))  # every prompt checked before any work
        levels = [
            (
                features.tensor(f"feature.{i}", self.device, self.dtype),
                features.tensor(f"mask.{i}", self.device, self.dtype),
            )
            for i in range(self.num_levels)
        ]
        pixel_mask = features.tensor("pixel_mask", self.device, self.dtype)[None].long()
        # The forward reads only the shape and device of pixel_values once the backbone replays.
        pixel_values = torch.zeros((), device=self.device, dtype=self.dtype).expand(1, 3, *pixel_mask.shape[-2:])
        instances: list[Instance] = []
        for start, group in captions:
            found = self._find_caption(levels, pixel_values, pixel_mask, group, thresholds, features.original_size)
            instances += [Instance(start + i, box, score) for i, box, score in found]
        return instances

    def find_similar(
        self, features: ConceptFeatures, exemplar_box: Sequence[float], thresholds: Thresholds | None = None
    ) -> list[Instance]:
        raise ValueError("Grounding DINO does not support exemplar (box) prompts; use text prompts or SAM 3")

    def _captions(self, prompts: list[str]) -> Iterator[tuple[int, list[str]]]:
        """(index of the first prompt, prompts) for each caption that fits the token limit."""
        start, group = 0, []
        for index, prompt in enumerate(prompts):
            if group and self._token_count([*group, prompt]) > self.max_tokens:
                yield start, group
                start, group = index, []
            if not group and self._token_count([prompt]) > self.max_tokens:
                raise ValueError(f"prompt {prompt[:40]!r} is longer than Grounding DINO's {self.max_tokens} tokens")
            group.append(prompt)
        yield start, group

    def _token_count(self, prompts: list[str]) -> int:
        return len(self.processor.tokenizer(caption(prompts)[0])["input_ids"])

    def _find_caption(
        self,
        levels: Levels,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor,
        prompts: list[str],
        thresholds: Thresholds,
        size: tuple[int, int],
    ) -> list[tuple[int, tuple[float, float, float, float], float]]:
        text, spans = caption(prompts)
        encoded = self.processor(text=text, return_tensors="pt")
        offsets = self.processor.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        owners = token_owners(offsets, spans)
        if any(not (owners == i).any() for i in range(len(prompts))):
            raise ValueError(f"a prompt of {prompts!r} has no tokens Grounding DINO can read")
        with torch.inference_mode(), self.backbone.replaying(levels):
            outputs = self.model(
                pixel_values=pixel_values, pixel_mask=pixel_mask, **{k: v.to(self.device) for k, v in encoded.items()}
            )
            result = self.processor.post_process_grounded_object_detection(
                outputs, encoded["input_ids"], threshold=thresholds.score, target_sizes=[size]
            )[0]
            logits = outputs.logits[0].float().cpu()  # (queries, max_text_len)
        kept = logits.sigmoid().max(-1).values > thresholds.score  # the library's own selection
        # Each box answers the prompt holding its best token (on logits: probabilities tie at 1.0).
        owners = torch.nn.functional.pad(owners, (0, logits.shape[-1] - owners.numel()), value=-1)
        per_prompt = torch.stack([logits[:, owners == i].max(-1).values for i in range(len(prompts))])
        best = per_prompt.argmax(0)[kept].tolist()
        boxes, scores = result["boxes"].cpu().tolist(), result["scores"].cpu().tolist()
        if len(best) != len(boxes):
            raise RuntimeError("post-processing kept other boxes than the threshold selects")
        return [(index, clip_box(box, size), score) for index, box, score in zip(best, boxes, scores, strict=True)]


def caption(prompts: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Grounding DINO's caption for `prompts` ("cat. dog.", lower case, as its processor
    builds it) and each prompt's character span in it."""
    text, spans = "", []
    for prompt in prompts:
        lowered = prompt.lower()
        if text:
            text += " "
        spans.append((len(text), len(text) + len(lowered)))
        text += lowered + "."
    return text, spans


def token_owners(offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]) -> torch.Tensor:
    """For each token (its character offsets), the index of the prompt span holding it, or -1
    (special tokens, the '.' separators)."""
    owners = torch.full((len(offsets),), -1, dtype=torch.long)
    for position, (begin, end) in enumerate(offsets):
        if end > begin:
            for index, (first, last) in enumerate(spans):
                if first <= begin and end <= last:
                    owners[position] = index
    return owners
