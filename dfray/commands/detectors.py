"""`dfray detectors`: list detector architectures and their input contracts, and
optionally the detectors of an ensemble config; `dfray detectors score SPEC IMAGE...`
scores face images with one detector.

`score` prints one JSON line per image, `{"image": PATH, "score": P(fake)}`. SPEC is a
builtin weights name (`meso4_df`, `builtin:mesoinception4_f2f`, ...: the architecture is
the builtin's, the input contract the architecture's), or a YAML file holding one
detector spec (a mapping, or an ensemble with exactly one detector, or pick one with
`--name`). An image already at the detector's input size (square, S x S) is used as is;
any other is brought to S x S by dfray's face preprocessing (isotropic resize of the
longer side, then zero padding to a square), as crops are in a run."""

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
    from dfray.cli import add_verbosity

    add_verbosity(p)  # a parser with subcommands does not get -v/-q from dfray.cli itself
    sub2 = p.add_subparsers(dest="action", metavar="{score}")
    s = sub2.add_parser("score", help="score face images with one detector (JSON lines)")
    s.add_argument("spec", help="builtin weights name (e.g. meso4_df) or a detector YAML")
    s.add_argument("images", nargs="+", help="face image files (any size; RGB)")
    s.add_argument("--name", default=None, help="the detector to use from an ensemble YAML")
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    s.set_defaults(func=run_score)
    return p


# the architecture of each builtin weights file that is not an ensemble's
BUILTIN_ARCHS = {
    "meso4_demo": "meso4",
    "meso4_df": "meso4",
    "meso4_f2f": "meso4",
    "mesoinception4_df": "mesoinception4",
    "mesoinception4_f2f": "mesoinception4",
}


def resolve_spec(spec: str, name: str | None = None):
    """The DetectorSpec that SPEC names (see the module docstring)."""
    from pathlib import Path

    import yaml

    from dfray.config import (
        ConfigError,
        DetectorSpec,
        detector_spec_from_dict,
        ensemble_from_dict,
        load_ensemble,
    )

    bare = spec[len("builtin:"):] if spec.startswith("builtin:") else spec
    if bare in BUILTIN_ARCHS and not Path(spec).is_file():
        if bare == "meso4_demo":  # trained with its own preprocessing: the demo's spec
            return load_ensemble("builtin:demo").detectors[0]
        return DetectorSpec(name=bare, arch=BUILTIN_ARCHS[bare], weights=f"builtin:{bare}")
    if spec.startswith("builtin:"):
        ens = load_ensemble(spec)
        dets = ens.detectors
    else:
        try:
            raw = yaml.safe_load(Path(spec).read_text())
        except OSError as e:
            raise ConfigError(
                f"{spec!r} is neither a builtin ({', '.join(BUILTIN_ARCHS)}) nor a readable "
                f"file: {e}"
            ) from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{spec} is not valid YAML: {e}") from e
        if isinstance(raw, dict) and "detectors" in raw:
            dets = ensemble_from_dict(raw).detectors
        elif isinstance(raw, dict):
            dets = (detector_spec_from_dict(raw),)
        else:
            raise ConfigError(f"{spec}: expected a detector mapping or an ensemble")
    if name is not None:
        dets = tuple(d for d in dets if d.name == name)
        if not dets:
            raise ConfigError(f"{spec}: no detector named {name!r}")
    if len(dets) != 1:
        raise ConfigError(
            f"{spec} holds {len(dets)} detectors ({', '.join(d.name for d in dets)}); "
            "pick one with --name"
        )
    return dets[0]


def load_image(path, size: int):
    """RGB uint8 (size, size, 3): the file as is when it is size x size, else dfray's face
    preprocessing (isotropic resize + zero padding to a square)."""
    import numpy as np
    from PIL import Image

    from dfray.faces import isotropic_resize, put_to_center

    with Image.open(path) as im:
        img = np.array(im.convert("RGB"), dtype=np.uint8)
    if img.shape[:2] == (size, size):
        return img
    return put_to_center(isotropic_resize(img, size), size)


def run_score(args: argparse.Namespace) -> int:
    import json
    import sys

    import numpy as np
    from PIL import UnidentifiedImageError

    from dfray.config import ConfigError
    from dfray.detectors import WeightsError, create_detector

    try:
        spec = resolve_spec(args.spec, args.name)
        det = create_detector(spec, device=args.device, precision="fp32")
    except (ConfigError, WeightsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for path in args.images:
        try:
            img = load_image(path, spec.input_size)
        except (OSError, UnidentifiedImageError) as e:
            print(f"error: cannot read image {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        score = float(det.predict(np.expand_dims(img, 0))[0])
        print(json.dumps({"image": path, "score": score}), flush=True)
    return 1 if failed else 0


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
