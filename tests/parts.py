"""Exactly-once on the RAW part files of a run folder (no dedup, unlike read_videos)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def raw_video_ids(run_dir: str | Path) -> Counter:
    """How often each video_id appears across every Parquet part under run_dir/videos/."""
    import pyarrow.parquet as pq

    counts: Counter = Counter()
    for part in sorted(Path(run_dir, "videos").rglob("*.parquet")):
        counts.update(pq.read_table(part, columns=["video_id"]).column("video_id").to_pylist())
    return counts


def assert_exactly_once(run_dir: str | Path, expected: set[str] | None = None) -> Counter:
    """Each video_id appears exactly once in the raw parts (and, if given, the set is exactly
    `expected`). Returns the counts."""
    counts = raw_video_ids(run_dir)
    dupes = {v: n for v, n in counts.items() if n != 1}
    assert not dupes, f"video ids not exactly once in raw parts: {dupes}"
    if expected is not None:
        assert set(counts) == set(expected), (
            f"missing {sorted(set(expected) - set(counts))}, extra {sorted(set(counts) - set(expected))}")
    return counts
