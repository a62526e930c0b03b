"""dfray.memlimit: an allocation past the cap fails in the process that asked, which carries
on; the cap on top of what a process maps already leaves room for what it had."""

from __future__ import annotations

import subprocess
import sys

from dfray.memlimit import is_alloc_error

CHILD = """
import numpy as np
import torch  # maps ~3.5 GB: before the cap, as a score actor loads torch before its cap
from dfray.memlimit import address_space_bytes, cap_address_space
before = address_space_bytes()
limit = cap_address_space(512, on_top=True)
assert 0 <= limit - before - 512 * 2**20 < 16 * 2**20, (before, limit)
small = np.ones(64 * 2**20, np.uint8)  # 64 MB: inside the cap
try:
    np.ones(2 * 2**30, np.uint8)  # 2 GB: past it
except MemoryError as e:
    print("refused", type(e).__name__)
try:
    torch.empty(2 * 2**30, dtype=torch.uint8)
except RuntimeError as e:
    print("torch", str(e).splitlines()[0])
print("alive", int(small.sum()))
"""


def test_an_allocation_past_the_cap_fails_and_the_process_carries_on():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "refused MemoryError" in lines
    torch_line = next(ln for ln in lines if ln.startswith("torch "))
    assert is_alloc_error(torch_line), torch_line
    assert f"alive {64 * 2**20}" in lines


def test_alloc_error_texts():
    assert is_alloc_error("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1")
    assert is_alloc_error("MemoryError")
    assert not is_alloc_error("detector 'm' failed: shape mismatch")
