"""SageMaker Processing: the dfray scoring code as ONE Processing job on N instances.

`dfray sagemaker submit s3://bucket/corpus/ --out s3://bucket/runs --role ARN --image-uri URI`
creates one Processing job; each instance runs `jobs/sagemaker_entry.py`, which calls
`dfray.runner.run_scoring` on a local Ray, exactly as `dfray score` does on a laptop.

Design
------
- Sharding: the corpus is a ProcessingInput (S3Prefix, File mode, ShardedByS3Key), so
  SageMaker gives each instance about 1/N of the objects under the prefix, downloaded to
  `/opt/ml/processing/input/videos/<key relative to the prefix>` before the script
  starts. The local path relative to that folder is the video_id, as in a Ray run. File
  mode downloads the whole shard first (billed time, and it must fit on the volume, which
  `submit` sizes from the manifest); more instances mean smaller shards.
- The manifest is written once, by `submit`, to `OUT/<run_id>/manifest.parquet` (the same
  `build_manifest` a Ray run uses: s3:// URIs, S3 ETags, labels from every metadata.json /
  labels.csv under the corpus). It defines the run. Label files are themselves objects and
  land on one instance only, so instances could not find the labels themselves; an empty
  corpus fails before any instance is paid for; the total size sizes the volume. Each
  instance scores the manifest rows present in its shard (objects added after submit are
  skipped with a warning).
- Output goes straight to S3, no ProcessingOutput: each instance runs `run_scoring` into a
  scratch run folder on its volume (same run id; its corpus is a folder of symlinks to its
  shard's videos, its labels a CSV cut from the manifest), and a shipper thread copies each
  finished Parquet part every SHIP_INTERVAL_S to `OUT/<run_id>/faces/` then `videos/`
  through `RunFolder.write_part` (unique part names, one PUT each), rewriting `uri` to the
  s3:// URI and `etag` to the S3 ETag and prefixing `worker` with the SageMaker host
  (`algo-1/…`). Rows finished before a kill by MaxRuntime therefore survive it: on SIGTERM
  the entry point ships what is on disk and exits; at most the last few seconds of rows
  (plus the runner's in-memory buffer) are lost and are rescored on resume. An EndOfJob
  ProcessingOutput would lose every row of a killed job. The run folder is not handed to
  `run_scoring` directly because the runner writes `manifest.parquet` and `_todo.parquet`
  into it: N drivers sharing one folder would overwrite each other's, and rows would carry
  the local file path as `uri`.
- Resume: re-submitting with the same `--run-id` keeps the manifest; every instance seeds
  its scratch folder with the video_ids that already have a row on S3, so the runner scores
  only the rest. One run id, one run folder, one row per video.
- run.json: `submit` writes it (state `submitted`, the job, price and cap); each instance
  merges its own run.json in when it ends (config, detectors and weights sha256, versions,
  its stats; counts over all instances' rows; state `complete` once every manifest video
  has a row, else `running`), and keeps its own copy in `OUT/<run_id>/_sagemaker/<host>.json`.
  `submit --wait` finalizes it from the job's end status (`complete`, `budget_exhausted`
  when MaxRuntime stopped it, else `incomplete`, with the unscored video_ids).
- Budget: `MaxRuntimeInSeconds = floor(budget / (price_per_hour × instance_count) × 3600)`,
  capped at MAX_RUNTIME_S (the ProcessingStoppingCondition maximum, 777600 s = 9 days) and
  at `--max-runtime-s`; a budget that cannot pay MIN_RUNTIME_S (10 minutes) is refused.
  SageMaker `ml.*` prices are higher than the EC2 prices of the same hardware, so the price
  is, first that applies: `--price-per-hour` (preferred: check the SageMaker pricing page
  for your region), the dated table ML_ON_DEMAND below, or the EC2 on-demand price from
  `dfray.budget.prices.PriceBook` × ML_MARKUP. The cap bounds the job's run time only; keep
  headroom for storage and anything billed outside it.
- Container: any image with Python >= 3.10 and dfray's dependencies (torch, ray[data],
  pyarrow, boto3, facenet-pytorch, decord, av, timm, …), e.g. a SageMaker PyTorch image with
  those pip-installed. The dfray source is not taken from the image: `submit` uploads the
  submitter's package to `OUT/<run_id>/_code/` (a prefix, so no unpacking step) and the entry
  point puts it first on sys.path, so the job runs the same code as `dfray score`. The
  ensemble YAML goes to `OUT/<run_id>/_config/`, with detector weights that are local files
  uploaded next to it and rewritten to their s3:// URIs (sha256 pins are kept).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dfray import results, storage
from dfray.config import ConfigError, StorageConfig

log = logging.getLogger(__name__)

PROCESSING_ROOT = "/opt/ml/processing"
CODE_DIR = f"{PROCESSING_ROOT}/code"
CONFIG_DIR = f"{PROCESSING_ROOT}/config"
INPUT_DIR = f"{PROCESSING_ROOT}/input/videos"
SCRATCH_DIR = f"{PROCESSING_ROOT}/scratch"  # on the job's ML storage volume
RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"
ENTRY_SCRIPT = f"{CODE_DIR}/jobs/sagemaker_entry.py"
PYTHON = "python3"

MAX_RUNTIME_S = 777_600  # ProcessingStoppingCondition.MaxRuntimeInSeconds maximum (9 days)
MIN_RUNTIME_S = 600  # a budget that cannot pay for 10 minutes is refused
DEFAULT_RUNTIME_S = 86_400  # without --budget or --max-runtime-s
MAX_CONTAINER_ARG = 256  # AppSpecification.ContainerArguments: each item at most 256 chars
MIN_VOLUME_GB, MAX_VOLUME_GB, VOLUME_HEADROOM_GB = 30, 16_384, 20
SHIP_INTERVAL_S = 15.0
WAIT_POLL_S = 30.0
EXIT_BUDGET = 3  # as dfray.runner.EXIT_BUDGET

# SageMaker on-demand list prices (USD/h) for Processing, as known at ML_PRICES_AS_OF.
# They change: pass --price-per-hour for a figure you have checked.
ML_PRICES_AS_OF = "2025-01-15"
_ML_US = {
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 1.053,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g6.xlarge": 1.1267,
    "ml.m5.xlarge": 0.23,
    "ml.c5.xlarge": 0.204,
}
ML_ON_DEMAND: dict[str, dict[str, float]] = {"us-east-1": _ML_US, "us-west-2": _ML_US}
ML_MARKUP = 1.4  # ml.* / EC2 on-demand for the GPU types above (e.g. 0.736 / 0.526)


class SageMakerError(ValueError):
    """A SageMaker job cannot be submitted or run as asked; the message says why."""


# -- price and stopping condition --------------------------------------------------------------


@dataclass(frozen=True)
class JobPrice:
    usd_per_hour: float  # per instance
    source: str


def resolve_price(
    instance_type: str, region: str | None, explicit: float | None, *, price_book: bool = True
) -> JobPrice | None:
    """USD per hour per instance: explicit > dated ml.* table > EC2 price book × ML_MARKUP
    (None when price_book is False and the table has no figure)."""
    if explicit is not None:
        if explicit <= 0:
            raise SageMakerError(f"--price-per-hour must be > 0, got {explicit}")
        return JobPrice(float(explicit), "--price-per-hour")
    reg = region or "us-east-1"
    table = ML_ON_DEMAND.get(reg, {})
    if instance_type in table:
        return JobPrice(table[instance_type], f"static:{ML_PRICES_AS_OF} ({reg})")
    if not price_book:
        return None
    ec2_type = instance_type.removeprefix("ml.")
    try:
        from dfray.budget.prices import PriceBook
    except ImportError as e:
        raise SageMakerError(
            f"no SageMaker price for {instance_type} in {reg}; pass --price-per-hour"
        ) from e
    try:
        price = PriceBook(reg).on_demand(ec2_type)
    except Exception as e:  # PriceError and anything the price book could not read
        raise SageMakerError(
            f"no SageMaker price for {instance_type} in {reg} ({e}); pass --price-per-hour"
        ) from e
    return JobPrice(
        round(price.usd_per_hour * ML_MARKUP, 4),
        f"EC2 {ec2_type} {price.source} x {ML_MARKUP} (ml.* markup estimate)",
    )


def max_runtime_s(
    budget_usd: float | None,
    usd_per_hour: float | None,
    instance_count: int,
    limit_s: int | None = None,
) -> int:
    """MaxRuntimeInSeconds: what the budget pays for, within SageMaker's and the user's caps."""
    if instance_count < 1:
        raise SageMakerError(f"--instance-count must be >= 1, got {instance_count}")
    if limit_s is not None and not 1 <= limit_s:
        raise SageMakerError(f"--max-runtime-s must be >= 1, got {limit_s}")
    cap = min(MAX_RUNTIME_S, limit_s) if limit_s is not None else MAX_RUNTIME_S
    if budget_usd is None:
        return min(cap, DEFAULT_RUNTIME_S) if limit_s is None else cap
    if budget_usd <= 0:
        raise SageMakerError(f"--budget must be > 0, got {budget_usd}")
    if not usd_per_hour or usd_per_hour <= 0:
        raise SageMakerError("a budget needs a price per hour")
    paid = math.floor(budget_usd / (usd_per_hour * instance_count) * 3600)
    if paid < MIN_RUNTIME_S:
        need = usd_per_hour * instance_count * MIN_RUNTIME_S / 3600
        raise SageMakerError(
            f"budget ${budget_usd:g} pays for only {paid} s of {instance_count} instance(s) at "
            f"${usd_per_hour:g}/h each; at least {MIN_RUNTIME_S // 60} minutes "
            f"(${need:.2f}) are needed: raise --budget or use fewer/cheaper instances"
        )
    return min(paid, cap)


# -- the job request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitSpec:
    """Everything `submit` needs; built from CLI arguments by dfray.commands.sagemaker."""

    corpus: str
    out: str
    run_id: str
    role: str
    image_uri: str
    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = 1
    config: str | None = None  # ensemble YAML; None: builtin:demo
    labels: str | None = None  # s3:// labels.csv; default: label files under the corpus
    budget_usd: float | None = None
    price_per_hour: float | None = None
    max_runtime_s: int | None = None
    volume_size_gb: int | None = None  # default: from the corpus size
    frames: int = 32
    device: str = "auto"
    video_timeout_s: float = 300.0
    max_attempts: int = 3
    score_batch: int = 8
    write_faces: bool = True
    region: str | None = None
    endpoint_url: str | None = None  # S3 and SageMaker endpoint (moto in tests)

    def storage(self) -> StorageConfig:
        return StorageConfig(endpoint_url=self.endpoint_url, region=self.region)


def job_name(run_id: str, suffix: str) -> str:
    """A valid ProcessingJobName (1-63 of [A-Za-z0-9-]); unique per submission via suffix."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", run_id).strip("-") or "run"
    return f"{('dfray-' + base)[: 62 - len(suffix)].rstrip('-')}-{suffix}"


