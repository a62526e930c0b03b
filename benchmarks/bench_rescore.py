"""Benchmark: N submissions scored as N independent `dfray score` runs of the corpus, against
one `dfray extract` plus one `dfray rescore`.

    python benchmarks/bench_rescore.py [--submissions 4 --videos 8 --seed 3 --max-height 360
                                        --frames 32 --work /tmp/dfray-bench --json OUT.json]

The submissions are small CNNs built here (TorchScript and ONNX in turn, input sizes 64 to
128 px), each a submission folder with submission.yaml. Both ways run as the commands a
user types (subprocesses, each with its own local Ray, fresh output folders):

1. direct: `dfray score CORPUS --config <submission i's ensemble>` for each submission;
2. cache: `dfray extract CORPUS`, then `dfray rescore CACHE SUBMISSIONS`.

It first CHECKS that both give, per submission, the same videos and statuses and scores
within --tol, and that the leaderboard built from the direct runs (dfray.leaderboard, the
same split and bootstrap seed) equals the rescore's, public and private; on a mismatch it
prints the differences and exits 1 without speed figures. Then it prints both wall times
and their ratio (direct / cache). Exit codes: 0 agree, 1 disagree, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_pipeline import DEFAULT_WORK, ensure_corpus  # noqa: E402

SIZES = (64, 96, 112, 128)


def build_submissions(root: Path, n: int) -> list[Path]:
    """n small CNN submissions (TorchScript, ONNX, TorchScript, …), seeded."""
    import torch
    import yaml
    from torch import nn

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2), nn.ReLU())
            self.fc = nn.Linear(16, 1)

        def forward(self, x):
            return self.fc(self.body(x).mean(dim=(2, 3)))

    out = []
    for i in range(n):
        torch.manual_seed(i)
        size = SIZES[i % len(SIZES)]
        arch = "torchscript" if i % 2 == 0 else "onnx"
        folder = root / f"team{i}"
        folder.mkdir(parents=True, exist_ok=True)
        model, x = Small().eval(), torch.randn(2, 3, size, size)
        name = "model.pt" if arch == "torchscript" else "model.onnx"
        if arch == "torchscript":
            torch.jit.save(torch.jit.trace(model, x), str(folder / name))
        else:
            torch.onnx.export(model, (x,), str(folder / name), input_names=["x"],
                              dynamic_axes={"x": {0: "n"}}, dynamo=False)
        spec = {"name": "m", "arch": arch, "weights": name, "input_size": size,
                "aggregation": "confident"}
        (folder / "submission.yaml").write_text(yaml.safe_dump(
            {"team": f"team{i}", "name": "v1", "ensemble": {"detectors": [spec]}}))
        out.append(folder)
    return out


def ensemble_yaml(sub, path: Path) -> Path:
    """The submission's ensemble (weights resolved) as an ensemble YAML for `dfray score`."""
    import dataclasses

    import yaml

    dets = []
    for d in sub.ensemble.detectors:
        raw = dataclasses.asdict(d)
        raw["mean"], raw["std"] = list(d.mean), list(d.std)
        dets.append({k: v for k, v in raw.items() if v is not None})
    path.write_text(yaml.safe_dump({"detectors": dets}))
    return path


def dfray(*args: str, quiet: bool) -> float:
    """Run one dfray command; its wall seconds."""
    cmd = [sys.executable, "-m", "dfray.cli", *args, *(["--quiet"] if quiet else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if not quiet else subprocess.PIPE,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stderr or '')[-3000:]}")
    return wall


def rows(run_dir: Path) -> dict:
    from dfray.results import read_videos

    return {r["video_id"]: r for r in read_videos(str(run_dir)).to_pylist()}


def compare_runs(direct: dict, cached: dict, tol: float) -> list[str]:
    problems = []
    if direct.keys() != cached.keys():
        return [f"videos differ: direct only {sorted(direct.keys() - cached.keys())}, "
                f"cache only {sorted(cached.keys() - direct.keys())}"]
    for v, a in direct.items():
        b = cached[v]
        if a["status"] != b["status"]:
            problems.append(f"{v}: status {a['status']} direct, {b['status']} cache")
        elif a["score"] is not None and (b["score"] is None or abs(a["score"] - b["score"]) > tol):
            problems.append(f"{v}: score {a['score']} direct, {b['score']} cache")
    return problems


