"""`dfray metrics RUN_DIR`: print and write metrics.json for a run."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("metrics", help="log loss, ROC AUC, AP and accuracy of a run")
    p.add_argument("run_dir", help="OUT/RUN_ID folder (local or s3://)")
    p.add_argument("--fill", default="0.5",
                   help="score given to unscored labelled videos (default 0.5, the DFDC prior); 'none' drops them")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import os

    from dfray import storage
    from dfray.config import StorageConfig
    from dfray.metrics import format_metrics, run_metrics

    fill = None if args.fill.lower() == "none" else float(args.fill)
    cfg = StorageConfig(endpoint_url=args.endpoint_url or os.environ.get("DFRAY_S3_ENDPOINT"))
    m = run_metrics(args.run_dir, cfg, fill=fill)
    out = storage.join(args.run_dir, "metrics.json")
    storage.write_bytes(out, json.dumps(m, indent=2).encode(), cfg)
    print(json.dumps(m, indent=2) if args.json else format_metrics(m))
    print(f"written: {out}")
    return 0