def volume_size_gb(total_bytes: int, instance_count: int) -> int:
    """ML volume per instance: its shard (unevenly sized, so 25% over 1/N) + headroom."""
    spread = 1.25 if instance_count > 1 else 1.0
    shard = total_bytes / instance_count * spread / 1e9
    return int(min(MAX_VOLUME_GB, max(MIN_VOLUME_GB, math.ceil(shard) + VOLUME_HEADROOM_GB)))


def prefix_uri(uri: str) -> str:
    """An S3Prefix URI with a trailing slash, so `videos` does not also match `videos2/…`."""
    return uri.rstrip("/") + "/"


def entry_arguments(spec: SubmitSpec, container_config: str) -> list[str]:
    """ContainerArguments for jobs/sagemaker_entry.py (see entry_parser)."""
    args = [
        "--run-id", spec.run_id,
        "--out", spec.out,
        "--corpus", spec.corpus,
        "--config", container_config,
        "--frames", str(spec.frames),
        "--device", spec.device,
        "--video-timeout", f"{spec.video_timeout_s:g}",
        "--max-attempts", str(spec.max_attempts),
        "--score-batch", str(spec.score_batch),
    ]  # fmt: skip
    if spec.region:
        args += ["--region", spec.region]
    if not spec.write_faces:
        args.append("--no-faces-table")
    for a in args:
        if len(a) > MAX_CONTAINER_ARG:
            raise SageMakerError(
                f"a container argument is longer than {MAX_CONTAINER_ARG} characters "
                f"(SageMaker's limit): {a[:60]}…"
            )
    return args


