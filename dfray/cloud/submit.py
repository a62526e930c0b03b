"""`dfray sagemaker submit` (client side): write the manifest, upload code and config,
create the Processing job, and with --wait follow it to its end and finalize run.json
(`complete`, `budget_exhausted` when MaxRuntime stopped it, else `incomplete`)."""

from __future__ import annotations

import time

from dfray import results, storage
from dfray.cloud.job import SubmitSpec, job_name, processing_job_request, volume_size_gb
from dfray.cloud.launch import create_processing_job
from dfray.cloud.prices import max_runtime_s, resolve_price
from dfray.cloud.processing import EXIT_BUDGET, SageMakerError
from dfray.cloud.runstate import rows_and_ids
from dfray.cloud.upload import upload_code, upload_config
from dfray.config import StorageConfig

WAIT_POLL_S = 30.0


def sagemaker_client(store: StorageConfig):
    from dfray.storage import aws_client

    return aws_client("sagemaker", store)


def _manifest_stats(folder: results.RunFolder) -> tuple[int, int]:
    """(number of videos, total bytes) of the run's manifest."""
    import pyarrow.compute as pc

    t = results.read_manifest(folder, ["size_bytes"])
    total = pc.sum(t.column("size_bytes")).as_py() or 0
    return t.num_rows, int(total)


def submit(spec: SubmitSpec, *, wait: bool = False, say=print) -> int:
    """Create the Processing job (and with wait=True follow it to its end); exit status."""
    import uuid

    from dfray.config import load_ensemble
    from dfray.corpus import build_manifest

    for what, uri in (("corpus", spec.corpus), ("--out", spec.out)):
        if not storage.is_s3(uri):
            raise SageMakerError(f"{what} must be an s3:// URI for SageMaker, got {uri!r}")
    if spec.labels and not storage.is_s3(spec.labels):
        raise SageMakerError(f"--labels must be an s3:// URI for SageMaker, got {spec.labels!r}")
    if spec.instance_count < 1:
        raise SageMakerError(f"--instance-count must be >= 1, got {spec.instance_count}")
    if not spec.instance_type.startswith("ml."):
        raise SageMakerError(f"--instance-type must be an ml.* type, got {spec.instance_type!r}")
    load_ensemble(spec.config)  # a bad config fails here, not on a paid instance

    # Without a budget a price is only for the report: no price-book lookup then.
    needed = spec.budget_usd is not None or spec.price_per_hour is not None
    price = resolve_price(spec.instance_type, spec.region, spec.price_per_hour, price_book=needed)
    runtime = max_runtime_s(
        spec.budget_usd,
        price.usd_per_hour if price else None,
        spec.instance_count,
        spec.max_runtime_s,
    )
    store = spec.storage()
    folder = results.RunFolder(spec.out, spec.run_id, store)
    previous = folder.read_run_json()
    if previous is None or not storage.exists(folder.manifest, store):
        say(f"listing {spec.corpus} into {folder.manifest} …")
        build_manifest(spec.corpus, folder.manifest, store, spec.labels)
    n_videos, total_bytes = _manifest_stats(folder)
    volume = spec.volume_size_gb or volume_size_gb(total_bytes, spec.instance_count)

    code_uri = storage.join(folder.root, "_code")
    n_files = upload_code(code_uri, store)
    config_uri = None
    if spec.config and spec.config != "builtin:demo":
        config_uri = storage.join(folder.root, "_config")
        upload_config(spec.config, config_uri, store)

    name = job_name(spec.run_id, uuid.uuid4().hex[:6])
    request = processing_job_request(
        spec, name, runtime_s=runtime, volume_gb=volume, code_uri=code_uri, config_uri=config_uri
    )
    client = sagemaker_client(store)
    arn = create_processing_job(request, client, store)

    job = {
        "job_name": name,
        "job_arn": arn,
        "instance_type": spec.instance_type,
        "instance_count": spec.instance_count,
        "volume_size_gb": volume,
        "max_runtime_s": runtime,
        "budget_usd": spec.budget_usd,
        "usd_per_hour": price.usd_per_hour if price else None,
        "price_source": price.source if price else None,
        "submitted_at": results.now_utc().isoformat(),
    }
    doc = dict(previous or {})
    doc.setdefault("schema_version", 1)
    doc.update(run_id=spec.run_id, corpus=spec.corpus, run_dir=folder.root, state="submitted")
    sm = dict(doc.get("sagemaker") or {})
    sm["jobs"] = [*sm.get("jobs", []), job]
    doc["sagemaker"] = sm
    folder.write_run_json(doc)

    hours = runtime / 3600
    say(f"submitted SageMaker Processing job {name}")
    say(
        f"  {spec.instance_count} x {spec.instance_type}, {volume} GB volume each; "
        f"{n_videos} videos ({total_bytes / 1e9:.2f} GB), code: {n_files} files in {code_uri}/"
    )
    if price:
        spend = price.usd_per_hour * spec.instance_count * hours
        say(
            f"  max runtime {runtime} s ({hours:.2f} h) at ${price.usd_per_hour:g}/h per "
            f"instance [{price.source}]: at most ${spend:,.2f} of instance time"
        )
    else:
        say(f"  max runtime {runtime} s ({hours:.2f} h); no --budget and no known price")
    say(f"  results: {folder.root}/  (resume: same --run-id)")
    region = store.region or "us-east-1"
    say(
        f"  console: https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
        f"#/processing-jobs/{name}"
    )
    if not wait:
        return 0
    final = wait_for_job(client, name, say=say)
    return finalize_run(folder, final, budget=spec.budget_usd is not None, say=say)


