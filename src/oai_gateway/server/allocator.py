"""Keep large request and response buffers in the heap instead of fresh memory maps.

glibc's malloc gives every allocation above 128 KiB its own `mmap` and unmaps it on free, so
each megabyte-sized body (an embeddings answer, its join, its copy into the socket buffer) costs
a round of page faults and page clearing: measured as more CPU in the kernel than the gateway
spends in Python on such a request (docs/performance.md). Raising the thresholds lets freed
buffers be reused; the memory kept for reuse is bounded by the trim threshold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# From glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024


def keep_large_buffers_in_heap() -> bool:
    """Tune glibc's malloc for this process; False where there is no glibc (musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
