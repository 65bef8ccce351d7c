"""Keep freed memory in the process, so each request does not page it back in.

A click allocates and frees the same few tens of MiB every time (the decoder's image-sized
tensors, the upscaled mask). glibc's defaults hand such blocks back to the kernel (mmap for
large ones, heap trimming for the rest) and the next request faults every page in again:
~5500 page faults per vit_b click on the 2-core VM, which made it 1.3x slower
(bench/bench_allocator.py). Raising the mmap and trim thresholds keeps up to
CPU_MEMORY_KEEP_MB of freed memory for reuse instead. Not glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3


def keep_freed_memory(megabytes: int) -> bool:
    """Raise glibc's mmap and trim thresholds to `megabytes`; 0 leaves the defaults. True if applied."""
    if megabytes <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        log.info("CPU_MEMORY_KEEP_MB ignored: this C library has no mallopt")
        return False
    size = megabytes * 2**20
    applied = bool(mallopt(M_MMAP_THRESHOLD, size)) and bool(mallopt(M_TRIM_THRESHOLD, size))
    if not applied:
        log.warning("CPU_MEMORY_KEEP_MB=%d was refused by the C library; using its defaults", megabytes)
    return applied
