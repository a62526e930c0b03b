"""dfray.heap.reuse_freed_memory: blocks freed by one video's work are reused by the
next (counted in page faults, in a fresh process each way)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import queue, resource, sys, threading
import numpy as np
if sys.argv[1] == "on":
    from dfray.heap import reuse_freed_memory
    assert reuse_freed_memory()

def video():  # a video's worth of large blocks, freed at the end
    a = np.ones((32, 360, 640, 3), np.uint8)
    b = [np.ones((360, 640, 3), np.float32) for _ in range(4)]
    del a, b

jobs, done = queue.SimpleQueue(), queue.SimpleQueue()
def worker():  # one long-lived thread, as dfray.extract runs videos
    while True:
        jobs.get()()
        done.put(1)
threading.Thread(target=worker, daemon=True).start()
jobs.put(video); done.get()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    jobs.put(video); done.get()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    p = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return int(p.stdout.strip())


def test_freed_memory_is_reused():
    on, off = _faults("on"), _faults("off")
    # five videos of 22 + 4 x 2.8 MB: without it each maps (and faults in) its blocks anew
    assert on * 3 < off, (on, off)
