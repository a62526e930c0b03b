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
ex.timeout_s = 300
for uri in sys.argv[2:]:  # later videos run on a new thread
    r = ex({"video_id": "ok.mp4", "uri": uri})
    print(r["status"], r["n_faces"], flush=True)
"""


def test_hung_read_is_a_timeout_row_and_the_process_still_exits(tmp_path, tiny_corpus):
    """Opening a FIFO blocks forever: the video is a `timeout` row, the next videos are
    extracted (on a new worker thread: the stuck one is abandoned), and the thread stuck in
    the read never keeps the process from exiting (it used to be joined at exit)."""
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)
    ok = tiny_corpus / sorted(p.name for p in tiny_corpus.glob("*.mp4"))[0]
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(fifo), str(ok), str(ok)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert lines[0].startswith("timeout no result within the per-video limit of 1 s")
    assert len(lines) == 3 and lines[1] == lines[2] and lines[1].startswith("extracted ")
    assert int(lines[1].split()[1]) > 0
