"""`dfray rescore CACHE SUBMISSION... --out DIR`: score submitted detectors from a face
cache and write the leaderboard (dfray/rescore.py).

The scoring options are RunConfig's (those that make sense for a face cache), the budget
options BudgetConfig's, the rescore's own RescoreConfig's: each defined once.
"""

from __future__ import annotations

import argparse

# RunConfig fields that a rescore sets itself (detector_memory_mb from --memory-limit) or
# that belong to extraction (the cache's)
RUN_SKIP = ("corpus", "out", "run_id", "ensemble", "labels", "n_frames", "video_timeout_s",
            "max_attempts", "extract_actors", "detector_memory_mb")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `dfray rescore` and jobs/rescore.py (the `ray job submit` entry)."""
    from dfray.cli import add_verbosity
    from dfray.config import BudgetConfig, RunConfig
    from dfray.options import add_options
    from dfray.rescore import RescoreConfig

    p.add_argument("cache", metavar="CACHE", help="face cache folder or s3:// prefix "
                   "(from `dfray extract`)")
    p.add_argument("submissions", metavar="SUBMISSION", nargs="+",
                   help="a submission folder (holds submission.yaml) or a folder/prefix "
                        "whose subfolders are submissions")
    add_options(p, RescoreConfig)
    add_options(p.add_argument_group("scoring"), RunConfig, skip=RUN_SKIP)
    add_options(p.add_argument_group("budget and cost (see `dfray plan`); --worker-type also "
                                     "prices device seconds"), BudgetConfig)
    add_verbosity(p)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "rescore",
        help="score submissions from a face cache and write the leaderboard",
        description="Score every SUBMISSION from the face cache CACHE into DIR/runs/<id>/, "
        "each contained (its failures are its own leaderboard status), and write the "
        "public and private leaderboards to DIR/public/ and DIR/private/. Finished "
        "submissions are not rescored; re-run to resume or to add submissions.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def configs_from_args(args):
    """(RescoreConfig, RunConfig, BudgetConfig or None): the edge where the environment
    is read."""
    from dfray import storage
    from dfray.config import BudgetConfig, RunConfig
    from dfray.options import from_args
    from dfray.rescore import RescoreConfig

    rcfg = from_args(RescoreConfig, args, cache=args.cache,
                     submissions=tuple(args.submissions))
    base = from_args(RunConfig, args, corpus=args.cache, out=storage.join(rcfg.out, "runs"),
                     run_id="rescore")
    budget = from_args(BudgetConfig, args)
    return rcfg, base, budget


def run(args) -> int:
    from dfray import storage
    from dfray.rescore import rescore

    rcfg, base, budget = configs_from_args(args)
    if any(storage.is_s3(u) for u in (rcfg.cache, rcfg.out, *rcfg.submissions)):
        storage.check_reachable(base.storage)
    if budget.budget_usd is None and not budget.worker_type:
        budget = None
    result = rescore(rcfg, base, budget, progress=not args.quiet, verbose=bool(args.verbose))
    width = max((len(k) for k in result.statuses), default=0)
    for sid, status in sorted(result.statuses.items()):
        print(f"{sid:<{width}}  {status}")
    print(f"leaderboard: {storage.join(result.out, 'public')} and "
          f"{storage.join(result.out, 'private')}")
    if result.exit_code:
        print("budget exhausted: re-run with a larger --budget to score the rest")
    return result.exit_code
