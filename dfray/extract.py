"""Extract stage: one video in, its faces out (read + decode + detect + crop).

Decode and face cropping happen in the same process so full-resolution frames never
leave it; only uint8 crops (and a few numbers) move on. Every failure becomes a status
and a message on the row. The stage does not know where it runs: the runner passes an
`on_start(video_id) -> attempt` callback (a durable attempt counter) so a video that
keeps killing its worker is written as `error` after `max_attempts`.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Callable

import numpy as np

from dfray import storage
from dfray.config import DecodeConfig, FaceConfig, StorageConfig
from dfray.decode import DecodeError, FrameBuffer, decode_frames, frame_indices
from dfray.faces import pack_crops
from dfray.stage import Resources

# Per-face arrays of an extracted video, packed as bytes: frame indices (int32), boxes
# (float32 x1 y1 x2 y2), MTCNN probabilities (float32), the margin crops at native
# resolution (uint8 pixels concatenated) and their heights/widths (int32); see
# dfray.faces.pack_crops.
FACE_COLUMNS = ("face_frame_index", "face_boxes", "face_probs", "face_crops", "face_shapes")


# Columns of the videos table known once a video is extracted (scores come later).
EXTRACT_COLUMNS = (
    "video_id",
    "uri",
    "label",
    "size_bytes",
    "etag",
    "status",
    "error",
    "n_frames",
    "n_faces",
    "width",
    "height",
    "fps",
    "frame_count",
    "duration_s",
    "decode_s",
    "detect_s",
    "attempts",
    "worker",
)


def extract_schema():
    """Rows leaving the extract stage: those videos-table columns and the packed faces."""
    import pyarrow as pa

    from dfray.results import videos_schema

    video = videos_schema([])
    return pa.schema(
        [video.field(c) for c in EXTRACT_COLUMNS]
        + [pa.field(c, pa.large_binary() if c == "face_crops" else pa.binary())
           for c in FACE_COLUMNS]
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class VideoExtractor:
    """Holds a FaceExtractor (MTCNN); `__call__(row)` returns the extracted row: status
    `extracted` with the packed faces, or a final status (read_error, decode_error,
    no_faces, timeout, error) with its message."""

    @staticmethod
    def resources(on_gpu: bool) -> Resources:
        """One actor: one core (decode and MTCNN on one torch thread; a 1080p video's 32
        frames are ~200 MB of RGB), plus a fifth of a GPU for MTCNN on GPU nodes."""
        return Resources(cpus=1.0, gpus=0.2 if on_gpu else 0.0, memory_mb=1500)

    def __init__(
        self,
        faces: FaceConfig,
        decode: DecodeConfig,
        store: StorageConfig,
        device: str = "cpu",
        timeout_s: float = 300.0,
        max_attempts: int = 3,
        on_start: Callable[[str], int] | None = None,
    ):
        from dfray.faces import FaceExtractor

        self.faces = FaceExtractor(faces, device)
        self._worker: _Worker | None = None
        self.decode_cfg = decode
        self.store = store
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.on_start = on_start

    def __call__(self, row: dict) -> dict:
        out = self._base(row)
        attempt = self.on_start(row["video_id"]) if self.on_start else 1
        out["attempts"] = attempt
        if attempt > self.max_attempts:
            out["status"] = "error"
            out["error"] = (
                f"video crashed its worker {attempt - 1} times (limit {self.max_attempts}); "
                "not retried"
            )
            return out
        # Videos run one at a time on a daemon thread that outlives them (the same thread
        # keeps the same malloc arena, so dfray.heap's reuse of freed memory works). A
        # video stuck in a read that never returns (a FIFO, a hung mount) cannot be
        # killed: its thread is abandoned and the next video gets a new one; as a daemon
        # it never keeps the process from exiting. Each thread owns the frame memory its
        # videos reuse, so an abandoned one keeps its own.
        if self._worker is None:
            self._worker = _Worker()
        finished, box = self._worker.run(lambda buf: self._process(row, out, buf),
                                          self.timeout_s)
        if finished:
            if "error" in box:
                raise box["error"]
            return box["row"]
        self._worker = None
        out = self._base(row)
        out.update(
            attempts=attempt,
            status="timeout",
            error=f"no result within the per-video limit of {self.timeout_s:g} s",
        )
        return out

    def _base(self, row: dict) -> dict:
        out = {k: row.get(k) for k in ("video_id", "uri", "label", "size_bytes", "etag")}
        out.update(status=None, error=None, n_frames=0, n_faces=0, worker=worker_name())
        return out

    def _process(self, row: dict, out: dict, buffer: FrameBuffer) -> dict:
        uri = row["uri"]
        t0 = time.perf_counter()
        try:
            if storage.is_s3(uri):
                source = storage.read_bytes(uri, self.store)
            else:
                from dfray.corpus import local_path

                with open(local_path(uri), "rb") as f:
                    source = f.read()
        except OSError as e:
            return {**out, "status": "read_error", "error": _msg(e)}
        if len(source) == 0:
            return {**out, "status": "read_error", "error": "empty file (0 bytes)"}
        try:
            frames, info = decode_frames(source, self.decode_cfg.n_frames, buffer)
        except DecodeError as e:
            return {
                **out,
                "status": "decode_error",
                "error": _msg(e),
                "decode_s": time.perf_counter() - t0,
            }
        out.update(
            n_frames=int(frames.shape[0]),
            width=info.width,
            height=info.height,
            fps=info.fps,
            frame_count=info.frame_count,
            duration_s=info.duration_s,
            decode_s=time.perf_counter() - t0,
        )
        t1 = time.perf_counter()
        try:
            idx = frame_indices(info.frame_count, self.decode_cfg.n_frames)[: frames.shape[0]]
            faces = self.faces.extract(frames, idx)
        except Exception as e:  # a model failure on one video must not end the run
            return {**out, "status": "error", "error": f"face extraction failed: {_msg(e)}"}
        del frames
        out["detect_s"] = time.perf_counter() - t1
        out["n_faces"] = len(faces)
        if len(faces) == 0:
            out["status"] = "no_faces"
            out["error"] = f"no face found in {out['n_frames']} sampled frames"
            return out
        out["face_frame_index"] = faces.frame_index.astype(np.int32).tobytes()
        out["face_boxes"] = faces.boxes.astype(np.float32).tobytes()
        out["face_probs"] = faces.probs.astype(np.float32).tobytes()
        out["face_crops"], out["face_shapes"] = pack_crops(faces.crops)
        out["status"] = "extracted"
        return out


class _Worker:
    """A daemon thread that runs one function at a time for its caller, handing each the
    thread's FrameBuffer (frame memory reused from video to video)."""

    def __init__(self):
        self._buffer = FrameBuffer()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="dfray-extract", daemon=True).start()

    def _loop(self) -> None:
        while True:
            fn, box, done = self._jobs.get()
            try:
                box["row"] = fn(self._buffer)
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller
                box["error"] = e
            finally:
                done.set()

    def run(self, fn: Callable[[FrameBuffer], dict], timeout_s: float) -> tuple[bool, dict]:
        """(whether fn finished within timeout_s, {"row": its result} or {"error": ...})."""
        box: dict = {}
        done = threading.Event()
        self._jobs.put((fn, box, done))
        return done.wait(timeout_s), box


def _msg(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:500]
