"""`dfray plan`: which instance type × worker count scores a corpus by a deadline within a
budget, from a measured per-video rate and current EC2 prices.

The rate comes from (first that applies): `--rate` (videos/hour per worker on
`--reference-type`), `--from-run RUN_DIR` (its run.json stats), or `--calibrate N` (score N
videos here; the default, N=20). Exit status: 0 when a plan fits, 1 when none does (the
output says why), 2 on bad input.
"""

from __future__ import annotations

import argparse
import os


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "plan",
        help="pick instance type and worker count for a budget and a deadline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("corpus", help="corpus root (s3://bucket/prefix/ or a folder)")
    p.add_argument("--budget", type=float, required=True, metavar="USD", help="spending cap")
    p.add_argument(
        "--deadline",
        required=True,
        help="HH:MM local time (today, or tomorrow if passed) or a duration: 8h, 90m, 7h30m",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from-run", metavar="RUN_DIR", help="take the rate from RUN_DIR/run.json")
    src.add_argument(
        "--calibrate",
        type=int,
        metavar="N",
        help="score N videos here to measure the rate (default when no other source: 20)",
    )
    src.add_argument(
        "--rate",
        type=float,
        metavar="VIDEOS_PER_HOUR",
        help="videos per hour per worker on --reference-type",
    )
    p.add_argument(
        "--videos", type=int, metavar="N", help="number of videos (skips counting the corpus)"
    )
    p.add_argument(
        "--instance-types",
        nargs="+",
        metavar="TYPE",
        help="instance types to consider (default: all with a known relative speed)",
    )
    p.add_argument(
        "--market",
        choices=("both", "spot", "on-demand"),
        default="both",
        help="markets to consider (default both)",
    )
    p.add_argument("--region", default=None, help="AWS region (default $AWS_REGION or us-east-1)")
    p.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="TYPE=USD",
        help="override a price ($/h); TYPE:spot=USD or TYPE:on_demand=USD for one market",
    )
    p.add_argument(
        "--reference-type",
        default=None,
        help="instance type the rate was measured on (default: from the run's GPU, "
        "else g4dn.xlarge)",
    )
    p.add_argument("--head-type", default=None, help="head node instance type (default m6i.xlarge)")
    p.add_argument("--max-workers", type=int, default=None, help="most worker nodes (default 20)")
    p.add_argument(
        "--overhead-min", type=float, default=5.0, help="node start-up minutes (default 5)"
    )
    p.add_argument(
        "--margin", type=float, default=None, help="safety margin on cost (default 0.10)"
    )
    p.add_argument(
        "--reserve",
        type=float,
        default=None,
        metavar="FRACTION",
        help="share of the budget held back for what no ledger sees (default 0.02)",
    )
    p.add_argument(
        "--cluster-config",
        default=None,
        metavar="YAML",
        help="cluster template whose EBS volumes and public IPs are priced "
        "(default infra/aws-cluster.yaml; 'none' for instance prices only)",
    )
    p.add_argument("--offline", action="store_true", help="do not call AWS for prices")
    p.add_argument("--price-cache", default=None, metavar="DIR", help="price cache folder")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint for the corpus")
    p.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import sys

    from dfray.budget.planner import (
        DEFAULT_HEAD_TYPE,
        DEFAULT_MAX_WORKERS,
        DEFAULT_REFERENCE_TYPE,
        PlanError,
        calibrate_stats,
        format_plan,
        is_cpu_device,
        load_run_stats,
        make_plan,
        parse_deadline,
        rate_from_stats,
        reference_type_for_device,
    )
    from dfray.budget.prices import PriceBook, PriceError, parse_price_overrides
    from dfray.config import StorageConfig

    def fail(msg: str) -> int:
        print(f"dfray plan: error: {msg}", file=sys.stderr)
        return 2

    region = (
        args.region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    )
    storage = StorageConfig(endpoint_url=args.endpoint_url, region=args.region)
    notes: list[str] = []
    try:
        deadline_s = parse_deadline(args.deadline)
        overrides = parse_price_overrides(args.price)

        # Count first: it is cheap, and a corpus we cannot read should fail before calibrating.
        if args.videos is not None:
            n_videos = args.videos
        else:
            try:
                from dfray.corpus import count_videos
            except ImportError as e:
                return fail(f"cannot count the corpus here ({e}); pass --videos N")
            n_videos = count_videos(args.corpus, storage)

        device = None
        if args.rate is not None:
            rate = args.rate
            notes.append(f"rate given with --rate: {rate:g} videos/h per worker")
        else:
            if args.from_run:
                stats = load_run_stats(args.from_run)
                origin = f"run {args.from_run}"
                notes.append(_spent_note(args.from_run, storage))
            else:
                n_cal = args.calibrate or 20
                print(f"calibrating on {n_cal} videos of {args.corpus} …", file=sys.stderr)
                stats = calibrate_stats(args.corpus, n_cal, storage)
                origin = f"calibration on {n_cal} videos here"
            rate = rate_from_stats(stats)
            device = stats.get("device")
            notes.append(
                f"rate from {origin}: {stats.get('videos_per_s')} videos/s over "
                f"{stats.get('workers', 1)} worker(s) on {device or 'unknown device'} "
                f"({stats.get('n_scored', '?')} videos in {stats.get('wall_s', '?')} s)"
            )
        reference_type = args.reference_type or reference_type_for_device(device)
        if reference_type is None:
            reference_type = DEFAULT_REFERENCE_TYPE
            if device is not None and not is_cpu_device(device):
                notes.append(
                    f"the run's GPU ({device}) does not name a known model; taking the rate "
                    f"as {reference_type}'s (pass --reference-type to say otherwise)"
                )
        if device is not None and is_cpu_device(device):
            notes.append(
                f"WARNING: the rate was measured on a CPU ({device}); it is taken as the rate "
                f"of {reference_type} and GPU types are scaled by the assumed relative speeds "
                "vs that type, so the plan is pessimistic. Calibrate on a GPU for a real plan."
            )

        book = PriceBook(
            region,
            cache_dir=args.price_cache,
            overrides=overrides,
            offline=args.offline,
        )
        markets = {"both": ("spot", "on_demand"), "spot": ("spot",), "on-demand": ("on_demand",)}
        plan = make_plan(
            n_videos=n_videos,
            budget_usd=args.budget,
            deadline_s=deadline_s,
            videos_per_hour_per_worker=rate,
            prices=book,
            instance_types=args.instance_types,
            markets=markets[args.market],
            reference_type=reference_type,
            head_type=args.head_type or DEFAULT_HEAD_TYPE,
            overhead_s=args.overhead_min * 60.0,
            **{
                k: v
                for k, v in (("margin", args.margin), ("reserve", args.reserve))
                if v is not None
            },
            node_types=_node_types(args.cluster_config),
            max_workers=args.max_workers if args.max_workers is not None else DEFAULT_MAX_WORKERS,
            notes=notes,
        )
    except (PlanError, PriceError, ValueError, OSError) as e:
        return fail(str(e))

    if args.json:
        print(format_plan(plan), file=sys.stderr)
        print(plan.to_json())
    else:
        print(format_plan(plan))
    return 0 if plan.best else 1


def _node_types(path: str | None):
    """The node types of the cluster template (None for 'none' or no template found)."""
    from dfray.budget.cluster import NodeTypes
    from dfray.budget.render import default_template_path, load_template

    if path == "none":
        return None
    path = path or default_template_path()
    if not os.path.exists(path):
        return None
    return NodeTypes.from_cluster_config(load_template(path))


def _spent_note(run_dir: str, storage) -> str:
    """What the run has spent so far, every attempt (killed ones too), from its journal."""
    from dfray.budget.journal import summary

    s = summary(run_dir, storage)
    if not s.attempts:
        return f"run {run_dir} has no spend journal (run without --budget?)"
    killed = sum(1 for a in s.attempts if not a["final"])
    return (
        f"run {run_dir} has spent ${s.spent_usd:,.2f} over {len(s.attempts)} attempt(s)"
        + (f", {killed} without a final report" if killed else "")
        + "; the budget given here is for what is left"
    )
