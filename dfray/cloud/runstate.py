"""What a run folder holds, over every instance's rows: read by `submit --wait` when the job
ends and by each instance when it merges its run.json (so by both sides)."""

from __future__ import annotations

from dfray import results


def rows_and_ids(folder: results.RunFolder) -> tuple[dict, int, list[str]]:
    """(counts by status, rows, manifest video_ids without a row) over the whole run folder."""
    from collections import Counter

    table = folder.read_table("videos", columns=["video_id", "status"])
    seen: dict[str, str] = {}
    if table is not None:
        for vid, st in zip(
            table.column("video_id").to_pylist(), table.column("status").to_pylist(), strict=True
        ):
            seen.setdefault(vid, st)
    ids = results.read_manifest(folder, ["video_id"]).column("video_id").to_pylist()
    return dict(Counter(seen.values())), len(seen), [v for v in ids if v not in seen]