def compare_boards(direct_runs: dict, rescore_out: Path, cache: Path, tol: float) -> list[str]:
    """The leaderboard of the direct runs (same split, same bootstrap) against the rescore's."""
    import pandas as pd

    from dfray import leaderboard as lb
    from dfray.results import RunFolder, read_manifest, read_videos

    man = read_manifest(RunFolder.at(str(cache)), columns=["video_id", "label"]).to_pylist()
    ids = [m["video_id"] for m in man]
    labels = {m["video_id"]: m["label"] for m in man if m["label"] is not None}
    split = lb.seeded_split(ids, 0)
    subs = [lb.SubmissionResult(id=sid, status="ok", videos=read_videos(str(d)))
            for sid, d in sorted(direct_runs.items())]
    boards = lb.build_leaderboard(subs, labels, split, seed=0, n_boot=200)
    problems = []
    cols = ["rank", "log_loss", "roc_auc", "average_precision", "accuracy", "log_loss_lo",
            "log_loss_hi", "p_beats_next", "n_scored"]
    for name, (board, _) in boards.items():
        got = pd.read_parquet(rescore_out / name / "leaderboard.parquet").set_index("submission")
        want = board.set_index("submission")
        for sid in want.index:
            for c in cols:
                x, y = want.loc[sid, c], got.loc[sid, c]
                if not ((pd.isna(x) and pd.isna(y)) or abs(float(x) - float(y)) <= tol):
                    problems.append(f"{name} {sid} {c}: direct {x}, rescore {y}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--submissions", type=int, default=4)
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--max-height", type=int, default=360)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--work", default=DEFAULT_WORK)
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--json", default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.submissions < 1 or args.videos < 1 or args.frames < 1:
        p.error("--submissions, --videos and --frames must be >= 1")

    from dfray.submission import find_submissions, load_submissions

    work = Path(args.work)
    corpus = ensure_corpus(work, args.videos, args.seed, args.max_height)
    bench = work / f"rescore-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    folders = build_submissions(bench / "submissions", args.submissions)
    subs, bad = load_submissions(find_submissions([str(f) for f in folders]))
    if bad:
        sys.exit(f"the benchmark's submissions do not load: {bad}")
    frames = ["--frames", str(args.frames)]

    direct_runs, direct_s = {}, 0.0
    for sub in subs:
        cfg = ensemble_yaml(sub, bench / f"{sub.id}.yaml")
        direct_s += dfray("score", str(corpus), "--out", str(bench / "direct"), "--run-id",
                          sub.id, "--config", str(cfg), *frames, quiet=args.quiet)
        direct_runs[sub.id] = bench / "direct" / sub.id
    extract_s = dfray("extract", str(corpus), "--out", str(bench), "--run-id", "cache", *frames,
                      quiet=args.quiet)
    rescore_s = dfray("rescore", str(bench / "cache"), *map(str, folders), "--out",
                      str(bench / "rescore"), "--bootstrap", "200", quiet=args.quiet)
    cache_s = extract_s + rescore_s

    problems = []
    for sid, d in direct_runs.items():
        problems += [f"{sid}: {x}" for x in
                     compare_runs(rows(d), rows(bench / "rescore" / "runs" / sid), args.tol)]
    problems += compare_boards(direct_runs, bench / "rescore", bench / "cache", args.tol)
    if problems:
        print("direct scoring and rescoring DISAGREE:")
        for x in problems[:40]:
            print("  " + x)
        return 1
    figures = {
        "submissions": len(subs), "videos": args.videos, "frames": args.frames,
        "cores": os.cpu_count(), "direct_s": round(direct_s, 1),
        "extract_s": round(extract_s, 1), "rescore_s": round(rescore_s, 1),
        "cache_s": round(cache_s, 1), "ratio": round(direct_s / cache_s, 2),
        "out": str(bench),
    }
    print(f"agree: {len(subs)} submissions x {args.videos} videos, scores within {args.tol:g}, "
          "leaderboards equal")
    print(f"direct:  {len(subs)} x dfray score          {direct_s:8.1f} s")
    print(f"cache:   dfray extract + dfray rescore  {cache_s:8.1f} s  "
          f"(extract {extract_s:.1f} s, rescore {rescore_s:.1f} s)")
    print(f"ratio:   {figures['ratio']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
