"""dfray.extract.VideoExtractor's per-video time limit."""

import os
import subprocess
import sys

SCRIPT = """
import sys
from dfray.config import DecodeConfig, FaceConfig, StorageConfig
from dfray.extract import VideoExtractor

ex = VideoExtractor(FaceConfig(), DecodeConfig(), StorageConfig(), timeout_s=1)
r = ex({"video_id": "hang.mp4", "uri": sys.argv[1]})
print(r["status"], r["error"], flush=True)
"""


def test_hung_read_is_a_timeout_row_and_the_process_still_exits(tmp_path):
    """Opening a FIFO blocks forever: the video is a `timeout` row, and the thread stuck in
    the read never keeps the process from exiting (it used to be joined at exit)."""
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(fifo)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith("timeout no result within the per-video limit of 1 s")
