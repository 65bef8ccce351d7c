"""CPU_MEMORY_KEEP_MB: freed blocks are reused instead of being paged in again.

Run in subprocesses: the setting is process-wide, and the page-fault count is the effect
(minor faults of allocating, touching and freeing a 40 MiB tensor 20 times; torch's CPU
allocator is plain malloc).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import resource, sys
import torch
from backend.allocator import keep_freed_memory
applied = keep_freed_memory(int(sys.argv[1]))
torch.ones(10 * 2**20)  # first touch, not counted
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(10 * 2**20).sum()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(megabytes: int) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(megabytes)], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_kept_memory_is_not_paged_in_again() -> None:
    applied, kept = _faults(256)
    default_applied, default = _faults(0)
    assert applied and not default_applied
    # 20 x 40 MiB = 204800 pages when every buffer is a fresh mmap; with the setting, none
    # on a plain host. (Hosts that reclaim idle memory in the background, as DAMON does on
    # the CI VMs, page some of the kept memory out between iterations: up to ~50000 seen.)
    assert default > 150_000
    assert kept < default // 2


def test_zero_leaves_the_allocator_alone() -> None:
    assert keep_freed_memory(0) is False
