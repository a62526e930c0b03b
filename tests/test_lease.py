import json
import time

import pytest

from dfray import lease
from dfray.config import StorageConfig


def _held_by_other(run, cfg, read, write):
    with lease.acquire(run, cfg, {"host": "h1", "pid": 11, "started": "t0"}) as mine:
        assert read()["token"] == mine["token"]
        with pytest.raises(lease.LeaseHeld, match="host h1 pid 11") as e:
            with lease.acquire(run, cfg, {"host": "h2", "pid": 22, "started": "t1"}):
                pass
        assert isinstance(e.value, ValueError)
        assert read()["token"] == mine["token"]  # the refused writer left it alone
    assert read() is None  # released on exit
    # a stale lease (writer gone) is taken over
    write({"host": "dead", "pid": 1, "started": "t", "token": "x",
           "heartbeat": time.time() - lease.STALE_AFTER_S - 5})
    with lease.acquire(run, cfg, {"host": "h3", "pid": 33, "started": "t2"}) as new:
        assert read()["host"] == "h3" and read()["token"] == new["token"]
    assert read() is None


def test_local_lease(tmp_path):
    run = str(tmp_path / "run")
    path = tmp_path / "run" / lease.LEASE_NAME

    def read():
        return json.loads(path.read_text()) if path.exists() else None

    def write(d):
        path.write_text(json.dumps(d))

    _held_by_other(run, StorageConfig(), read, write)


def test_s3_lease_conditional_put(moto_server, s3):
    s3.create_bucket(Bucket="lease")
    cfg = StorageConfig(endpoint_url=moto_server, region="us-east-1")
    key = f"runs/r1/{lease.LEASE_NAME}"

    def read():
        try:
            return json.loads(s3.get_object(Bucket="lease", Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            return None

    def write(d):
        s3.put_object(Bucket="lease", Key=key, Body=json.dumps(d).encode())

    _held_by_other("s3://lease/runs/r1", cfg, read, write)
