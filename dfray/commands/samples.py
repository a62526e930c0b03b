"""`dfray samples DIR`: write a labelled synthetic video corpus (DFDC layout) to DIR."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "samples",
        help="write a labelled synthetic video corpus (DFDC layout)",
        description=(
            "Write H.264 .mp4 clips of real faces (from images shipped with scikit-image "
            "and matplotlib) plus faceswap and self-blended fakes, and a DFDC-style "
            "metadata.json, into DIR. The same seed gives the same files."
        ),
    )
    p.add_argument("dir", help="output folder (created if missing)")
    p.add_argument("--videos", type=int, default=16, help="number of clips (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--max-height", type=int, default=1080, help="largest frame height (default: 1080)"
    )
    p.add_argument(
        "--min-height", type=int, default=360, help="smallest frame height (default: 360)"
    )
    p.add_argument(
        "--max-seconds", type=float, default=10.0, help="longest clip, seconds (default: 10)"
    )
    p.add_argument(
        "--min-seconds", type=float, default=2.0, help="shortest clip, seconds (default: 2)"
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from dfray.samples import generate_corpus

    start = time.perf_counter()
    metadata = generate_corpus(
        args.dir,
        n_videos=args.videos,
        seed=args.seed,
        min_height=args.min_height,
        max_height=args.max_height,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
    )
    out = Path(args.dir)
    n_fake = sum(1 for v in metadata.values() if v["label"] == "FAKE")
    size = sum((out / name).stat().st_size for name in metadata)
    print(
        f"wrote {len(metadata)} videos ({len(metadata) - n_fake} real / {n_fake} fake, "
        f"{size / 1e6:.1f} MB) and metadata.json to {out} "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return 0
