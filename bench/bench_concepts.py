"""Concept engines at their real size: load, features, find, peak RSS, seconds per image.

    python bench/bench_concepts.py [--engine sam3|grounding-dino|both] [--device cpu] [--dtype fp32|bf16]
                                   [--repeats 2] [--boxes 20] [--json out.json] [--keep DIR] [--tiny]

Random weights at the released sizes (speed does not depend on the values), built here, saved
with `save_pretrained` and loaded through `sam_model.concepts.load_concept_engine` exactly as
downloaded weights are; no hub. SAM 3 is transformers' `Sam3Config()` (its defaults are
facebook/sam3's detector: ViT-L/14 at 1008 px, CLIP-L text). Grounding DINO is
IDEA-Research/grounding-dino-tiny's configuration, set value by value in `save_grounding_dino`.
Tokenizers are built locally (tests/support/concept_models.py): their vocabularies are toy ones,
but every prompt here is one word-piece per word as in the real ones, and SAM 3 pads every
prompt to its 32 tokens, so the model sees the real token counts.

Each engine runs in its own fresh interpreter (its peak RSS is its own; a clean one, because
SAM 3 here needs the torchvision stand-in of tests/support/concept_models.py). In it: load,
then one untimed pass and `--repeats` timed ones (best kept) of `features` on a 1333x1000
photo-like image, `find` with 2 prompts and with 10 prompts on those cached features,
`find_similar` (SAM 3). Grounding DINO only finds boxes, so its child also loads SAM 2.1 tiny
(random official-format checkpoint, `load_sam`), encodes the image and decodes each of up to
`--boxes` found boxes into a full-size mask, as pre-annotation would. Seconds per image =
features + find(2 prompts) (+ SAM encode + the box decodes). Found counts depend on the random
weights; SAM 3's `find` uses its default thresholds, the box decodes Grounding DINO's best
boxes at threshold 0. Building and saving run in separate interpreters, outside the figures.
`--tiny` runs the tests' tiny configurations instead (a smoke run of this script).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.images import photo_like  # noqa: E402

ENGINES = ("grounding-dino", "sam3")  # the quick one first
HEIGHT, WIDTH = 1000, 1333
PROMPTS = ("cat", "dog", "traffic light", "red car", "person", "tree", "house", "bird", "boat", "cup")
EXEMPLAR = (WIDTH * 0.3, HEIGHT * 0.3, WIDTH * 0.55, HEIGHT * 0.7)
SAM_TYPE = "sam2.1_hiera_tiny"
SAM_FILE = "sam2.1_tiny_random.pt"  # the name tests/support/family_checkpoints.py writes
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# Building (own interpreter per model: the build's memory stays out of the figures)


def save_sam3(folder: Path) -> None:
    """transformers' SAM 3 defaults (facebook/sam3's detector) with a local character-level
    CLIP tokenizer; the text config's special-token ids are set to that tokenizer's."""
    from transformers import CLIPTokenizer, Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    from tests.support.concept_models import clip_vocab

    vocab = clip_vocab()
    config = Sam3Config()
    text = config.text_config
    text.bos_token_id, text.eos_token_id = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    text.pad_token_id = text.eos_token_id
    Sam3Model(config).save_pretrained(folder)
    processor = Sam3Processor(Sam3ImageProcessor(), CLIPTokenizer(vocab=vocab, merges=[]))
    processor.save_pretrained(folder)


def save_grounding_dino(folder: Path) -> None:
    """IDEA-Research/grounding-dino-tiny's configuration, which is transformers' default one
    (checked field by field): Swin-T backbone, BERT-base text encoder, 6+6 deformable layers at
    d_model 256, 900 queries, 256 text tokens; images resized to shortest edge 800, longest 1333."""
    from transformers import (
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
    )

    from tests.support.concept_models import bert_vocab

    config = GroundingDinoConfig()
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 800, "longest_edge": 1333})
    GroundingDinoProcessor(image_processor, BertTokenizer(vocab=bert_vocab())).save_pretrained(folder)


def save_model(kind: str, folder: Path, tiny: bool) -> None:
    """The model's folder, written beside it first and renamed when whole (a build cut short
    is not taken for a model by the next run with the same --keep)."""
    from tests.support import concept_models

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if kind == "sam3":
        use_torchvision_or_stand_in()
        (concept_models.save_tiny_sam3 if tiny else save_sam3)(partial)
    else:
        (concept_models.save_tiny_grounding_dino if tiny else save_grounding_dino)(partial)
    partial.rename(folder)


def save_sam_checkpoint(folder: Path) -> None:
    """SAM 2.1 tiny, random, in the official file layout (written by the official code, which
    needs the tests' torchvision stand-in: hence its own interpreter)."""
    sys.path.insert(0, str(ROOT / "tests" / "oracle_stubs"))
    from tests.support.family_checkpoints import FAMILY_CHECKPOINTS

    partial = folder / "sam.partial"
    partial.mkdir(exist_ok=True)
    FAMILY_CHECKPOINTS[SAM_TYPE](partial).rename(folder / SAM_FILE)


def use_torchvision_or_stand_in() -> None:
    import importlib.util

    from tests.support.concept_models import install_torchvision_stand_in

    if importlib.util.find_spec("torchvision") is None:
        install_torchvision_stand_in()


# Measuring (own interpreter per engine)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(call: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Seconds for `call` (the device's queue drained first and after) and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def best_of(name: str, call: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object]:
    """One untimed pass, then the best of `repeats` timed ones (each shown on stderr as it ends)."""
    warm_up, _ = timed(call, device)
    print(f"  {name}: {warm_up:.3f} s (warm-up, not counted)", file=sys.stderr, flush=True)
    runs = []
    for _ in range(repeats):
        runs.append(timed(call, device))
        print(f"  {name}: {runs[-1][0]:.3f} s", file=sys.stderr, flush=True)
    return min(seconds for seconds, _ in runs), runs[-1][1]


def measure(kind: str, folder: Path, checkpoint: Path | None, args: argparse.Namespace) -> dict:
    """Load `kind` from `folder`, time its calls on one image, and (Grounding DINO) the SAM part."""
    if kind == "sam3":
        use_torchvision_or_stand_in()
    from sam_model.concepts import Thresholds, load_concept_engine

    figures: dict[str, float] = {"rss_before_load_mib": peak_rss_mib()}
    found: dict[str, int] = {}
    load_s, engine = timed(lambda: load_concept_engine(kind, str(folder), device=args.device), torch.device("cpu"))
    if args.dtype != "fp32":  # the engines load fp32; re-wrap the cast model as the same engine
        engine = type(engine)(engine.model.to(DTYPES[args.dtype]), engine.processor, engine.model_id)
    device = engine.device
    figures["load_s"] = load_s
    figures["params_m"] = sum(p.numel() for p in engine.model.parameters()) / 1e6
    figures["rss_after_load_mib"] = peak_rss_mib()
    image = photo_like(HEIGHT, WIDTH)

    figures["features_s"], features = best_of("features", lambda: engine.features(image), device, args.repeats)
    for count in (2, 10):
        seconds, instances = best_of(
            f"find {count}", lambda: engine.find(features, PROMPTS[:count]), device, args.repeats
        )
        figures[f"find_{count}_s"], found[f"instances_{count}"] = seconds, len(instances)
    figures["seconds_per_image"] = figures["features_s"] + figures["find_2_s"]
    if kind == "sam3":
        seconds, instances = best_of(
            "find_similar", lambda: engine.find_similar(features, EXEMPLAR), device, args.repeats
        )
        figures["find_similar_s"], found["instances_similar"] = seconds, len(instances)
        figures["mask_ms_per_instance"] = sam3_mask_ms(engine, args.repeats)
    else:
        boxes = sorted(engine.find(features, PROMPTS[:2], Thresholds(score=0.0)), key=lambda i: -i.score)
        figures.update(sam_part(checkpoint, [i.box_xyxy for i in boxes[: args.boxes]], image, args))
        found["boxes_decoded"] = min(len(boxes), args.boxes)
        figures["seconds_per_image"] += (
            figures["sam_encode_s"] + found["boxes_decoded"] * figures["box_decode_ms"] / 1e3
        )
    figures["peak_rss_mib"] = peak_rss_mib()
    if device.type == "cuda":
        figures["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return {"engine": kind, "figures": figures, "found": found, "threads": torch.get_num_threads()}


def sam3_mask_ms(engine: object, repeats: int, kept: int = 10) -> float:
    """Milliseconds per kept instance of SAM 3's post-processing (its mask resized to the
    image and binarised), timed on the library's function with `kept` confident queries:
    random weights keep next to nothing at the default threshold, real ones keep each instance."""
    queries = engine.model.config.detr_decoder_config.num_queries
    mask = engine.processor.image_processor.mask_size  # the mask decoder's output size
    options = {"device": engine.device, "dtype": engine.dtype}
    logits = torch.full((1, queries), -10.0, **options)
    logits[0, :kept] = 10.0
    outputs = SimpleNamespace(
        pred_logits=logits,
        pred_boxes=torch.rand(1, queries, 4, **options),
        pred_masks=torch.randn(1, queries, mask["height"], mask["width"], **options),
        presence_logits=torch.full((1, 1), 10.0, **options),
    )

    def post_process() -> np.ndarray:
        result = engine.processor.post_process_instance_segmentation(outputs, target_sizes=[(HEIGHT, WIDTH)])[0]
        return result["masks"].bool().cpu().numpy()  # what the engine hands on

    seconds, masks = best_of("mask post-processing", post_process, engine.device, repeats)
    if len(masks) != kept:
        raise RuntimeError(f"post-processing kept {len(masks)} masks, not {kept}")
    return seconds / kept * 1e3


def sam_part(checkpoint: Path, boxes: list, image: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    """SAM 2.1 tiny beside the engine: load, encode the image once, one mask per box."""
    from sam_model import family_of, load_sam

    if not boxes:
        raise RuntimeError("Grounding DINO found no box at threshold 0: nothing for SAM to decode")
    load_s, model = timed(lambda: load_sam(SAM_TYPE, checkpoint, device=args.device), torch.device("cpu"))
    predictor = family_of(SAM_TYPE).predictor(model, SAM_TYPE, args.dtype, False)
    device = next(model.parameters()).device
    figures = {"sam_load_s": load_s, "sam_params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    figures["rss_after_sam_load_mib"] = peak_rss_mib()
    figures["sam_encode_s"], embedding = best_of("SAM encode", lambda: predictor.encode(image), device, args.repeats)

    def decode_all() -> None:
        for box in boxes:
            predictor.decode(embedding, box=np.asarray(box), multimask=False, best_only=True)

    seconds, _ = best_of(f"{len(boxes)} box decodes", decode_all, device, args.repeats)
    figures["box_decode_ms"] = seconds / len(boxes) * 1e3
    return figures


# Orchestrating


def start_step(step: str, args: argparse.Namespace, *extra: str) -> subprocess.Popen:
    """This script in a fresh interpreter for one step, its stdout piped (the last line of a
    measure step is its JSON) and its stderr (progress, errors) going to ours."""
    command = [sys.executable, str(Path(__file__).resolve()), "--step", step, *extra]
    command += ["--device", args.device, "--dtype", args.dtype, "--repeats", str(args.repeats)]
    command += ["--boxes", str(args.boxes), *(["--tiny"] if args.tiny else [])]
    env = {
        **os.environ,
        "HF_HOME": str(Path(args.keep) / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONPATH": str(ROOT),
    }
    print(f"{step} {' '.join(extra)}", file=sys.stderr, flush=True)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> str:
    """The step's stdout once it has ended; RuntimeError if it failed."""
    stdout, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{process.args[2:6]} failed ({process.returncode}); its error is above")
    return stdout


def model_folder(kind: str, args: argparse.Namespace) -> Path:
    return Path(args.keep) / f"{kind}-{'tiny' if args.tiny else 'real'}"


def build(kinds: tuple[str, ...], args: argparse.Namespace) -> None:
    """Every model the run needs and the --keep folder lacks, built side by side (outside the
    figures: nothing is measured until all are written)."""
    steps = [
        ("save", "--engine", kind, "--folder", str(model_folder(kind, args)))
        for kind in kinds
        if not model_folder(kind, args).is_dir()
    ]
    if "grounding-dino" in kinds and not (Path(args.keep) / SAM_FILE).is_file():
        steps.append(("sam-checkpoint", "--folder", args.keep))
    errors = []
    for process in [start_step(step, args, *extra) for step, *extra in steps]:
        try:
            finish(process)
        except RuntimeError as exc:  # the others still run to their end before this is raised
            errors.append(str(exc))
    if errors:
        raise RuntimeError("; ".join(errors))


def bench(kind: str, args: argparse.Namespace) -> dict:
    """Measure one built engine in its own interpreter."""
    extra = ["--engine", kind, "--folder", str(model_folder(kind, args))]
    if kind == "grounding-dino":
        extra += ["--checkpoint", str(Path(args.keep) / SAM_FILE)]
    return json.loads(finish(start_step("measure", args, *extra)).strip().splitlines()[-1])


def report_row(result: dict) -> str:
    f, n = result["figures"], result["found"]
    name = "SAM 3" if result["engine"] == "sam3" else "Grounding DINO tiny + SAM 2.1 tiny"
    params = f"{f['params_m']:.3g} M" + (f" + {f['sam_params_m']:.3g} M" if "sam_params_m" in f else "")
    load = f"{f['load_s']:.1f} s" + (f" + {f['sam_load_s']:.1f} s" if "sam_load_s" in f else "")
    if "sam_encode_s" in f:
        extra = f"encode {f['sam_encode_s']:.2f} s + {n['boxes_decoded']} x {f['box_decode_ms']:.0f} ms/box"
    else:
        extra = f"find_similar {f['find_similar_s']:.2f} s; {f['mask_ms_per_instance']:.0f} ms/instance"
    return (
        f"| {name} | {params} | {load} | {f['features_s']:.2f} s | {f['find_2_s']:.2f} s | {f['find_10_s']:.2f} s "
        f"| {extra} | **{f['seconds_per_image']:.1f} s** | {f['rss_after_load_mib']:.0f} / {f['peak_rss_mib']:.0f} MiB |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=(*ENGINES, "both"), default="both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes after the untimed one (best kept)")
    parser.add_argument("--boxes", type=int, default=20, help="most Grounding DINO boxes SAM decodes")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--keep", help="build the models into this folder and reuse them (default: a temp folder)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny configurations (smoke run)")
    parser.add_argument("--step", choices=("save", "sam-checkpoint", "measure"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1 or args.boxes < 1:
        parser.error("--repeats and --boxes must be at least 1")
    if args.step == "save":
        save_model(args.engine, Path(args.folder), args.tiny)
    elif args.step == "sam-checkpoint":
        save_sam_checkpoint(Path(args.folder))
    elif args.step == "measure":
        checkpoint = Path(args.checkpoint) if args.checkpoint else None
        print(json.dumps(measure(args.engine, Path(args.folder), checkpoint, args)))
    elif args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        run_all(args)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-concepts-") as work:
            args.keep = work
            run_all(args)


def run_all(args: argparse.Namespace) -> None:
    machine = {
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "load_before": os.getloadavg(),
        "device": args.device,
        "dtype": args.dtype,
        "size": "tiny" if args.tiny else "real",
        "image": f"{WIDTH}x{HEIGHT}",
    }
    print(f"{machine}; random weights", flush=True)
    print(
        "| engine | params | load | features | find, 2 prompts | find, 10 prompts | more | seconds per image | RSS after load / peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    kinds = ENGINES if args.engine == "both" else (args.engine,)
    build(kinds, args)
    for kind in kinds:  # the JSON is rewritten after each engine: a long run cut short keeps the first
        load = os.getloadavg()
        result = {**bench(kind, args), "load_before": load, "load_after": os.getloadavg()}
        results.append(result)
        print(report_row(result), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    bad = [(r["engine"], k) for r in results for k, v in r["figures"].items() if not (math.isfinite(v) and v > 0)]
    if bad:
        raise SystemExit(f"non-positive figures: {bad}")


if __name__ == "__main__":
    main()
