"""Uploads for a SageMaker job (client side): the dfray source to OUT/RUN_ID/_code/ and the
ensemble YAML (with local weights files) to OUT/RUN_ID/_config/."""

from __future__ import annotations

from pathlib import Path

from dfray import storage
from dfray.cloud.job import prefix_uri
from dfray.cloud.processing import SageMakerError
from dfray.config import ConfigError, StorageConfig


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

