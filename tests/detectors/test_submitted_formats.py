"""onnx and torch_export architectures on files built here, the dedicated output error
for misbehaving models (TorchScript, ONNX, torch.export), and hostile .pt2 archives."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from dfray.config import DetectorSpec
from dfray.detectors import DetectorError, DetectorOutputError, WeightsError, create_detector

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning",
                                        "ignore::DeprecationWarning")
SIZE = 32


class Tiny(nn.Module):
    def __init__(self, prob: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 1)
        self.prob = prob

    def forward(self, x):
        y = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
        return torch.sigmoid(y) if self.prob else y


class Const(nn.Module):
    """Returns `value` for every crop, shape (N, width)."""

    def __init__(self, value: float, width: int = 1) -> None:
        super().__init__()
        self.value = value
        self.width = width

    def forward(self, x):
        return x[:, :1, 0, 0].repeat(1, self.width) * 0 + self.value


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)


def reference(model, crops):
    m = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    s = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0 - m) / s
    with torch.no_grad():
        return model(x).reshape(-1).numpy()


def spec(arch, path, **kw):
    return DetectorSpec(name="sub", arch=arch, weights=str(path), input_size=SIZE, **kw)


def save_onnx(model, path):
    torch.onnx.export(model.eval(), (torch.randn(2, 3, SIZE, SIZE),), str(path),
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)


def save_pt2(model, path):
    n = torch.export.Dim("n", min=1, max=1024)
    ep = torch.export.export(model.eval(), (torch.randn(2, 3, SIZE, SIZE),),
                             dynamic_shapes=({0: n},))
    torch.export.save(ep, str(path))


def save_ts(model, path):
    torch.jit.save(torch.jit.trace(model.eval(), torch.randn(2, 3, SIZE, SIZE)), str(path))


SAVERS = {"onnx": (save_onnx, "m.onnx"), "torch_export": (save_pt2, "m.pt2"),
          "torchscript": (save_ts, "m.pt")}


@pytest.mark.parametrize("arch", ["onnx", "torch_export"])
@pytest.mark.parametrize("prob", [False, True])
def test_same_outputs_as_the_torch_model(tmp_path, crops, arch, prob):
    save, name = SAVERS[arch]
    model = Tiny(prob=prob)
    save(model, tmp_path / name)
    det = create_detector(spec(arch, tmp_path / name,
                               options={"output": "prob" if prob else "logit"}))
    ref = reference(model, crops)
    np.testing.assert_allclose(det.predict_logits(crops, batch_size=2), ref, atol=1e-5)
    want = ref if prob else 1 / (1 + np.exp(-ref))
    np.testing.assert_allclose(det.predict(crops), want, atol=1e-5)
    if arch == "torch_export":  # its weights are visible for memory sizing (check.py)
        assert sum(p.numel() for p in det.model.parameters()) == \
            sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ["torchscript", "onnx", "torch_export"])
@pytest.mark.parametrize("case", ["nan", "wide", "prob_out_of_range"])
def test_misbehaving_model_raises_output_error(tmp_path, crops, arch, case):
    model, options = {
        "nan": (Const(float("nan")), {}),
        "wide": (Const(0.0, width=3), {}),
        "prob_out_of_range": (Const(1.5), {"output": "prob"}),
    }[case]
    save, name = SAVERS[arch]
    save(model, tmp_path / name)
    det = create_detector(spec(arch, tmp_path / name, options=options))
    with pytest.raises(DetectorOutputError) as e:
        det.predict(crops)
    assert isinstance(e.value, DetectorError) and "'sub'" in str(e.value)
    want = {"nan": "non-finite", "wide": r"shape (5, 3)", "prob_out_of_range": "outside [0, 1]"}
    assert want[case] in str(e.value)


def test_in_range_prob_is_not_an_error(tmp_path, crops):
    save_onnx(Const(1.0), tmp_path / "m.onnx")
    det = create_detector(spec("onnx", tmp_path / "m.onnx", options={"output": "prob"}))
    assert det.predict(crops).tolist() == [1.0] * 5


class Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_MARKER",))


def rewrite(src, dst, edit):
    """Copy the zip `src` to `dst`, `edit(name, data) -> (name, data) | list | None`."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for info in zi.infolist():
            res = edit(info.filename, zi.read(info.filename))
            for name, data in ([res] if isinstance(res, tuple) else res or []):
                zo.writestr(name, data)


def test_hostile_pt2_rejected_without_executing(tmp_path, monkeypatch, crops):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.pt2"
    save_pt2(Tiny(), good)
    payload = pickle.dumps(Boom())

    def pickled_weight(name, data):
        if name.endswith("model_weights_config.json"):
            data = data.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
        if name.endswith("data/weights/weight_0"):
            data = payload
        return name, data

    def extra_member(name, data):
        out = [(name, data)]
        if name.endswith("archive_format"):
            out.append((name.rsplit("/", 1)[0] + "/data/evil.pkl", payload))
        return out

    def extra_constant(name, data):
        out = [(name, data)]
        if name.endswith("archive_format"):
            out.append((name.rsplit("/", 1)[0] + "/data/constants/custom_obj_0", payload))
        return out

    for i, edit in enumerate([pickled_weight, extra_member, extra_constant]):
        bad = tmp_path / f"bad{i}.pt2"
        rewrite(good, bad, edit)
        with pytest.raises(WeightsError, match="not an accepted torch.export program"):
            create_detector(spec("torch_export", bad))
    (tmp_path / "raw.pt2").write_bytes(payload)
    with pytest.raises(WeightsError, match="not a zip"):
        create_detector(spec("torch_export", tmp_path / "raw.pt2"))
    assert not (tmp_path / "PWNED_MARKER").exists()
    # the untouched archive loads: the check is not what rejects the edits above
    assert create_detector(spec("torch_export", good)).predict(crops).shape == (5,)


def test_not_an_onnx_file(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="not a loadable ONNX file"):
        create_detector(spec("onnx", tmp_path / "x.onnx"))
