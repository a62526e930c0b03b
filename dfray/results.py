"""The run folder (schema v1): `run.json`, `manifest.parquet`, `videos/`, `faces/`.

Rows are written by the driver only, as immutable Parquet part files: a local part is
written to a dot-file and renamed, an S3 part is one PUT, so a reader never sees half a
part. Every row written is final. A resumed run lists the `video_id` column of the parts
and skips those videos, so each video gets exactly one row; readers still de-duplicate
by video_id (first part wins) to stay correct should two drivers ever race on one run.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone

from dfray import storage
from dfray.config import StorageConfig

STATUSES = ("ok", "no_faces", "read_error", "decode_error", "timeout", "error")
FINAL = set(STATUSES)


def videos_schema(detector_names: Iterable[str]):
    import pyarrow as pa

    names = list(detector_names)
    return pa.schema(
        [
            ("video_id", pa.string()),
            ("uri", pa.string()),
            ("label", pa.int8()),
            ("score", pa.float32()),
            ("model_scores", pa.struct([(n, pa.float32()) for n in names])),
            ("status", pa.string()),
            ("error", pa.string()),
            ("n_frames", pa.int32()),
            ("n_faces", pa.int32()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("fps", pa.float32()),
            ("frame_count", pa.int32()),
            ("duration_s", pa.float32()),
            ("size_bytes", pa.int64()),
            ("etag", pa.string()),
            ("decode_s", pa.float32()),
            ("detect_s", pa.float32()),
            ("score_s", pa.float32()),
            ("attempts", pa.int16()),
            ("worker", pa.string()),
            ("scored_at", pa.timestamp("us", tz="UTC")),
            ("run_id", pa.string()),
        ]
    )


def faces_schema(detector_names: Iterable[str]):
    import pyarrow as pa

    return pa.schema(
        [
            ("video_id", pa.string()),
            ("frame_index", pa.int32()),
            ("face_index", pa.int32()),
            ("box", pa.list_(pa.float32(), 4)),
            ("det_prob", pa.float32()),
            *[(f"score_{n}", pa.float32()) for n in detector_names],
        ]
    )


COMPACTED = re.compile(r"^part-.*-c[0-9a-f]{8}-\d{4}\.parquet$")


def is_part(base: str) -> bool:
    return base.startswith("part-") and base.endswith(".parquet")


def is_compacted(base: str) -> bool:
    """A part written by compaction: visible only once a commit names it."""
    return bool(COMPACTED.match(base))


def is_commit(base: str) -> bool:
    return base.startswith("_commit-") and base.endswith(".json")


class RunFolder:
    """Paths and I/O of one run folder, local or on S3."""

    def __init__(self, out: str, run_id: str, cfg: StorageConfig):
        self.root = storage.join(out, run_id)
        self.run_id = run_id
        self.cfg = cfg

    @classmethod
    def at(cls, run_dir: str, cfg: StorageConfig | None = None) -> RunFolder:
        """The run folder at `OUT/<run_id>` given as one path or URI."""
        out, _, run_id = run_dir.rstrip("/").rpartition("/")
        return cls(out or ".", run_id, cfg or StorageConfig())

    @property
    def manifest(self) -> str:
        return storage.join(self.root, "manifest.parquet")

    @property
    def run_json(self) -> str:
        return storage.join(self.root, "run.json")

    def table_dir(self, name: str) -> str:
        return storage.join(self.root, name)

    def read_run_json(self) -> dict | None:
        if not storage.exists(self.run_json, self.cfg):
            return None
        return json.loads(storage.read_bytes(self.run_json, self.cfg))

    def write_run_json(self, doc: dict) -> None:
        data = json.dumps(doc, indent=2, sort_keys=True, default=str).encode()
        storage.write_bytes(self.run_json, data, self.cfg)

    def write_part(self, name: str, table) -> str:
        """Write one immutable part file into videos/ or faces/; returns its URI. Its
        footer carries `schema_version` and `run_id`."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        uri = storage.join(self.table_dir(name), f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet")
        buf = pa.BufferOutputStream()
        pq.write_table(self.stamp(table), buf)
        storage.write_bytes(uri, buf.getvalue().to_pybytes(), self.cfg)  # atomic, local or S3
        return uri

    def stamp(self, table):
        """`table` with the footer metadata every part carries (schema_version, run_id)."""
        from dfray import SCHEMA_VERSION

        meta = {**(table.schema.metadata or {}), b"schema_version": str(SCHEMA_VERSION).encode(),
                b"run_id": self.run_id.encode()}
        return table.replace_schema_metadata(meta)

    def listing(self, name: str) -> list[str]:
        """Basenames of every file in a table's folder (parts, commits, leftovers)."""
        import pyarrow.fs as pafs

        fs, path = storage.filesystem(self.table_dir(name), self.cfg)
        try:
            infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except FileNotFoundError:
            return []
        return [os.path.basename(i.path) for i in infos if i.type == pafs.FileType.File]

    def commits(self, name: str) -> list[dict]:
        """The compaction commits of a table, oldest first (see dfray.compaction)."""
        out = []
        for base in sorted(b for b in self.listing(name) if is_commit(b)):
            try:
                doc = json.loads(storage.read_bytes(storage.join(self.table_dir(name), base),
                                                    self.cfg))
            except storage.StorageError:
                continue  # pruned between the listing and the read: it changed nothing
            out.append({**doc, "file": base})
        return out

    def parts(self, name: str) -> list[str]:
        """Finished part files of a table, in write order (names sort by time), as
        filesystem paths. Honours compaction commits: the parts a commit replaced are left
        out and compacted parts count only once a commit names them. The parts are listed
        before the commits, so a compaction that commits in between is seen whole."""
        base_dir = storage.filesystem(self.table_dir(name), self.cfg)[1]
        listed = [b for b in self.listing(name) if is_part(b) and not is_compacted(b)]
        added: set[str] = set()
        removed: set[str] = set()
        for c in self.commits(name):
            added |= set(c["added"])
            removed |= set(c["removed"])
        names = (set(listed) | added) - removed
        return [posixpath.join(base_dir, b) for b in sorted(names)]

    def read_table(self, name: str, columns: list[str] | None = None):
        """All rows of videos/ or faces/ (None if there are none yet). A part that a
        concurrent compaction deleted after the listing makes it list again."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        fs, _ = storage.filesystem(self.root, self.cfg)
        for attempt in range(5):
            try:
                tables = [pq.read_table(p, columns=columns, filesystem=fs)
                          for p in self.parts(name)]
                break
            except FileNotFoundError:
                if attempt == 4:
                    raise
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="default")

    def done_ids(self) -> set[str]:
        """video_ids that already have a final row (reads only that column)."""
        t = self.read_table("videos", columns=["video_id"])
        return set() if t is None else set(t.column("video_id").to_pylist())


def read_manifest(folder: RunFolder, columns: list[str] | None = None):
    """The run's manifest.parquet (the one manifest reader), optionally some columns."""
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(folder.manifest, folder.cfg)
    with fs.open_input_file(path) as f:
        return pq.read_table(f, columns=columns)


def read_videos(run_dir: str, cfg: StorageConfig | None = None):
    """The videos table of a run folder, one row per video (first written wins)."""
    import pyarrow as pa

    table = RunFolder.at(run_dir, cfg).read_table("videos")
    if table is None:
        raise FileNotFoundError(f"no videos/ parts under {run_dir}")
    seen: set[str] = set()
    keep = [not (v in seen or seen.add(v)) for v in table.column("video_id").to_pylist()]
    return table if all(keep) else table.filter(pa.array(keep))


def compact(run_dir, target_rows: int = 100_000, cfg: StorageConfig | None = None,
            tables: Iterable[str] = ("videos", "faces"), on_step=None) -> dict:
    """Rewrite the small part files of a run folder's (or face cache's) tables into a few
    large ones, atomically; see dfray.compaction. `run_dir` is a RunFolder or its path."""
    from dfray.compaction import compact as _compact

    return _compact(run_dir, target_rows=target_rows, cfg=cfg, tables=tables, on_step=on_step)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
