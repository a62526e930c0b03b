"""Compaction: the many small part files a run leaves in videos/ and faces/ rewritten into
a few large ones, with an atomic commit.

Protocol (one compaction at a time per folder; the run's driver runs it as its last step):

1. Clean up after an earlier compaction that stopped part-way: delete the parts its commit
   replaced that are still there, and compacted parts that no commit names (written by a
   compaction that died before committing; readers never saw them).
2. Write the new parts, named `part-<stamp>-c<token>-<NNNN>.parquet`. Readers ignore a
   compacted part until a commit names it, so while they are written readers see exactly
   the old parts.
3. Commit: write `<table>/_commit-<stamp>-<token>.json` naming the new parts (`added`) and
   the parts they replace (`removed`), and `dropped_duplicates`: the video_id of every
   duplicate row this and the earlier compactions of the table dropped (a writer bug
   would show there, not vanish: tests/parts.py counts them), in one atomic write (a rename locally, one PUT on
   S3). From then on readers (RunFolder.parts) see the new parts instead of the old.
4. Delete the replaced parts, then prune commits whose files are all gone (they no longer
   change what a reader sees).

A crash anywhere leaves a folder whose readers see every video exactly once: before step 3
the old parts, after it the new ones. Readers list the parts before the commits, so a
commit landing in between is seen whole, and a part deleted under a reader makes it list
again (RunFolder.read_table). Tools that glob the folder directly (DuckDB, pandas) see the
final layout once the run has ended.

What readers see does not change: videos keep their first row (first part wins), faces
keep the row group in which a video first appears (the face-cache reader's rule), and each
video's faces stay in one row group — input row groups are merged whole, never split —
so the face cache can still be read one row group per task. Every part carries the footer
metadata `schema_version` and `run_id`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable

from dfray import storage
from dfray.config import StorageConfig
from dfray.results import RunFolder, is_compacted, now_utc

ROW_GROUP_BYTES = 64 * 2**20  # a faces row group of PNG crops stays about this small
FILE_BYTES = 512 * 2**20  # and a compacted faces file about this


def compact(run_dir, target_rows: int = 100_000, cfg: StorageConfig | None = None,
            tables: Iterable[str] = ("videos", "faces"),
            on_step: Callable[[str, str], None] | None = None) -> dict:
    """Compact the tables of a run folder or face cache. Returns, per table, the number of
    parts before and after. `on_step(table, step)` is called after each step ("written",
    "committed", "deleted"), which is where a test injects a crash."""
    if target_rows < 1:
        raise ValueError(f"target_rows must be >= 1, got {target_rows}")
    folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder.at(str(run_dir), cfg)
    return {name: _compact_table(folder, name, target_rows, on_step) for name in tables}


def _compact_table(folder: RunFolder, name: str, target_rows: int, on_step) -> dict:
    import pyarrow.parquet as pq

    step = on_step or (lambda table, s: None)
    cleanup(folder, name)
    parts = folder.parts(name)
    fs, _ = storage.filesystem(folder.root, folder.cfg)
    rows = []
    for p in parts:
        with fs.open_input_file(p) as f:
            rows.append(pq.ParquetFile(f).metadata.num_rows)
    if len(parts) <= max(1, -(-sum(rows) // target_rows)):  # no more parts than needed
        return {"parts_before": len(parts), "parts_after": len(parts)}
    token = uuid.uuid4().hex[:8]
    last_stamp = _stamp(parts[-1])
    added: list[str] = []

    def new_uri() -> str:
        base = f"part-{last_stamp}-c{token}-{len(added):04d}.parquet"
        added.append(base)
        return storage.join(folder.table_dir(name), base)

    write = _write_faces if name == "faces" else _write_rows
    dropped = write(folder, fs, parts, target_rows, new_uri)
    step(name, "written")
    removed = [p.rsplit("/", 1)[-1] for p in parts]
    earlier = folder.commits(name)
    dropped = (earlier[-1].get("dropped_duplicates", []) if earlier else []) + dropped
    doc = {"added": added, "removed": removed, "run_id": folder.run_id,
           "committed_at": now_utc().isoformat(), "dropped_duplicates": dropped}
    commit = storage.join(folder.table_dir(name), f"_commit-{_now_stamp()}-{token}.json")
    storage.write_bytes(commit, json.dumps(doc, indent=1).encode(), folder.cfg)
    step(name, "committed")
    cleanup(folder, name)
    step(name, "deleted")
    return {"parts_before": len(parts), "parts_after": len(folder.parts(name))}


def cleanup(folder: RunFolder, name: str) -> None:
    """Finish what earlier compactions left: replaced parts deleted, uncommitted compacted
    parts deleted, commits that no longer change anything pruned."""
    listed = set(folder.listing(name))
    commits = folder.commits(name)
    added = {b for c in commits for b in c["added"]}
    removed = {b for c in commits for b in c["removed"]}
    doomed = (listed & removed) | {b for b in listed if is_compacted(b) and b not in added}
    for base in sorted(doomed):
        _delete(folder, name, base)
    listed -= doomed
    for c in commits[:-1]:  # the newest commit stays: it names the parts in use
        if not (set(c["added"]) | set(c["removed"])) & listed:
            _delete(folder, name, c["file"])


def _delete(folder: RunFolder, name: str, base: str) -> None:
    fs, path = storage.filesystem(storage.join(folder.table_dir(name), base), folder.cfg)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def _stamp(path: str) -> str:
    return path.rsplit("/", 1)[-1].split("-")[1]


def _now_stamp() -> str:
    return now_utc().strftime("%Y%m%dT%H%M%S%f")


def _put(folder: RunFolder, uri: str, batches: list, schema) -> None:
    """One compacted part: `batches` (tables) each written as one row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    schema = folder.stamp(schema.empty_table()).schema
    with pq.ParquetWriter(buf, schema) as w:
        for t in batches:
            w.write_table(t.replace_schema_metadata(schema.metadata), row_group_size=len(t))
    storage.write_bytes(uri, buf.getvalue().to_pybytes(), folder.cfg)


