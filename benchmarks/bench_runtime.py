"""Benchmark: the score stage's detector on torch vs on ONNX Runtime (`--cpu-runtime`).

    python benchmarks/bench_runtime.py [--encoder efficientnet_b0 --size 380 --faces 32
                                        --threads 1 2 --rounds 5 --batch-size 64
                                        --json OUT.json]

One video's worth of faces (32 crops at 380 px: real faces from scikit-image and noise)
goes through one EfficientNet detector (the DFDC 1st-place layout, seeded weights with its
BatchNorm statistics moved so scores spread, saved the winner's way: bench_models.py),
built twice by `create_detector`: once on
torch, once with runtime="onnxruntime" (exported once, cached). The two are timed in
alternating rounds in the same process, so machine load hits both alike; the figure is the
median seconds per face (wall, and the process's user and system CPU seconds: with
`--batch-size` smaller than --faces a video's faces go through in several passes, as
dfray.score does on a CPU). It first reports how far the scores move (max |Δ|) and exits 1
if that is over 1e-3.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_models import build_weights, calibration_faces, effnet_spec

TOL = 1e-3  # onnxruntime is an option that changes scores slightly; the figure is reported


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="efficientnet_b0")
    ap.add_argument("--size", type=int, default=380)
    ap.add_argument("--faces", type=int, default=32)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64, help="faces per forward pass")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from dfray.detectors import create_detector
    from dfray.heap import reuse_freed_memory

    reuse_freed_memory()  # as in a score actor

    crops = calibration_faces(args.faces, args.size)
    results = {"encoder": args.encoder, "size": args.size, "faces": args.faces, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = build_weights(args.encoder, args.size, crops, Path(tmp) / f"{args.encoder}.pt")
        spec = effnet_spec(path, args.encoder, args.size, name="e")
        for threads in args.threads:
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            dets = {"torch": create_detector(spec, device="cpu")}
            t1 = time.perf_counter()
            dets["onnxruntime"] = create_detector(spec, device="cpu", runtime="onnxruntime")
            t2 = time.perf_counter()
            ref = dets["torch"].predict(crops)
            diff = float(np.abs(dets["onnxruntime"].predict(crops) - ref).max())
            print(f"threads {threads}: max |Δscore| {diff:.2e} (tol {TOL:g}), score std "
                  f"{float(ref.std()):.3f}")
            if not diff <= TOL:
                print("scores DISAGREE: no speed comparison")
                return 1
            times: dict[str, list[float]] = {k: [] for k in dets}
            cpu: dict[str, list[tuple[float, float]]] = {k: [] for k in dets}
            for _ in range(args.rounds):
                for name, det in dets.items():
                    r, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                    det.predict(crops, args.batch_size)
                    times[name].append((time.perf_counter() - t) / len(crops))
                    r1 = resource.getrusage(resource.RUSAGE_SELF)
                    cpu[name].append(((r1.ru_utime - r.ru_utime) / len(crops),
                                      (r1.ru_stime - r.ru_stime) / len(crops)))
            med = {k: statistics.median(v) for k, v in times.items()}
            for k, v in cpu.items():
                print(f"  {k}: CPU s per face user {statistics.median(u for u, _ in v):.4f}, "
                      f"system {statistics.median(s for _, s in v):.4f} "
                      f"(batch {args.batch_size})")
            ratio = med["torch"] / med["onnxruntime"]
            print(f"  s per face: torch {med['torch']:.4f}, onnxruntime {med['onnxruntime']:.4f}"
                  f" -> {ratio:.2f}x; load: torch {t1 - t0:.1f}s, onnxruntime (export or "
                  f"cache) {t2 - t1:.1f}s")
            results["runs"].append({"threads": threads, "max_abs_diff": diff,
                                    "s_per_face": med, "speedup": round(ratio, 3),
                                    "rounds": times, "batch_size": args.batch_size,
                                    "cpu_user_sys_s_per_face": cpu})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
