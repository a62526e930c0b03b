"""The job request is pure; the entry point's arguments come from the one option schema."""

from __future__ import annotations

import dataclasses

from dfray.cloud import container, job
from dfray.config import DecodeConfig, RunConfig, StorageConfig
from dfray.options import from_args


def test_entry_arguments_round_trip_through_the_entry_parser():
    run = RunConfig(
        corpus="s3://c-bkt/videos", out="s3://o-bkt/runs", run_id="rt-1",
        decode=DecodeConfig(n_frames=7), write_faces=False, video_timeout_s=12.5,
        max_attempts=5, score_batch_videos=4, flush_rows=9, device="cpu",
        storage=StorageConfig(region="eu-west-1", endpoint_url="http://127.0.0.1:1"),
    )  # fmt: skip
    spec = job.SubmitSpec(run=run, role="arn:r", image_uri="img")
    argv = job.entry_arguments(spec, "/opt/ml/processing/config/ensemble.yaml")
    assert "--endpoint-url" not in argv  # the submitter's endpoint stays with the submitter
    ns = container.entry_parser().parse_args(argv)
    assert (ns.corpus, ns.config) == ("s3://c-bkt/videos", "/opt/ml/processing/config/ensemble.yaml")
    back = from_args(RunConfig, ns, environ={}, corpus=run.corpus, ensemble=run.ensemble)
    expected = dataclasses.replace(run, storage=StorageConfig(region="eu-west-1"))
    assert back == expected


def test_job_names_are_valid():
    import re

    for run_id in ("r1", "20250101-120000-abcdef", "a_b.c/d" * 20, "---"):
        name = job.job_name(run_id, "abc123")
        assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name), name
        assert name.endswith("-abc123")
