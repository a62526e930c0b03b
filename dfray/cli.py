"""`dfray` command line. Each subcommand lives in dfray/commands/<name>.py and exposes
`add_parser(subparsers)` and `run(args) -> int`. Heavy imports stay inside `run`, so
`dfray --help` is fast.

Every subcommand takes `-v/--verbose` (Ray's own logs, execution plans and worker output
too) and `-q/--quiet` (warnings and errors only). Messages go to stderr through the
`dfray` logger; data (tables, JSON) goes to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = ("samples", "extract", "score", "rescore", "metrics", "report", "export",
            "detectors", "convert", "plan", "cluster", "sagemaker")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, unless its help already says it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or "%(default)" in text or action.default in (
            None, False, argparse.SUPPRESS, [], ()
        ) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _finish(parser: argparse.ArgumentParser, help_text: str | None = None) -> None:
    """Every (sub)command gets the formatter, a description and -v/-q."""
    parser.formatter_class = HelpFormatter
    if not parser.description:
        parser.description = help_text
    subs = list(_subparsers(parser))
    if not subs and "verbose" not in {a.dest for a in parser._actions}:
        add_verbosity(parser)
    helps = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in action._choices_actions}
    for name, sub in subs:
        _finish(sub, helps.get(name))


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """-v/--verbose and -q/--quiet (jobs/ entry points call this too)."""
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="say more: Ray's logs, execution plans and worker output too")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="only warnings and errors; no progress")


def build_parser() -> argparse.ArgumentParser:
    from dfray import __version__

    parser = argparse.ArgumentParser(
        prog="dfray", description="Score whole video corpora with deepfake detectors on Ray."
    )
    parser.add_argument("--version", action="version", version=f"dfray {__version__}")
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
    _finish(parser)
    return parser


class _RedactingFormatter(logging.Formatter):
    """Every URI in a log line loses its query string and user info (dfray.redact), so a
    presigned URL or a password never reaches the logs, whatever logged it."""

    def format(self, record: logging.LogRecord) -> str:
        from dfray.redact import redact_text

        return redact_text(super().format(record))


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """The `dfray` logger to stderr: timestamps unless stderr is a terminal."""
    logger = logging.getLogger("dfray")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    stamp = "" if sys.stderr.isatty() else "%(asctime)s "
    handler.setFormatter(_RedactingFormatter(f"[dfray] {stamp}%(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO))
    logger.propagate = False


def storage_options(args: argparse.Namespace) -> dict:
    """The StorageConfig options of parsed arguments (`--endpoint-url`, `--region`,
    `--profile`), as keyword arguments of the Python API (dfray.api)."""
    from dfray.config import StorageConfig
    from dfray.options import option_names

    return {k: getattr(args, k, None) for k in option_names(StorageConfig)}


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. Errors of input and configuration (ValueError, LookupError,
    OSError and their subclasses: ConfigError, CorpusError, WeightsError, StorageError,
    BudgetError, …) and AWS SDK errors print one line and exit 2; DFRAY_DEBUG=1 shows the
    traceback."""
    return run_args(build_parser().parse_args(argv))


def run_args(args: argparse.Namespace) -> int:
    """Run parsed arguments (`args.func`), with logging set up and errors sorted."""
    import os

    setup_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    command = getattr(args, "command", None) or "job"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - sorted below
        if os.environ.get("DFRAY_DEBUG") or not _user_error(e):
            raise
        from dfray.redact import redact_text

        print(f"dfray {command}: error: {redact_text(_one_line(e))}", file=sys.stderr)
        return 2


def _user_error(e: BaseException) -> bool:
    """Mistakes of input, configuration or access: one line, exit 2. Anything else is a
    bug and keeps its traceback."""
    if isinstance(e, (ValueError, LookupError, OSError)):
        return True
    mod = type(e).__module__ or ""
    return mod.startswith(("botocore", "boto3", "s3transfer"))


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    lines = text.splitlines()
    return lines[0] if len(lines) == 1 else f"{lines[0]} …"


if __name__ == "__main__":
    sys.exit(main())
