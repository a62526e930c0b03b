"""Create the Processing job (client side): with the SageMaker Python SDK when the optional
extra is installed (`pip install dfray[sagemaker]`: `sagemaker.processing.Processor` with
one `ProcessingInput` per input, the corpus distributed `ShardedByS3Key`), else with the
boto3 `create_processing_job` call the SDK itself makes.

Either way the job is the one `dfray.cloud.job.processing_job_request` describes (pure, the
single definition of what is sent); this module only chooses the client. The SDK is not a
hard dependency because it pins protobuf < 7 and packaging < 25, below what the rest of
dfray's environment (ray, virtualenv) installs.
"""

from __future__ import annotations

from dfray.config import StorageConfig


def sdk_available() -> bool:
    import os

    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # the v2 Processor is current
    try:
        import sagemaker.processing  # noqa: F401
    except ImportError:
        return False
    return True


def create_processing_job(
    request: dict, client, store: StorageConfig, *, use_sdk: bool | None = None
) -> str:
    """Create the job `request` describes; returns its ARN. use_sdk=None: the SDK if
    installed."""
    if use_sdk is None:
        use_sdk = sdk_available()
    if not use_sdk:
        return client.create_processing_job(**request)["ProcessingJobArn"]
    _run_with_sdk(request, client, store)
    return client.describe_processing_job(ProcessingJobName=request["ProcessingJobName"])[
        "ProcessingJobArn"
    ]


def _run_with_sdk(request: dict, client, store: StorageConfig) -> None:
    import boto3
    from sagemaker.processing import ProcessingInput, Processor
    from sagemaker.session import Session

    boto_session = boto3.Session(
        region_name=store.region or client.meta.region_name, profile_name=store.profile
    )
    session = Session(boto_session=boto_session, sagemaker_client=client)
    cluster = request["ProcessingResources"]["ClusterConfig"]
    app = request["AppSpecification"]
    processor = Processor(
        role=request["RoleArn"],
        image_uri=app["ImageUri"],
        instance_count=cluster["InstanceCount"],
        instance_type=cluster["InstanceType"],
        volume_size_in_gb=cluster["VolumeSizeInGB"],
        entrypoint=app["ContainerEntrypoint"],
        max_runtime_in_seconds=request["StoppingCondition"]["MaxRuntimeInSeconds"],
        env=request["Environment"],
        tags=request["Tags"],
        sagemaker_session=session,
    )
    inputs = [
        ProcessingInput(
            source=i["S3Input"]["S3Uri"],
            destination=i["S3Input"]["LocalPath"],
            input_name=i["InputName"],
            s3_data_type=i["S3Input"]["S3DataType"],
            s3_input_mode=i["S3Input"]["S3InputMode"],
            s3_data_distribution_type=i["S3Input"]["S3DataDistributionType"],
        )
        for i in request["ProcessingInputs"]
    ]
    processor.run(
        inputs=inputs,
        arguments=app["ContainerArguments"],
        wait=False,
        logs=False,
        job_name=request["ProcessingJobName"],
    )
