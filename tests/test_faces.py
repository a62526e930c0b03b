import json

import numpy as np
import pytest

from dfray.config import FaceConfig
from dfray.decode import decode_frames, frame_indices
from dfray.faces import FaceExtractor, crop_box, fit_crops, isotropic_resize, put_to_center


def test_isotropic_resize_and_pad():
    img = np.full((50, 100, 3), 200, np.uint8)
    r = isotropic_resize(img, 64)
    assert r.shape == (32, 64, 3)
    sq = put_to_center(r, 64)
    assert sq.shape == (64, 64, 3)
    assert sq[:16].sum() == 0 and sq[48:].sum() == 0 and (sq[16:48] == 200).all()


def test_crop_margin_is_a_third_each_side():
    frame = np.arange(300 * 300 * 3, dtype=np.uint32).reshape(300, 300, 3).astype(np.uint8)
    c = crop_box(frame, np.array([90, 90, 150, 180]), 1 / 3)
    assert c.shape == (90 + 2 * 30, 60 + 2 * 20, 3)
    edge = crop_box(frame, np.array([0, 0, 30, 30]), 1 / 3)  # clipped at the frame border
    assert edge.shape == (40, 40, 3)


@pytest.fixture(scope="module")
def extractor():
    return FaceExtractor(FaceConfig(), "cpu")


def test_mtcnn_finds_faces_in_generated_clips(tiny_corpus, extractor):
    meta = json.loads((tiny_corpus / "metadata.json").read_text())
    for name in sorted(meta):
        frames, info = decode_frames(str(tiny_corpus / name), 6)
        idx = frame_indices(info.frame_count, 6)
        faces = extractor.extract(frames, idx)
        crops = {s: fit_crops(faces.crops, s) for s in (64, 256)}
        frames_with_face = set(faces.frame_index.tolist())
        assert len(frames_with_face) >= 5, (name, meta[name], faces.frame_index)
        assert crops[256].shape == (len(faces), 256, 256, 3)
        assert crops[64].dtype == np.uint8
        assert (faces.probs > 0.9).all()
        b = faces.boxes
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert (b[:, 2] <= info.width + 5).all() and (b[:, 3] <= info.height + 5).all()
        # the crop holds the face near its centre, padded with zeros at most on two sides
        assert crops[256][0, 100:156, 100:156].mean() > 20
