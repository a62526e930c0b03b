"""The SageMaker Processing entry point (container side): one instance scores the manifest
rows of its shard with dfray.runner.run_scoring on a local Ray, while the shipper copies
finished parts to the S3 run folder. Its arguments come from the one option schema
(dfray.options.add_options of RunConfig) plus the container's own paths."""

from __future__ import annotations

import csv
import json
import os
import sys

from dfray import results, storage
from dfray.cloud.processing import INPUT_DIR, RESOURCE_CONFIG, SCRATCH_DIR, SageMakerError
from dfray.cloud.runstate import rows_and_ids
from dfray.cloud.shipper import SEED_PART, SHIP_INTERVAL_S, Shipper, ship_on_sigterm
from dfray.config import StorageConfig

ENTRY_SKIP = ("corpus", "ensemble", "labels", "address", "limit", "compact")  # the container's own


def entry_parser():
    """The entry point's arguments: the scoring options of RunConfig (dfray.options, the one
    schema that also makes `dfray score`'s), plus the container's own paths."""
    import argparse

    from dfray.config import RunConfig
    from dfray.options import add_options

    p = argparse.ArgumentParser(
        prog="jobs/sagemaker_entry.py",
        description="dfray scoring inside a SageMaker Processing container (one instance).",
    )
    add_options(p, RunConfig, skip=ENTRY_SKIP)
    p.add_argument("--corpus", required=True, help="the corpus root the input was copied from")
    p.add_argument("--config", default="builtin:demo", help="ensemble YAML in the container")
    p.add_argument("--input-dir", default=INPUT_DIR, help="this instance's shard of the corpus")
    p.add_argument("--resource-config", default=RESOURCE_CONFIG)
    p.add_argument("--scratch", default=SCRATCH_DIR, help="local work folder")
    p.add_argument("--ship-interval", type=float, default=SHIP_INTERVAL_S)
    p.add_argument("--quiet", action="store_true")
    return p


def read_resource_config(path: str) -> tuple[str, list[str]]:
    """(current_host, hosts) from SageMaker's resourceconfig.json; outside SageMaker the
    machine's hostname alone."""
    try:
        with open(path) as f:
            rc = json.load(f)
    except FileNotFoundError:
        import socket

        host = socket.gethostname()
        return host, [host]
    except (OSError, ValueError) as e:
        raise SageMakerError(f"cannot read {path}: {e}") from e
    host = str(rc.get("current_host") or "")
    hosts = [str(h) for h in rc.get("hosts") or [host]]
    if not host or host not in hosts:
        raise SageMakerError(f"{path}: current_host {host!r} is not among hosts {hosts}")
    return host, hosts


def shard_rows(
    args, host: str, hosts: list[str], folder: results.RunFolder, store: StorageConfig, say
) -> list[dict]:
    """Manifest rows of the videos in this instance's input folder."""
    from dfray.corpus import build_manifest, is_video, iter_entries

    local = {e.key for e in iter_entries(args.input_dir, store) if is_video(e.key)}
    if storage.exists(folder.manifest, store):
        import pyarrow as pa
        import pyarrow.compute as pc

        manifest = results.read_manifest(folder)
        n_total = manifest.num_rows
        mine = pc.is_in(manifest.column("video_id"), value_set=pa.array(sorted(local), pa.string()))
        rows = manifest.filter(mine).to_pylist()  # only this shard becomes Python objects
        extra = len(local) - len(rows)
        if extra:
            say(
                f"[{host}] {extra} videos in {args.input_dir} are not in the run's manifest "
                "(added after submit?); skipped"
            )
        if len(hosts) > 1 and rows and len(rows) == n_total:
            say(
                f"[{host}] warning: this instance holds all {n_total} videos of a "
                f"{len(hosts)}-instance job; is the input ShardedByS3Key?"
            )
        return rows
    if len(hosts) > 1:
        raise SageMakerError(
            f"{folder.manifest} not found: a multi-instance job needs the manifest that "
            "`dfray sagemaker submit` writes"
        )
    if not local:
        return []
    # Standalone (one instance, no submit): list the input folder as the whole corpus.
    standalone = results.RunFolder(args.scratch, "standalone", StorageConfig())
    build_manifest(args.input_dir, standalone.manifest, store)
    t = results.read_manifest(standalone)
    root = args.corpus.rstrip("/")
    rows = t.to_pylist()
    for r in rows:
        r["uri"] = f"{root}/{r['video_id']}"
    import pyarrow as pa

    storage.write_bytes(
        folder.manifest, _parquet_bytes(pa.Table.from_pylist(rows, t.schema)), store
    )
    return rows


def _parquet_bytes(table) -> bytes:
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()



