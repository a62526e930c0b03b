"""Reading a run folder's raw part files, with no deduplication (exactly-once checks)."""

from pathlib import Path

import pyarrow.parquet as pq


def raw_video_rows(run_dir) -> list[dict]:
    """Every row of every videos part file, as written (duplicates kept)."""
    rows: list[dict] = []
    for part in sorted(Path(run_dir, "videos").glob("part-*.parquet")):
        rows += pq.read_table(part).to_pylist()
    return rows


def exactly_once(run_dir) -> dict[str, dict]:
    """The rows by video id; fails if any video has more than one row in the raw parts."""
    rows = raw_video_rows(run_dir)
    ids = [r["video_id"] for r in rows]
    dupes = sorted({v for v in ids if ids.count(v) > 1})
    assert not dupes, f"videos with more than one row in the part files: {dupes}"
    return {r["video_id"]: r for r in rows}
