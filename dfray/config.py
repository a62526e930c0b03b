"""Typed, frozen configuration, parsed once at the edge (CLI / YAML) and passed down.

Nothing below the CLI reads environment variables or global settings for behaviour:
every stage gets the piece of config it needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AGGREGATIONS = ("mean", "confident")
BUILTIN_CONFIG = "builtin:demo"


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message says which and why."""


@dataclass(frozen=True)
class DetectorSpec:
    """One detector: architecture, weights and its input contract.

    Preprocessing (input_size, mean, std) always comes from here, never from a global.
    `weights` is a local path, `s3://…`, `https://…` or `builtin:NAME` (a file shipped
    inside dfray/detectors/weights/). `options` go to the architecture's entry point
    (e.g. `encoder` for effnet).
    """

    name: str
    arch: str
    weights: str | None = None
    sha256: str | None = None
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    aggregation: str = "confident"
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("detector needs a name")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"detector {self.name!r}: aggregation must be one of {AGGREGATIONS}, "
                f"got {self.aggregation!r}"
            )
        if self.input_size < 16:
            raise ConfigError(f"detector {self.name!r}: input_size {self.input_size} too small")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError(f"detector {self.name!r}: mean and std need 3 values")
        if self.weight < 0:
            raise ConfigError(f"detector {self.name!r}: weight must be >= 0")


@dataclass(frozen=True)
class EnsembleConfig:
    """An ensemble: a list of detectors whose per-video scores are weight-averaged."""

    detectors: tuple[DetectorSpec, ...]

    def __post_init__(self) -> None:
        if not self.detectors:
            raise ConfigError("an ensemble needs at least one detector")
        names = [d.name for d in self.detectors]
        if len(set(names)) != len(names):
            raise ConfigError(f"detector names must be unique, got {names}")
        if sum(d.weight for d in self.detectors) <= 0:
            raise ConfigError("ensemble weights must not all be zero")

    @property
    def input_sizes(self) -> tuple[int, ...]:
        return tuple(sorted({d.input_size for d in self.detectors}))


@dataclass(frozen=True)
class DecodeConfig:
    n_frames: int = 32


@dataclass(frozen=True)
class FaceConfig:
    """MTCNN settings; defaults are the DFDC 1st-place solution's."""

    thresholds: tuple[float, float, float] = (0.7, 0.8, 0.8)
    scale: float = 0.5  # frames are downscaled by this for detection; boxes scaled back
    margin: float = 1 / 3  # of box width/height, added on each side
    min_face_size: int = 20
    min_prob: float = 0.0  # keep every face MTCNN returns above its own thresholds
    max_faces_per_frame: int = 0  # 0: every face


@dataclass(frozen=True)
class StorageConfig:
    """How to reach object storage. Credentials come from the usual AWS chain."""

    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, moto); None for AWS
    region: str | None = None
    max_attempts: int = 10  # AWS SDK standard retry mode, throttling and transient errors


@dataclass(frozen=True)
class RunConfig:
    """Everything one scoring run needs."""

    corpus: str
    out: str
    run_id: str
    ensemble: EnsembleConfig
    decode: DecodeConfig = DecodeConfig()
    faces: FaceConfig = FaceConfig()
    storage: StorageConfig = StorageConfig()
    labels: str | None = None  # explicit labels.csv; default: found under the corpus root
    address: str | None = None  # Ray address; None: a local Ray
    write_faces: bool = True
    video_timeout_s: float = 300.0
    max_attempts: int = 3  # a video that kills its worker this often becomes status=error
    extract_actors: tuple[int, int] = (1, 0)  # (min, max); max 0: as many as CPUs allow
    score_actors: tuple[int, int] = (1, 1)
    score_batch_videos: int = 8
    flush_rows: int = 64
    limit: int | None = None  # score only the first N videos of the manifest
    device: str = "auto"  # auto | cpu | cuda

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def detector_spec_from_dict(raw: dict[str, Any]) -> DetectorSpec:
    known = {f.name for f in dataclasses.fields(DetectorSpec)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown detector keys {sorted(unknown)}; known: {sorted(known)}")
    if "name" not in raw or "arch" not in raw:
        raise ConfigError(f"a detector needs 'name' and 'arch', got {sorted(raw)}")
    kw = dict(raw)
    for key in ("mean", "std"):
        if key in kw:
            kw[key] = tuple(float(v) for v in kw[key])
    if "input_size" in kw:
        kw["input_size"] = int(kw["input_size"])
    if "weight" in kw:
        kw["weight"] = float(kw["weight"])
    kw["options"] = dict(kw.get("options") or {})
    return DetectorSpec(**kw)


def ensemble_from_dict(raw: dict[str, Any]) -> EnsembleConfig:
    if not isinstance(raw, dict) or "detectors" not in raw:
        raise ConfigError("an ensemble config is a mapping with a 'detectors' list")
    dets = raw["detectors"]
    if not isinstance(dets, list):
        raise ConfigError("'detectors' must be a list")
    return EnsembleConfig(tuple(detector_spec_from_dict(d) for d in dets))


def load_ensemble(path: str | None) -> EnsembleConfig:
    """Load an ensemble YAML; None or `builtin:demo` gives the shipped demo ensemble."""
    import yaml

    if path is None or path == BUILTIN_CONFIG:
        path = str(Path(__file__).parent / "configs" / "demo.yaml")
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read ensemble config {path}: {e}") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"ensemble config {path} is not valid YAML: {e}") from e
    return ensemble_from_dict(raw)
