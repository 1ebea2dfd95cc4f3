"""A steady CPU allocator for latency measurements.

glibc's malloc serves large blocks (over a threshold that it raises and lowers as the process runs)
with fresh ``mmap`` pages, and returns freed heap to the system past a trim threshold.  A forward
pass on large inputs allocates and frees megabytes per op, so which ops pay page faults depends
on the whole model's sizes, not on the op: MobileNetV2 at 224 px (one thread) ran 22.9 ms end to
end with the defaults and 16.4 ms with fixed thresholds, and a per-layer latency table missed
random configurations by 15-20% instead of 2-4%.  Fixing both thresholds (what PyTorch's CPU
performance guide gets from jemalloc or tcmalloc) makes op costs add up.  The price is that freed
memory below the trim threshold stays with the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 512 * 1024 * 1024


@functools.cache
def steady_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (once); False where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
