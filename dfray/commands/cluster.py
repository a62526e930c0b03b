"""`dfray cluster render`: write a Ray cluster launcher config for AWS whose max_workers is
capped so that the head plus every worker running until the deadline stays inside the
budget. See dfray/budget/render.py for the arithmetic and the node-type policy."""

from __future__ import annotations

import argparse
import os


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("cluster", help="Ray cluster configs for AWS")
    csub = p.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND")
    csub.required = True
    r = csub.add_parser(
        "render",
        help="render infra/aws-cluster.yaml with a budget-capped max_workers",
        description=__doc__,
    )
    r.add_argument("--budget", type=float, required=True, metavar="USD", help="spending cap")
    r.add_argument(
        "--deadline",
        required=True,
        help="HH:MM local time (today, or tomorrow if passed) or a duration: 8h, 90m, 7h30m",
    )
    r.add_argument("--instance-type", default=None, help="only this worker instance type")
    market = r.add_mutually_exclusive_group()
    market.add_argument(
        "--spot", dest="spot", action="store_true", default=True, help="spot workers (default)"
    )
    market.add_argument(
        "--on-demand", dest="spot", action="store_false", help="on-demand workers only"
    )
    r.add_argument(
        "--no-fallback",
        dest="fallback",
        action="store_false",
        help="with --spot, disable the on-demand fallback types (cap priced at spot)",
    )
    r.add_argument(
        "--template", default=None, help="cluster template (default infra/aws-cluster.yaml)"
    )
    r.add_argument(
        "--tf-outputs", default=None, metavar="FILE", help="`terraform output -json` file"
    )
    r.add_argument("--region", default=None, help="AWS region (default: tf outputs, template)")
    r.add_argument(
        "--subnet-ids", nargs="+", default=None, metavar="SUBNET", help="space or comma separated"
    )
    r.add_argument("--security-group-id", default=None, metavar="SG")
    r.add_argument("--head-profile", default=None, metavar="ARN", help="head instance profile")
    r.add_argument("--worker-profile", default=None, metavar="ARN", help="worker instance profile")
    r.add_argument("--image-id", default=None, metavar="AMI", help="AMI for every node type")
    r.add_argument("--cluster-name", default=None)
    r.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="TYPE=USD",
        help="override a price ($/h); TYPE:spot=USD or TYPE:on_demand=USD for one market",
    )
    r.add_argument(
        "--margin", type=float, default=None, help="extra safety margin on the budget (default 0)"
    )
    r.add_argument(
        "--reserve",
        type=float,
        default=None,
        metavar="FRACTION",
        help="share of the budget held back for what no ledger sees (default 0.02)",
    )
    r.add_argument(
        "--max-workers", type=int, default=None, help="upper limit below the budget cap (quotas)"
    )
    r.add_argument("--offline", action="store_true", help="do not call AWS for prices")
    r.add_argument("--price-cache", default=None, metavar="DIR", help="price cache folder")
    r.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="skip validation against Ray's cluster schema",
    )
    r.add_argument("-o", "--output", required=True, metavar="OUT.yaml", help="'-' for stdout")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.cluster_command == "render":
        return run_render(args)
    raise ValueError(f"unknown cluster subcommand {args.cluster_command!r}")


def run_render(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from dfray.budget.planner import PlanError, parse_deadline
    from dfray.budget.prices import PriceBook, PriceError, parse_price_overrides
    from dfray.budget.render import (
        RenderError,
        default_template_path,
        load_template,
        read_tf_outputs,
        render_cluster,
        validate_ray_config,
    )

    def fail(msg: str) -> int:
        print(f"dfray cluster render: error: {msg}", file=sys.stderr)
        return 2

    template_path = args.template or default_template_path()
    try:
        deadline_s = parse_deadline(args.deadline)
        overrides = parse_price_overrides(args.price)
        template = load_template(template_path)
        tf = read_tf_outputs(args.tf_outputs) if args.tf_outputs else {}
        # `--subnet-ids a b`, `--subnet-ids a,b` (terraform's cluster_render_args) or both
        subnets = [x for item in args.subnet_ids or [] for x in item.split(",") if x.strip()]
        region = (
            args.region
            or tf.get("region")
            or (template.get("provider") or {}).get("region")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )
        if not region:
            return fail("no region: pass --region")
        book = PriceBook(
            region, cache_dir=args.price_cache, overrides=overrides, offline=args.offline
        )
        result = render_cluster(
            template,
            budget_usd=args.budget,
            deadline_s=deadline_s,
            prices=book,
            instance_type=args.instance_type,
            spot=args.spot,
            fallback=args.fallback,
            **{
                k: v
                for k, v in (("margin", args.margin), ("reserve", args.reserve))
                if v is not None
            },
            max_workers_limit=args.max_workers,
            region=region,
            subnet_ids=subnets or tf.get("subnet_ids"),
            security_group_id=args.security_group_id or tf.get("security_group_id"),
            head_profile=args.head_profile or tf.get("head_profile"),
            worker_profile=args.worker_profile or tf.get("worker_profile"),
            image_id=args.image_id or tf.get("image_id"),
            cluster_name=args.cluster_name or tf.get("cluster_name"),
            template_path=template_path,
        )
    except (RenderError, PlanError, PriceError, ValueError) as e:
        return fail(str(e))

    if args.validate:
        try:
            validate_ray_config(result.config)
        except ImportError as e:
            print(f"warning: ray not importable, config not validated ({e})", file=sys.stderr)
        except Exception as e:  # jsonschema.ValidationError, ValueError, RuntimeError
            where = "/".join(str(x) for x in getattr(e, "absolute_path", []) or [])
            msg = getattr(e, "message", None) or str(e)
            return fail(
                f"the rendered config is not a valid Ray config"
                f"{' at ' + where if where else ''}: {msg}"
            )

    if result.placeholders:
        print(
            "warning: still template placeholders (fill them in before `ray up`; see "
            "--tf-outputs, --image-id): " + "; ".join(result.placeholders),
            file=sys.stderr,
        )
    text = result.to_yaml()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        try:
            Path(args.output).write_text(text)
        except OSError as e:
            return fail(f"cannot write {args.output}: {e}")
        print(
            f"wrote {args.output}: max_workers={result.max_workers} "
            f"({', '.join(result.enabled)}), priced at ${result.cap_usd_per_hour:.4f}/h per worker "
            f"[{result.cap_price.source}], {result.hours:.2f} h to the deadline",
            file=sys.stderr,
        )
    return 0
