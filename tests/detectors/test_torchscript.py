"""`torchscript`: any submitted model as a TorchScript file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfray.config import ConfigError, DetectorSpec
from dfray.detectors import WeightsError, create_detector

SIZE = 32

# torch >= 2.10 marks torch.jit.script/trace/save deprecated; submissions still use them
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


class Tiny(nn.Module):
    def __init__(self, squeeze: bool = False, prob: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 1)
        self.squeeze = squeeze
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
        if self.prob:
            y = torch.sigmoid(y)
        if self.squeeze:
            y = y.squeeze(1)
        return y


def save_scripted(model: nn.Module, path) -> nn.Module:
    torch.manual_seed(0)
    model.eval()
    torch.jit.save(torch.jit.script(model), str(path))
    return model


def ts_spec(path, **kw) -> DetectorSpec:
    return DetectorSpec(name="t", arch="torchscript", weights=str(path), input_size=SIZE, **kw)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)


def reference(model, crops, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0 - m) / s
    with torch.no_grad():
        return model(x).reshape(-1)


@pytest.mark.parametrize("squeeze", [False, True])
def test_scripted_logits_same_outputs(tmp_path, crops, squeeze):
    torch.manual_seed(0)
    model = save_scripted(Tiny(squeeze=squeeze), tmp_path / "m.pt")
    det = create_detector(ts_spec(tmp_path / "m.pt"))
    assert det.weights_sha256 and det.output == "logit"
    ref = torch.sigmoid(reference(model, crops)).numpy()
    p = det.predict(crops, batch_size=4)
    assert p.shape == (6,) and p.dtype == np.float32
    np.testing.assert_allclose(p, ref, atol=1e-6)


def test_traced_prob_output(tmp_path, crops):
    torch.manual_seed(0)
    model = Tiny(prob=True).eval()
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 3, SIZE, SIZE)), str(tmp_path / "p.pt"))
    spec = ts_spec(tmp_path / "p.pt", mean=(0.5,) * 3, std=(0.5,) * 3, options={"output": "prob"})
    det = create_detector(spec)
    ref = reference(model, crops, mean=(0.5,) * 3, std=(0.5,) * 3).numpy()
    np.testing.assert_allclose(det.predict(crops), ref, atol=1e-6)


def test_bad_output_option(tmp_path):
    save_scripted(Tiny(), tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="output"):
        create_detector(ts_spec(tmp_path / "m.pt", options={"output": "score"}))


def test_wrong_output_shape_raises(tmp_path, crops):
    class Wide(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))  # (N, 3)

    torch.jit.save(torch.jit.script(Wide()), str(tmp_path / "w.pt"))
    det = create_detector(ts_spec(tmp_path / "w.pt"))
    with pytest.raises(ValueError, match=r"returned shape \(6, 3\)"):
        det.predict(crops)


def test_not_torchscript_file(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(Tiny().state_dict(), path)
    with pytest.raises(WeightsError, match="TorchScript"):
        create_detector(ts_spec(path))
