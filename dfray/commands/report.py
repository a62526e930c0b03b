"""`dfray report RUN [-o report.html]`: one self-contained HTML page about a run."""

from __future__ import annotations


def add_parser(sub) -> None:
    from dfray.config import StorageConfig
    from dfray.options import add_options

    p = sub.add_parser(
        "report", help="write a self-contained HTML report of a run (plots, tables, failures)",
        description="Write one HTML file (plots inline, no network needed to view it): counts "
                    "by status, metrics, ROC / precision-recall / calibration curves when "
                    "labels exist, score histograms, time by stage, a per-video timeline, "
                    "the slowest and the failed videos, spend.")
    p.add_argument("run_dir", help="OUT/RUN_ID folder (local or s3://)")
    p.add_argument("-o", "--output", default="report.html",
                   help="HTML file or s3:// URI to write")
    add_options(p, StorageConfig)
    p.set_defaults(func=run)


def run(args) -> int:
    from dfray.api import report
    from dfray.cli import storage_options

    out = report(args.run_dir, args.output, **storage_options(args))
    print(f"report: {out}")
    return 0