def processing_job_request(
    spec: SubmitSpec,
    name: str,
    *,
    runtime_s: int,
    volume_gb: int,
    code_uri: str,
    config_uri: str | None,
) -> dict:
    """The create_processing_job arguments (pure: no AWS call)."""
    container_config = f"{CONFIG_DIR}/ensemble.yaml" if config_uri else "builtin:demo"
    inputs = [
        {
            "InputName": "videos",
            "S3Input": {
                "S3Uri": prefix_uri(spec.corpus),
                "LocalPath": INPUT_DIR,
                "S3DataType": "S3Prefix",
                "S3InputMode": "File",
                "S3DataDistributionType": "ShardedByS3Key",
            },
        },
        {
            "InputName": "code",
            "S3Input": {
                "S3Uri": prefix_uri(code_uri),
                "LocalPath": CODE_DIR,
                "S3DataType": "S3Prefix",
                "S3InputMode": "File",
                "S3DataDistributionType": "FullyReplicated",
            },
        },
    ]
    if config_uri:
        inputs.append(
            {
                "InputName": "config",
                "S3Input": {
                    "S3Uri": prefix_uri(config_uri),
                    "LocalPath": CONFIG_DIR,
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                },
            }
        )
    tags = [{"Key": "dfray:run-id", "Value": spec.run_id}]
    if spec.budget_usd is not None:
        tags.append({"Key": "dfray:budget-usd", "Value": f"{spec.budget_usd:g}"})
    return {
        "ProcessingJobName": name,
        "RoleArn": spec.role,
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": spec.instance_count,
                "InstanceType": spec.instance_type,
                "VolumeSizeInGB": volume_gb,
            }
        },
        "AppSpecification": {
            "ImageUri": spec.image_uri,
            "ContainerEntrypoint": [PYTHON, ENTRY_SCRIPT],
            "ContainerArguments": entry_arguments(spec, container_config),
        },
        "ProcessingInputs": inputs,
        "StoppingCondition": {"MaxRuntimeInSeconds": runtime_s},
        "Environment": {"PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"},
        "Tags": tags,
    }