def wait_for_job(client, name: str, *, poll_s: float | None = None, say=print) -> dict:
    """Poll describe_processing_job until the job ends; returns the last description."""
    last = None
    while True:
        desc = client.describe_processing_job(ProcessingJobName=name)
        status = desc["ProcessingJobStatus"]
        if status != last:
            say(f"[{results.now_utc():%H:%M:%S}] {name}: {status}")
            last = status
        if status in ("Completed", "Failed", "Stopped"):
            return desc
        time.sleep(WAIT_POLL_S if poll_s is None else poll_s)



def stopped_by_max_runtime(desc: dict) -> bool:
    """Did MaxRuntimeInSeconds end the job? SageMaker ends such a job as `Stopped`, with no
    failure reason, exactly as a StopProcessingJob call would; the two are told apart by
    time: stopped at least MaxRuntimeInSeconds after the job was created (CreationTime is
    before the clock starts, so a stop by MaxRuntime always passes). A `Stopped` job
    without timestamps counts as stopped by MaxRuntime; a `Failed` one only when its
    reason names the runtime."""
    reason = desc.get("FailureReason") or desc.get("ExitMessage") or ""
    if desc.get("ProcessingJobStatus") != "Stopped":
        return desc.get("ProcessingJobStatus") == "Failed" and "runtime" in reason.lower()
    limit = (desc.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
    start = desc.get("CreationTime")
    end = desc.get("ProcessingEndTime") or desc.get("LastModifiedTime")
    if not (limit and start and end):
        return True
    return (end - start).total_seconds() >= limit


def finalize_run(folder: results.RunFolder, desc: dict, *, budget: bool, say=print) -> int:
    """Write the run's final state into run.json from the job's end; the exit status."""
    counts, n_rows, unscored = rows_and_ids(folder)
    status = desc.get("ProcessingJobStatus")
    reason = desc.get("FailureReason") or desc.get("ExitMessage") or ""
    by_runtime = stopped_by_max_runtime(desc)
    if not unscored:
        state, code = "complete", 0
    elif budget and by_runtime:
        state, code = "budget_exhausted", EXIT_BUDGET
    else:
        state, code = "incomplete", 1
    doc = dict(folder.read_run_json() or {})
    doc.update(state=state, counts=counts, n_rows=n_rows, ended_at=results.now_utc().isoformat())
    if unscored:
        doc["unscored"] = unscored
    else:
        doc.pop("unscored", None)
    sm = dict(doc.get("sagemaker") or {})
    sm["job_status"] = {"name": desc.get("ProcessingJobName"), "status": status, "reason": reason}
    doc["sagemaker"] = sm
    folder.write_run_json(doc)
    if state == "complete":
        _compact(folder, say)
    say(
        f"run {folder.run_id}: {state}; {n_rows} rows, {len(unscored)} videos unscored "
        f"(job {status}{': ' + reason if reason else ''})"
    )
    if state == "budget_exhausted":
        say("budget exhausted: resume with the same --run-id and a larger --budget")
    return code



def _compact(folder: results.RunFolder, say) -> None:
    """A completed job's folder, written part by part by every instance, compacted into a
    few large parts (dfray.compaction; atomic). A failure leaves the parts as written."""
    from dfray.compaction import compact

    try:
        out = compact(folder)
    except Exception as e:  # noqa: BLE001 - every row is written; compaction is tidying
        say(f"warning: compaction of {folder.root} failed ({e}); the parts stay as written")
        return
    say("compacted " + ", ".join(f"{k}/ {v['parts_before']} -> {v['parts_after']} parts"
                                 for k, v in out.items()))
