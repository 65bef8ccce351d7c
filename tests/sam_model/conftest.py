"""Fixtures: the official implementation (test-only oracle) with fully random weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sam_model.loading import load_sam
from tests.support.oracle import official_sam
from tests.support.torch_threads import torch_threads


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, torch.nn.Module, Path]:
    """(official tiny model, ours loaded from its saved state_dict, the .pth path)."""
    ref = official_sam("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny_random.pth"
    torch.save(ref.state_dict(), path)
    ours = load_sam("tiny", str(path), device="cpu")
    return ref, ours, path


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """For the modules that use it: one intra-op thread while the module runs."""
    with torch_threads(1):
        yield
