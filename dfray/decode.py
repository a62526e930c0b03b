"""Decode stage: N evenly spaced RGB frames of one video with decord.

Reads from a local path or from the bytes of an object already fetched (S3). Failures
raise DecodeError with a short, printable message (decord's own messages can contain the
raw bytes of a bad file, which must not end up in a results table).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np


class DecodeError(RuntimeError):
    """The video could not be opened or its frames could not be decoded."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float


def frame_indices(frame_count: int, n: int) -> np.ndarray:
    """n indices evenly spaced over [0, frame_count), like the DFDC 1st-place reader."""
    if frame_count <= 0:
        return np.zeros(0, dtype=np.int64)
    n = min(n, frame_count)
    return np.linspace(0, frame_count - 1, n, endpoint=True, dtype=np.int64)


def _clean(msg: str) -> str:
    """decord errors may embed file bytes: keep the first printable line, bounded."""
    first = str(msg).splitlines()[0] if str(msg) else "unknown error"
    printable = "".join(c if c.isprintable() else "?" for c in first)
    return printable[:200]


def open_video(source: str | bytes):
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # its messages echo the file's bytes
    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        return decord.VideoReader(src, ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises DECORDError / RuntimeError
        raise DecodeError(f"not a readable video container (corrupt, truncated or not a video): {_clean(e)}") from None


def decode_frames(source: str | bytes, n_frames: int = 32) -> tuple[np.ndarray, VideoInfo]:
    """Frames (T, H, W, 3) uint8 RGB, T = min(n_frames, frame_count), and the video info."""
    vr = open_video(source)
    count = len(vr)
    if count <= 0:
        raise DecodeError("video has no frames")
    fps = float(vr.get_avg_fps() or 0.0)
    idx = frame_indices(count, n_frames)
    try:
        frames = vr.get_batch(list(idx)).asnumpy()
    except Exception as e:
        raise DecodeError(f"cannot decode frames: {_clean(e)}") from None
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise DecodeError(f"decoded an empty batch of frames (shape {frames.shape})")
    h, w = frames.shape[1:3]
    info = VideoInfo(int(w), int(h), fps, int(count), count / fps if fps > 0 else 0.0)
    return frames, info
