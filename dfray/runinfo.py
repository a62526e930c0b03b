"""run.json: resolved config, detector weights hashes, versions, times, counts, stats."""

from __future__ import annotations

import platform
from collections import Counter
from importlib import metadata

from dfray import SCHEMA_VERSION, results
from dfray.config import RunConfig

PACKAGES = (
    "dfray",
    "ray",
    "torch",
    "torchvision",
    "timm",
    "facenet-pytorch",
    "decord",
    "pyarrow",
    "numpy",
    "opencv-python-headless",
    "boto3",
)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def detector_info(cfg: RunConfig) -> list[dict]:
    """Resolve every detector's weights once in the driver: fails fast on a bad sha256."""
    from dfray.detectors.registry import check_spec
    from dfray.detectors.weights import resolve_weights

    out = []
    for spec in cfg.ensemble.detectors:
        check_spec(spec)
        sha = None
        if spec.weights:
            _, sha = resolve_weights(spec.weights, spec.sha256, storage=cfg.storage)
        out.append(
            {
                "name": spec.name,
                "arch": spec.arch,
                "weights": spec.weights,
                "sha256": sha,
                "input_size": spec.input_size,
                "aggregation": spec.aggregation,
                "weight": spec.weight,
            }
        )
    return out


def spent_before(previous: dict | None) -> float:
    """What earlier attempts of a run spent, from its previous run.json (0 for a new run):
    the last report's spend, else what the last attempt carried over when it started."""
    doc = previous or {}
    try:
        return float(
            (doc.get("spend") or {}).get("spent_usd") or doc.get("spent_usd_before") or 0.0
        )
    except (TypeError, ValueError):
        return 0.0


def start_doc(
    cfg: RunConfig,
    folder: results.RunFolder,
    detectors: list[dict],
    previous: dict | None,
    started_at,
) -> dict:
    doc = {
        "schema_version": SCHEMA_VERSION,
        "run_id": cfg.run_id,
        "corpus": cfg.corpus,
        "run_dir": folder.root,
        "config": cfg.to_dict(),
        "detectors": detectors,
        "versions": versions(),
        "state": "running",
        "started_at": (previous or {}).get("started_at", started_at.isoformat()),
        "attempt_started_at": started_at.isoformat(),
        "launches": (previous or {}).get("launches", 0) + 1,
        # spend of earlier attempts, kept even if this attempt dies before its report
        "spent_usd_before": spent_before(previous),
    }
    if (
        previous
        and previous.get("detectors")
        and [d.get("sha256") for d in previous["detectors"]] != [d["sha256"] for d in detectors]
    ):
        raise ValueError(
            f"run {cfg.run_id} was started with other detector weights; use a new --run-id"
        )
    return doc


def finish_doc(
    doc: dict,
    folder: results.RunFolder,
    state: str,
    prog,
    stages: dict,
    wall_s: float,
    plan: dict,
    governor,
) -> dict:
    table = folder.read_table("videos", columns=["video_id", "status"])
    statuses = [] if table is None else table.column("status").to_pylist()
    ids = set() if table is None else set(table.column("video_id").to_pylist())
    doc = dict(doc)
    doc["state"] = state
    doc["ended_at"] = results.now_utc().isoformat()
    doc["counts"] = dict(Counter(statuses))
    doc["n_rows"] = len(ids)
    doc["stats"] = {
        "wall_s": round(wall_s, 3),
        "n_scored": prog.done,
        "videos_per_s": round(prog.done / wall_s, 4) if wall_s > 0 else None,
        "device": plan.get("device", "cpu"),
        "nodes": plan.get("nodes", 1),
        "workers": plan["extract"][1],
        "score_workers": plan["score"][1],
        "stages": stages,
    }
    if governor is not None:
        doc["spend"] = governor.report()
    if state != "complete":
        import pyarrow.parquet as pq

        from dfray import storage

        fs, path = storage.filesystem(folder.manifest, folder.cfg)
        with fs.open_input_file(path) as f:
            all_ids = pq.read_table(f, columns=["video_id"]).column("video_id").to_pylist()
        doc["unscored"] = [v for v in all_ids if v not in ids]
    else:
        doc.pop("unscored", None)
    return doc
