"""`dfray score CORPUS --out OUT`: score a corpus into a run folder on Ray."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `dfray score` and jobs/score.py (the `ray job submit` entry)."""
    p.add_argument("corpus", help="folder or s3://bucket/prefix of videos")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix; the run goes to OUT/RUN_ID/")
    p.add_argument("--config", default=None, help="ensemble YAML (default: builtin:demo)")
    p.add_argument("--run-id", default=None, help="run id; reuse one to resume (default: a new id)")
    p.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--labels", default=None, help="labels.csv (filename,label); default: metadata.json/labels.csv under the corpus")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (MinIO, moto); default $DFRAY_S3_ENDPOINT or AWS")
    p.add_argument("--region", default=None, help="AWS region (default $AWS_REGION / $AWS_DEFAULT_REGION)")
    p.add_argument("--frames", type=int, default=32, help="frames sampled per video (default 32)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N videos of the manifest")
    p.add_argument("--extract-actors", type=int, default=0, help="max face-extraction actors (0: fit the cluster)")
    p.add_argument("--score-actors", type=int, default=1, help="max detector actors")
    p.add_argument("--score-batch", type=int, default=8, help="videos per detector batch")
    p.add_argument("--video-timeout", type=float, default=300.0, help="per-video time limit, seconds")
    p.add_argument("--max-attempts", type=int, default=3, help="crashes a video may cause before it is marked error")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-faces-table", action="store_true", help="do not write faces/")
    p.add_argument("--budget", type=float, default=None, help="spending cap in USD (needs prices; see dfray plan)")
    p.add_argument("--price", action="append", default=[], metavar="TYPE=USD",
                   help="with --budget: override a price ($/h); TYPE:spot=USD or TYPE:on_demand=USD for one market")
    p.add_argument("--head-type", default=None,
                   help="with --budget: head instance type (default: from the autoscaling config)")
    p.add_argument("--worker-type", default=None,
                   help="with --budget: worker instance type to project with (default: the config's most expensive worker type)")
    p.add_argument("--spot", action="store_true",
                   help="with --budget and --worker-type: price that worker type at spot")
    p.add_argument("--budget-reserve", type=float, default=0.02, metavar="FRACTION",
                   help="with --budget: share held back for what the ledger cannot see (default 0.02)")
    p.add_argument("--autoscaling-config", default=None, metavar="PATH",
                   help="with --budget: the autoscaling config the Ray monitor reads, whose max_workers the budget caps "
                        "(default $DFRAY_AUTOSCALING_CONFIG, else ~/ray_bootstrap_config.yaml if present)")
    p.add_argument("--spend-source", choices=("auto", "ray", "ec2"), default="auto",
                   help="with --budget: where node uptime comes from (auto: EC2 on an AWS cluster, else ray.nodes())")
    p.add_argument("--flush-rows", type=int, default=64, help="rows per Parquet part written (default 64)")
    p.add_argument("--quiet", action="store_true", help="no live progress")


def add_parser(sub) -> None:
    p = sub.add_parser("score", help="score a video corpus into a run folder (Parquet)")
    add_arguments(p)
    p.set_defaults(func=run)


def config_from_args(args):
    """Parse CLI arguments into a RunConfig (the one place env defaults are read)."""
    import os
    import uuid
    from datetime import datetime, timezone

    from dfray.config import DecodeConfig, RunConfig, StorageConfig, load_ensemble

    run_id = args.run_id or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    store = StorageConfig(
        endpoint_url=args.endpoint_url or os.environ.get("DFRAY_S3_ENDPOINT"),
        region=args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
    )
    return RunConfig(
        corpus=args.corpus,
        out=args.out,
        run_id=run_id,
        ensemble=load_ensemble(args.config),
        decode=DecodeConfig(n_frames=args.frames),
        storage=store,
        labels=args.labels,
        address=args.address or os.environ.get("RAY_ADDRESS"),
        write_faces=not args.no_faces_table,
        video_timeout_s=args.video_timeout,
        max_attempts=args.max_attempts,
        extract_actors=(1, args.extract_actors),
        score_actors=(1, args.score_actors),
        score_batch_videos=args.score_batch,
        limit=args.limit,
        flush_rows=args.flush_rows,
        device=args.device,
    )


def run(args) -> int:
    from dfray.runner import run_scoring

    cfg = config_from_args(args)
    governor = None
    if args.budget is not None:
        from dfray.budget.governor import governor_from_args

        governor = governor_from_args(args, cfg)
    result = run_scoring(cfg, progress=not args.quiet, governor=governor)
    counts = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items()))
    print(f"run {cfg.run_id}: {result.state}; {sum(result.counts.values())}/{result.n_videos} "
          f"videos have a row ({counts}); {result.scored_now} scored in {result.wall_s:.1f}s")
    print(f"results: {result.run_dir}")
    if result.state == "budget_exhausted":
        print("budget exhausted: resume with the same --run-id and a larger --budget")
    return result.exit_code
