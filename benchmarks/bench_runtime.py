"""Benchmark: the score stage's detector on torch vs on ONNX Runtime (`--cpu-runtime`).

    python benchmarks/bench_runtime.py [--encoder efficientnet_b0 --size 380 --faces 32
                                        --threads 1 2 --rounds 5 --json OUT.json]

One video's worth of faces (32 crops at 380 px: real faces from scikit-image and noise)
goes through one EfficientNet detector (the DFDC 1st-place layout, seeded weights with its
BatchNorm statistics moved so scores spread), built twice by `create_detector`: once on
torch, once with runtime="onnxruntime" (exported once, cached). The two are timed in
alternating rounds in the same process, so machine load hits both alike; the figure is the
median seconds per face. It first reports how far the scores move (max |Δ|) and exits 1
if that is over 1e-3.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

TOL = 1e-3  # onnxruntime is an option that changes scores slightly; the figure is reported


def faces(n: int, size: int):
    import cv2
    import numpy as np
    from skimage import data

    real = [data.astronaut()[20:220, 150:330], np.dstack([data.camera()[40:240, 180:380]] * 3)]
    out = [cv2.resize(np.ascontiguousarray(f), (size, size)) for f in real]
    rng = np.random.default_rng(0)
    while len(out) < n:
        out.append(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return np.stack(out[:n]).astype(np.uint8)


def weights(encoder: str, size: int, crops, folder: Path) -> Path:
    import torch
    from torch import nn

    from dfray.detectors.effnet import build_effnet

    torch.manual_seed(0)
    model = build_effnet(encoder)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.8, 1.2)
                m.weight.uniform_(0.5, 1.5)
        model.fc.weight.normal_(0, 1.0)
    path = folder / f"{encoder}.pt"
    torch.save(model.state_dict(), path)
    # centre the logits on these crops and scale them to a spread of about 2 (never up
    # by more than 10x, which would only amplify rounding)
    from dfray.config import DetectorSpec
    from dfray.detectors import create_detector

    spec = DetectorSpec(name="e", arch="effnet", weights=str(path), input_size=size,
                        options={"encoder": encoder})
    logits = create_detector(spec, device="cpu").predict_logits(crops)
    k = min(10.0, 2.0 / max(float(logits.std()), 1e-9))
    with torch.no_grad():
        model.fc.weight.mul_(k)
        model.fc.bias.mul_(k).sub_(float(logits.mean()) * k)
    torch.save(model.state_dict(), path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="efficientnet_b0")
    ap.add_argument("--size", type=int, default=380)
    ap.add_argument("--faces", type=int, default=32)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from dfray.config import DetectorSpec
    from dfray.detectors import create_detector

    crops = faces(args.faces, args.size)
    results = {"encoder": args.encoder, "size": args.size, "faces": args.faces, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        spec = DetectorSpec(name="e", arch="effnet", weights=str(weights(
            args.encoder, args.size, crops, Path(tmp))), input_size=args.size, options={"encoder": args.encoder})
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
            for _ in range(args.rounds):
                for name, det in dets.items():
                    t = time.perf_counter()
                    det.predict(crops)
                    times[name].append((time.perf_counter() - t) / len(crops))
            med = {k: statistics.median(v) for k, v in times.items()}
            ratio = med["torch"] / med["onnxruntime"]
            print(f"  s per face: torch {med['torch']:.4f}, onnxruntime {med['onnxruntime']:.4f}"
                  f" -> {ratio:.2f}x; load: torch {t1 - t0:.1f}s, onnxruntime (export or "
                  f"cache) {t2 - t1:.1f}s")
            results["runs"].append({"threads": threads, "max_abs_diff": diff,
                                    "s_per_face": med, "speedup": round(ratio, 3),
                                    "rounds": times})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
