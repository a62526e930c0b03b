"""Keep freed memory inside a worker process, for the next video to reuse.

A worker handles one video after another and each needs the same large blocks (frames,
MTCNN's float pyramid levels, a detector's activations). By default glibc maps every
block over its mmap threshold (128 KB, raised dynamically up to 32 MB) afresh and unmaps
it on free, and numpy asks for transparent huge pages on arrays of 4 MB and more; each
video then faults in new pages, which the kernel zeroes. On the 2-core CI machine (a VM
that hands freed memory back to its host) that zeroing is expensive: perf showed
clear_page_erms at 27% of a 1080p extract loop that allocated its frames per video, and
EfficientNet-B0 passes over 32 faces spent more system than user time (0.05-0.14 s per
face).

`reuse_freed_memory()` makes glibc serve blocks up to 32 MB (the most it allows) from its
heap and keep what it frees (up to 2 GB), and stops numpy's huge-page requests. The
blocks above 32 MB are avoided where they recur: a video's frames go into one reused
dfray.decode.FrameBuffer, the detectors see a few faces per pass on a CPU
(dfray.score.CPU_BATCH). Measured (benchmarks/RESULTS.md): B0 passes of 4 faces, system
time 0.009-0.018 -> 0.004 s per face; the extract stage, already on a FrameBuffer and one
long-lived thread, within noise. The price: a worker keeps the most memory it used. The
stage adapters call it in each worker (dfray.runner.pipeline); it changes no result.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's upper bound for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: give back only a free top over 2 GB


def reuse_freed_memory() -> bool:
    """Apply the settings above to this process; False where the C library is not glibc
    (then only numpy's setting applies)."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _set_madvise_hugepage
    _set_madvise_hugepage(False)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
