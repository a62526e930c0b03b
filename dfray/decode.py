"""Decode stage: N evenly spaced RGB frames of one video with decord, or with PyAV when
decord cannot open it (decord's bundled FFmpeg has no AV1 decoder; PyAV ships a modern
FFmpeg with dav1d). Both pick the same frame indices (`frame_indices` over the container's
frame count) and give the same RGB frames for codecs both decode. When neither can decode
a video stream that PyAV can name, the message says `unsupported codec <name>`.

decord decodes frame by frame (`vr[i]`: decord's own accurate seek, which decodes on from
the current frame when the next index lies in the same GOP, the same frames as its
get_batch) into one array; a caller that decodes many videos passes a FrameBuffer and
gets the same memory back each time, not 200 MB of fresh pages per 1080p video (see
dfray.heap for why that matters).

Reads from a local path or from the bytes of an object already fetched (S3). Failures
raise DecodeError with a short, printable message (decord's own messages can contain the
raw bytes of a bad file, which must not end up in a results table).
"""

from __future__ import annotations

import io
import math
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


class FrameBuffer:
    """Memory for one video's frames, reused from video to video. The array `take` returns
    is valid until the next `take`: the caller must be done with one video's frames (and
    copy what it keeps) before it decodes the next into the same buffer."""

    def __init__(self):
        self._mem = np.empty(0, dtype=np.uint8)

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        n = math.prod(shape)
        if self._mem.size < n:
            self._mem = np.empty(n, dtype=np.uint8)
        return self._mem[:n].reshape(shape)


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


def decode_frames(source: str | bytes, n_frames: int = 32,
                  buffer: FrameBuffer | None = None) -> tuple[np.ndarray, VideoInfo]:
    """Frames (T, H, W, 3) uint8 RGB, T = min(n_frames, frame_count), and the video info.
    With `buffer`, decord's frames are written into its memory (see FrameBuffer)."""
    try:
        vr = open_video(source)
    except DecodeError as first:
        return decode_frames_pyav(source, n_frames, first)
    return _decode_decord(vr, n_frames, buffer)


def _decode_decord(vr, n_frames: int, buffer: FrameBuffer | None) -> tuple[np.ndarray, VideoInfo]:
    count = len(vr)
    if count <= 0:
        raise DecodeError("video has no frames")
    fps = float(vr.get_avg_fps() or 0.0)
    idx = frame_indices(count, n_frames)
    frames = None
    try:
        for k, i in enumerate(idx):
            frame = vr[int(i)].asnumpy()
            if frames is None:
                if frame.ndim != 3 or frame.shape[-1] != 3:
                    raise DecodeError(f"decoded a frame of shape {frame.shape}")
                shape = (len(idx), *frame.shape)
                frames = buffer.take(shape) if buffer else np.empty(shape, dtype=np.uint8)
            frames[k] = frame
    except DecodeError:
        raise
    except Exception as e:  # decord raises DECORDError / RuntimeError / StopIteration
        raise DecodeError(f"cannot decode frames: {_clean(e)}") from None
    if frames is None or frames.shape[0] == 0:
        raise DecodeError("decoded no frames")
    h, w = frames.shape[1:3]
    info = VideoInfo(int(w), int(h), fps, int(count), count / fps if fps > 0 else 0.0)
    return frames, info


def decode_frames_pyav(
    source: str | bytes, n_frames: int = 32, first: DecodeError | None = None
) -> tuple[np.ndarray, VideoInfo]:
    """decode_frames with PyAV: the same indices over the stream's frame count (counted by
    a decode pass when the container does not say), RGB through FFmpeg's swscale."""
    import av

    src = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    not_video = first or DecodeError("not a readable video container (corrupt, truncated or not a video)")
    try:
        container = av.open(src)
    except Exception:  # noqa: BLE001 - PyAV raises many error types for garbage input
        raise not_video from None
    with container:
        if not container.streams.video:
            raise not_video
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context else "unknown"
        try:
            av.codec.Codec(codec, "r")
        except Exception:  # noqa: BLE001 - no decoder for it in this FFmpeg
            raise DecodeError(f"unsupported codec {codec}") from None
        count = int(stream.frames or 0)
        try:
            if count <= 0:
                count = sum(1 for _ in container.decode(stream))
                container.seek(0)
            wanted = {int(i) for i in frame_indices(count, n_frames)}
            frames = []
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == len(wanted):
                    break
        except Exception as e:  # noqa: BLE001
            if count <= 0:
                raise DecodeError(f"unsupported codec {codec}: {_clean(e)}") from None
            raise DecodeError(f"cannot decode frames ({codec}): {_clean(e)}") from None
        if count <= 0 or not frames:
            raise DecodeError(f"unsupported codec {codec}: no frame could be decoded")
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
    out = np.stack(frames)
    h, w = out.shape[1:3]
    return out, VideoInfo(int(w), int(h), fps, count, count / fps if fps > 0 else 0.0)