# -- uploads -----------------------------------------------------------------------------------


def _source_files() -> list[tuple[Path, str]]:
    """(local file, key relative to the code prefix): the dfray package + the entry script."""
    import dfray

    pkg = Path(dfray.__file__).resolve().parent
    entry = pkg.parent / "jobs" / "sagemaker_entry.py"
    if not entry.is_file():
        raise SageMakerError(
            f"{entry} not found: submit from a dfray source checkout (jobs/ is not installed)"
        )
    files = [(entry, "jobs/sagemaker_entry.py")]
    for p in sorted(pkg.rglob("*")):
        rel = p.relative_to(pkg.parent)
        if p.is_file() and "__pycache__" not in rel.parts and p.suffix not in (".pyc", ".pyo"):
            files.append((p, rel.as_posix()))
    return files


def _delete_prefix(client, uri: str) -> None:
    bucket, prefix = storage.split_s3(prefix_uri(uri))
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def upload_code(code_uri: str, store: StorageConfig) -> int:
    """Upload the dfray source to code_uri/ (replacing what was there); returns the file count."""
    client = storage.s3_client(store)
    _delete_prefix(client, code_uri)
    bucket, prefix = storage.split_s3(prefix_uri(code_uri))
    files = _source_files()
    for path, rel in files:
        client.upload_file(str(path), bucket, prefix + rel)
    return len(files)


def _local_weights(weights: str | None, config_path: Path) -> Path | None:
    """The local file a detector's `weights` names, or None for remote/builtin weights."""
    if not weights or weights.startswith(("s3://", "http://", "https://", "builtin:")):
        return None
    raw = weights.removeprefix("file://")
    for cand in (Path(raw), config_path.parent / raw):
        if cand.is_file():
            return cand
    raise SageMakerError(f"weights file {weights!r} not found (nor next to {config_path})")


