"""Exactly-once on the part files of a run folder, rows NOT de-duplicated (unlike
read_videos).

A completed run compacts its parts (dfray.compaction), and a compaction keeps the first
row of each video. So that a duplicate the writer made still fails here afterwards, the
check counts the rows of the part files a reader sees under the `_commit` protocol
(RunFolder.parts: not the parts a commit replaced, nor the ones a crashed compaction left
uncommitted) plus every row a compaction dropped as a duplicate (its commit's
`dropped_duplicates`, which the newest commit carries for all earlier ones)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def raw_video_ids(run_dir: str | Path) -> Counter:
    """How often each video_id was written to run_dir/videos/, as the part files and the
    compaction commits tell."""
    import pyarrow.parquet as pq

    from dfray.results import RunFolder

    folder = RunFolder.at(str(run_dir))
    counts: Counter = Counter()
    for part in folder.parts("videos"):
        counts.update(pq.read_table(part, columns=["video_id"]).column("video_id").to_pylist())
    for commit in folder.commits("videos")[-1:]:
        counts.update(commit.get("dropped_duplicates", []))
    return counts


def assert_exactly_once(run_dir: str | Path, expected: set[str] | None = None) -> Counter:
    """Each video_id was written exactly once (and, if given, the set is exactly
    `expected`). Returns the counts."""
    counts = raw_video_ids(run_dir)
    dupes = {v: n for v, n in counts.items() if n != 1}
    assert not dupes, f"video ids not exactly once in raw parts: {dupes}"
    if expected is not None:
        assert set(counts) == set(expected), (
            f"missing {sorted(set(expected) - set(counts))}, extra {sorted(set(counts) - set(expected))}")
    return counts
