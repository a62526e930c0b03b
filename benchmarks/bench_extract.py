"""Benchmark: the extract stage alone, in CPU seconds per video (user and system).

    python benchmarks/bench_extract.py CORPUS_DIR [--videos N] [--json OUT.json]
    # A/B of two commits: check one out into a worktree and run it with PYTHONPATH:
    git worktree add /tmp/base <commit>
    PYTHONPATH=/tmp/base python benchmarks/bench_extract.py CORPUS_DIR

Every video of CORPUS_DIR (a bench_pipeline.py corpus: `metadata.json` and the .mp4
files, sorted by name) goes through one dfray.extract.VideoExtractor on one torch thread,
the way an extract actor runs them (read, decode, MTCNN, crops), after one warm-up video.
It reports the process's user and system CPU seconds per video, minor page faults per
video and its peak RSS. System time is worth reading on its own here: on the 2-core CI VM
zeroing fresh pages is expensive (dfray.heap). Alternate the two sides of an A/B and run
each at least twice: one run's figure moves by ~0.1 s per video with the machine's state.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("--videos", type=int, default=0, help="the first N videos [all]")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    import dfray
    from dfray.config import DecodeConfig, FaceConfig, StorageConfig
    from dfray.extract import VideoExtractor

    root = Path(args.corpus)
    names = sorted(json.loads((root / "metadata.json").read_text()))
    names = names[: args.videos] if args.videos else names
    vx = VideoExtractor(FaceConfig(), DecodeConfig(), StorageConfig())
    vx({"video_id": "warm-up", "uri": str(root / names[-1])})
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    statuses = [vx({"video_id": n, "uri": str(root / n)})["status"] for n in names]
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - w0
    n = len(names)
    out = {"dfray": str(Path(dfray.__file__).parent.parent), "videos": n,
           "statuses": {s: statuses.count(s) for s in set(statuses)},
           "user_s_per_video": (r1.ru_utime - r0.ru_utime) / n,
           "sys_s_per_video": (r1.ru_stime - r0.ru_stime) / n,
           "minor_faults_per_video": (r1.ru_minflt - r0.ru_minflt) / n,
           "wall_s_per_video": wall / n, "max_rss_mb": r1.ru_maxrss / 1024}
    out["cpu_s_per_video"] = out["user_s_per_video"] + out["sys_s_per_video"]
    print(f"{out['dfray']}: {n} videos {out['statuses']}: CPU {out['cpu_s_per_video']:.3f} s"
          f" per video (user {out['user_s_per_video']:.3f}, system "
          f"{out['sys_s_per_video']:.3f}), {out['minor_faults_per_video']:.0f} minor faults, "
          f"wall {out['wall_s_per_video']:.3f} s per video, peak RSS {out['max_rss_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