def _write_rows(folder, fs, parts, target_rows, new_uri) -> list[str]:
    """videos/: one row per video (the first written), target_rows rows per part. Returns
    the video_id of each row dropped as a duplicate."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    seen: set[str] = set()
    dropped: list[str] = []
    pending: list = []
    n = written = 0
    schema = None
    for p in parts:
        with fs.open_input_file(p) as f:
            t = pq.read_table(f)
        schema = schema or t.schema.remove_metadata()
        ids = t.column("video_id").to_pylist()
        keep = [not (v in seen or seen.add(v)) for v in ids]
        dropped += [v for v, k in zip(ids, keep, strict=True) if not k]
        t = t if all(keep) else t.filter(pa.array(keep))
        pending.append(t.cast(schema) if t.schema != schema else t)
        n += len(t)
        while n >= target_rows:
            whole = pa.concat_tables(pending)
            _put(folder, new_uri(), [whole.slice(0, target_rows)], schema)
            written += 1
            rest = whole.slice(target_rows)
            pending, n = [rest], len(rest)
    if n or not written:  # the rest; or one empty part that keeps the table's schema
        _put(folder, new_uri(), [pa.concat_tables(pending)], schema)
    return dropped


def _write_faces(folder, fs, parts, target_rows, new_uri) -> list[str]:
    """faces/: input row groups merged whole (a video's faces never split across row
    groups), a video kept from the row group it first appears in. Returns the video_id
    of each row group whose faces of that video were dropped as a duplicate."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    seen: set[str] = set()
    dropped: list[str] = []
    groups: list = []  # finished row groups of the file being built
    group: list = []  # input row groups of the row group being built
    schema = None

    def close_group() -> None:
        if group:
            groups.append(pa.concat_tables(group))
            group.clear()

    def close_file() -> None:
        close_group()
        if groups:
            _put(folder, new_uri(), groups, schema)
            groups.clear()

    for p in parts:
        with fs.open_input_file(p) as f:
            pf = pq.ParquetFile(f)
            groups_in = [pf.read_row_group(i) for i in range(pf.num_row_groups)]
        for t in groups_in:
            schema = schema or t.schema.remove_metadata()
            ids = set(t.column("video_id").to_pylist())
            dup = ids & seen
            seen |= ids
            dropped += sorted(dup)
            if dup:
                t = t.filter(pc.invert(pc.is_in(t.column("video_id"), pa.array(sorted(dup)))))
            if not len(t):
                continue
            t = t.cast(schema) if t.schema != schema else t
            if group and (sum(len(g) for g in group) + len(t) > target_rows
                          or sum(g.nbytes for g in group) + t.nbytes > ROW_GROUP_BYTES):
                close_group()
            group.append(t)
            file_rows = sum(len(g) for g in groups) + sum(len(g) for g in group)
            file_bytes = sum(g.nbytes for g in groups) + sum(g.nbytes for g in group)
            if file_rows >= target_rows or file_bytes >= FILE_BYTES:
                close_file()
    close_file()
    if schema is None:  # every part empty: one empty part keeps the table's schema
        with fs.open_input_file(parts[0]) as f:
            first = pq.read_table(f)
        _put(folder, new_uri(), [first.slice(0, 0)], first.schema.remove_metadata())
    return dropped
