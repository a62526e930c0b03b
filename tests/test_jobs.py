"""`ray job submit` of jobs/score.py against a `ray start --head` cluster."""

import contextlib
import io
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import free_port, upload_dir
from proctree import kill_all, tree_of

from dfray.results import read_videos

REPO = Path(__file__).resolve().parents[1]
# Ray 2.60 turns token auth on for `ray start`; the test head is private to this machine,
# so it runs without it and the `ray job` CLI needs no token lookup.
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    port, dash = free_port(), free_port()
    proc = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            "--disable-usage-stats",
            # its own agent port: another Ray in this process may hold the default 52365
            f"--dashboard-agent-listen-port={free_port()}",
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            break
        except urllib.error.HTTPError:
            break  # the dashboard answers (401 when Ray's token auth is on): it is up
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"ray head did not start: {proc.communicate()[0][-2000:]}")
            time.sleep(1)
    yield url
    tree = tree_of(proc.pid)  # before they lose their parent
    os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops its Ray on SIGTERM
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=60)
    kill_all(tree)  # the head, if it hung, and whatever outlived the graceful stop


def ray_job(address, *args, timeout=600):
    verb, *rest = args  # --address must precede the "--" that starts the entrypoint
    return subprocess.run(
        ["ray", "job", verb, "--address", address, *rest],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def submit(address, submission_id, *score_args):
    """Submit and wait. The dashboard answers before its job agent has registered; until it
    has, submissions fail with 'No available agent' and are retried (up to 2 minutes)."""
    deadline = time.time() + 120
    for attempt in range(1000):
        job_id = f"{submission_id}-{attempt}"  # a refused attempt may have kept its id
        res = ray_job(
            address,
            "submit",
            "--submission-id",
            job_id,
            "--working-dir",
            ".",
            "--",
            "python",
            "jobs/score.py",
            *score_args,
            "--quiet",
        )
        if "No available agent" not in res.stdout + res.stderr or time.time() > deadline:
            break
        time.sleep(3)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res, job_id


def test_job_submit_local_corpus(ray_head, tiny_corpus, tmp_path):
    out = tmp_path / "out"
    res, job_id = submit(
        ray_head, "dfray-local", str(tiny_corpus), "--out", str(out), "--run-id", "job1"
    )
    assert "run job1: complete" in res.stdout
    t = read_videos(str(out / "job1"))
    meta = json.loads((tiny_corpus / "metadata.json").read_text())
    assert sorted(t.column("video_id").to_pylist()) == sorted(meta)
    assert set(t.column("status").to_pylist()) == {"ok"}
    status = ray_job(ray_head, "status", job_id)
    assert "succeeded" in (status.stdout + status.stderr).lower()


def test_job_submit_s3_corpus_and_outputs_then_logs(ray_head, tiny_corpus, s3, moto_server):
    s3.create_bucket(Bucket="job-corpus")
    s3.create_bucket(Bucket="job-results")
    upload_dir(s3, tiny_corpus, "job-corpus", "videos")
    _, job_id = submit(
        ray_head,
        "dfray-s3",
        "s3://job-corpus/videos",
        "--out",
        "s3://job-results/runs",
        "--run-id",
        "s3job",
        "--endpoint-url",
        moto_server,
    )
    logs = ray_job(ray_head, "logs", job_id)
    assert logs.returncode == 0 and "run s3job: complete" in logs.stdout
    assert "testing" not in logs.stdout  # no credentials in the logs
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket="job-results", Prefix="runs/s3job/")["Contents"]
    ]
    rows = []
    for k in keys:
        if k.startswith("runs/s3job/videos/"):
            rows += pq.read_table(
                io.BytesIO(s3.get_object(Bucket="job-results", Key=k)["Body"].read())
            ).to_pylist()
    meta = json.loads((tiny_corpus / "metadata.json").read_text())
    assert sorted(r["video_id"] for r in rows) == sorted(meta)
    assert all(r["status"] == "ok" and r["uri"].startswith("s3://job-corpus/videos/") for r in rows)
    doc = json.loads(s3.get_object(Bucket="job-results", Key="runs/s3job/run.json")["Body"].read())
    assert doc["state"] == "complete" and doc["counts"] == {"ok": len(meta)}
