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
