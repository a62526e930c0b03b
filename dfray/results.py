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
        """Write one immutable part file into videos/ or faces/; returns its URI."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        uri = storage.join(self.table_dir(name), f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet")
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        storage.write_bytes(uri, buf.getvalue().to_pybytes(), self.cfg)  # atomic, local or S3
        return uri

    def parts(self, name: str) -> list[str]:
        """Finished part files of a table, in write order (names sort by time)."""
        import pyarrow.fs as pafs

        fs, path = storage.filesystem(self.table_dir(name), self.cfg)
        try:
            infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except FileNotFoundError:
            return []
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File
            and os.path.basename(i.path).startswith("part-")
            and i.path.endswith(".parquet")
        )

    def read_table(self, name: str, columns: list[str] | None = None):
        """All rows of videos/ or faces/ (None if there are none yet)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        fs, _ = storage.filesystem(self.root, self.cfg)
        tables = [pq.read_table(p, columns=columns, filesystem=fs) for p in self.parts(name)]
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


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
