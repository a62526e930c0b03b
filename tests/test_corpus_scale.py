"""A 1,000,000-key S3 prefix listed into the manifest within a bounded driver memory.

The real boto3 client and its real ListObjectsV2 paginator are used; only the HTTP
exchange is replaced, lazily, by a botocore `before-call` handler that generates each
page of 1,000 keys from the continuation token (the way botocore's Stubber answers, but
without holding a million responses in memory first).
"""

import tracemalloc

import boto3
import pyarrow.parquet as pq
import pytest
from botocore.awsrequest import AWSResponse

from dfray.config import StorageConfig
from dfray.corpus import build_manifest

N_KEYS = 1_000_000
PAGE = 1000
DRIVER_PY_HEAP_LIMIT = 64 * 2**20  # 64 MiB of Python heap at peak for 1M keys


def lazy_listing(client, n_keys: int, prefix: str):
    calls = {"n": 0}

    def handler(model, params, **kwargs):
        if model.name != "ListObjectsV2":
            return None
        query = params["query_string"]  # the serialized request, as the server would see it
        start = int(query.get("continuation-token") or 0)
        end = min(n_keys, start + int(query.get("max-keys", PAGE)))
        calls["n"] += 1
        page = {
            "Contents": [
                {"Key": f"{prefix}part_{i // 10000:03d}/{i:07d}.mp4", "Size": 1000 + i % 7,
                 "ETag": f'"{i:032x}"'}
                for i in range(start, end)
            ],
            "IsTruncated": end < n_keys,
            "KeyCount": end - start,
        }
        if end < n_keys:
            page["NextContinuationToken"] = str(end)
        return AWSResponse(None, 200, {}, None), page

    client.meta.events.register("before-call.s3.ListObjectsV2", handler)
    return calls


@pytest.mark.timeout(300)
def test_million_key_listing_streams_to_manifest(tmp_path):
    client = boto3.client("s3", region_name="us-east-1")
    calls = lazy_listing(client, N_KEYS, "dfdc/")
    out = tmp_path / "manifest.parquet"
    tracemalloc.start()
    summary = build_manifest("s3://bucket/dfdc", str(out), StorageConfig(), client=client)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert summary.n_videos == N_KEYS
    assert calls["n"] == N_KEYS // PAGE  # paginated, every page once
    f = pq.ParquetFile(out)
    assert f.metadata.num_rows == N_KEYS and f.num_row_groups > 1  # written in row groups
    last = f.read_row_group(f.num_row_groups - 1).column("video_id")[-1].as_py()
    assert last == f"part_099/{N_KEYS - 1:07d}.mp4"
    print(f"peak Python heap while listing {N_KEYS} keys: {peak / 2**20:.1f} MiB")
    assert peak < DRIVER_PY_HEAP_LIMIT, f"peak {peak / 2**20:.1f} MiB"
