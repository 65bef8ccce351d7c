"""Tiny random Grounding DINO and SAM 3 models saved as transformers folders, and the runner
that puts each through our engine and through the library for tests/sam_model/test_concepts.py.

Why a second interpreter: the test process has tests/oracle_stubs on sys.path, and its
torchvision stand-in (for the SAM oracles) lacks what transformers imports while transformers
takes it for torchvision. `python -m tests.support.concept_models KIND OUT` runs in a clean
interpreter: it saves a tiny random model the way real weights are laid out, loads it through
`load_concept_engine` and, separately, through the library's own classes, feeds both the same
inputs, and writes every array to OUT/results.npz and every outcome to OUT/results.json. The
tests compare those; nothing here decides a verdict.

SAM 3 in transformers needs torchvision, whose PyPI wheels (CUDA builds) do not load beside the
CPU torch here. Where none imports, `install_torchvision_stand_in` puts the few pieces that
transformers' SAM 3 path calls into sys.modules, written in torch from torchvision's documented
semantics (roi_align: one bilinear sample per bin). Both sides of every comparison run on it,
so parity does not depend on its fidelity; a real torchvision is used where one is installed.
"""

from __future__ import annotations

import enum
import importlib.machinery
import importlib.util
import json
import os
import socket
import string
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tests.support.images import photo_like

KINDS = ("grounding-dino", "sam3")
# BERT's ids for the tokens Grounding DINO hard-codes as phrase delimiters (SPECIAL_TOKENS).
BERT_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
BERT_VOCAB_SIZE = 1100
WORDS = ("a", "cat", "dog", "traffic", "light", "red", "car", "person", "tree", "house", "bird", "boat", "cup")
GDINO_MAX_TEXT_LEN = 24
GDINO_PROMPTS = (
    "cat", "dog", "traffic light", "red car", "person", "tree", "house", "bird", "boat", "cup", "a zebra", "sky",
)  # fmt: skip
SAM3_PROMPTS = ("cat", "red car", "a zebra")
IMAGE_SIZES = {"grounding-dino": ((45, 70), (70, 45)), "sam3": ((40, 60), (57, 33))}
EXEMPLAR = (6.0, 8.0, 30.0, 27.0)


def randomize(model: torch.nn.Module, seed: int, std: float = 0.05, norm_scale: float = 1.0) -> None:
    """Every parameter random (norm scales near `norm_scale`), so no path hides behind an init
    of zeros. Grounding DINO scores boxes by raw dot products of normalised features: a scale
    below 1 keeps its logits O(1) instead of saturating every score at 1.0."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, parameter in module.named_parameters(recurse=False):
                if name == "weight" and "Norm" in type(module).__name__:
                    parameter.copy_(norm_scale * (1 + 0.1 * torch.randn_like(parameter)))
                else:
                    parameter.normal_(0, std)


def bert_vocab() -> dict[str, int]:
    """A WordPiece vocabulary with BERT's ids for its special tokens: words, letters and
    '##' letters, so any lower-case word tokenizes."""
    pieces = [*WORDS, *string.ascii_lowercase, *(f"##{c}" for c in string.ascii_lowercase), *"!,-'"]
    tokens = [f"[unused{i}]" for i in range(BERT_VOCAB_SIZE)]
    for token, index in BERT_IDS.items():
        tokens[index] = token
    free = (i for i in range(200, BERT_VOCAB_SIZE) if i not in BERT_IDS.values())
    for piece, index in zip(pieces, free, strict=False):
        tokens[index] = piece
    return {token: index for index, token in enumerate(tokens)}


def clip_vocab() -> dict[str, int]:
    """A byte-level BPE vocabulary of single printable characters, bare and word-final."""
    chars = [c for c in string.printable if not c.isspace()]
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(f"{c}</w>" for c in chars)]
    return {token: index for index, token in enumerate(tokens)}


def save_tiny_grounding_dino(folder: Path, seed: int = 0) -> Path:
    """A GroundingDinoForObjectDetection (Swin + BERT, every size tiny) with its processor."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        SwinConfig,
    )

    backbone = SwinConfig(
        image_size=64, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2, out_indices=[2, 3, 4]
    )
    text = BertConfig(
        vocab_size=BERT_VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        num_queries=30,
        max_text_len=GDINO_MAX_TEXT_LEN,
    )
    model = GroundingDinoForObjectDetection(config)
    randomize(model, seed, norm_scale=0.4)
    model.save_pretrained(folder)
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96})
    GroundingDinoProcessor(image_processor, BertTokenizer(vocab=bert_vocab())).save_pretrained(folder)
    return folder


