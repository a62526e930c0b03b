"""`dfray samples DIR`: write a labelled synthetic video corpus (DFDC layout) to DIR."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    import inspect

    from dfray.api import samples

    p = sub.add_parser(
        "samples",
        help="write a labelled synthetic video corpus (DFDC layout)",
        description=(
            "Write H.264 .mp4 clips of real faces (from images shipped with scikit-image "
            "and matplotlib) plus faceswap and self-blended fakes, and a DFDC-style "
            "metadata.json, into DIR. The same seed gives the same files."
        ),
    )
    default = {k: v.default for k, v in inspect.signature(samples).parameters.items()}
    p.add_argument("dir", help="output folder (created if missing)")
    p.add_argument("--videos", type=int, default=default["n_videos"], help="number of clips")
    p.add_argument("--seed", type=int, default=default["seed"], help="random seed (default: %(default)s)")
    p.add_argument("--max-height", type=int, default=default["max_height"],
                   help="largest frame height")
    p.add_argument("--min-height", type=int, default=default["min_height"],
                   help="smallest frame height")
    p.add_argument("--max-seconds", type=float, default=default["max_seconds"],
                   help="longest clip, seconds")
    p.add_argument("--min-seconds", type=float, default=default["min_seconds"],
                   help="shortest clip, seconds")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from dfray.api import samples

    corpus = samples(args.dir, n_videos=args.videos, seed=args.seed,
                     min_height=args.min_height, max_height=args.max_height,
                     min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    print(corpus)
    return 0
