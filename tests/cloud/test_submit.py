"""How `dfray sagemaker submit --wait` ends a run: the job's end status against moto's
SageMaker, the run folder on moto's S3 over HTTP."""

from __future__ import annotations

import json
from datetime import timedelta

import pyarrow as pa
import pytest

from dfray.cli import main
from dfray.cloud import submit as sub
from dfray.config import StorageConfig
from dfray.results import RunFolder

ROLE = "arn:aws:iam::123456789012:role/dfray-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dfray:latest"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def submitted(moto_server):
    """A 3-video corpus submitted with a $5 budget (no --wait); one video already has a row.
    Yields (sagemaker client, run folder, job name, MaxRuntimeInSeconds)."""
    import boto3

    kw = dict(endpoint_url=moto_server, region_name="us-east-1")
    s3, sm = boto3.client("s3", **kw), boto3.client("sagemaker", **kw)
    s3.create_bucket(Bucket="mr-bkt")
    for key in ("corpus/a.mp4", "corpus/b.mp4", "corpus/c.mp4"):
        s3.put_object(Bucket="mr-bkt", Key=key, Body=b"\0" * 100)
    rc = main(
        ["sagemaker", "submit", "s3://mr-bkt/corpus", "--out", "s3://mr-bkt/runs", "--run-id", "r",
         "--role", ROLE, "--image-uri", IMAGE, "--endpoint-url", moto_server,
         "--budget", "5", "--price-per-hour", "1"]
    )  # fmt: skip
    assert rc == 0
    folder = RunFolder("s3://mr-bkt/runs", "r", StorageConfig(endpoint_url=moto_server))
    folder.write_part("videos", pa.table({"video_id": ["a.mp4"], "status": ["ok"]}))
    name = folder.read_run_json()["sagemaker"]["jobs"][0]["job_name"]
    runtime = folder.read_run_json()["sagemaker"]["jobs"][0]["max_runtime_s"]
    assert runtime == 5 * 3600  # $5 at $1/h on one instance
    yield sm, folder, name, runtime


def test_stopped_by_max_runtime_is_budget_exhausted(submitted):
    sm, folder, name, runtime = submitted
    sm.stop_processing_job(ProcessingJobName=name)
    desc = sub.wait_for_job(sm, name, poll_s=0, say=lambda m: None)
    assert desc["ProcessingJobStatus"] == "Stopped"
    assert desc["StoppingCondition"]["MaxRuntimeInSeconds"] == runtime
    # AWS ends a job MaxRuntimeInSeconds after it started, as `Stopped` with no reason;
    # moto stops it at once, so give the description the end time AWS would report
    desc["ProcessingEndTime"] = desc["CreationTime"] + timedelta(seconds=runtime + 90)
    said: list[str] = []
    assert sub.finalize_run(folder, desc, budget=True, say=said.append) == 3
    doc = folder.read_run_json()
    assert doc["state"] == "budget_exhausted"
    assert sorted(doc["unscored"]) == ["b.mp4", "c.mp4"] and doc["n_rows"] == 1
    assert doc["sagemaker"]["job_status"]["status"] == "Stopped"
    assert any("larger --budget" in m for m in said)


def test_stopped_by_hand_is_incomplete_not_budget(submitted):
    sm, folder, name, _ = submitted
    sm.stop_processing_job(ProcessingJobName=name)
    desc = sub.wait_for_job(sm, name, poll_s=0, say=lambda m: None)
    # moto's times are those of a job stopped at once: StopProcessingJob, not MaxRuntime
    assert not sub.stopped_by_max_runtime(desc)
    assert sub.finalize_run(folder, desc, budget=True, say=lambda m: None) == 1
    assert folder.read_run_json()["state"] == "incomplete"


def test_complete_wins_over_a_runtime_stop(submitted):
    sm, folder, name, runtime = submitted
    folder.write_part("videos", pa.table({"video_id": ["b.mp4", "c.mp4"], "status": ["ok"] * 2}))
    sm.stop_processing_job(ProcessingJobName=name)
    desc = sub.wait_for_job(sm, name, poll_s=0, say=lambda m: None)
    desc["ProcessingEndTime"] = desc["CreationTime"] + timedelta(seconds=runtime)
    assert sub.finalize_run(folder, desc, budget=True, say=lambda m: None) == 0
    doc = folder.read_run_json()
    assert doc["state"] == "complete" and "unscored" not in doc
    assert json.loads(json.dumps(doc["counts"])) == {"ok": 3}
    assert len(folder.parts("videos")) == 1  # a completed job's parts are compacted
    assert sorted(folder.read_table("videos").column("video_id").to_pylist()) == [
        "a.mp4", "b.mp4", "c.mp4"]