def save_tiny_sam3(folder: Path, seed: int = 0) -> Path:
    """A Sam3Model (ViT at 56x56, CLIP text, one layer each, 12 queries) with its processor."""
    from transformers import (
        CLIPTextConfig,
        CLIPTokenizer,
        Sam3Config,
        Sam3ImageProcessor,
        Sam3Model,
        Sam3Processor,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )

    vocab = clip_vocab()
    vit = Sam3ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
        window_size=2,
        global_attn_indexes=[1],
        pretrain_image_size=28,
    )
    vision = Sam3VisionConfig(
        backbone_config=vit, fpn_hidden_size=32, backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]]
    )
    end = vocab["<|endoftext|>"]
    text = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=32,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=end,
        pad_token_id=end,
    )
    small = {"hidden_size": 32, "num_attention_heads": 2}
    layers = {**small, "num_layers": 1, "intermediate_size": 64}
    config = Sam3Config(
        vision_config=vision,
        text_config=text,
        geometry_encoder_config={**layers, "roi_size": 2},
        detr_encoder_config=layers,
        detr_decoder_config={**layers, "num_queries": 12},
        mask_decoder_config=small,
    )
    model = Sam3Model(config)
    randomize(model, seed)
    model.save_pretrained(folder)
    image_processor = Sam3ImageProcessor(size={"height": 56, "width": 56}, mask_size={"height": 16, "width": 16})
    Sam3Processor(image_processor, CLIPTokenizer(vocab=vocab, merges=[]), target_size=56).save_pretrained(folder)
    return folder


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def install_torchvision_stand_in() -> None:
    """The torchvision pieces transformers' SAM 3 path imports, as modules in sys.modules."""

    def module(name: str, **attributes: object) -> types.ModuleType:
        created = types.ModuleType(name)
        created.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        created.__path__ = []
        created.__dict__.update(attributes)
        sys.modules[name] = created
        return created

    functional = module("torchvision.transforms.functional", pil_to_tensor=_pil_to_tensor)
    v2_functional = module(
        "torchvision.transforms.v2.functional",
        InterpolationMode=InterpolationMode,
        grayscale_to_rgb=_grayscale_to_rgb,
        to_dtype=_to_dtype,
        resize=_resize,
        normalize=_normalize,
        pad=_pad,
        crop=lambda image, top, left, height, width: image[..., top : top + height, left : left + width],
    )
    v2 = module("torchvision.transforms.v2", functional=v2_functional)
    transforms = module("torchvision.transforms", InterpolationMode=InterpolationMode, functional=functional, v2=v2)
    boxes = module("torchvision.ops.boxes", batched_nms=_not_in_stand_in)
    ops = module("torchvision.ops", boxes=boxes, roi_align=_roi_align)
    io = module("torchvision.io", decode_image=_not_in_stand_in)  # imported by transformers' video utilities
    module("torchvision", __version__="0.28.0", transforms=transforms, ops=ops, io=io)


def _not_in_stand_in(*args: object, **kwargs: object) -> None:
    raise NotImplementedError("not part of the torchvision stand-in")


def _pil_to_tensor(picture: object) -> torch.Tensor:
    array = np.array(picture, copy=True)
    return torch.from_numpy(array if array.ndim == 3 else array[:, :, None]).permute(2, 0, 1).contiguous()


def _grayscale_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return image.repeat_interleave(3, dim=-3) if image.shape[-3] == 1 else image


def _to_dtype(image: torch.Tensor, dtype: torch.dtype, scale: bool = False) -> torch.Tensor:
    if scale and dtype.is_floating_point and not image.is_floating_point():
        return image.to(dtype) / 255
    if scale and image.is_floating_point() and not dtype.is_floating_point:
        return (image * 255).round().clamp(0, 255).to(dtype)
    return image.to(dtype)


