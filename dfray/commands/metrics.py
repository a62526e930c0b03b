"""`dfray metrics RUN_DIR`: print and write metrics.json for a run.

The metrics (text, or JSON with --json) are the data and go to stdout; where metrics.json
was written is a message and goes to stderr, so `dfray metrics --json RUN | python -m
json.tool` works."""

from __future__ import annotations


def add_parser(sub) -> None:
    from dfray.config import StorageConfig
    from dfray.options import add_options

    p = sub.add_parser("metrics", help="log loss, ROC AUC, AP and accuracy of a run",
                       description="Metrics of a run over its labelled videos, printed and "
                                   "written to RUN_DIR/metrics.json.")
    p.add_argument("run_dir", help="OUT/RUN_ID folder (local or s3://)")
    p.add_argument("--fill", default="0.5",
                   help="score given to unscored labelled videos (default 0.5, the DFDC prior); 'none' drops them")
    add_options(p, StorageConfig)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import logging

    from dfray import api, storage
    from dfray.cli import storage_options

    fill = None if args.fill.lower() == "none" else float(args.fill)
    m = api.metrics(args.run_dir, fill=fill, **storage_options(args))
    text = json.dumps(m.to_dict(), indent=2)
    out = storage.join(args.run_dir, "metrics.json")
    storage.write_bytes(out, text.encode(), api.storage_config(**storage_options(args)))
    print(text if args.json else str(m))
    logging.getLogger("dfray").info("written: %s", out)
    return 0
