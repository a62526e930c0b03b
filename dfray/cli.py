"""`dfray` command line. Each subcommand lives in dfray/commands/<name>.py and exposes
`add_parser(subparsers)` and `run(args) -> int`. Heavy imports stay inside `run`, so
`dfray --help` is fast."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("samples", "score", "metrics", "detectors", "plan", "cluster", "sagemaker")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dfray", description="Score whole video corpora with deepfake detectors on Ray."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"dfray.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"dfray.commands.{name}":
                continue  # command not built in this checkout
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. Errors of input and configuration (ValueError, LookupError,
    OSError and their subclasses: ConfigError, CorpusError, WeightsError, StorageError,
    BudgetError, …) print one line and exit 2; DFRAY_DEBUG=1 shows the traceback."""
    import os

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, LookupError, OSError) as e:
        if os.environ.get("DFRAY_DEBUG"):
            raise
        print(f"dfray {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
