"""The job is created with the SageMaker Python SDK (the `sagemaker` extra) and with plain
boto3 from the same request; against moto's SageMaker both give the same job."""

from __future__ import annotations

import pytest

from dfray.cloud import job, launch
from dfray.config import RunConfig, StorageConfig
from dfray.storage import aws_client

pytestmark = pytest.mark.skipif(
    not launch.sdk_available(),
    reason="the SageMaker Python SDK is not installed (pip install -e '.[sagemaker]')",
)

ROLE = "arn:aws:iam::123456789012:role/dfray-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dfray:latest"


def test_sdk_and_boto3_create_the_same_sharded_job(moto_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store = StorageConfig(endpoint_url=moto_server, region="us-east-1")
    run = RunConfig(corpus="s3://c-bkt/videos", out="s3://o-bkt/runs", run_id="r1",
                    storage=store, max_attempts=5)  # fmt: skip
    spec = job.SubmitSpec(run=run, role=ROLE, image_uri=IMAGE, instance_count=4)
    client = aws_client("sagemaker", store)
    sent: list[dict] = []  # the CreateProcessingJob parameters as sent (moto drops some)
    client.meta.events.register(
        "before-parameter-build.sagemaker.CreateProcessingJob",
        lambda params, **kw: sent.append(dict(params)),
    )
    descs = {}
    for use_sdk in (True, False):
        name = job.job_name("r1", "sdk" if use_sdk else "boto")
        request = job.processing_job_request(
            spec, name, runtime_s=3600, volume_gb=40, code_uri="s3://o-bkt/runs/r1/_code",
            config_uri=None,
        )  # fmt: skip
        arn = launch.create_processing_job(request, client, store, use_sdk=use_sdk)
        descs[use_sdk] = client.describe_processing_job(ProcessingJobName=name)
        assert descs[use_sdk]["ProcessingJobArn"] == arn
        assert {t["Key"]: t["Value"] for t in client.list_tags(ResourceArn=arn)["Tags"]} == {
            "dfray:run-id": "r1"
        }
    assert len(sent) == 2
    sdk_sent, boto_sent = ({k: v for k, v in s.items() if k != "ProcessingJobName"} for s in sent)
    assert sdk_sent == boto_sent  # the SDK sends exactly the request dfray describes
    assert sdk_sent["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 4
    sdk = descs[True]
    assert sdk["ProcessingInputs"] == descs[False]["ProcessingInputs"]
    videos = {i["InputName"]: i["S3Input"] for i in sdk["ProcessingInputs"]}["videos"]
    assert videos["S3DataDistributionType"] == "ShardedByS3Key"
    assert videos["S3Uri"] == "s3://c-bkt/videos/"
    args = sdk["AppSpecification"]["ContainerArguments"]
    assert args[args.index("--max-attempts") + 1] == "5"
