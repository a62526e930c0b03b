"""Typed, frozen configuration, parsed once at the edge (CLI / YAML) and passed down.

Nothing below the CLI reads environment variables or global settings for behaviour:
every stage gets the piece of config it needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfray.budget.cost import DEFAULT_RESERVE
from dfray.options import at_least, check_options, fraction, no_userinfo, option, positive
from dfray.redact import RedactedMessage

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AGGREGATIONS = ("mean", "confident")
BUILTIN_CONFIG = "builtin:demo"


class ConfigError(RedactedMessage, ValueError):
    """A configuration value is missing or wrong; the message says which and why."""


def _arch_contract(arch: str) -> dict[str, Any]:
    """input_size, mean and std registered by `arch` (generic ones for an unknown arch)."""
    import dfray.detectors  # noqa: F401  (registers the built-in architectures; no torch)
    from dfray.detectors.registry import get_detector_defaults

    try:
        return get_detector_defaults(arch)
    except ConfigError:
        return {"input_size": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


@dataclass(frozen=True)
class DetectorSpec:
    """One detector: architecture, weights and its input contract.

    Preprocessing (input_size, mean, std) always comes from here, never from a global. A
    field left out (None) is filled from the input contract the architecture registered
    (`register_detector(..., input_size=, mean=, std=)`: 256 px and x/255 for meso4 and
    mesoinception4); an architecture that is not registered gets 224 px and ImageNet
    statistics (its name is rejected later by `check_spec` anyway).
    `weights` is a local path, `s3://…`, `https://…` or `builtin:NAME` (a file shipped
    inside dfray/detectors/weights/). `options` go to the architecture's entry point
    (e.g. `encoder` for effnet).
    """

    name: str
    arch: str
    weights: str | None = None
    sha256: str | None = None
    input_size: int = None  # type: ignore[assignment]  # None: the architecture's
    mean: tuple[float, float, float] = None  # type: ignore[assignment]
    std: tuple[float, float, float] = None  # type: ignore[assignment]
    aggregation: str = "confident"
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("detector needs a name")
        if self.input_size is None or self.mean is None or self.std is None:
            contract = _arch_contract(self.arch)
            for key in ("input_size", "mean", "std"):
                if getattr(self, key) is None:
                    object.__setattr__(self, key, contract[key])
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
    n_frames: int = option(32, flag="--frames", help="frames sampled per video, evenly spaced",
                           check=at_least(1))

    def __post_init__(self) -> None:
        check_options(self)


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
    """How to reach object storage. Credentials come from the usual AWS chain (the profile
    names which one); they are never part of a config, a log or an output."""

    endpoint_url: str | None = option(
        None, flag="--endpoint-url", env=("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "DFRAY_S3_ENDPOINT"),
        check=no_userinfo,
        help="S3-compatible endpoint (MinIO, moto) for listing, reading and writing", metavar="URL",
        show_default="AWS")
    region: str | None = option(
        None, flag="--region", env=("AWS_REGION", "AWS_DEFAULT_REGION"), help="AWS region",
        show_default="the AWS SDK's")
    profile: str | None = option(
        None, flag="--profile", env=("AWS_PROFILE",), help="AWS shared-config profile",
        show_default="the AWS SDK's")
    max_attempts: int = 10  # AWS SDK standard retry mode, throttling and transient errors
    connect_timeout_s: float = 5.0  # an unreachable endpoint fails in seconds, not minutes

    def __post_init__(self) -> None:
        check_options(self)


def new_run_id() -> str:
    """A fresh run id: UTC time plus 6 random hex digits."""
    import uuid
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


RUN_ID_RE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


def check_run_id(run_id: str) -> str | None:
    """Run ids name a folder directly under --out: letters, digits, '.', '_', '-', starting
    with a letter or digit, at most 128 characters, and no '..'."""
    import re

    if not isinstance(run_id, str) or not re.fullmatch(RUN_ID_RE, run_id) or ".." in run_id:
        return ("must be 1-128 of [A-Za-z0-9._-], start with a letter or digit and hold "
                "no '..' (it names a folder inside --out)")
    return None


def default_ensemble() -> EnsembleConfig:
    return load_ensemble(None)


CPU_RUNTIMES = ("torch", "onnxruntime")  # dfray.detectors.ort
LEASE_TIMEOUT_S = 120.0  # a run lease (dfray.lease) or cluster budget lock with no heartbeat


@dataclass(frozen=True)
class RunConfig:
    """Everything one scoring run needs. Each field that is also a command-line option is
    declared once here (dfray.options) with its default, flag, help and check."""

    corpus: str = option(kind="positional", metavar="CORPUS",
                         help="folder or s3://bucket/prefix of videos, or a face cache")
    out: str = option(flag="--out", metavar="OUT",
                      help="output folder or s3:// prefix; the run goes to OUT/RUN_ID/")
    run_id: str = option(default_factory=new_run_id, flag="--run-id", check=check_run_id,
                         help="run id; reuse one to resume", show_default="a new time-based id")
    ensemble: EnsembleConfig = option(default_factory=default_ensemble, flag="--config",
                                      parse=lambda path: load_ensemble(path), metavar="YAML",
                                      help="ensemble YAML or builtin:NAME",
                                      show_default=BUILTIN_CONFIG)
    decode: DecodeConfig = DecodeConfig()
    faces: FaceConfig = FaceConfig()
    storage: StorageConfig = StorageConfig()
    labels: str | None = option(None, flag="--labels", metavar="CSV",
                                help="labels.csv (filename,label)",
                                show_default="metadata.json/labels.csv under the corpus")
    address: str | None = option(None, flag="--address", env=("RAY_ADDRESS",),
                                 help="Ray cluster address", show_default="a local Ray")
    write_faces: bool = option(True, flag="--no-faces-table", kind="no_flag",
                               help="do not write the faces/ table")
    video_timeout_s: float = option(300.0, flag="--video-timeout", check=positive, metavar="S",
                                    help="per-video time limit for read + decode + faces, seconds")
    max_attempts: int = option(3, flag="--max-attempts", check=at_least(1),
                               help="crashes a video may cause before it is marked error")
    extract_actors: int = option(0, flag="--extract-actors", check=at_least(0),
                                 help="face-extraction actors (0: planned; one per core on CPU nodes)")
    score_actors: int = option(0, flag="--score-actors", check=at_least(0),
                               help="detector actors (0: planned; one per core on CPU nodes)")
    score_batch_videos: int = option(0, flag="--score-batch", check=at_least(0),
                                     help="videos per detector batch (0: 8 on GPUs, 1 on CPUs; "
                                     "above 1 on CPU nodes, the score stage gets a pool of its own)")
    flush_rows: int = option(64, flag="--flush-rows", check=at_least(1),
                             help="rows per Parquet part written while the run goes")
    limit: int | None = option(None, flag="--limit", check=at_least(1),
                               help="score only the first N videos of the manifest",
                               show_default="all")
    device: str = option("auto", flag="--device", choices=("auto", "cpu", "cuda"),
                         help="where MTCNN and the detectors run")
    cpu_runtime: str = option("torch", flag="--cpu-runtime", choices=CPU_RUNTIMES,
                              help="what runs the detectors on CPU nodes: onnxruntime exports "
                              "each model to ONNX once per node (faster for EfficientNets; "
                              "see benchmarks/RESULTS.md)")
    detector_memory_mb: int | None = option(
        None, flag="--detector-memory-limit", check=at_least(256), metavar="MB",
        help="address space each detector actor on a CPU may map beyond what it had before "
             "loading the detectors (RLIMIT_AS; dfray.memlimit): a video whose detectors go "
             "past it gets an error row", show_default="no limit")
    lease_timeout_s: float = option(LEASE_TIMEOUT_S, flag="--lease-timeout", check=positive, metavar="S",
                                    help="a run folder's writer lease with no heartbeat for this "
                                         "long belongs to a writer that is gone and is taken over")
    compact: bool = option(True, flag="--no-compact", kind="no_flag",
                           help="leave the part files as written (by default a completed run "
                                "compacts them into a few large ones; dfray.compaction)")

    def __post_init__(self) -> None:
        check_options(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SPEND_SOURCES = ("auto", "ray", "ec2")


@dataclass(frozen=True)
class BudgetConfig:
    """The spending cap of a run and how spend is measured (see dfray.budget)."""

    budget_usd: float | None = option(None, flag="--budget", check=positive, metavar="USD",
                                      help="spending cap in USD for the whole run, all attempts",
                                      show_default="no cap")
    prices: tuple[str, ...] = option((), flag="--price", kind="append", metavar="TYPE=USD",
                                     help="override a price ($/h); TYPE:spot=USD or "
                                          "TYPE:on_demand=USD for one market")
    head_type: str | None = option(None, flag="--head-type",
                                   help="head instance type",
                                   show_default="from the autoscaling config")
    worker_type: str | None = option(None, flag="--worker-type",
                                     help="worker instance type to project with",
                                     show_default="the config's most expensive worker type")
    spot: bool = option(False, flag="--spot", kind="flag",
                        help="price --worker-type at spot")
    reserve: float = option(DEFAULT_RESERVE, flag="--budget-reserve", check=fraction, metavar="FRACTION",
                            help="share of the budget held back for what the ledger cannot see")
    autoscaling_config: str | None = option(
        None, flag="--autoscaling-config", env=("DFRAY_AUTOSCALING_CONFIG",), metavar="PATH",
        help="the autoscaling config the Ray monitor reads, whose max_workers the budget caps",
        show_default="~/ray_bootstrap_config.yaml if present")
    down_on_exit: bool = option(False, flag="--down-on-exit", kind="flag",
                                help="after the run, terminate the cluster's nodes, head "
                                     "included (EC2, by the cluster-name tag); without it a "
                                     "budget stop scales to zero workers and leaves the head up")
    spend_source: str = option("auto", flag="--spend-source", choices=SPEND_SOURCES,
                               help="where node uptime comes from (auto: EC2 on an AWS cluster, "
                                    "else ray.nodes())")

    def __post_init__(self) -> None:
        check_options(self)


def detector_spec_from_dict(raw: dict[str, Any]) -> DetectorSpec:
    """A DetectorSpec from one YAML entry; every type mistake is one ConfigError line."""
    if not isinstance(raw, dict):
        raise ConfigError(f"each detector is a mapping with 'name' and 'arch', got {raw!r}")
    try:
        return _detector_spec(raw)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"detector {raw.get('name')!r}: wrong value type ({e}); "
                          "mean and std are lists of 3 numbers, input_size an integer, "
                          "weight a number, options a mapping") from e


def _detector_spec(raw: dict[str, Any]) -> DetectorSpec:
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
    options = kw.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"detector {raw['name']!r}: options must be a mapping")
    kw["options"] = dict(options)
    return DetectorSpec(**kw)


def ensemble_from_dict(raw: dict[str, Any]) -> EnsembleConfig:
    if not isinstance(raw, dict) or "detectors" not in raw:
        raise ConfigError("an ensemble config is a mapping with a 'detectors' list")
    dets = raw["detectors"]
    if not isinstance(dets, list):
        raise ConfigError("'detectors' must be a list")
    return EnsembleConfig(tuple(detector_spec_from_dict(d) for d in dets))


def load_ensemble(path: str | None) -> EnsembleConfig:
    """Load an ensemble YAML; None or `builtin:demo` gives the shipped demo ensemble,
    `builtin:NAME` the shipped dfray/configs/NAME.yaml (e.g. `builtin:real`)."""
    import yaml

    if path is None:
        path = BUILTIN_CONFIG
    if path.startswith("builtin:"):
        name = path[len("builtin:"):]
        configs = Path(__file__).parent / "configs"
        if not name or "/" in name or "\\" in name or not (configs / f"{name}.yaml").is_file():
            have = ", ".join(f"builtin:{p.stem}" for p in sorted(configs.glob("*.yaml")))
            raise ConfigError(f"unknown builtin ensemble {path!r}; builtin ensembles: {have}")
        path = str(configs / f"{name}.yaml")
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read ensemble config {path}: {e}") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"ensemble config {path} is not valid YAML: {e}") from e
    return ensemble_from_dict(raw)
