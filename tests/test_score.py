"""dfray.score.EnsembleScorer's batching: on a CPU, faces go through the detectors a
couple at a time (CPU_BATCH; why: dfray.score), with the same scores as one pass over
all of a batch's faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfray.config import DetectorSpec, EnsembleConfig
from dfray.faces import pack_crops
from dfray.score import CPU_BATCH, GPU_BATCH, EnsembleScorer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
SIZE = 48


def _row(vid: str, rng, n: int) -> dict:
    crops = [rng.integers(0, 256, (int(rng.integers(30, 90)), int(rng.integers(30, 90)), 3),
                          dtype=np.uint8) for _ in range(n)]
    data, shapes = pack_crops(crops)
    return {"video_id": vid, "status": "extracted", "n_faces": n, "label": 1,
            "face_crops": data, "face_shapes": shapes}


def test_cpu_batches_score_like_one_pass(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(16, 1)).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    n = torch.export.Dim("n", min=1, max=1024)
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: n},)), str(path))
    cfg = EnsembleConfig((DetectorSpec(name="d", arch="torch_export", weights=str(path),
                                       input_size=SIZE),))
    rng = np.random.default_rng(1)
    rows = [_row(f"v{i}", rng, k) for i, k in enumerate((5, 1, 8))]
    small = EnsembleScorer(cfg, device="cpu")
    whole = EnsembleScorer(cfg, device="cpu", batch_size=GPU_BATCH)
    assert small.batch_size == CPU_BATCH < sum(r["n_faces"] for r in rows) < whole.batch_size
    a = {r["video_id"]: r for r in small(rows)}
    b = {r["video_id"]: r for r in whole(rows)}
    scores = [a[v]["score"] for v in a]
    assert all(a[v]["status"] == "ok" for v in a) and len(set(scores)) == 3
    for v in a:
        assert a[v]["score"] == pytest.approx(b[v]["score"], abs=1e-6)
        fa, fb = (np.frombuffer(r[v]["face_scores"], np.float32) for r in (a, b))
        assert len(fa) == a[v]["n_faces"] and np.allclose(fa, fb, atol=1e-6)
