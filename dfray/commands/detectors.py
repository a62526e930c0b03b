"""`dfray detectors`: list detector architectures and their input contracts, and
optionally the detectors of an ensemble config."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("detectors", help="list detector architectures and their input contracts")
    p.add_argument(
        "--config",
        nargs="?",
        const="builtin:demo",
        default=None,
        help="also show the detectors of an ensemble YAML (default builtin:demo)",
    )
    p.set_defaults(func=run)
    return p


def _fmt(v: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{x:g}" for x in v) + ")"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import sys

    from dfray.config import ConfigError, load_ensemble
    from dfray.detectors import get_detector_defaults, list_detectors

    rows = []
    for arch in list_detectors():
        d = get_detector_defaults(arch)
        rows.append(
            [
                arch,
                str(d["input_size"]),
                _fmt(d["mean"]),
                _fmt(d["std"]),
                ", ".join(d["options"]) or "-",
                d["description"],
            ]
        )
    print(_table(["arch", "input", "mean", "std", "options", "description"], rows))

    if args.config:
        try:
            ens = load_ensemble(args.config)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        rows = [
            [
                s.name,
                s.arch,
                s.weights or "(random init)",
                s.sha256[:12] if s.sha256 else "-",
                str(s.input_size),
                _fmt(s.mean),
                _fmt(s.std),
                s.aggregation,
                f"{s.weight:g}",
            ]
            for s in ens.detectors
        ]
        print()
        print(f"ensemble {args.config}:")
        header = ["name", "arch", "weights", "sha256", "input", "mean", "std", "aggregation"]
        print(_table([*header, "weight"], rows))
    return 0
