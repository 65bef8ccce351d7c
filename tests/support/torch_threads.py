"""Run torch on a given number of intra-op threads for a while, then restore the setting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """On a shared, oversubscribed CPU, 1 intra-op thread runs the small test models ~3x
    faster, and matches the backend's servers in these tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
