"""`dfray sagemaker submit` against moto's SageMaker + S3 (server mode), and the container
entry point run locally end to end on a fake /opt/ml layout."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import RANDOM_MESO, upload_dir

from dfray.cli import main
from dfray.cloud import container

REPO = Path(__file__).resolve().parents[2]
ROLE = "arn:aws:iam::123456789012:role/dfray-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dfray:latest"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def aws(moto_server):
    """boto3 clients on the moto server, and a recorder of CreateProcessingJob requests
    (moto does not keep ProcessingResources, so the request is checked as sent)."""
    import boto3

    boto3.setup_default_session()
    sent: list[dict] = []

    def record(params, **kwargs):
        sent.append(json.loads(json.dumps(params)))

    boto3.DEFAULT_SESSION.events.register(
        "before-parameter-build.sagemaker.CreateProcessingJob", record
    )
    kw = dict(endpoint_url=moto_server, region_name="us-east-1")
    yield boto3.client("s3", **kw), boto3.client("sagemaker", **kw), sent
    boto3.DEFAULT_SESSION = None


def s3_keys(s3, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for p in pages for o in p.get("Contents", ())]


def fake_corpus(s3, bucket: str) -> None:
    s3.create_bucket(Bucket=bucket)
    for key in ("corpus/a.mp4", "corpus/b.mp4", "corpus/part1/c.mp4", "corpus2/other.mp4"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"\0" * 1000)
    meta = {"a.mp4": {"label": "FAKE"}, "b.mp4": {"label": "REAL"}}
    s3.put_object(Bucket=bucket, Key="corpus/metadata.json", Body=json.dumps(meta).encode())


def submit(moto_server, corpus, out, *args):
    return main(
        [
            "sagemaker",
            "submit",
            corpus,
            "--out",
            out,
            "--role",
            ROLE,
            "--image-uri",
            IMAGE,
            "--endpoint-url",
            moto_server,
            *args,
        ]
    )


# -- submit against moto -----------------------------------------------------------------------


def test_submit_creates_sharded_processing_job(aws, moto_server, tmp_path):
    s3, sagemaker, sent = aws
    fake_corpus(s3, "sm-data")
    s3.create_bucket(Bucket="sm-out")
    weights = tmp_path / "w2.pt"
    weights.write_bytes(b"not really weights")
    cfg = tmp_path / "ens.yaml"
    cfg.write_text(RANDOM_MESO + f"  - name: m2\n    arch: meso4\n    weights: {weights}\n")
    budget, price, count = 25.0, 1.25, 3

    rc = submit(
        moto_server,
        "s3://sm-data/corpus",
        "s3://sm-out/runs",
        "--instance-count",
        str(count),
        "--instance-type",
        "ml.g5.xlarge",
        "--config",
        str(cfg),
        "--run-id",
        "job-1",
        "--budget",
        str(budget),
        "--price-per-hour",
        str(price),
        "--frames",
        "16",
    )
    assert rc == 0
    assert len(sent) == 1
    name = sent[0]["ProcessingJobName"]
    assert name.startswith("dfray-job-1-")
    assert sent[0]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == count
    assert sent[0]["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert sent[0]["ProcessingResources"]["ClusterConfig"]["VolumeSizeInGB"] >= 30

    desc = sagemaker.describe_processing_job(ProcessingJobName=name)
    assert desc["RoleArn"] == ROLE
    expected = math.floor(budget / (price * count) * 3600)
    assert desc["StoppingCondition"]["MaxRuntimeInSeconds"] == expected
    inputs = {i["InputName"]: i["S3Input"] for i in desc["ProcessingInputs"]}
    assert inputs["videos"] == {
        "S3Uri": "s3://sm-data/corpus/",
        "LocalPath": "/opt/ml/processing/input/videos",
        "S3DataType": "S3Prefix",
        "S3InputMode": "File",
        "S3CompressionType": "None",
        "S3DataDistributionType": "ShardedByS3Key",
    }
    assert inputs["code"]["S3Uri"] == "s3://sm-out/runs/job-1/_code/"
    assert inputs["code"]["S3DataDistributionType"] == "FullyReplicated"
    assert inputs["config"]["S3Uri"] == "s3://sm-out/runs/job-1/_config/"
    app = desc["AppSpecification"]
    assert app["ImageUri"] == IMAGE
    assert app["ContainerEntrypoint"] == [
        "python3",
        "/opt/ml/processing/code/jobs/sagemaker_entry.py",
    ]
    args = app["ContainerArguments"]
    opts = dict(zip(args[::2], args[1::2], strict=False))
    assert opts["--run-id"] == "job-1" and opts["--out"] == "s3://sm-out/runs"
    assert opts["--corpus"] == "s3://sm-data/corpus" and opts["--frames"] == "16"
    assert opts["--config"] == "/opt/ml/processing/config/ensemble.yaml"
    container.entry_parser().parse_args(args)  # the entry point accepts what submit generates
    tags = {t["Key"]: t["Value"] for t in sent[0]["Tags"]}
    assert tags == {"dfray:run-id": "job-1", "dfray:budget-usd": "25"}
    stored = sagemaker.list_tags(ResourceArn=desc["ProcessingJobArn"])["Tags"]
    assert {t["Key"]: t["Value"] for t in stored} == tags

    keys = s3_keys(s3, "sm-out", "runs/job-1/")
    code = {k.removeprefix("runs/job-1/_code/") for k in keys if "/_code/" in k}
    assert {
        "jobs/sagemaker_entry.py",
        "dfray/runner/__init__.py",
        "dfray/cloud/container.py",
        "dfray/configs/demo.yaml",
    } <= code
    assert not any("__pycache__" in k for k in code)
    body = s3.get_object(Bucket="sm-out", Key="runs/job-1/_config/ensemble.yaml")["Body"].read()
    import yaml

    dets = yaml.safe_load(body)["detectors"]
    assert [d["name"] for d in dets] == ["m", "m2"]
    assert dets[1]["weights"] == "s3://sm-out/runs/job-1/_config/weights/m2-w2.pt"
    assert "runs/job-1/_config/weights/m2-w2.pt" in keys

    # the manifest is written once, at submit: whole corpus, s3 URIs, labels
    man = pq.read_table(
        io.BytesIO(s3.get_object(Bucket="sm-out", Key="runs/job-1/manifest.parquet")["Body"].read())
    )
    rows = {r["video_id"]: r for r in man.to_pylist()}
    assert set(rows) == {"a.mp4", "b.mp4", "part1/c.mp4"}  # not corpus2/
    assert rows["part1/c.mp4"]["uri"] == "s3://sm-data/corpus/part1/c.mp4"
    assert (rows["a.mp4"]["label"], rows["b.mp4"]["label"], rows["part1/c.mp4"]["label"]) == (
        1,
        0,
        None,
    )
    doc = json.loads(s3.get_object(Bucket="sm-out", Key="runs/job-1/run.json")["Body"].read())
    assert doc["state"] == "submitted" and doc["run_id"] == "job-1"
    job = doc["sagemaker"]["jobs"][0]
    assert job["job_name"] == name and job["max_runtime_s"] == expected
    assert job["usd_per_hour"] == price and job["instance_count"] == count


def test_submit_refuses_a_budget_below_ten_minutes(aws, moto_server, capsys):
    s3, sagemaker, sent = aws
    fake_corpus(s3, "sm-small")
    rc = submit(
        moto_server,
        "s3://sm-small/corpus",
        "s3://sm-small/runs",
        "--instance-count",
        "4",
        "--run-id",
        "tiny",
        "--budget",
        "0.40",
        "--price-per-hour",
        "1.0",
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "budget $0.4 pays for only 360 s of 4 instance(s)" in err
    assert "at least 10 minutes" in err
    assert sent == [] and s3_keys(s3, "sm-small", "runs/") == []
    jobs = sagemaker.list_processing_jobs()["ProcessingJobSummaries"]
    assert not any(j["ProcessingJobName"].startswith("dfray-tiny-") for j in jobs)


def test_submit_refuses_non_s3_corpus(aws, moto_server, tmp_path, capsys):
    rc = submit(moto_server, str(tmp_path), "s3://x/runs", "--run-id", "r", "--budget", "5")
    assert rc == 2 and "must be an s3:// URI" in capsys.readouterr().err


def test_submit_wait_finalizes_run_json(aws, moto_server):
    s3, _, _ = aws
    fake_corpus(s3, "sm-wait")
    # moto's jobs are Completed at once and score nothing: the run ends incomplete
    rc = submit(
        moto_server,
        "s3://sm-wait/corpus",
        "s3://sm-wait/runs",
        "--run-id",
        "w",
        "--max-runtime-s",
        "3600",
        "--wait",
    )
    assert rc == 1
    doc = json.loads(s3.get_object(Bucket="sm-wait", Key="runs/w/run.json")["Body"].read())
    assert doc["state"] == "incomplete"
    assert sorted(doc["unscored"]) == ["a.mp4", "b.mp4", "part1/c.mp4"]
    assert doc["sagemaker"]["job_status"]["status"] == "Completed"
    assert doc["sagemaker"]["jobs"][0]["max_runtime_s"] == 3600


# -- the container entry point, locally --------------------------------------------------------


def _entry(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / "sagemaker_entry.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


@pytest.mark.timeout(600)
def test_entry_point_two_instances_end_to_end(
    aws, moto_server, tiny_corpus, random_config, tmp_path
):
    """submit writes the manifest; two 'instances' (sequential processes) each score their
    shard from a local input folder, as ShardedByS3Key File mode lays it out; their rows land
    in the one S3 run folder with corpus-relative ids and s3:// URIs."""
    s3, sagemaker, _ = aws
    s3.create_bucket(Bucket="sm-e2e")
    upload_dir(s3, tiny_corpus, "sm-e2e", "dfdc")
    clip = sorted(tiny_corpus.glob("*.mp4"))[0]
    s3.upload_file(str(clip), "sm-e2e", "dfdc/sub/copy.mp4")
    meta = json.loads((tiny_corpus / "metadata.json").read_text())
    rc = submit(
        moto_server,
        "s3://sm-e2e/dfdc",
        "s3://sm-e2e/runs",
        "--run-id",
        "e2e",
        "--instance-count",
        "2",
        "--config",
        random_config,
        "--budget",
        "5",
        "--price-per-hour",
        "1",
    )
    assert rc == 0
    doc = json.loads(s3.get_object(Bucket="sm-e2e", Key="runs/e2e/run.json")["Body"].read())
    name = doc["sagemaker"]["jobs"][0]["job_name"]
    app = sagemaker.describe_processing_job(ProcessingJobName=name)["AppSpecification"]
    job_args = app["ContainerArguments"]

    # SageMaker's File mode: each host gets its objects under LocalPath/<relative key>
    keys = sorted(list(meta) + ["sub/copy.mp4", "metadata.json"])
    shards = {"algo-1": keys[0::2], "algo-2": keys[1::2]}
    ids = {h: {k for k in ks if k.endswith(".mp4")} for h, ks in shards.items()}
    for host, ks in shards.items():
        for k in ks:
            dst = tmp_path / host / "input" / k
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clip if k == "sub/copy.mp4" else tiny_corpus / k, dst)
        rcfg = tmp_path / host / "resourceconfig.json"
        rcfg.write_text(json.dumps({"current_host": host, "hosts": ["algo-1", "algo-2"]}))

    def run_host(host: str) -> list[dict]:
        local = [
            "--input-dir",
            str(tmp_path / host / "input"),
            "--resource-config",
            str(tmp_path / host / "resourceconfig.json"),
            "--scratch",
            str(tmp_path / host / "scratch"),
            "--endpoint-url",
            moto_server,
            "--config",
            random_config,
            "--frames",
            "4",
            "--device",
            "cpu",
            "--ship-interval",
            "1",
            "--quiet",
        ]
        p = _entry(job_args + local)
        assert p.returncode == 0, p.stdout + p.stderr
        rows = []
        for k in s3_keys(s3, "sm-e2e", "runs/e2e/videos/"):
            body = s3.get_object(Bucket="sm-e2e", Key=k)["Body"].read()
            rows += pq.read_table(io.BytesIO(body)).to_pylist()
        return rows

    rows = run_host("algo-1")
    assert {r["video_id"] for r in rows} == ids["algo-1"] and len(rows) == len(ids["algo-1"])
    doc = json.loads(s3.get_object(Bucket="sm-e2e", Key="runs/e2e/run.json")["Body"].read())
    assert doc["state"] == "running" and doc["n_rows"] == len(ids["algo-1"])

    rows = run_host("algo-2")
    by_id = {r["video_id"]: r for r in rows}
    assert len(rows) == len(by_id) == len(meta) + 1  # one row per video, sub/ kept relative
    for vid, r in by_id.items():
        host = "algo-1" if vid in ids["algo-1"] else "algo-2"
        assert r["uri"] == f"s3://sm-e2e/dfdc/{vid}"
        assert r["worker"].startswith(f"{host}/") and r["run_id"] == "e2e"
        assert r["status"] in ("ok", "no_faces") and r["n_frames"] == 4
        assert r["etag"] and "-" not in r["etag"]  # the S3 ETag, not the local file's
    for name_, info in meta.items():
        assert by_id[name_]["label"] == (1 if info["label"] == "FAKE" else 0)
    assert by_id["sub/copy.mp4"]["label"] is None
    assert any(r["status"] == "ok" for r in rows)
    faces = s3_keys(s3, "sm-e2e", "runs/e2e/faces/")
    assert faces
    doc = json.loads(s3.get_object(Bucket="sm-e2e", Key="runs/e2e/run.json")["Body"].read())
    assert doc["state"] == "complete" and doc["n_rows"] == len(by_id)
    assert sum(doc["counts"].values()) == len(by_id)
    assert doc["corpus"] == "s3://sm-e2e/dfdc" and doc["config"]["corpus"] == "s3://sm-e2e/dfdc"
    assert set(doc["sagemaker"]["hosts"]) == {"algo-1", "algo-2"}
    assert doc["detectors"][0]["name"] == "m" and doc["stats"]["n_scored"] > 0
    assert doc["sagemaker"]["jobs"][0]["job_name"] == name
    assert "runs/e2e/_sagemaker/algo-1.json" in s3_keys(s3, "sm-e2e", "runs/e2e/_sagemaker/")
