"""The in-container shipper: on SIGTERM (what SageMaker sends at MaxRuntime) the entry point
ships the rows finished on disk to the S3 run folder (moto over HTTP) before it exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from dfray.config import StorageConfig
from dfray.results import RunFolder

REPO = Path(__file__).resolve().parents[2]

# One "instance": a shipper whose timer never fires (1 hour), the SIGTERM handler the entry
# point installs, and a runner stand-in that writes one finished part, then keeps working.
CHILD = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from dfray.cloud.shipper import Shipper, ship_on_sigterm
    from dfray.config import StorageConfig
    from dfray.results import RunFolder

    scratch, endpoint = sys.argv[1], sys.argv[2]
    local = RunFolder(scratch, "r", StorageConfig())
    remote = RunFolder("s3://ship-bkt/runs", "r", StorageConfig(endpoint_url=endpoint))
    rows = {"a.mp4": {"uri": "s3://corpus-bkt/v/a.mp4", "etag": "etag-a"}}
    shipper = Shipper(local, remote, rows, "algo-2")
    ship_on_sigterm(shipper, lambda m: print(m, file=sys.stderr, flush=True))
    shipper.start(3600.0)
    local.write_part("faces", pa.table({"video_id": ["a.mp4"], "face": [0]}))
    local.write_part("videos", pa.table({
        "video_id": ["a.mp4"], "status": ["ok"], "uri": ["/opt/ml/processing/x/a.mp4"],
        "etag": ["local"], "worker": ["w1"]}))
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_sigterm_ships_what_was_written(moto_server, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3.create_bucket(Bucket="ship-bkt")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), moto_server],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "ready"
        remote = RunFolder("s3://ship-bkt/runs", "r", StorageConfig(endpoint_url=moto_server))
        assert remote.parts("videos") == []  # nothing shipped before the signal
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 128 + signal.SIGTERM, err
    assert "signal 15: shipping finished rows" in err
    videos = remote.read_table("videos").to_pylist()
    assert videos == [
        {"video_id": "a.mp4", "status": "ok", "uri": "s3://corpus-bkt/v/a.mp4",
         "etag": "etag-a", "worker": "algo-2/w1"}
    ]  # fmt: skip
    assert remote.read_table("faces").column("video_id").to_pylist() == ["a.mp4"]
