import json

import decord
import numpy as np
import pytest

from dfray.decode import DecodeError, decode_frames, frame_indices


def test_frame_indices_evenly_spaced():
    assert frame_indices(100, 5).tolist() == [0, 24, 49, 74, 99]
    assert frame_indices(3, 32).tolist() == [0, 1, 2]
    assert frame_indices(0, 32).tolist() == []


def test_decode_path_and_bytes_agree(tiny_corpus):
    meta = json.loads((tiny_corpus / "metadata.json").read_text())
    path = tiny_corpus / sorted(meta)[0]
    frames, info = decode_frames(str(path), 8)
    frames_b, info_b = decode_frames(path.read_bytes(), 8)
    assert frames.shape == (8, 360, 640, 3) and frames.dtype == np.uint8
    assert info == info_b and np.array_equal(frames, frames_b)
    vr = decord.VideoReader(str(path))
    assert info.frame_count == len(vr) and info.fps == pytest.approx(vr.get_avg_fps())
    assert info.duration_s == pytest.approx(len(vr) / vr.get_avg_fps())
    idx = frame_indices(len(vr), 8)
    assert np.array_equal(frames[-1], vr[int(idx[-1])].asnumpy())


def test_decode_errors_are_short_and_clean(tmp_path):
    with pytest.raises(DecodeError, match="not a readable video") as e:
        decode_frames(b"secret-looking bytes " * 50, 4)
    assert "secret" not in str(e.value)


def _encode(path, codec, n=24, size=(96, 64), container_opts=None, gop=None):
    """A real video from PyAV's FFmpeg: n moving-gradient frames (a keyframe every `gop`)."""
    import av

    w, h = size
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=12)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if gop:
            s.codec_context.gop_size = gop
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (np.arange(w)[None, :] * 2 + i * 5) % 256
            img[..., 1] = (np.arange(h)[:, None] * 3) % 256
            img[..., 2] = i * 9 % 256
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def test_frame_by_frame_equals_decord_batch_and_reuses_the_buffer(tmp_path, tiny_corpus):
    """decode_frames reads frame by frame (decord's seek within or across GOPs): the same
    frames as decord's get_batch; with a FrameBuffer each video lands in the same memory."""
    from dfray.decode import FrameBuffer

    path = tmp_path / "gop7.mp4"
    _encode(path, "libx264", n=60, gop=7)
    other = tiny_corpus / sorted(json.loads((tiny_corpus / "metadata.json").read_text()))[0]
    buf = FrameBuffer()
    b, _ = decode_frames(str(other), 8, buf)  # 360p: the larger video first
    assert np.array_equal(b, decode_frames(str(other), 8)[0])
    for n in (9, 32, 60):  # sparse (a seek per frame), dense (skips within a GOP), all
        vr = decord.VideoReader(str(path))
        want = vr.get_batch(list(frame_indices(len(vr), n))).asnumpy()
        a, _ = decode_frames(str(path), n, buf)
        assert a.shape == (n, 64, 96, 3) and np.array_equal(a, want)
        assert len(np.unique(a[:, 0, 0, 2])) > n // 2  # distinct frames, not one repeated
        assert np.shares_memory(a, b)


def test_pyav_matches_decord_on_h264(tmp_path):
    from dfray.decode import decode_frames_pyav

    path = tmp_path / "h264.mp4"
    _encode(path, "libx264")
    a, ia = decode_frames(str(path), 7)
    b, ib = decode_frames_pyav(str(path), 7)
    assert ia.frame_count == ib.frame_count == 24 and ia.width == ib.width == 96
    assert a.shape == b.shape == (7, 64, 96, 3)
    assert np.array_equal(a, b), f"max diff {np.abs(a.astype(int) - b).max()}"


def test_av1_decodes_through_pyav(tmp_path):
    path = tmp_path / "av1.mp4"
    _encode(path, "libsvtav1", size=(128, 64))
    with pytest.raises(decord.DECORDError):
        decord.VideoReader(str(path))  # decord's FFmpeg has no AV1 decoder
    frames, info = decode_frames(path.read_bytes(), 5)
    assert frames.shape == (5, 64, 128, 3) and info.frame_count == 24
    assert frames[0, :, :, 2].mean() < frames[-1, :, :, 2].mean()  # real, different frames


def test_no_decoder_says_unsupported_codec(tmp_path):
    """A real H.264 MP4 whose sample entry names a codec no FFmpeg knows ('avc1' -> 'zz99'):
    neither decoder can decode it, and the message says so instead of "corrupt". (With an
    FFmpeg without an AV1 decoder an AV1 file reads "unsupported codec av1" the same way.)"""
    src = tmp_path / "h264.mp4"
    _encode(src, "libx264", n=3)
    data = src.read_bytes()
    assert data.count(b"avc1") >= 1
    with pytest.raises(DecodeError, match="^unsupported codec unknown"):
        decode_frames(data.replace(b"avc1", b"zz99"), 2)
