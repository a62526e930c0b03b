"""`dfray score CORPUS --out OUT`: score a corpus (or a face cache) into a run folder on Ray.

The arguments are generated from RunConfig and BudgetConfig (dfray/config.py): each option
is defined once there, with its default, its environment variables and its check.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `dfray score` and jobs/score.py (the `ray job submit` entry)."""
    from dfray.cli import add_verbosity
    from dfray.config import BudgetConfig, RunConfig
    from dfray.options import add_options

    add_options(p, RunConfig)
    add_options(p.add_argument_group("budget (on a Ray cluster; see `dfray plan`)"), BudgetConfig)
    p.add_argument("--costs-from", metavar="RUN_DIR", default=None,
                   help="size the stages from the stage timings of this run "
                        "(default: earlier attempts of this run, else a calibration)")
    add_verbosity(p)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "score",
        help="score a video corpus into a run folder (Parquet)",
        description="Score every video of CORPUS (a folder, s3://bucket/prefix, or a face "
        "cache from `dfray extract`) with an ensemble of detectors; one Parquet row per "
        "video in OUT/RUN_ID/videos/. Re-run with the same --run-id to resume.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def configs_from_args(args):
    """(RunConfig, BudgetConfig or None) from parsed arguments: the edge where the
    environment is read."""
    from dfray.config import BudgetConfig, RunConfig
    from dfray.options import from_args

    cfg = from_args(RunConfig, args)
    budget = from_args(BudgetConfig, args)
    return cfg, (budget if budget.budget_usd is not None else None)


def run(args) -> int:
    from dfray.api import run as score

    cfg, budget = configs_from_args(args)
    result = score(cfg, budget, progress=not args.quiet, verbose=bool(args.verbose),
                   costs_from=args.costs_from)
    counts = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items()))
    print(f"run {cfg.run_id}: {result.state}; {sum(result.counts.values())}/{result.n_videos} "
          f"videos have a row ({counts}); {result.scored_now} scored in {result.wall_s:.1f}s")
    print(f"results: {result.run_dir}")
    if result.state == "budget_exhausted":
        print("budget exhausted: resume with the same --run-id and a larger --budget")
    return result.exit_code
