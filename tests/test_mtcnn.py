"""dfray.mtcnn's speed-ups give stock facenet-pytorch's boxes and probabilities, bit for bit."""

import json

import numpy as np
import pytest

from dfray.config import FaceConfig
from dfray.decode import decode_frames


def _mtcnn():
    from facenet_pytorch import MTCNN

    cfg = FaceConfig()
    return MTCNN(margin=0, thresholds=list(cfg.thresholds), min_face_size=cfg.min_face_size,
                 keep_all=True, post_process=False, device="cpu")


def _real_faces() -> list[np.ndarray]:
    from pathlib import Path

    import matplotlib
    from PIL import Image
    from skimage import data

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return [data.astronaut(), np.stack([data.camera()] * 3, axis=-1),
            np.asarray(Image.open(hopper).convert("RGB"))]


@pytest.fixture(scope="module")
def hd_frames(tmp_path_factory) -> np.ndarray:
    """8 frames of a generated 1080p clip (many pyramid levels, many R-net candidates)."""
    from dfray.samples import generate_corpus

    root = tmp_path_factory.mktemp("hd")
    meta = generate_corpus(root, n_videos=1, seed=11, min_height=1080, max_height=1080,
                           min_seconds=2.0, max_seconds=2.0)
    frames, _ = decode_frames(str(root / next(iter(meta))), 8)
    return frames


def test_speed_up_replaces_every_pool_and_keeps_every_box(tiny_corpus, hd_frames):
    from dfray.mtcnn import ChannelsLastMaxPool, speed_up

    stock, fast = _mtcnn(), _mtcnn()
    assert speed_up(fast) == 6  # P-net 1, R-net 2, O-net 3
    assert all(isinstance(m, ChannelsLastMaxPool)
               for m in (fast.pnet.pool1, fast.rnet.pool2, fast.onet.pool3))

    name = sorted(json.loads((tiny_corpus / "metadata.json").read_text()))[0]
    small, _ = decode_frames(str(tiny_corpus / name), 4)
    images = _real_faces() + list(small) + list(hd_frames[:, ::2, ::2])
    found = 0
    for img in images:
        b0, p0 = stock.detect(img)
        b1, p1 = fast.detect(img)
        if b0 is None:
            assert b1 is None
            continue
        found += len(b0)
        assert b0.dtype == b1.dtype and np.array_equal(b0, b1)
        assert np.array_equal(np.asarray(p0, np.float64), np.asarray(p1, np.float64))
    assert found >= len(images)  # at least one face per image: the comparison is not empty
