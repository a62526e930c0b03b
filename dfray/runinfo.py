"""run.json: resolved config, detector weights hashes, versions, times, counts, stats."""

from __future__ import annotations

import platform
from collections import Counter
from importlib import metadata

from dfray import SCHEMA_VERSION, results
from dfray.config import ConfigError, RunConfig
from dfray.redact import redact_value

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
    detectors: list[dict] | None,
    previous: dict | None,
    started_at,
    kind: str = "score",
    extra: dict | None = None,
) -> dict:
    """The document of a run (run.json) or face cache (cache.json) as an attempt starts:
    everything earlier attempts recorded (their stats, spend, times) is kept."""
    prev = previous or {}
    if (
        detectors is not None
        and prev.get("detectors")
        and [d.get("sha256") for d in prev["detectors"]] != [d["sha256"] for d in detectors]
    ):
        raise ConfigError(
            f"run {cfg.run_id} was started with other detector weights; use a new --run-id"
        )
    # every URI recorded here loses its query string and user info (dfray.redact)
    doc = {
        **prev,
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "run_id": cfg.run_id,
        "corpus": redact_value(cfg.corpus),
        "run_dir": redact_value(folder.root),
        "config": redact_value(cfg.to_dict()),
        "versions": versions(),
        "state": "running",
        "started_at": prev.get("started_at", started_at.isoformat()),
        "attempt_started_at": started_at.isoformat(),
        "launches": prev.get("launches", 0) + 1,
        "attempts": list(prev.get("attempts") or []),
        # spend of earlier attempts, kept even if this attempt dies before its report
        "spent_usd_before": spent_before(previous),
        **redact_value(extra or {}),
    }
    if detectors is not None:
        doc["detectors"] = redact_value(detectors)
    else:
        doc.pop("detectors", None)
    return doc


def video_counts(folder: results.RunFolder) -> tuple[dict, set[str]]:
    """Counts by status over unique video ids (the first row of a video wins), and the ids."""
    table = folder.read_table("videos", columns=["video_id", "status"])
    counts: Counter = Counter()
    ids: set[str] = set()
    if table is not None:
        for vid, status in zip(table.column("video_id").to_pylist(),
                               table.column("status").to_pylist(), strict=True):
            if vid not in ids:
                ids.add(vid)
                counts[status] += 1
    return dict(counts), ids


def finish_doc(doc: dict, folder: results.RunFolder, state: str, attempt: dict | None,
               governor=None) -> dict:
    """The document as an attempt ends: its stats appended to `attempts`, `stats` the
    totals over every attempt, counts over unique video ids, the unscored list when the
    run stopped early."""
    counts, ids = video_counts(folder)
    doc = dict(doc)
    doc["state"] = state
    doc["ended_at"] = results.now_utc().isoformat()
    doc["counts"] = counts
    doc["n_rows"] = len(ids)
    if attempt is not None:
        doc["attempts"] = [*doc.get("attempts", []), attempt]
    if doc.get("attempts"):
        doc["stats"] = totals(doc["attempts"])
    if governor is not None:
        doc["spend"] = governor.report()
    if state != "complete":
        all_ids = results.read_manifest(folder, columns=["video_id"]).column("video_id")
        doc["unscored"] = [v for v in all_ids.to_pylist() if v not in ids]
    else:
        doc.pop("unscored", None)
    return doc


def totals(attempts: list[dict]) -> dict:
    """Stats over every attempt: wall time and videos summed, stage seconds summed and
    re-divided; device, nodes and layout those of the last attempt."""
    from dfray.progress import stage_table

    wall = sum(a.get("wall_s") or 0.0 for a in attempts)
    n = sum(a.get("n_scored") or 0 for a in attempts)
    stage_s: Counter = Counter()
    stage_n: Counter = Counter()
    for a in attempts:
        for name, st in (a.get("stages") or {}).items():
            stage_s[name] += st.get("total_s") or 0.0
            stage_n[name] += st.get("videos") or 0
    last = attempts[-1]
    workers = {k: v.get("workers", 1) for k, v in (last.get("stages") or {}).items()}
    return {
        **{k: v for k, v in last.items() if k not in ("wall_s", "n_scored", "stages")},
        "wall_s": round(wall, 3),
        "n_scored": n,
        "videos_per_s": round(n / wall, 4) if wall > 0 else None,
        "stages": stage_table(stage_s, stage_n, wall, workers),
        "attempts": len(attempts),
    }
