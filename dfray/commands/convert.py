"""`dfray convert mesonet FILE.h5 -o OUT.pt [--arch meso4|mesoinception4]`: convert the
MesoNet authors' Keras-2 weights into a dfray state dict (h5py only, no TensorFlow). The
converted model's output is a P(fake) logit (MesoNet's own output is P(real)); it expects
the authors' preprocessing, the architecture's registered contract (256 px, x/255)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert published detector weights into dfray's")
    kinds = p.add_subparsers(dest="kind", metavar="{mesonet}", required=True)
    m = kinds.add_parser("mesonet", help="MesoNet Keras .h5 weights -> meso4/mesoinception4 .pt")
    m.add_argument("h5", help="the Keras weights file (e.g. Meso4_DF.h5)")
    m.add_argument("-o", "--output", required=True, help="the .pt state dict to write")
    m.add_argument("--arch", choices=("meso4", "mesoinception4"), default=None,
                   help="target architecture (default: from the file's layers)")
    m.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from dfray.detectors.mesonet import OUTPUT, ConversionError, convert_file
    from dfray.detectors.weights import sha256_file

    try:
        arch = convert_file(args.h5, args.output, args.arch)
    except (ConversionError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"written: {args.output} (arch {arch}, output {OUTPUT} logit, "
          f"sha256 {sha256_file(args.output)})")
    print(f"use: {{name: ..., arch: {arch}, weights: {args.output}}} "
          "(input contract: the architecture's, 256 px, x/255)")
    return 0
