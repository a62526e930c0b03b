"""Exports of a run folder: DFDC's submission.csv, and the videos table as CSV, Parquet
or JSON lines.

Kaggle (DFDC) format: a header `filename,label`, then one line per video of the run's
manifest in manifest order, `label` = P(fake) (the run's ensemble score). Videos without a
score (failed, no faces, or not reached by a stopped run) get the fill value, 0.5 by
default: the DFDC prior, which costs log(2) in log loss and never more.
"""

from __future__ import annotations

import csv
import io
import json

from dfray import results, storage
from dfray.config import StorageConfig

FORMATS = ("kaggle", "csv", "parquet", "jsonl")
DEFAULT_FILL = 0.5


def kaggle(run_dir: str, cfg: StorageConfig | None = None,
           fill: float = DEFAULT_FILL) -> tuple[bytes, int, int]:
    """submission.csv's bytes, the number of lines and how many were filled."""
    folder = results.RunFolder.at(run_dir, cfg)
    ids = results.read_manifest(folder, ["video_id"]).column("video_id").to_pylist()
    scores: dict[str, float] = {}
    if folder.parts("videos"):
        t = results.read_videos(run_dir, cfg)
        for vid, s in zip(t.column("video_id").to_pylist(), t.column("score").to_pylist(),
                          strict=True):
            if s is not None:
                scores[vid] = float(s)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["filename", "label"])
    filled = 0
    for vid in ids:
        filled += vid not in scores
        w.writerow([vid, f"{scores.get(vid, fill):.6f}"])
    return out.getvalue().encode(), len(ids), filled


def flat_videos(run_dir: str, cfg: StorageConfig | None = None):
    """The videos table with `model_scores` flattened to `model_scores.<detector>`."""
    return results.read_videos(run_dir, cfg).flatten()


def table_bytes(run_dir: str, fmt: str, cfg: StorageConfig | None = None) -> tuple[bytes, int]:
    """The videos table in `fmt` (csv, parquet, jsonl) and its row count."""
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        t = results.read_videos(run_dir, cfg)
        buf = pa.BufferOutputStream()
        pq.write_table(t, buf)
        return buf.getvalue().to_pybytes(), t.num_rows
    if fmt == "csv":
        import pyarrow.csv as pacsv

        t = flat_videos(run_dir, cfg)
        buf = pa.BufferOutputStream()
        pacsv.write_csv(t, buf)
        return buf.getvalue().to_pybytes(), t.num_rows
    if fmt == "jsonl":
        t = results.read_videos(run_dir, cfg)
        lines = [json.dumps(r, default=_json_default) for r in t.to_pylist()]
        return ("\n".join(lines) + ("\n" if lines else "")).encode(), t.num_rows
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _json_default(v):
    return v.isoformat() if hasattr(v, "isoformat") else str(v)


def export(run_dir: str, fmt: str, out: str | None, cfg: StorageConfig | None = None,
           fill: float = DEFAULT_FILL) -> dict:
    """Write the export to `out` (a path or s3:// URI; None: return the bytes only).
    Returns {"data", "rows", "filled"}."""
    cfg = cfg or StorageConfig()
    if fmt == "kaggle":
        data, rows, filled = kaggle(run_dir, cfg, fill)
    else:
        (data, rows), filled = table_bytes(run_dir, fmt, cfg), 0
    if out is not None:
        storage.write_bytes(out, data, cfg)
    return {"data": data, "rows": rows, "filled": filled}
