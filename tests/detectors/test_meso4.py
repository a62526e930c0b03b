"""MesoNet Meso-4 architecture."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from dfray.config import ConfigError, DetectorSpec
from dfray.detectors import create_detector
from dfray.detectors.meso4 import Meso4, build_meso4, meso4_feature_size


def test_layout_matches_paper():
    model = build_meso4(256)
    assert isinstance(model, Meso4)
    # Afchar et al. 2018 report 27,977 trainable parameters for Meso-4
    assert sum(p.numel() for p in model.parameters()) == 27977
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [
        (8, (3, 3)),
        (8, (5, 5)),
        (16, (5, 5)),
        (16, (5, 5)),
    ]
    pools = [m.kernel_size for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [2, 2, 2, 4]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16 * 8 * 8, 16), (16, 1)]


def test_forward_shapes():
    model = build_meso4(256).eval()
    with torch.no_grad():
        assert model(torch.zeros(3, 3, 256, 256)).shape == (3, 1)
    assert meso4_feature_size(128) == 4
    with torch.no_grad():
        assert build_meso4(128).eval()(torch.zeros(1, 3, 128, 128)).shape == (1, 1)
    with pytest.raises(ConfigError, match="32"):
        build_meso4(16)


def test_pickles_and_roundtrips_weights(tmp_path):
    torch.manual_seed(1)
    model = build_meso4(256).eval()
    clone = pickle.loads(pickle.dumps(model))
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    spec = DetectorSpec(
        name="m", arch="meso4", weights=str(path), input_size=256, mean=(0.5,) * 3, std=(0.5,) * 3
    )
    det = create_detector(spec)
    crops = np.random.default_rng(1).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    xin = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        ref = torch.sigmoid(model(xin)).reshape(-1).numpy()
    np.testing.assert_allclose(det.predict(crops), ref, atol=1e-6)
