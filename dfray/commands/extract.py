"""`dfray extract CORPUS --out ROOT --run-id ID`: decode and detect faces once, into a face
cache that `dfray score` and `dfray rescore` read instead of the corpus.

The options are `dfray score`'s (generated from RunConfig), less those that only concern
the detectors.
"""

from __future__ import annotations

import argparse

# RunConfig fields that belong to the score stage only
SCORE_ONLY = ("ensemble", "write_faces", "score_actors", "score_batch_videos",
              "detector_memory_mb")


def add_parser(sub) -> None:
    from dfray.cli import add_verbosity
    from dfray.config import RunConfig
    from dfray.options import add_options

    p = sub.add_parser(
        "extract",
        help="decode videos and detect faces once, into a face cache",
        description="Decode every video of CORPUS and detect its faces (MTCNN) once; write "
        "a face cache to OUT/RUN_ID/ (cache.json, manifest.parquet, videos/, faces/ with "
        "lossless margin crops). `dfray score CACHE` and `dfray rescore CACHE` then run "
        "only the detectors. Re-run with the same --run-id to resume.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(p, RunConfig, skip=SCORE_ONLY)
    add_verbosity(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from dfray import storage
    from dfray.config import RunConfig
    from dfray.options import from_args
    from dfray.runner import run_extract

    cfg = from_args(RunConfig, args)
    if any(storage.is_s3(u or "") for u in (cfg.corpus, cfg.out, cfg.labels)):
        storage.check_reachable(cfg.storage)
    result = run_extract(cfg, progress=not args.quiet, verbose=bool(args.verbose))
    counts = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items()))
    print(f"face cache {cfg.run_id}: {result.state}; {sum(result.counts.values())}/"
          f"{result.n_videos} videos have a row ({counts}); {result.scored_now} extracted "
          f"in {result.wall_s:.1f}s")
    print(f"cache: {result.run_dir}")
    return result.exit_code
