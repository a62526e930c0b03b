"""Managed-cloud launchers over the same scoring code. SageMaker Processing: the dfray
scoring code as ONE Processing job on N instances.

Modules, client side: job (the request, pure), prices (ml.* table, MaxRuntime from the
budget), upload (code and config), submit (create, wait, finalize run.json). Container side:
container (the entry point), shipper (parts to S3). Both: processing (paths, error),
runstate (rows over the run folder). No module mixes the two sides.

`dfray sagemaker submit s3://bucket/corpus/ --out s3://bucket/runs --role ARN --image-uri URI`
creates one Processing job; each instance runs `jobs/sagemaker_entry.py`, which calls
`dfray.runner.run_scoring` on a local Ray, exactly as `dfray score` does on a laptop.

Design
------
- Sharding: the corpus is a ProcessingInput (S3Prefix, File mode, ShardedByS3Key), so
  SageMaker gives each instance about 1/N of the objects under the prefix, downloaded to
  `/opt/ml/processing/input/videos/<key relative to the prefix>` before the script
  starts. The local path relative to that folder is the video_id, as in a Ray run. File
  mode downloads the whole shard first (billed time, and it must fit on the volume, which
  `submit` sizes from the manifest); more instances mean smaller shards.
- The manifest is written once, by `submit`, to `OUT/<run_id>/manifest.parquet` (the same
  `build_manifest` a Ray run uses: s3:// URIs, S3 ETags, labels from every metadata.json /
  labels.csv under the corpus). It defines the run. Label files are themselves objects and
  land on one instance only, so instances could not find the labels themselves; an empty
  corpus fails before any instance is paid for; the total size sizes the volume. Each
  instance scores the manifest rows present in its shard (objects added after submit are
  skipped with a warning).
- Output goes straight to S3, no ProcessingOutput: each instance runs `run_scoring` into a
  scratch run folder on its volume (same run id; its corpus is a folder of symlinks to its
  shard's videos, its labels a CSV cut from the manifest), and a shipper thread copies each
  finished Parquet part every SHIP_INTERVAL_S (dfray.cloud.shipper) to `OUT/<run_id>/faces/` then `videos/`
  through `RunFolder.write_part` (unique part names, one PUT each), rewriting `uri` to the
  s3:// URI and `etag` to the S3 ETag and prefixing `worker` with the SageMaker host
  (`algo-1/…`). Rows finished before a kill by MaxRuntime therefore survive it: on SIGTERM
  the entry point ships what is on disk and exits; at most the last few seconds of rows
  (plus the runner's in-memory buffer) are lost and are rescored on resume. An EndOfJob
  ProcessingOutput would lose every row of a killed job. The run folder is not handed to
  `run_scoring` directly because the runner writes `manifest.parquet` and `_todo.parquet`
  into it: N drivers sharing one folder would overwrite each other's, and rows would carry
  the local file path as `uri`.
- Resume: re-submitting with the same `--run-id` keeps the manifest; every instance seeds
  its scratch folder with the video_ids that already have a row on S3, so the runner scores
  only the rest. One run id, one run folder, one row per video.
- run.json: `submit` writes it (state `submitted`, the job, price and cap); each instance
  merges its own run.json in when it ends (config, detectors and weights sha256, versions,
  its stats; counts over all instances' rows; state `complete` once every manifest video
  has a row, else `running`), and keeps its own copy in `OUT/<run_id>/_sagemaker/<host>.json`.
  `submit --wait` finalizes it from the job's end status (`complete`, `budget_exhausted`
  when MaxRuntime stopped it, else `incomplete`, with the unscored video_ids).
- Budget: `MaxRuntimeInSeconds = floor(budget / (price_per_hour × instance_count) × 3600)`,
  capped at MAX_RUNTIME_S (the ProcessingStoppingCondition maximum, 777600 s = 9 days) and
  at `--max-runtime-s`; a budget that cannot pay MIN_RUNTIME_S (10 minutes) is refused.
  SageMaker `ml.*` prices are higher than the EC2 prices of the same hardware, so the price
  is, first that applies: `--price-per-hour` (preferred: check the SageMaker pricing page
  for your region), the dated table ML_ON_DEMAND (dfray.cloud.prices), or the EC2 on-demand price from
  `dfray.budget.prices.PriceBook` × ML_MARKUP. The cap bounds the job's run time only; keep
  headroom for storage and anything billed outside it.
- Container: any image with Python >= 3.10 and dfray's dependencies (torch, ray[data],
  pyarrow, boto3, facenet-pytorch, decord, av, timm, …), e.g. a SageMaker PyTorch image with
  those pip-installed. The dfray source is not taken from the image: `submit` uploads the
  submitter's package to `OUT/<run_id>/_code/` (a prefix, so no unpacking step) and the entry
  point puts it first on sys.path, so the job runs the same code as `dfray score`. The
  ensemble YAML goes to `OUT/<run_id>/_config/`, with detector weights that are local files
  uploaded next to it and rewritten to their s3:// URIs (sha256 pins are kept).
"""
