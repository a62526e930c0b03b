"""`dfray export RUN --format kaggle|csv|parquet|jsonl [-o FILE]`."""

from __future__ import annotations


def add_parser(sub) -> None:
    from dfray.config import StorageConfig
    from dfray.export import DEFAULT_FILL, FORMATS
    from dfray.options import add_options

    p = sub.add_parser(
        "export", help="write DFDC's submission.csv, or the videos table as CSV/Parquet/JSONL",
        description="Export a run. --format kaggle writes DFDC's `filename,label` (label = "
                    "P(fake)), one line per video of the manifest, unscored videos filled; "
                    "csv, parquet and jsonl write the videos table (one row per video).")
    p.add_argument("run_dir", help="OUT/RUN_ID folder (local or s3://)")
    p.add_argument("--format", choices=FORMATS, default="kaggle", help="what to write")
    p.add_argument("-o", "--output", default=None,
                   help="file or s3:// URI to write (default: stdout; required for parquet)")
    p.add_argument("--fill", type=float, default=DEFAULT_FILL,
                   help="kaggle: label of videos without a score")
    add_options(p, StorageConfig)
    p.set_defaults(func=run)


def run(args) -> int:
    import logging
    import sys

    from dfray.api import export
    from dfray.cli import storage_options

    log = logging.getLogger("dfray")
    if args.format == "parquet" and args.output is None:
        log.error("--format parquet needs -o FILE (Parquet is binary; not written to a terminal)")
        return 2
    if not 0.0 <= args.fill <= 1.0:
        log.error("--fill must be a probability in [0, 1], got %s", args.fill)
        return 2
    res = export(args.run_dir, args.format, args.output, fill=args.fill, **storage_options(args))
    if args.output is None:
        sys.stdout.buffer.write(res["data"])
        sys.stdout.flush()
    else:
        log.info("wrote %d rows to %s", res["rows"], args.output)
    if args.format == "kaggle":
        print(f"{res['filled']} of {res['rows']} videos had no score; filled with {args.fill}",
              file=sys.stderr)
    return 0
