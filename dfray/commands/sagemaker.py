"""`dfray sagemaker submit CORPUS --out OUT --role ARN --image-uri URI`: score an S3 corpus
as one SageMaker Processing job on N instances (the corpus is sharded by S3 key across
them), with MaxRuntimeInSeconds derived from --budget. Rows land in OUT/RUN_ID/ as with
`dfray score`. See dfray/cloud/ for the design.

Exit status: 0 submitted (with --wait: the run is complete), 1 the job ended with videos
unscored, 2 refused (bad input, budget too small), 3 (--wait) MaxRuntime stopped the job
before every video had a row: resume with the same --run-id and a larger --budget.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sagemaker",
        help="run a scoring job on SageMaker Processing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s = p.add_subparsers(dest="sagemaker_command", metavar="ACTION")
    s.required = True
    q = s.add_parser(
        "submit",
        help="create one Processing job that scores CORPUS into OUT/RUN_ID/",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from dfray.config import RunConfig
    from dfray.options import add_options

    # corpus, --out, --run-id, --labels, the scoring options and --region/--endpoint-url
    # (S3 and SageMaker) come from the one option schema; the ensemble is a local YAML
    # path here (uploaded by submit), Ray is SageMaker's, --limit is not offered.
    add_options(q, RunConfig, skip=("ensemble", "address", "limit"))
    q.add_argument("--role", required=True, help="SageMaker execution role ARN")
    q.add_argument(
        "--image-uri",
        required=True,
        help="container image with Python >= 3.10 and dfray's dependencies "
        "(the dfray source itself is uploaded by submit)",
    )
    q.add_argument(
        "--instance-type",
        default="ml.g4dn.xlarge",
        help="SageMaker ml.* instance type (default ml.g4dn.xlarge)",
    )
    q.add_argument(
        "--instance-count",
        type=int,
        default=1,
        help="instances; the corpus is sharded by S3 key across them (default 1)",
    )
    q.add_argument(
        "--config",
        default=None,
        help="ensemble YAML (default: builtin:demo); local weights files are uploaded with it",
    )
    q.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="USD",
        help="spending cap: MaxRuntimeInSeconds = budget / (price x count) h",
    )
    q.add_argument(
        "--price-per-hour",
        type=float,
        default=None,
        metavar="USD",
        help="SageMaker price of one instance per hour; preferred, since ml.* "
        "prices are higher than EC2's (default: a dated table of ml.* "
        "on-demand prices, else the EC2 price x 1.4)",
    )
    q.add_argument(
        "--max-runtime-s",
        type=int,
        default=None,
        metavar="S",
        help="upper bound on the job's run time (default: what the budget pays, "
        "at most 777600 s; 86400 s without --budget)",
    )
    q.add_argument(
        "--volume-size-gb",
        type=int,
        default=None,
        help="ML storage volume per instance (default: from the corpus size)",
    )
    q.add_argument(
        "--wait",
        action="store_true",
        help="follow the job to its end and write the run's final state",
    )
    q.set_defaults(func=run)


def spec_from_args(args):
    from dfray.cloud.job import SubmitSpec
    from dfray.config import RunConfig, load_ensemble
    from dfray.options import from_args

    return SubmitSpec(
        run=from_args(RunConfig, args, ensemble=load_ensemble(args.config)),
        role=args.role,
        image_uri=args.image_uri,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        config=args.config,
        budget_usd=args.budget,
        price_per_hour=args.price_per_hour,
        max_runtime_s=args.max_runtime_s,
        volume_size_gb=args.volume_size_gb,
    )


def run(args) -> int:
    import sys

    from dfray.cloud.processing import SageMakerError
    from dfray.cloud.submit import submit
    from dfray.config import ConfigError

    try:
        spec = spec_from_args(args)
        return submit(spec, wait=args.wait)
    except (SageMakerError, ConfigError) as e:
        print(f"dfray sagemaker submit: {e}", file=sys.stderr)
        return 2
