"""load_sam: safe loading, clear errors, device resolution, memory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sam_model.common.checkpoint import CheckpointError, resolve_device
from sam_model.loading import load_sam
from sam_model.registry import OFFICIAL_CHECKPOINTS
from sam_model.sam1.build import build_sam


def _shape_only_state_dict(model_type: str) -> dict[str, torch.Tensor]:
    """Right keys and shapes, one real float each (stride-0 views save a 1-element storage)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_sam(model_type).state_dict().items()}
    return {k: torch.zeros(1).expand(s) for k, s in shapes.items()}


def test_loads_tiny_weights_exactly(tiny_pair) -> None:
    ref, ours, _ = tiny_pair
    ref_state = ref.state_dict()
    for k, v in ours.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    assert ours.pixel_mean.device == torch.device("cpu")


def test_legacy_format_and_half_precision_files_load(tmp_path: Path, tiny_pair) -> None:
    ref, ours, _ = tiny_pair
    path = tmp_path / "legacy_fp16.pth"
    half = {k: v.half() if v.is_floating_point() else v for k, v in ref.state_dict().items()}
    torch.save(half, path, _use_new_zipfile_serialization=False)  # cannot be memory-mapped
    loaded = load_sam("tiny", str(path), device="cpu")
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, half[k].float()), k


def test_vit_l_file_as_vit_b_names_file_and_types(tmp_path: Path) -> None:
    path = tmp_path / "some_weights.pth"
    torch.save(_shape_only_state_dict("vit_l"), path)
    with pytest.raises(CheckpointError) as err:
        load_sam("vit_b", str(path), device="cpu")
    msg = str(err.value)
    assert str(path) in msg and "is a vit_l checkpoint (SAM v1), not vit_b" in msg and "SAM_MODEL=vit_l" in msg


def test_missing_keys_are_reported(tmp_path: Path, tiny_pair) -> None:
    ref, _, _ = tiny_pair
    state = ref.state_dict()
    del state["mask_decoder.iou_token.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing.*mask_decoder.iou_token.weight"):
        load_sam("tiny", str(path), device="cpu")


def test_truncated_file(tmp_path: Path, tiny_pair) -> None:
    _, _, good = tiny_pair
    path = tmp_path / "truncated.pth"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_sam("tiny", str(path), device="cpu")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_sam("tiny", tmp_path / "nope.pth", device="cpu")
    official = OFFICIAL_CHECKPOINTS["vit_h"]
    with pytest.raises(CheckpointError, match=f"not found.*{official.url}"):
        load_sam("vit_h", tmp_path / official.filename, device="cpu")


class Payload:
    """A custom class: unpickling it would mean running arbitrary code paths."""


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1), "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_sam("tiny", str(path), device="cpu")


def test_official_name_with_wrong_size(tmp_path: Path, tiny_pair) -> None:
    _, _, good = tiny_pair
    path = tmp_path / OFFICIAL_CHECKPOINTS["vit_b"].filename
    path.write_bytes(good.read_bytes())
    with pytest.raises(CheckpointError, match="re-download") as err:
        load_sam("vit_b", str(path), device="cpu")
    assert str(path) in str(err.value)


def test_official_name_with_wrong_md5(tmp_path: Path) -> None:
    official = OFFICIAL_CHECKPOINTS["vit_b"]
    path = tmp_path / official.filename
    with open(path, "wb") as f:  # sparse file of the right size: only the md5 can tell
        f.truncate(official.size_bytes)
    with pytest.raises(CheckpointError, match=f"md5 .*expected {official.md5}.*re-download"):
        load_sam("vit_b", str(path), device="cpu")


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")


_RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    from sam_model.loading import load_sam
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sam = load_sam("vit_b", sys.argv[1], device="cpu")
    sum(float(p.sum()) for p in sam.parameters())  # page every (memory-mapped) weight in
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(base * 1024, peak * 1024)
    """
)


@pytest.mark.slow
def test_vit_b_load_peak_rss_near_one_copy(tmp_path: Path) -> None:
    path = tmp_path / "vit_b_random.pth"
    torch.save(build_sam("vit_b").state_dict(), path)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(path)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    ).stdout.split()
    base, peak = int(out[0]), int(out[1])
    size = path.stat().st_size
    assert peak - base <= 1.3 * size, f"load grew RSS by {(peak - base) / size:.2f}x the file size"


def test_a_recorded_sha256_is_checked_at_load(tmp_path: Path) -> None:
    """Files without a published digest are checked against the sha256 the downloader recorded."""
    path = tmp_path / OFFICIAL_CHECKPOINTS["sam2.1_hiera_large"].filename
    path.write_bytes(b"not the file that was downloaded")
    Path(f"{path}.sha256").write_text("0" * 64 + "\n")
    with pytest.raises(CheckpointError, match=r"sha256 [0-9a-f]{64}, expected 0{64}.*re-download"):
        load_sam("sam2.1_hiera_large", path, device="cpu")
