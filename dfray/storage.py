"""One storage code path for S3 and local folders, through pyarrow.fs.

The S3 filesystem is configured once from a StorageConfig: an explicit endpoint for
S3-compatible stores (pyarrow ignores AWS_ENDPOINT_URL), the region, and the AWS SDK's
standard retry strategy for throttling and transient errors. Credentials come from the
usual AWS chain (environment, shared config, instance profile); they are never logged.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
from typing import TYPE_CHECKING

from dfray.config import StorageConfig
from dfray.redact import RedactedMessage

if TYPE_CHECKING:
    import pyarrow.fs as pafs


class StorageError(RedactedMessage, OSError):
    """A read or write to storage failed; the message names the URI, never credentials."""


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(base: str, *parts: str) -> str:
    """Join URI or path parts with '/' (posix semantics for both S3 and local)."""
    out = base.rstrip("/") if base not in ("/", "s3://") else base
    for p in parts:
        out = posixpath.join(out, p.strip("/")) if out else p
    return out


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> (`bucket`, `some/key`)."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"s3 URI without a bucket: {uri!r}")
    return bucket, key


@functools.lru_cache(maxsize=8)
def _s3fs(cfg: StorageConfig) -> pafs.S3FileSystem:
    import pyarrow.fs as pafs

    kw: dict = {
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=cfg.max_attempts),
        "allow_delayed_open": True,  # small objects (parts, run.json) go up as one PUT
        "connect_timeout": cfg.connect_timeout_s,
    }
    if cfg.region:
        kw["region"] = cfg.region
    if cfg.endpoint_url:
        scheme, _, host = cfg.endpoint_url.partition("://")
        kw["endpoint_override"] = host.rstrip("/")
        kw["scheme"] = scheme
        kw.setdefault("region", "us-east-1")
        kw["allow_bucket_creation"] = True
    return pafs.S3FileSystem(**kw)


def filesystem(uri: str, cfg: StorageConfig) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path for a URI (s3:// or local path)."""
    import pyarrow.fs as pafs

    if is_s3(uri):
        bucket, key = split_s3(uri)
        return _s3fs(cfg), posixpath.join(bucket, key).rstrip("/")
    import os

    return pafs.LocalFileSystem(), os.path.abspath(uri)


def read_bytes(uri: str, cfg: StorageConfig) -> bytes:
    fs, path = filesystem(uri, cfg)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot read {uri}: {e}") from e


def write_bytes(uri: str, data: bytes, cfg: StorageConfig) -> None:
    """Write a whole object atomically: one PUT on S3; locally through atomic_path."""
    fs, path = filesystem(uri, cfg)
    if is_s3(uri):
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None):
    """The one atomic local write: yields a temporary path in `path`'s folder (created if
    missing) for the caller to write; on a clean exit the file is fsync'd, given `mode`
    (default: that of the file it replaces, else 0o644) and renamed over `path`, so a
    reader sees the old file or the new one, never part of one; on an error it is removed."""
    import tempfile

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def exists(uri: str, cfg: StorageConfig) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, cfg)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def makedirs(uri: str, cfg: StorageConfig) -> None:
    if is_s3(uri):
        return  # S3 has no folders
    fs, path = filesystem(uri, cfg)
    fs.create_dir(path, recursive=True)


def s3_client(cfg: StorageConfig):
    """A boto3 S3 client with the same endpoint, region and retry settings."""
    return aws_client("s3", cfg)


def aws_client(service: str, cfg: StorageConfig):
    """A boto3 client for `service` with the config's endpoint, region and retries."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=cfg.endpoint_url,
        region_name=cfg.region or ("us-east-1" if cfg.endpoint_url else None),
        config=Config(
            retries={"mode": "standard", "max_attempts": cfg.max_attempts},
            connect_timeout=cfg.connect_timeout_s,
        ),
    )


def check_reachable(cfg: StorageConfig) -> None:
    """Fail in seconds, with one line, when a configured S3 endpoint cannot be reached:
    one TCP connect bounded by connect_timeout_s, before any SDK call (whose retries over
    connection errors would otherwise take minutes). AWS's own endpoints are not probed."""
    if not cfg.endpoint_url:
        return
    import socket
    from urllib.parse import urlsplit

    from dfray.redact import redact_uri

    parts = urlsplit(cfg.endpoint_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=cfg.connect_timeout_s):
            pass
    except OSError as e:
        raise StorageError(
            f"cannot reach S3 endpoint {redact_uri(cfg.endpoint_url)} "
            f"(within {cfg.connect_timeout_s:g}s): {e}") from e
