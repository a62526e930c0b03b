"""`torch_export`: any submitted model as a `torch.export` program (`.pt2`,
`torch.export.save`).

Same contract as `torchscript`: input float32 (N, 3, S, S) normalised with the spec's
mean/std; output (N,) or (N, 1) logits, or P(fake) with `options: {output: prob}`. Export
with a dynamic batch dimension.

Safety: `torch.export.load` unpickles (weights_only=False) any weight or constant whose
config entry says `use_pickle`, and custom objects. So the archive is checked first,
strictly, without loading anything: a zip whose members are only the known archive
files (format/version markers, `models/*.json`, `data/weights/*`, `data/constants/*`,
`data/sample_inputs/*.pt`, which torch reads with weights_only=True), where every
weight and constant in the JSON configs is a raw tensor (`use_pickle: false`) and every
file under data/weights and data/constants is named by its config. Anything else is
rejected with WeightsError before `torch.export.load` is called.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

from dfray.config import IMAGENET_MEAN, IMAGENET_STD, DetectorSpec
from dfray.detectors.registry import register_detector

_FIXED = {"archive_format", "archive_version", "byteorder", ".data/version",
          ".data/serialization_id"}
_PATTERNS = [re.compile(p) for p in (
    r"models/[\w.-]+\.json", r"data/weights/[\w.-]+", r"data/constants/[\w.-]+",
    r"data/sample_inputs/[\w.-]+\.pt",
)]


def check_pt2(path: Path) -> None:
    """Raise WeightsError unless `path` is a .pt2 archive torch can load without
    unpickling (see the module docstring)."""
    from dfray.detectors.weights import WeightsError

    def bad(why: str) -> WeightsError:
        return WeightsError(f"{path} is not an accepted torch.export program: {why}")

    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise bad(f"not a zip archive ({e})") from None
    with z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or any("/" not in n for n in names):
            raise bad(f"expected one top-level folder, got {sorted(roots)}")
        root = roots.pop() + "/"
        rel = [n[len(root):] for n in names]
        for n in rel:
            if ".." in n.split("/") or not (n in _FIXED or any(p.fullmatch(n) for p in _PATTERNS)):
                raise bad(f"unexpected member {n!r}")
        if "archive_format" not in rel or z.read(root + "archive_format").strip() != b"pt2":
            raise bad("archive_format is not 'pt2'")
        for kind in ("weights", "constants"):
            files = {n.split("/", 2)[2] for n in rel if n.startswith(f"data/{kind}/")}
            configs = sorted(f for f in files if f.endswith("_config.json"))
            named = set(configs)
            for cfg_name in configs:
                try:
                    cfg = json.loads(z.read(f"{root}data/{kind}/{cfg_name}"))["config"]
                except (ValueError, KeyError, TypeError) as e:
                    raise bad(f"unreadable {kind} config {cfg_name}: {e}") from None
                for fqn, entry in cfg.items():
                    if not isinstance(entry, dict) or entry.get("use_pickle") is not False:
                        raise bad(f"{kind[:-1]} {fqn!r} is stored as a pickle")
                    named.add(str(entry.get("path_name")))
            extra = sorted(files - named)
            if extra:
                raise bad(f"{kind} files not named by a tensor config: {extra}")


def _module(gm):
    """Wrap the program's module: torch refuses `.eval()`/`.train()` on it (an exported
    program is already traced in the mode it was exported in), which `Detector` calls."""
    import torch

    class ExportedModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            object.__setattr__(self, "program", gm)  # not a child: train() skips it

        def _apply(self, fn, recurse=True):
            self.program._apply(fn)
            return self

        def parameters(self, recurse: bool = True):  # the program's, for memory sizing
            return self.program.parameters(recurse)

        def buffers(self, recurse: bool = True):
            return self.program.buffers(recurse)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.program(x)

    return ExportedModule()


@register_detector(
    "torch_export",
    input_size=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    options=("output",),
    loads_weights=True,
)
def torch_export(spec: DetectorSpec, weights_path: Path):
    """Any submitted model as a torch.export program (.pt2); (N,3,S,S) -> (N,) or (N,1)."""
    import torch

    from dfray.detectors.weights import WeightsError

    try:
        check_pt2(Path(weights_path))
    except WeightsError as e:
        raise WeightsError(f"detector {spec.name!r}: {e}") from None
    try:
        return _module(torch.export.load(str(weights_path)).module())
    except Exception as e:  # noqa: BLE001 - a broken archive is the submitter's error
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(
            f"detector {spec.name!r}: {weights_path} is not a loadable torch.export "
            f"program: {first}"
        ) from e
