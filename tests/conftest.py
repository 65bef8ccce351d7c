"""Suite-wide set-up: the oracle's torchvision stand-in goes on sys.path (tests only)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "oracle_stubs"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Random weights of the 2-block test model, saved like an official checkpoint (a plain state_dict)."""
    import torch

    from sam_model import build_sam

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "sam_tiny_test.pth"
    torch.save(build_sam("tiny").state_dict(), path)
    return path


@pytest.fixture
def redis_server():
    """A fresh real redis-server per test (module-scoped variants live beside the tests that share one)."""
    from tests.support.redis_server import RedisServer

    with RedisServer() as server:
        yield server