def _resize(
    image: torch.Tensor, size: list[int], interpolation: InterpolationMode = InterpolationMode.BILINEAR, antialias=True
) -> torch.Tensor:
    smooth = interpolation in (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)
    batch = (image if image.is_floating_point() else image.float()).reshape(-1, *image.shape[-3:])
    out = F.interpolate(
        batch,
        size=list(size),
        mode=interpolation.value if smooth else "nearest-exact",
        align_corners=False if smooth else None,
        antialias=bool(antialias) and smooth,
    )
    if not image.is_floating_point():
        out = out.round().clamp(0, 255).to(image.dtype)
    return out.reshape(*image.shape[:-2], *out.shape[-2:])


def _normalize(image: torch.Tensor, mean: list[float], std: list[float], inplace: bool = False) -> torch.Tensor:
    mean_t = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    return (image - mean_t) / std_t


def _pad(image: torch.Tensor, padding: list[int], fill: float = 0, padding_mode: str = "constant") -> torch.Tensor:
    left, top, right, bottom = padding
    return F.pad(image, (left, right, top, bottom), value=fill)


def _roi_align(
    features: torch.Tensor,
    boxes: list[torch.Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """(K, C, oh, ow): each box's bins sampled once, bilinearly, at their centres."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    height, width = features.shape[-2:]
    pooled = []
    for index, image_boxes in enumerate(boxes):
        for box in image_boxes:
            x0, y0, x1, y1 = (box * spatial_scale - (0.5 if aligned else 0.0)).tolist()
            ys = y0 + (torch.arange(oh, dtype=features.dtype) + 0.5) * (y1 - y0) / oh
            xs = x0 + (torch.arange(ow, dtype=features.dtype) + 0.5) * (x1 - x0) / ow
            grid_y, grid_x = torch.meshgrid((ys + 0.5) / height * 2 - 1, (xs + 0.5) / width * 2 - 1, indexing="ij")
            grid = torch.stack((grid_x, grid_y), -1)[None].to(features.device)
            pooled.append(F.grid_sample(features[index : index + 1], grid, align_corners=False)[0])
    return torch.stack(pooled) if pooled else features.new_zeros((0, features.shape[1], oh, ow))


class Recorder:
    """Arrays for results.npz and outcomes for results.json."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.facts: dict[str, object] = {}

    def instances(self, key: str, instances: list) -> None:
        self.arrays[f"{key}.prompt"] = np.array([i.prompt_index for i in instances], dtype=np.int64)
        self.arrays[f"{key}.boxes"] = np.array([i.box_xyxy for i in instances], dtype=np.float64).reshape(-1, 4)
        self.arrays[f"{key}.scores"] = np.array([i.score for i in instances], dtype=np.float64)
        if instances and instances[0].mask is not None:
            self.arrays[f"{key}.masks"] = np.stack([i.mask for i in instances])

    def library(self, key: str, result: dict, size: tuple[int, int]) -> None:
        """The library's post-processed result, its boxes clipped as the engine clips them."""
        h, w = size
        boxes = result["boxes"].double().numpy().reshape(-1, 4)
        self.arrays[f"{key}.boxes"] = np.clip(boxes, 0, [w, h, w, h])
        self.arrays[f"{key}.scores"] = result["scores"].double().numpy()
        if "masks" in result:  # with nothing kept, the library leaves them at its mask size
            self.arrays[f"{key}.masks"] = result["masks"].bool().numpy().reshape(-1, h, w)

    def outcome(self, key: str, call: Callable[[], object]) -> None:
        """What a call that should be refused did: the exception's class names and message."""
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - the test judges which kinds are right
            self.facts[key] = {"raised": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}
        else:
            self.facts[key] = {"raised": [], "message": ""}

    def save(self, out: Path) -> None:
        np.savez(out / "results.npz", **self.arrays)
        (out / "results.json").write_text(json.dumps(self.facts, indent=1))


def run_grounding_dino(out: Path, record: Recorder) -> None:
    from PIL import Image
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    from sam_model.concepts import ConceptFeatures, Thresholds, load_concept_engine

    folder = save_tiny_grounding_dino(out / "grounding-dino")
    engine = load_concept_engine("grounding-dino", str(folder), device="cpu")
    processor = AutoProcessor.from_pretrained(folder)
    model, info = GroundingDinoForObjectDetection.from_pretrained(folder, output_loading_info=True)
    record.facts["loading_info"] = {k: sorted(map(str, v)) for k, v in info.items()}
    passes = count_calls(engine.backbone.inner.conv_encoder)
    (h, w), other_size = IMAGE_SIZES["grounding-dino"]
    image, other = photo_like(h, w, 1), photo_like(*other_size, 2)
    prompts = list(GDINO_PROMPTS)

    # The library, one caption per group of prompts that fits max_text_len, as its docs call it.
    groups = caption_groups(processor.tokenizer, prompts)
    record.facts["groups"] = groups
    direct = []
    for start, count in groups:
        text = ". ".join(p.lower() for p in prompts[start : start + count]) + "."
        inputs = processor(images=Image.fromarray(image), text=text, return_tensors="pt")
        with torch.inference_mode():
            direct.append((text, inputs, model(**inputs)))
    probs = torch.cat([outputs.logits[0].sigmoid().max(-1).values for _, _, outputs in direct])
    threshold = float(probs.median())
    record.facts["threshold"] = threshold
    for g, (text, inputs, outputs) in enumerate(direct):
        result = processor.post_process_grounded_object_detection(
            outputs, inputs.input_ids, threshold=threshold, target_sizes=[(h, w)]
        )[0]
        record.library(f"library.{g}", result, (h, w))
        record.arrays[f"library.{g}.logits"] = outputs.logits[0].double().numpy()
        start, count = groups[g]
        record.arrays[f"library.{g}.owners"] = owners_by_search(
            processor.tokenizer, text, prompts[start : start + count]
        )

    thresholds = Thresholds(score=threshold)
    features = engine.features(image)
    record.facts["passes_after_features"] = passes[0]
    record.instances("ours", engine.find(features, prompts, thresholds))
    record.instances("ours.again", engine.find(features, prompts, thresholds))
    record.facts["passes_after_finds"] = passes[0]
    other_features = engine.features(other)
    record.instances("ours.other", engine.find(other_features, prompts[:3], thresholds))
    record.instances("ours.after_other", engine.find(features, prompts, thresholds))
    record.instances("ours.fresh", engine.find(engine.features(image), prompts, thresholds))
    record.facts["passes_total"] = passes[0]
    # Features through bytes: fp32 exactly, fp16 closely.
    for dtype, name in ((torch.float32, "fp32"), (torch.float16, "fp16")):
        data = features.to_bytes(dtype)
        record.facts[f"bytes.{name}"] = len(data)
        restored = ConceptFeatures.from_bytes(data)
        record.instances(f"ours.{name}", engine.find(restored, prompts, thresholds))
    record.arrays["features.0"] = features.tensors["feature.0"].numpy()
    record.arrays["features.0.fp16"] = (
        ConceptFeatures.from_bytes(features.to_bytes()).tensors["feature.0"].float().numpy()
    )
    record.facts["feature_names"] = sorted(features.tensors)
    record.facts["float_values"] = sum(t.numel() for t in features.tensors.values() if t.is_floating_point())

    bad_inputs(record, engine, features, folder, out)
    record.outcome("bad.separator", lambda: engine.find(features, ["cat. dog"]))
    record.outcome("bad.too_many_tokens", lambda: engine.find(features, [" ".join(["cat"] * GDINO_MAX_TEXT_LEN)]))
    record.outcome("bad.find_similar", lambda: engine.find_similar(features, EXEMPLAR))
    record.outcome("bad.sam3_kind", lambda: load_concept_engine("sam3", str(folder), device="cpu"))


def run_sam3(out: Path, record: Recorder) -> None:
    if importlib.util.find_spec("torchvision") is None:
        install_torchvision_stand_in()
        record.facts["torchvision"] = "stand-in"
    from PIL import Image
    from transformers import Sam3Model, Sam3Processor

    from sam_model.concepts import ConceptFeatures, Thresholds, load_concept_engine

    folder = save_tiny_sam3(out / "sam3")
    engine = load_concept_engine("sam3", str(folder), device="cpu")
    processor = Sam3Processor.from_pretrained(folder)
    model, info = Sam3Model.from_pretrained(folder, output_loading_info=True)
    record.facts["loading_info"] = {k: sorted(map(str, v)) for k, v in info.items()}
    passes = count_calls(engine.model.vision_encoder.backbone)
    (h, w), other_size = IMAGE_SIZES["sam3"]
    image, other = photo_like(h, w, 1), photo_like(*other_size, 2)
    prompts = list(SAM3_PROMPTS)

    direct = []
    for prompt in prompts:  # one prompt per call, as the library's docs call it
        inputs = processor(images=Image.fromarray(image), text=prompt, return_tensors="pt")
        with torch.inference_mode():
            direct.append(
                model(
                    pixel_values=inputs.pixel_values, input_ids=inputs.input_ids, attention_mask=inputs.attention_mask
                )
            )
    inputs = processor(
        images=Image.fromarray(image), input_boxes=[[list(EXEMPLAR)]], input_boxes_labels=[[1]], return_tensors="pt"
    )
    with torch.inference_mode():
        similar = model(**{k: v for k, v in inputs.items() if k != "original_sizes"})
    scores = torch.cat([(o.pred_logits.sigmoid() * o.presence_logits.sigmoid()).flatten() for o in [*direct, similar]])
    threshold = float(scores.median())
    record.facts["threshold"] = threshold
    for index, outputs in enumerate(direct):
        result = processor.post_process_instance_segmentation(
            outputs, threshold=threshold, mask_threshold=0.5, target_sizes=[(h, w)]
        )[0]
        record.library(f"library.{index}", result, (h, w))
    result = processor.post_process_instance_segmentation(
        similar, threshold=threshold, mask_threshold=0.5, target_sizes=[(h, w)]
    )[0]
    record.library("library.similar", result, (h, w))

    thresholds = Thresholds(score=threshold, mask=0.5)
    features = engine.features(image)
    record.facts["passes_after_features"] = passes[0]
    record.instances("ours", engine.find(features, prompts, thresholds))
    record.instances("ours.similar", engine.find_similar(features, EXEMPLAR, thresholds))
    record.instances("ours.again", engine.find(features, prompts, thresholds))
    record.facts["passes_after_finds"] = passes[0]
    record.instances("ours.other", engine.find(engine.features(other), prompts[:1], thresholds))
    record.instances("ours.after_other", engine.find(features, prompts, thresholds))
    record.instances("ours.fresh", engine.find(engine.features(image), prompts, thresholds))
    record.facts["passes_total"] = passes[0]
    for dtype, name in ((torch.float32, "fp32"), (torch.float16, "fp16")):
        data = features.to_bytes(dtype)
        record.facts[f"bytes.{name}"] = len(data)
        record.instances(f"ours.{name}", engine.find(ConceptFeatures.from_bytes(data), prompts, thresholds))
    record.arrays["features.0"] = features.tensors["backbone"].numpy()
    record.arrays["features.0.fp16"] = (
        ConceptFeatures.from_bytes(features.to_bytes()).tensors["backbone"].float().numpy()
    )
    record.facts["feature_names"] = sorted(features.tensors)
    record.facts["float_values"] = sum(t.numel() for t in features.tensors.values() if t.is_floating_point())

    bad_inputs(record, engine, features, folder, out)
    for name, box in {
        "bad.box_outside": (0, 0, w + 5, 10),
        "bad.box_empty": (10, 10, 10, 20),
        "bad.box_shape": (1, 2, 3),
        "bad.box_nan": (1, 2, float("nan"), 4),
        "bad.box_text": "1,2,3,4",
    }.items():
        record.outcome(name, lambda box=box: engine.find_similar(features, box))
    record.outcome("bad.too_many_tokens", lambda: engine.find(features, ["cat " * 40]))
    record.outcome("bad.grounding_dino_kind", lambda: load_concept_engine("grounding-dino", str(folder), device="cpu"))


def bad_inputs(record: Recorder, engine: object, features: object, folder: Path, out: Path) -> None:
    """The refusals both engines share."""
    from sam_model.concepts import ConceptFeatures, Thresholds, load_concept_engine

    foreign = ConceptFeatures(features.tensors, features.original_size, features.input_size, "another:model")
    record.outcome("bad.image_2d", lambda: engine.features(np.zeros((20, 20), np.uint8)))
    record.outcome("bad.image_float", lambda: engine.features(np.zeros((20, 20, 3), np.float32)))
    record.outcome("bad.no_prompts", lambda: engine.find(features, []))
    record.outcome("bad.string_prompts", lambda: engine.find(features, "cat"))
    record.outcome("bad.blank_prompt", lambda: engine.find(features, ["cat", "  "]))
    record.outcome("bad.number_prompt", lambda: engine.find(features, ["cat", 3]))
    record.outcome("bad.foreign_features", lambda: engine.find(foreign, ["cat"]))
    record.outcome("bad.not_features", lambda: engine.find(features.tensors, ["cat"]))
    record.outcome("bad.threshold", lambda: engine.find(features, ["cat"], Thresholds(score=1.5)))
    record.outcome("bad.kind", lambda: load_concept_engine("yolo", str(folder)))
    record.outcome("bad.device", lambda: load_concept_engine(engine.name, str(folder), device="tpu"))
    record.outcome("bad.missing_folder", lambda: load_concept_engine(engine.name, str(out / "nowhere"), device="cpu"))
    # A hub id that is not in the (empty) cache: refused without any attempt to connect.
    # huggingface_hub fetches its agent registry once a process (for its User-Agent header),
    # whatever local_files_only says; a first lookup, outside the count, makes that attempt.
    record.outcome("bad.uncached_warm_up", lambda: load_concept_engine(engine.name, "example-org/warm-up"))
    with counting_connections() as attempts:
        record.outcome("bad.uncached_hub_id", lambda: load_concept_engine(engine.name, "example-org/not-cached"))
    record.facts["connection_attempts"] = attempts[0]


@contextmanager
def counting_connections() -> Iterator[list[int]]:
    """Counts (and refuses) every socket connection made inside the block."""
    attempts = [0]
    original = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        attempts[0] += 1
        raise OSError("connections are refused in this check")

    socket.socket.connect = connect
    try:
        yield attempts
    finally:
        socket.socket.connect = original


def real_sizes(kind: str, record: Recorder) -> None:
    """The stored features' shapes at the real configurations (the library's defaults are
    grounding-dino-tiny and facebook/sam3; base differs in its Swin), from networks built on the
    meta device: no weights."""
    import transformers

    with torch.device("meta"):
        if kind == "grounding-dino":
            base = transformers.SwinConfig(
                embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12, out_indices=[2, 3, 4]
            )  # grounding-dino-base's backbone
            for name, config in (("tiny", None), ("base", base)):
                model = transformers.GroundingDinoForObjectDetection(
                    transformers.GroundingDinoConfig(backbone_config=config)
                )
                for h, w in ((800, 1066), (800, 1333)):
                    pixels, mask = torch.empty(1, 3, h, w), torch.ones(1, h, w, dtype=torch.long)
                    levels = model.model.backbone.conv_encoder(pixels, mask)
                    record.facts[f"real.{name}.{h}x{w}"] = [list(fmap.shape) for fmap, _ in levels]
        else:
            backbone = transformers.Sam3Model(transformers.Sam3Config()).vision_encoder.backbone
            record.facts["real.1008x1008"] = [list(backbone(torch.empty(1, 3, 1008, 1008)).last_hidden_state.shape)]


def caption_groups(tokenizer: object, prompts: list[str]) -> list[tuple[int, int]]:
    """(first prompt, count) of consecutive prompts whose caption fits GDINO_MAX_TEXT_LEN tokens."""
    groups, start = [], 0
    while start < len(prompts):
        count = 1
        while start + count < len(prompts):
            text = ". ".join(prompts[start : start + count + 1]) + "."
            if len(tokenizer(text)["input_ids"]) > GDINO_MAX_TEXT_LEN:
                break
            count += 1
        groups.append((start, count))
        start += count
    return groups


def owners_by_search(tokenizer: object, text: str, prompts: list[str]) -> np.ndarray:
    """Each token's prompt in `text`, found by searching the caption for each prompt in turn."""
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    owners = np.full(len(offsets), -1, dtype=np.int64)
    cursor = 0
    for index, prompt in enumerate(prompts):
        begin = text.index(prompt.lower(), cursor)
        cursor = begin + len(prompt)
        for position, (first, last) in enumerate(offsets):
            if last > first and begin <= first and last <= cursor:
                owners[position] = index
    return owners


def count_calls(module: torch.nn.Module) -> list[int]:
    """A one-item list that counts the module's forward calls."""
    calls = [0]

    def hook(*args: object) -> None:
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


SAVERS = {"grounding-dino": save_tiny_grounding_dino, "sam3": save_tiny_sam3}


def find_instances(kind: str, folder: Path, request: Path, out: Path) -> None:
    """Our engine alone on one image: what a backend serving `folder` should answer. `request`
    is an .npz with `image` and either `prompts` (strings) or `box`, and `score`."""
    from sam_model.concepts import Thresholds, load_concept_engine

    if kind == "sam3":
        install_torchvision_stand_in()
    with np.load(request) as data:
        image, score = data["image"], float(data["score"])
        prompts, box = (list(data["prompts"]) if "prompts" in data else None), data.get("box")
        dtype = torch.bfloat16 if "bf16" in data else torch.float32
    engine = load_concept_engine(kind, str(folder), device="cpu", dtype=dtype)
    assert next(engine.model.parameters()).dtype == dtype
    features = engine.features(image)
    thresholds = Thresholds(score=score, mask=engine.default_thresholds.mask)
    found = (
        engine.find(features, prompts, thresholds) if box is None else engine.find_similar(features, box, thresholds)
    )
    record = Recorder()
    record.instances("found", found)
    record.save(out)


def main(argv: list[str]) -> None:
    if argv[:1] == ["save"] and len(argv) == 3 and argv[1] in KINDS:  # a model folder for a backend to load
        if argv[1] == "sam3":
            install_torchvision_stand_in()
        SAVERS[argv[1]](Path(argv[2]))
        return
    if argv[:1] == ["find"] and len(argv) == 5 and argv[1] in KINDS:
        find_instances(argv[1], Path(argv[2]), Path(argv[3]), Path(argv[4]))
        return
    kind, out = argv[0], Path(argv[1])
    if kind not in KINDS:
        raise SystemExit(
            f"usage: python -m tests.support.concept_models {{{','.join(KINDS)}}} OUT_DIR | save {{KIND}} FOLDER"
        )
    torch.set_num_threads(1)
    record = Recorder()
    (run_grounding_dino if kind == "grounding-dino" else run_sam3)(out, record)
    real_sizes(kind, record)
    record.save(out)


def clean_environment(hf_home: Path) -> dict[str, str]:
    """An environment for a process that loads concept models: no oracle stubs, an empty Hugging
    Face cache, and the hub out of reach (should anything try it, it reaches no one)."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(root),
    }
    env.pop("HF_HUB_OFFLINE", None)
    return env


def _run_module(args: list[str], env: dict[str, str], timeout: float) -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "tests.support.concept_models", *args]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{args} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")


def save_in_clean_interpreter(kind: str, folder: Path, timeout: float = 120) -> Path:
    """A tiny random `kind` model saved in `folder` as real weights are laid out (see main)."""
    _run_module(["save", kind, str(folder)], clean_environment(folder.parent / "hf-home"), timeout)
    return folder


def instances_in_clean_interpreter(
    kind: str,
    folder: Path,
    image: np.ndarray,
    score: float,
    *,
    prompts: list[str] | None = None,
    box=None,
    bf16: bool = False,
) -> dict[str, np.ndarray]:
    """`find_instances` for `image` in a fresh interpreter: found.prompt/.boxes/.scores(/.masks)."""
    work = folder.parent / f"find-{os.getpid()}-{abs(hash((tuple(prompts or ()), str(box), score, bf16)))}"
    work.mkdir(exist_ok=True)
    request = {"image": image, "score": np.float64(score), **({"bf16": np.ones(1)} if bf16 else {})}
    request.update({"prompts": np.array(prompts)} if prompts is not None else {"box": np.asarray(box, np.float64)})
    np.savez(work / "request.npz", **request)
    _run_module(["find", kind, str(folder), str(work / "request.npz"), str(work)], clean_environment(work / "hf"), 120)
    with np.load(work / "results.npz") as data:
        return {key: data[key] for key in data.files}


def run_in_clean_interpreter(kind: str, out: Path, timeout: float = 300) -> tuple[dict[str, np.ndarray], dict]:
    """Run `main` for `kind` in a fresh interpreter (see clean_environment) and return (arrays, facts)."""
    _run_module([kind, str(out)], clean_environment(out / "hf-home"), timeout)
    with np.load(out / "results.npz") as data:
        arrays = {key: data[key] for key in data.files}
    return arrays, json.loads((out / "results.json").read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
