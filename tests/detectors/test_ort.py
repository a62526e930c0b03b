"""`--cpu-runtime onnxruntime` (dfray/detectors/ort.py): the same scores as torch, the export
cached per node, and a model that cannot be exported stays on torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfray.config import DetectorSpec
from dfray.detectors import create_detector
from dfray.detectors.effnet import build_effnet
from dfray.detectors.registry import register_detector, unregister_detector

SIZE = 96


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DFRAY_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.fixture(scope="module")
def effnet_weights(tmp_path_factory):
    """An EfficientNet-B0 DeepFakeClassifier whose BatchNorm statistics and head are moved
    off their init (so the scores spread), saved as a plain state dict."""
    torch.manual_seed(0)
    model = build_effnet("efficientnet_b0")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.8, 1.2)
                m.weight.uniform_(0.5, 1.5)
        model.fc.weight.normal_(0, 5.0)
    path = tmp_path_factory.mktemp("ort") / "b0.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Real faces (scikit-image's astronaut and camera) and noise, at SIZE."""
    import cv2
    from skimage import data

    faces = [data.astronaut()[20:220, 150:330], np.dstack([data.camera()[40:240, 180:380]] * 3)]
    out = [cv2.resize(np.ascontiguousarray(f), (SIZE, SIZE)) for f in faces]
    out += list(np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8))
    return np.stack(out).astype(np.uint8)


def spec(weights) -> DetectorSpec:
    return DetectorSpec(name="e", arch="effnet", weights=str(weights), input_size=SIZE,
                        options={"encoder": "efficientnet_b0"})


def test_onnxruntime_scores_equal_torch_and_the_export_is_cached(effnet_weights, crops, cache):
    torch_det = create_detector(spec(effnet_weights), device="cpu")
    ort_det = create_detector(spec(effnet_weights), device="cpu", runtime="onnxruntime")
    assert type(ort_det.model).__name__ == "OnnxModule"
    p_torch, p_ort = torch_det.predict(crops), ort_det.predict(crops)
    assert p_torch.std() > 0.05, p_torch  # the scores spread, so agreement means something
    assert np.abs(p_torch - p_ort).max() < 1e-4  # float reassociation only (measured ~3e-5)
    files = list(cache.glob("*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = create_detector(spec(effnet_weights), device="cpu", runtime="onnxruntime")
    assert list(cache.glob("*.onnx")) == files and files[0].stat().st_mtime_ns == stamp
    assert np.abs(again.predict(crops[:2]) - p_ort[:2]).max() < 1e-6  # a batch of another size


def test_a_model_that_cannot_be_exported_stays_on_torch(crops, cache, caplog):
    class Branchy(nn.Module):  # data-dependent control flow: torch.export refuses it
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 1)

        def forward(self, x):
            m = x.mean(dim=(2, 3))
            if m.sum() > 0:
                return self.fc(m)
            return -self.fc(m)

    @register_detector("branchy_test", input_size=SIZE, mean=(0.5,) * 3, std=(0.5,) * 3)
    def branchy(spec):
        torch.manual_seed(0)
        return Branchy()

    try:
        s = DetectorSpec(name="b", arch="branchy_test", input_size=SIZE)
        det = create_detector(s, device="cpu", runtime="onnxruntime")
        assert isinstance(det.model, Branchy)
        assert "cannot run on onnxruntime" in caplog.text and "using torch" in caplog.text
        assert det.predict(crops).shape == (len(crops),)
        assert not list(cache.glob("*.onnx"))  # random weights are never cached
    finally:
        unregister_detector("branchy_test")