def _seed_done(local: results.RunFolder, remote: results.RunFolder, ids: set[str]) -> int:
    """Mark the shard's videos that already have a row on S3 as done in the scratch folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = remote.read_table("videos", columns=["video_id", "status"])
    if t is None:
        return 0
    t = t.filter(pa.array([v in ids for v in t.column("video_id").to_pylist()], pa.bool_()))
    if t.num_rows == 0:
        return 0
    path = os.path.join(local.table_dir("videos"), SEED_PART)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(t, path)
    return len(set(t.column("video_id").to_pylist()))


def _write_labels(rows: list[dict], path: str) -> bool:
    labelled = [r for r in rows if r.get("label") is not None]
    if not labelled:
        return False
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "label"])
        for r in labelled:
            w.writerow([r["video_id"], int(r["label"])])
    return True


def _link_shard(rows: list[dict], input_dir: str, shard_dir: str) -> None:
    base = os.path.abspath(input_dir)
    for r in rows:
        dst = os.path.join(shard_dir, *r["video_id"].split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.symlink(os.path.join(base, *r["video_id"].split("/")), dst)


def _merge_run_json(
    remote: results.RunFolder,
    local_doc: dict,
    args,
    host: str,
    hosts: list[str],
    result,
    shipped: int,
) -> dict:
    """Fold this instance's run.json into the run's (last writer wins; counts are global)."""
    counts, n_rows, unscored = rows_and_ids(remote)
    doc = dict(remote.read_run_json() or {})
    mine = dict(local_doc)
    cfg = dict(mine.get("config") or {})
    cfg.update(corpus=args.corpus, out=args.out, labels=None)
    mine.update(config=cfg, corpus=args.corpus, run_dir=remote.root)
    for key in ("started_at", "launches"):
        if key in doc:
            mine[key] = doc[key]
    mine.pop("unscored", None)
    sm = dict(doc.get("sagemaker") or {})
    hosts_doc = dict(sm.get("hosts") or {})
    hosts_doc[host] = {
        "state": result.state,
        "videos": result.n_videos,
        "scored": result.scored_now,
        "shipped_rows": shipped,
        "wall_s": round(result.wall_s, 3),
        "ended_at": results.now_utc().isoformat(),
    }
    sm.update(hosts=hosts_doc, instance_count=len(hosts))
    mine.update(
        sagemaker=sm, counts=counts, n_rows=n_rows, state="complete" if not unscored else "running"
    )
    remote.write_run_json(mine)
    return mine


def run_entry(args) -> int:
    """One instance of the Processing job: score this instance's shard into the run folder."""
    import shutil
    import signal
    import tempfile

    from dfray.config import RunConfig, load_ensemble
    from dfray.options import from_args
    from dfray.runner import run_scoring

    quiet = getattr(args, "quiet", False)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    host, hosts = read_resource_config(args.resource_config)
    store = from_args(StorageConfig, args)
    if not args.run_id or not args.out:
        raise SageMakerError("--run-id and --out are required")
    remote = results.RunFolder(args.out, args.run_id, store)
    os.makedirs(args.scratch, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f"dfray-{host}-", dir=args.scratch)
    try:
        rows = shard_rows(args, host, hosts, remote, store, say)
        if not rows:
            say(f"[{host}] no videos of run {args.run_id} in {args.input_dir}; nothing to do")
            return 0
        shard_dir = os.path.join(work, "shard")
        _link_shard(rows, args.input_dir, shard_dir)
        labels = os.path.join(work, "labels.csv")
        has_labels = _write_labels(rows, labels)
        local = results.RunFolder(os.path.join(work, "out"), args.run_id, StorageConfig())
        seeded = _seed_done(local, remote, {r["video_id"] for r in rows})
        say(
            f"[{host}] {len(rows)} videos in this shard ({len(hosts)} instances), "
            f"{seeded} already have a row in {remote.root}"
        )
        cfg = from_args(
            RunConfig,
            args,
            corpus=shard_dir,
            out=os.path.join(work, "out"),
            ensemble=load_ensemble(args.config),
            labels=labels if has_labels else None,
            address=None,  # a local Ray on this instance
            storage=store,
            compact=False,  # the shipper copies the scratch folder's parts as written
        )
        shipper = Shipper(local, remote, {r["video_id"]: r for r in rows}, host)

        previous = ship_on_sigterm(shipper, say)
        shipper.start(args.ship_interval)
        try:
            result = run_scoring(cfg, progress=not quiet)
        finally:
            shipped = shipper.stop()
            signal.signal(signal.SIGTERM, previous)
        local_doc = local.read_run_json() or {}
        storage.write_bytes(
            storage.join(remote.root, "_sagemaker", f"{host}.json"),
            json.dumps(local_doc, indent=2, sort_keys=True, default=str).encode(),
            store,
        )
        doc = _merge_run_json(remote, local_doc, args, host, hosts, result, shipper.n_rows)
        say(
            f"[{host}] {result.state}: {result.scored_now} scored here, {shipper.n_rows} rows "
            f"shipped ({shipped} in the last sweep); run {args.run_id}: {doc['n_rows']} rows, "
            f"state {doc['state']}"
        )
        return result.exit_code
    finally:
        shutil.rmtree(work, ignore_errors=True)
