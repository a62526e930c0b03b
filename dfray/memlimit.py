"""Address-space limits (RLIMIT_AS) for processes that run submitted detectors.

A limit on the address space is the one memory limit Linux enforces without a cgroup: an
allocation past it fails (torch raises "can't allocate memory", numpy MemoryError) in the
process that asked, which then carries on. Ray does not cap a worker's memory (its memory
monitor kills workers only when the whole node runs short), so dfray caps the processes that
hold submitted models itself:

- the check child of `dfray rescore` (the whole process: `cap_address_space(mb)`);
- each score actor when the run sets `--detector-memory-limit` (`dfray rescore` sets it to
  its `--memory-limit`): the actor may map that many MB more than it had when it started,
  before loading the detectors (`cap_address_space(mb, on_top=True)`). A Ray worker
  already maps the object store and Ray's own libraries, so an absolute limit would mean
  something different on every node; the growth is what a detector adds.
"""

from __future__ import annotations

import os

ALLOC_ERRORS = ("can't allocate memory", "cannot allocate memory", "bad_alloc", "memoryerror",
                "out of memory", "failed to allocate")  # how a failed allocation reads


def address_space_bytes() -> int:
    """This process's mapped address space (VmSize), in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def cap_address_space(mb: int, *, on_top: bool = False) -> int:
    """Cap this process's address space at `mb` MB (or at what it maps now plus `mb` MB,
    `on_top`); never above a hard limit already set. Returns the limit in bytes."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mb * 2**20 + (address_space_bytes() if on_top else 0)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def is_alloc_error(text: str) -> bool:
    """Whether an error message says an allocation failed."""
    t = text.lower()
    return any(a in t for a in ALLOC_ERRORS)
