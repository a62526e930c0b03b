"""The driver's side of a run: which videos are left, the single writer of Parquet parts,
and the loop that consumes the pipeline while keeping its own clock.

The pipeline is iterated in a pump thread; the main thread waits on a queue with a
timeout, so progress, the budget governor and any other per-second check run whether or
not rows arrive (a stalled pipeline still gets its budget check).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from dfray import results, storage

_END = object()


TODO_GROUP = 8  # at most this many videos per row group of _todo.parquet (one pool task)
TASKS_PER_ACTOR = 4  # groups shrink so that what is left makes this many per extract actor


def todo_groups(n_todo: int, actors: int) -> list[int]:
    """Videos per task of the extract pool, in todo order: each group is what is left
    divided by TASKS_PER_ACTOR per extract actor, between 1 and TODO_GROUP (guided
    self-scheduling). One actor reads a task's group and works through its videos in
    turn, so long lists get few tasks, and the last tasks are single videos: no actor is
    left working through a big group while the others idle."""
    sizes, left = [], n_todo
    while left > 0:
        size = max(1, min(TODO_GROUP, left // max(1, TASKS_PER_ACTOR * actors)))
        sizes.append(size)
        left -= size
    return sizes


def write_todo(folder: results.RunFolder, done: set[str], limit: int | None,
               actors: int = 1):
    """Write the manifest rows without a final row (of the first `limit`) to
    _todo.parquet, largest file first, one row group per task (`todo_groups` for `actors`
    extract actors); (uri, n_todo, n_total).

    Largest first (longest processing time first): a video's cost grows with its frames'
    size and number, and so, roughly, does its file; the single-video tasks at the end of
    the list are then the cheap ones, and the last video, which one actor works on while
    the others have nothing left, is short."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = results.read_manifest(folder)
    if limit is not None:
        t = t.slice(0, max(0, limit))
    n_total = t.num_rows
    t = t.filter(pc.invert(pc.is_in(t["video_id"], value_set=pa.array(list(done), pa.string()))))
    if "size_bytes" in t.column_names:
        t = t.take(pc.sort_indices(t, sort_keys=[("size_bytes", "descending")]))  # nulls last
    todo_uri = storage.join(folder.root, "_todo.parquet")
    tfs, tpath = storage.filesystem(todo_uri, folder.cfg)
    with tfs.open_output_stream(tpath) as sink, pq.ParquetWriter(sink, t.schema) as w:
        start = 0
        for size in todo_groups(t.num_rows, actors):
            w.write_table(t.slice(start, size), row_group_size=size)
            start += size
    return todo_uri, t.num_rows, n_total


def delete_quietly(uri: str, cfg) -> None:
    fs, path = storage.filesystem(uri, cfg)
    try:
        fs.delete_file(path)
    except OSError:
        pass


class RowWriter:
    """Buffers finished rows in the driver and writes them as immutable parts: faces first,
    then the videos part that marks those videos done. A flush happens every `flush_rows`
    rows, every `flush_bytes` of buffered faces, and at least every `flush_s` seconds."""

    def __init__(self, folder: results.RunFolder, vschema, fschema, face_rows: Callable | None,
                 flush_rows: int, flush_bytes: int = 64 * 2**20, flush_s: float = 30.0):
        self.folder = folder
        self.vschema = vschema
        self.fschema = fschema
        self.face_rows = face_rows
        self.flush_rows = flush_rows
        self.flush_bytes = flush_bytes
        self.flush_s = flush_s
        self.rows: list[dict] = []
        self.faces: list[dict] = []
        self.nbytes = 0
        self.written = 0
        self.last = time.monotonic()

    def add(self, rows: list[dict]) -> None:
        for r in rows:
            self.rows.append({k: r.get(k) for k in self.vschema.names})
            if self.face_rows is not None and r.get("status") == "ok":
                faces = self.face_rows(r)
                self.faces += faces
                self.nbytes += sum(len(f.get("crop") or b"") for f in faces)
            if len(self.rows) >= self.flush_rows or self.nbytes >= self.flush_bytes:
                self.flush()
        if self.rows and time.monotonic() - self.last > self.flush_s:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        self.last = time.monotonic()
        if not self.rows:
            return
        if self.faces:
            self.folder.write_part("faces", pa.Table.from_pylist(self.faces, schema=self.fschema))
        self.folder.write_part("videos", pa.Table.from_pylist(self.rows, schema=self.vschema))
        self.written += len(self.rows)
        self.rows, self.faces, self.nbytes = [], [], 0


def drive(ds, on_rows: Callable[[list[dict]], bool], on_tick: Callable[[], bool],
          tick_s: float = 1.0) -> bool:
    """Consume `ds` (a Ray Dataset) in a pump thread. `on_rows(rows)` gets each batch of
    finished rows and `on_tick()` runs at least every `tick_s`; either returns True to stop
    early. Returns True if stopped early, False when the pipeline finished."""
    q: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            # rows are small: without prefetch the driver gets each batch as soon as it is
            # ready, so progress, parts and budget checks never lag a batch behind
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None,
                                         prefetch_batches=0):
                if not put(batch):
                    return  # closing the iterator shuts the executor down
            put(_END)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            put(e)

    thread = threading.Thread(target=pump, name="dfray-pump", daemon=True)
    thread.start()
    next_tick = time.monotonic() + tick_s
    try:
        while True:
            try:
                item = q.get(timeout=max(0.05, next_tick - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _END:
                return False
            if isinstance(item, BaseException):
                raise item
            if item is not None and on_rows(item.to_pylist()):
                return True
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + tick_s
                if on_tick():
                    return True
    finally:
        stop.set()
