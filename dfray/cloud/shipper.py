"""The in-container shipper: a thread that copies each finished Parquet part of the local
scratch run folder to the S3 run folder (faces before videos, one PUT per part, `uri`/`etag`
rewritten to the S3 object's and `worker` prefixed with the SageMaker host). On SIGTERM the
entry point calls `sweep()` once more, so rows finished before MaxRuntime survive it."""

from __future__ import annotations

import logging
import os
import signal
import threading

from dfray import results

log = logging.getLogger(__name__)

SHIP_INTERVAL_S = 15.0
SEED_PART = "part-00000000T000000000000-seed.parquet"  # sorts first; never shipped


class Shipper:
    """Copies finished parts of the local scratch run folder to the S3 run folder."""

    def __init__(
        self, local: results.RunFolder, remote: results.RunFolder, rows: dict[str, dict], host: str
    ):
        self.local, self.remote, self.rows, self.host = local, remote, rows, host
        self.shipped: set[str] = set()
        self.n_rows = 0
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> int:
        """Ship every part not shipped yet, faces before videos; returns rows shipped."""
        import pyarrow.parquet as pq

        with self.lock:
            # videos listed first: the runner writes a part's faces before its videos, so
            # every videos part seen here has its faces part in the second listing
            videos = [p for p in self.local.parts("videos") if p not in self.shipped]
            faces = [p for p in self.local.parts("faces") if p not in self.shipped]
            n = 0
            for p in faces:
                if not p.endswith(SEED_PART):
                    self.remote.write_part("faces", pq.read_table(p))
                self.shipped.add(p)
            for p in videos:
                if not p.endswith(SEED_PART):
                    t = self._rewrite(pq.read_table(p))
                    self.remote.write_part("videos", t)
                    n += t.num_rows
                self.shipped.add(p)
            self.n_rows += n
            return n

    def _rewrite(self, t):
        import pyarrow as pa

        ids = t.column("video_id").to_pylist()
        uris = [self.rows[v]["uri"] if v in self.rows else None for v in ids]
        etags = [self.rows[v]["etag"] if v in self.rows else None for v in ids]
        workers = [f"{self.host}/{w}" for w in t.column("worker").to_pylist()]
        for name, values in (("uri", uris), ("etag", etags), ("worker", workers)):
            i = t.schema.get_field_index(name)
            t = t.set_column(i, t.schema.field(i), pa.array(values, pa.string()))
        return t

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception as e:  # a failed upload is retried on the next sweep
                log.warning("shipping parts to %s failed (retrying): %s", self.remote.root, e)

    def start(self, interval: float) -> None:
        self._thread = threading.Thread(
            target=self._loop, args=(interval,), daemon=True, name="dfray-shipper"
        )
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.sweep()



def ship_on_sigterm(shipper: Shipper, say) -> object:
    """Install a SIGTERM handler (MaxRuntime or StopProcessingJob: SageMaker sends SIGTERM,
    then SIGKILL after 2 minutes) that ships what is on disk and exits 128+15; returns the
    previous handler, to restore with signal.signal(signal.SIGTERM, previous)."""

    def on_term(signum, frame):
        say(f"[{shipper.host}] signal {signum}: shipping finished rows and exiting")
        try:
            shipper.sweep()
        finally:
            os._exit(128 + signum)

    return signal.signal(signal.SIGTERM, on_term)
