"""The SageMaker Processing job request (client side, pure: no AWS call): its name, volume,
inputs (the corpus ShardedByS3Key, the code and config FullyReplicated) and the entry
point's arguments, generated from the one option schema (dfray.options.to_argv of a
RunConfig)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from dfray.cloud.processing import (
    CODE_DIR,
    CONFIG_DIR,
    ENTRY_SCRIPT,
    INPUT_DIR,
    PYTHON,
    SageMakerError,
)
from dfray.config import RunConfig, StorageConfig

MAX_CONTAINER_ARG = 256  # AppSpecification.ContainerArguments: each item at most 256 chars
MIN_VOLUME_GB, MAX_VOLUME_GB, VOLUME_HEADROOM_GB = 30, 16_384, 20


# RunConfig fields the entry point does not take from the schema: the corpus is its own
# --corpus flag (the S3 root the shard was copied from), the ensemble is a YAML path inside the
# container, labels come from the manifest, Ray is local, the endpoint and profile are the
# submitter's (the container uses its role), and --limit applies at submit (the manifest).
ENTRY_SKIP = ("corpus", "ensemble", "labels", "address", "limit", "endpoint_url", "profile",
              "compact")


@dataclass(frozen=True)
class SubmitSpec:
    """Everything `submit` needs; built from CLI arguments by dfray.commands.sagemaker.
    `run` holds the scoring options (the one schema, dfray.config.RunConfig): corpus, out,
    run id, labels, storage and every scoring default travel to the container from it."""

    run: RunConfig
    role: str
    image_uri: str
    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = 1
    config: str | None = None  # ensemble YAML; None: builtin:demo
    budget_usd: float | None = None
    price_per_hour: float | None = None
    max_runtime_s: int | None = None
    volume_size_gb: int | None = None  # default: from the corpus size

    corpus = property(lambda self: self.run.corpus)
    out = property(lambda self: self.run.out)
    run_id = property(lambda self: self.run.run_id)
    labels = property(lambda self: self.run.labels)
    region = property(lambda self: self.run.storage.region)
    endpoint_url = property(lambda self: self.run.storage.endpoint_url)

    def storage(self) -> StorageConfig:
        return self.run.storage


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
    """ContainerArguments for jobs/sagemaker_entry.py, generated from the option schema
    (dfray.options.to_argv of the run's RunConfig; dfray.cloud.container.entry_parser is
    generated from the same schema)."""
    from dfray.options import to_argv

    args = ["--corpus", spec.corpus, "--config", container_config]
    args += to_argv(spec.run, skip=ENTRY_SKIP)
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
            "AppManaged": False,
            "S3Input": {
                "S3Uri": prefix_uri(spec.corpus),
                "LocalPath": INPUT_DIR,
                "S3DataType": "S3Prefix",
                "S3InputMode": "File",
                "S3CompressionType": "None",
                "S3DataDistributionType": "ShardedByS3Key",
            },
        },
        {
            "InputName": "code",
            "AppManaged": False,
            "S3Input": {
                "S3Uri": prefix_uri(code_uri),
                "LocalPath": CODE_DIR,
                "S3DataType": "S3Prefix",
                "S3InputMode": "File",
                "S3CompressionType": "None",
                "S3DataDistributionType": "FullyReplicated",
            },
        },
    ]
    if config_uri:
        inputs.append(
            {
                "InputName": "config",
                "AppManaged": False,
                "S3Input": {
                    "S3Uri": prefix_uri(config_uri),
                    "LocalPath": CONFIG_DIR,
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                "S3CompressionType": "None",
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