def upload_config(config_path: str, config_uri: str, store: StorageConfig) -> list[str]:
    """Upload the ensemble YAML as config_uri/ensemble.yaml; local weights go to
    config_uri/weights/ and the YAML points at them. Returns the uploaded URIs."""
    import yaml

    from dfray.config import ensemble_from_dict

    path = Path(config_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read ensemble config {config_path}: {e}") from e
    ensemble_from_dict(raw)  # validate before uploading anything
    client = storage.s3_client(store)
    _delete_prefix(client, config_uri)
    bucket, prefix = storage.split_s3(prefix_uri(config_uri))
    uploaded = []
    for det in raw["detectors"]:
        local = _local_weights(det.get("weights"), path)
        if local is None:
            continue
        key = f"{prefix}weights/{det['name']}-{local.name}"
        client.upload_file(str(local), bucket, key)
        det["weights"] = f"s3://{bucket}/{key}"
        uploaded.append(det["weights"])
    body = yaml.safe_dump(raw, sort_keys=False).encode()
    client.put_object(Bucket=bucket, Key=f"{prefix}ensemble.yaml", Body=body)
    uploaded.append(f"s3://{bucket}/{prefix}ensemble.yaml")
    return uploaded


# -- submit ------------------------------------------------------------------------------------


def sagemaker_client(store: StorageConfig):
    from dfray.storage import aws_client

    return aws_client("sagemaker", store)


def _manifest_stats(manifest_uri: str, store: StorageConfig) -> tuple[int, int]:
    """(number of videos, total bytes) of a manifest."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(manifest_uri, store)
    with fs.open_input_file(path) as f:
        t = pq.read_table(f, columns=["size_bytes"])
    total = pc.sum(t.column("size_bytes")).as_py() or 0
    return t.num_rows, int(total)


def submit(spec: SubmitSpec, *, wait: bool = False, say=print) -> int:
    """Create the Processing job (and with wait=True follow it to its end); exit status."""
    import uuid

    from dfray.config import load_ensemble
    from dfray.corpus import build_manifest

    for what, uri in (("corpus", spec.corpus), ("--out", spec.out)):
        if not storage.is_s3(uri):
            raise SageMakerError(f"{what} must be an s3:// URI for SageMaker, got {uri!r}")
    if spec.labels and not storage.is_s3(spec.labels):
        raise SageMakerError(f"--labels must be an s3:// URI for SageMaker, got {spec.labels!r}")
    if spec.instance_count < 1:
        raise SageMakerError(f"--instance-count must be >= 1, got {spec.instance_count}")
    if not spec.instance_type.startswith("ml."):
        raise SageMakerError(f"--instance-type must be an ml.* type, got {spec.instance_type!r}")
    load_ensemble(spec.config)  # a bad config fails here, not on a paid instance

    # Without a budget a price is only for the report: no price-book lookup then.
    needed = spec.budget_usd is not None or spec.price_per_hour is not None
    price = resolve_price(spec.instance_type, spec.region, spec.price_per_hour, price_book=needed)
    runtime = max_runtime_s(
        spec.budget_usd,
        price.usd_per_hour if price else None,
        spec.instance_count,
        spec.max_runtime_s,
    )
    store = spec.storage()
    folder = results.RunFolder(spec.out, spec.run_id, store)
    previous = folder.read_run_json()
    if previous is None or not storage.exists(folder.manifest, store):
        say(f"listing {spec.corpus} into {folder.manifest} …")
        build_manifest(spec.corpus, folder.manifest, store, spec.labels)
    n_videos, total_bytes = _manifest_stats(folder.manifest, store)
    volume = spec.volume_size_gb or volume_size_gb(total_bytes, spec.instance_count)

    code_uri = storage.join(folder.root, "_code")
    n_files = upload_code(code_uri, store)
    config_uri = None
    if spec.config and spec.config != "builtin:demo":
        config_uri = storage.join(folder.root, "_config")
        upload_config(spec.config, config_uri, store)

    name = job_name(spec.run_id, uuid.uuid4().hex[:6])
    request = processing_job_request(
        spec, name, runtime_s=runtime, volume_gb=volume, code_uri=code_uri, config_uri=config_uri
    )
    client = sagemaker_client(store)
    arn = client.create_processing_job(**request)["ProcessingJobArn"]

    job = {
        "job_name": name,
        "job_arn": arn,
        "instance_type": spec.instance_type,
        "instance_count": spec.instance_count,
        "volume_size_gb": volume,
        "max_runtime_s": runtime,
        "budget_usd": spec.budget_usd,
        "usd_per_hour": price.usd_per_hour if price else None,
        "price_source": price.source if price else None,
        "submitted_at": results.now_utc().isoformat(),
    }
    doc = dict(previous or {})
    doc.setdefault("schema_version", 1)
    doc.update(run_id=spec.run_id, corpus=spec.corpus, run_dir=folder.root, state="submitted")
    sm = dict(doc.get("sagemaker") or {})
    sm["jobs"] = [*sm.get("jobs", []), job]
    doc["sagemaker"] = sm
    folder.write_run_json(doc)

    hours = runtime / 3600
    say(f"submitted SageMaker Processing job {name}")
    say(
        f"  {spec.instance_count} x {spec.instance_type}, {volume} GB volume each; "
        f"{n_videos} videos ({total_bytes / 1e9:.2f} GB), code: {n_files} files in {code_uri}/"
    )
    if price:
        spend = price.usd_per_hour * spec.instance_count * hours
        say(
            f"  max runtime {runtime} s ({hours:.2f} h) at ${price.usd_per_hour:g}/h per "
            f"instance [{price.source}]: at most ${spend:,.2f} of instance time"
        )
    else:
        say(f"  max runtime {runtime} s ({hours:.2f} h); no --budget and no known price")
    say(f"  results: {folder.root}/  (resume: same --run-id)")
    region = store.region or "us-east-1"
    say(
        f"  console: https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
        f"#/processing-jobs/{name}"
    )
    if not wait:
        return 0
    final = wait_for_job(client, name, say=say)
    return finalize_run(folder, final, budget=spec.budget_usd is not None, say=say)


def wait_for_job(client, name: str, *, poll_s: float | None = None, say=print) -> dict:
    """Poll describe_processing_job until the job ends; returns the last description."""
    last = None
    while True:
        desc = client.describe_processing_job(ProcessingJobName=name)
        status = desc["ProcessingJobStatus"]
        if status != last:
            say(f"[{results.now_utc():%H:%M:%S}] {name}: {status}")
            last = status
        if status in ("Completed", "Failed", "Stopped"):
            return desc
        time.sleep(WAIT_POLL_S if poll_s is None else poll_s)


def _rows_and_ids(folder: results.RunFolder) -> tuple[dict, int, list[str]]:
    """(counts by status, rows, manifest video_ids without a row) over the whole run folder."""
    from collections import Counter

    import pyarrow.parquet as pq

    table = folder.read_table("videos", columns=["video_id", "status"])
    seen: dict[str, str] = {}
    if table is not None:
        for vid, st in zip(
            table.column("video_id").to_pylist(), table.column("status").to_pylist(), strict=True
        ):
            seen.setdefault(vid, st)
    fs, path = storage.filesystem(folder.manifest, folder.cfg)
    with fs.open_input_file(path) as f:
        ids = pq.read_table(f, columns=["video_id"]).column("video_id").to_pylist()
    return dict(Counter(seen.values())), len(seen), [v for v in ids if v not in seen]


def finalize_run(folder: results.RunFolder, desc: dict, *, budget: bool, say=print) -> int:
    """Write the run's final state into run.json from the job's end; the exit status."""
    counts, n_rows, unscored = _rows_and_ids(folder)
    status = desc.get("ProcessingJobStatus")
    reason = desc.get("FailureReason") or desc.get("ExitMessage") or ""
    by_runtime = status == "Stopped" or "runtime" in reason.lower()
    if not unscored:
        state, code = "complete", 0
    elif budget and by_runtime:
        state, code = "budget_exhausted", EXIT_BUDGET
    else:
        state, code = "incomplete", 1
    doc = dict(folder.read_run_json() or {})
    doc.update(state=state, counts=counts, n_rows=n_rows, ended_at=results.now_utc().isoformat())
    if unscored:
        doc["unscored"] = unscored
    else:
        doc.pop("unscored", None)
    sm = dict(doc.get("sagemaker") or {})
    sm["job_status"] = {"name": desc.get("ProcessingJobName"), "status": status, "reason": reason}
    doc["sagemaker"] = sm
    folder.write_run_json(doc)
    say(
        f"run {folder.run_id}: {state}; {n_rows} rows, {len(unscored)} videos unscored "
        f"(job {status}{': ' + reason if reason else ''})"
    )
    if state == "budget_exhausted":
        say("budget exhausted: resume with the same --run-id and a larger --budget")
    return code


# -- container side ----------------------------------------------------------------------------


def entry_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="jobs/sagemaker_entry.py",
        description="dfray scoring inside a SageMaker Processing container (one instance).",
    )
    p.add_argument("--run-id", required=True)
    p.add_argument("--out", required=True, help="run parent (s3://…); rows go to OUT/RUN_ID/")
    p.add_argument("--corpus", required=True, help="the corpus root the input was copied from")
    p.add_argument("--config", default="builtin:demo", help="ensemble YAML in the container")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--video-timeout", type=float, default=300.0)
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--score-batch", type=int, default=8)
    p.add_argument("--extract-actors", type=int, default=0, help="0: fit the instance")
    p.add_argument("--no-faces-table", action="store_true")
    p.add_argument("--region", default=None)
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (tests)")
    p.add_argument("--input-dir", default=INPUT_DIR, help="this instance's shard of the corpus")
    p.add_argument("--resource-config", default=RESOURCE_CONFIG)
    p.add_argument("--scratch", default=SCRATCH_DIR, help="local work folder")
    p.add_argument("--ship-interval", type=float, default=SHIP_INTERVAL_S)
    p.add_argument("--quiet", action="store_true")
    return p


def read_resource_config(path: str) -> tuple[str, list[str]]:
    """(current_host, hosts) from SageMaker's resourceconfig.json; outside SageMaker the
    machine's hostname alone."""
    try:
        with open(path) as f:
            rc = json.load(f)
    except FileNotFoundError:
        import socket

        host = socket.gethostname()
        return host, [host]
    except (OSError, ValueError) as e:
        raise SageMakerError(f"cannot read {path}: {e}") from e
    host = str(rc.get("current_host") or "")
    hosts = [str(h) for h in rc.get("hosts") or [host]]
    if not host or host not in hosts:
        raise SageMakerError(f"{path}: current_host {host!r} is not among hosts {hosts}")
    return host, hosts


def _read_manifest(uri: str, store: StorageConfig):
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(uri, store)
    with fs.open_input_file(path) as f:
        return pq.read_table(f)


def shard_rows(
    args, host: str, hosts: list[str], folder: results.RunFolder, store: StorageConfig, say
) -> list[dict]:
    """Manifest rows of the videos in this instance's input folder."""
    from dfray.corpus import build_manifest, is_video, iter_entries

    local = {e.key for e in iter_entries(args.input_dir, store) if is_video(e.key)}
    if storage.exists(folder.manifest, store):
        import pyarrow as pa
        import pyarrow.compute as pc

        manifest = _read_manifest(folder.manifest, store)
        n_total = manifest.num_rows
        mine = pc.is_in(manifest.column("video_id"), value_set=pa.array(sorted(local), pa.string()))
        rows = manifest.filter(mine).to_pylist()  # only this shard becomes Python objects
        extra = len(local) - len(rows)
        if extra:
            say(
                f"[{host}] {extra} videos in {args.input_dir} are not in the run's manifest "
                "(added after submit?); skipped"
            )
        if len(hosts) > 1 and rows and len(rows) == n_total:
            say(
                f"[{host}] warning: this instance holds all {n_total} videos of a "
                f"{len(hosts)}-instance job; is the input ShardedByS3Key?"
            )
        return rows
    if len(hosts) > 1:
        raise SageMakerError(
            f"{folder.manifest} not found: a multi-instance job needs the manifest that "
            "`dfray sagemaker submit` writes"
        )
    if not local:
        return []
    # Standalone (one instance, no submit): list the input folder as the whole corpus.
    tmp = os.path.join(args.scratch, "standalone-manifest.parquet")
    build_manifest(args.input_dir, tmp, store)
    t = _read_manifest(tmp, store)
    root = args.corpus.rstrip("/")
    rows = t.to_pylist()
    for r in rows:
        r["uri"] = f"{root}/{r['video_id']}"
    import pyarrow as pa

    storage.write_bytes(
        folder.manifest, _parquet_bytes(pa.Table.from_pylist(rows, t.schema)), store
    )
    return rows


def _parquet_bytes(table) -> bytes:
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


SEED_PART = "part-00000000T000000000000-seed.parquet"  # sorts first; never shipped


class Shipper:
    """Copies finished parts of the local scratch run folder to the S3 run folder."""

    def __init__(
        self, local: results.RunFolder, remote: results.RunFolder, rows: dict[str, dict], host: str
    ):
        self.local, self.remote, self.rows, self.host = local, remote, rows, host
        self.shipped: set[str] = set()
        self.n_rows = 0
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> int:
        """Ship every part not shipped yet, faces before videos; returns rows shipped."""
        import pyarrow.parquet as pq

        with self.lock:
            # videos listed first: the runner writes a part's faces before its videos, so
            # every videos part seen here has its faces part in the second listing
            videos = [p for p in self.local.parts("videos") if p not in self.shipped]
            faces = [p for p in self.local.parts("faces") if p not in self.shipped]
            n = 0
            for p in faces:
                if not p.endswith(SEED_PART):
                    self.remote.write_part("faces", pq.read_table(p))
                self.shipped.add(p)
            for p in videos:
                if not p.endswith(SEED_PART):
                    t = self._rewrite(pq.read_table(p))
                    self.remote.write_part("videos", t)
                    n += t.num_rows
                self.shipped.add(p)
            self.n_rows += n
            return n

    def _rewrite(self, t):
        import pyarrow as pa

        ids = t.column("video_id").to_pylist()
        uris = [self.rows[v]["uri"] if v in self.rows else None for v in ids]
        etags = [self.rows[v]["etag"] if v in self.rows else None for v in ids]
        workers = [f"{self.host}/{w}" for w in t.column("worker").to_pylist()]
        for name, values in (("uri", uris), ("etag", etags), ("worker", workers)):
            i = t.schema.get_field_index(name)
            t = t.set_column(i, t.schema.field(i), pa.array(values, pa.string()))
        return t

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception as e:  # a failed upload is retried on the next sweep
                log.warning("shipping parts to %s failed (retrying): %s", self.remote.root, e)

    def start(self, interval: float) -> None:
        self._thread = threading.Thread(
            target=self._loop, args=(interval,), daemon=True, name="dfray-shipper"
        )
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.sweep()


def _seed_done(local: results.RunFolder, remote: results.RunFolder, ids: set[str]) -> int:
    """Mark the shard's videos that already have a row on S3 as done in the scratch folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = remote.read_table("videos", columns=["video_id", "status"])
    if t is None:
        return 0
    t = t.filter(pa.array([v in ids for v in t.column("video_id").to_pylist()], pa.bool_()))
    if t.num_rows == 0:
        return 0
    path = os.path.join(local.table_dir("videos"), SEED_PART)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(t, path)
    return len(set(t.column("video_id").to_pylist()))


def _write_labels(rows: list[dict], path: str) -> bool:
    labelled = [r for r in rows if r.get("label") is not None]
    if not labelled:
        return False
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "label"])
        for r in labelled:
            w.writerow([r["video_id"], int(r["label"])])
    return True


def _link_shard(rows: list[dict], input_dir: str, shard_dir: str) -> None:
    base = os.path.abspath(input_dir)
    for r in rows:
        dst = os.path.join(shard_dir, *r["video_id"].split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.symlink(os.path.join(base, *r["video_id"].split("/")), dst)


def _merge_run_json(
    remote: results.RunFolder,
    local_doc: dict,
    args,
    host: str,
    hosts: list[str],
    result,
    shipped: int,
) -> dict:
    """Fold this instance's run.json into the run's (last writer wins; counts are global)."""
    counts, n_rows, unscored = _rows_and_ids(remote)
    doc = dict(remote.read_run_json() or {})
    mine = dict(local_doc)
    cfg = dict(mine.get("config") or {})
    cfg.update(corpus=args.corpus, out=args.out, labels=None)
    mine.update(config=cfg, corpus=args.corpus, run_dir=remote.root)
    for key in ("started_at", "launches"):
        if key in doc:
            mine[key] = doc[key]
    mine.pop("unscored", None)
    sm = dict(doc.get("sagemaker") or {})
    hosts_doc = dict(sm.get("hosts") or {})
    hosts_doc[host] = {
        "state": result.state,
        "videos": result.n_videos,
        "scored": result.scored_now,
        "shipped_rows": shipped,
        "wall_s": round(result.wall_s, 3),
        "ended_at": results.now_utc().isoformat(),
    }
    sm.update(hosts=hosts_doc, instance_count=len(hosts))
    mine.update(
        sagemaker=sm, counts=counts, n_rows=n_rows, state="complete" if not unscored else "running"
    )
    remote.write_run_json(mine)
    return mine


def run_entry(args) -> int:
    """One instance of the Processing job: score this instance's shard into the run folder."""
    import shutil
    import signal
    import tempfile

    from dfray.config import DecodeConfig, RunConfig, load_ensemble
    from dfray.runner import run_scoring

    quiet = getattr(args, "quiet", False)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    host, hosts = read_resource_config(args.resource_config)
    store = StorageConfig(endpoint_url=args.endpoint_url, region=args.region)
    remote = results.RunFolder(args.out, args.run_id, store)
    os.makedirs(args.scratch, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f"dfray-{host}-", dir=args.scratch)
    try:
        rows = shard_rows(args, host, hosts, remote, store, say)
        if not rows:
            say(f"[{host}] no videos of run {args.run_id} in {args.input_dir}; nothing to do")
            return 0
        shard_dir = os.path.join(work, "shard")
        _link_shard(rows, args.input_dir, shard_dir)
        labels = os.path.join(work, "labels.csv")
        has_labels = _write_labels(rows, labels)
        local = results.RunFolder(os.path.join(work, "out"), args.run_id, StorageConfig())
        seeded = _seed_done(local, remote, {r["video_id"] for r in rows})
        say(
            f"[{host}] {len(rows)} videos in this shard ({len(hosts)} instances), "
            f"{seeded} already have a row in {remote.root}"
        )
        cfg = RunConfig(
            corpus=shard_dir,
            out=os.path.join(work, "out"),
            run_id=args.run_id,
            ensemble=load_ensemble(args.config),
            decode=DecodeConfig(n_frames=args.frames),
            storage=store,
            labels=labels if has_labels else None,
            address=None,  # a local Ray on this instance
            write_faces=not args.no_faces_table,
            video_timeout_s=args.video_timeout,
            max_attempts=args.max_attempts,
            extract_actors=args.extract_actors,
            score_batch_videos=args.score_batch,
            device=args.device,
        )
        shipper = Shipper(local, remote, {r["video_id"]: r for r in rows}, host)

        def on_term(signum, frame):  # MaxRuntime or StopProcessingJob: keep what is done
            say(f"[{host}] signal {signum}: shipping finished rows and exiting")
            try:
                shipper.sweep()
            finally:
                os._exit(128 + signum)

        previous = signal.signal(signal.SIGTERM, on_term)
        shipper.start(args.ship_interval)
        try:
            result = run_scoring(cfg, progress=not quiet)
        finally:
            shipped = shipper.stop()
            signal.signal(signal.SIGTERM, previous)
        local_doc = local.read_run_json() or {}
        storage.write_bytes(
            storage.join(remote.root, "_sagemaker", f"{host}.json"),
            json.dumps(local_doc, indent=2, sort_keys=True, default=str).encode(),
            store,
        )
        doc = _merge_run_json(remote, local_doc, args, host, hosts, result, shipper.n_rows)
        say(
            f"[{host}] {result.state}: {result.scored_now} scored here, {shipper.n_rows} rows "
            f"shipped ({shipped} in the last sweep); run {args.run_id}: {doc['n_rows']} rows, "
            f"state {doc['state']}"
        )
        return result.exit_code
    finally:
        shutil.rmtree(work, ignore_errors=True)
