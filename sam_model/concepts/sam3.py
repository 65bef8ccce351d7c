"""SAM 3 (transformers) as a concept engine: noun phrase or exemplar box in, every instance out
with its mask and score (promptable concept segmentation).

Feature reuse: `features` runs the ViT backbone once and keeps its last hidden state (72x72
tokens at 1008x1008); `find` rebuilds the FPN neck's maps from it with the library's own neck
and hands them to the library's forward as `vision_embeds`, which then runs only the text
encoder, the DETR encoder/decoder and the mask decoder, once per prompt. Results are those of
the library's `post_process_instance_segmentation`.

transformers' SAM 3 needs torchvision (its image processor is torchvision-based, and exemplar
boxes are pooled with `torchvision.ops.roi_align`); install the torchvision built for the
installed torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

from sam_model.common.decoding import check_image
from sam_model.concepts.engine import (
    Instance,
    Thresholds,
    check_exemplar_box,
    check_features,
    check_prompts,
    check_thresholds,
    clip_box,
)
from sam_model.concepts.features import ConceptFeatures

# The model inputs `find` passes on from the processor's output (it also returns original_sizes).
MODEL_INPUTS = ("input_ids", "attention_mask", "input_boxes", "input_boxes_labels")


class Sam3Engine:
    """Concept segmentation. `model` is a `Sam3Model`, `processor` its `Sam3Processor`."""

    name = "sam3"
    default_thresholds = Thresholds(score=0.5, mask=0.5)

    def __init__(self, model: nn.Module, processor: object, model_id: str) -> None:
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.patch_size = int(model.config.vision_config.backbone_config.patch_size)
        self.max_tokens = int(model.config.text_config.max_position_embeddings)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype

    def features(self, image: np.ndarray) -> ConceptFeatures:
        h, w = check_image(image)
        inputs = self.processor.image_processor(images=image, input_data_format="channels_last", return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            hidden = self.model.vision_encoder.backbone(pixel_values).last_hidden_state
        return ConceptFeatures({"backbone": hidden}, (h, w), tuple(pixel_values.shape[-2:]), self.model_id)

    def find(
        self, features: ConceptFeatures, prompts: Sequence[str], thresholds: Thresholds | None = None
    ) -> list[Instance]:
        prompts = check_prompts(prompts)
        thresholds = check_thresholds(thresholds, self.default_thresholds)
        check_features(features, self.model_id)
        encoded = [self.processor(text=prompt, return_tensors="pt") for prompt in prompts]
        for prompt, inputs in zip(prompts, encoded, strict=True):
            if inputs["input_ids"].shape[-1] > self.max_tokens:
                raise ValueError(f"prompt {prompt[:40]!r} is longer than SAM 3's {self.max_tokens} text tokens")
        with torch.inference_mode():
            vision = self._vision_embeds(features)
            instances = []
            for index, inputs in enumerate(encoded):
                instances += self._instances(vision, inputs, index, thresholds, features.original_size)
        return instances

    def find_similar(
        self, features: ConceptFeatures, exemplar_box: Sequence[float], thresholds: Thresholds | None = None
    ) -> list[Instance]:
        thresholds = check_thresholds(thresholds, self.default_thresholds)
        check_features(features, self.model_id)
        box = check_exemplar_box(exemplar_box, features.original_size)
        inputs = self.processor(
            input_boxes=[[list(box)]],
            input_boxes_labels=[[1]],
            original_sizes=[list(features.original_size)],
            return_tensors="pt",
        )
        with torch.inference_mode():
            return self._instances(self._vision_embeds(features), inputs, 0, thresholds, features.original_size)

    def _vision_embeds(self, features: ConceptFeatures) -> Sam3VisionEncoderOutput:
        """The vision encoder's output rebuilt from the stored backbone state (as its forward
        builds it: tokens to a grid, then the neck)."""
        hidden = features.tensor("backbone", self.device, self.dtype)
        height, width = (side // self.patch_size for side in features.input_size)
        if hidden.dim() != 3 or hidden.shape[:2] != (1, height * width):
            raise ValueError(f"backbone features of shape {tuple(hidden.shape)} do not fit {features.input_size}")
        grid = hidden.view(1, height, width, -1).permute(0, 3, 1, 2)
        fpn_hidden_states, fpn_position_encoding = self.model.vision_encoder.neck(grid)
        return Sam3VisionEncoderOutput(
            last_hidden_state=hidden, fpn_hidden_states=fpn_hidden_states, fpn_position_encoding=fpn_position_encoding
        )

    def _instances(
        self,
        vision: Sam3VisionEncoderOutput,
        inputs: dict[str, torch.Tensor],
        prompt_index: int,
        thresholds: Thresholds,
        size: tuple[int, int],
    ) -> list[Instance]:
        # Boxes are floats: in the model's dtype (bf16 on a GPU), ids and masks as they are.
        model_inputs = {
            k: inputs[k].to(self.device, self.dtype if inputs[k].is_floating_point() else inputs[k].dtype)
            for k in MODEL_INPUTS
            if k in inputs
        }
        outputs = self.model(vision_embeds=vision, **model_inputs)
        result = self.processor.post_process_instance_segmentation(
            outputs, threshold=thresholds.score, mask_threshold=thresholds.mask, target_sizes=[size]
        )[0]
        masks = result["masks"].bool().cpu().numpy()
        boxes, scores = result["boxes"].cpu().tolist(), result["scores"].cpu().tolist()
        return [
            Instance(prompt_index, clip_box(box, size), score, mask)
            for box, score, mask in zip(boxes, scores, masks, strict=True)
        ]
