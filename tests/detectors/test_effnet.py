"""`effnet`: the DFDC 1st-place DeepFakeClassifier layout and its checkpoint format."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from dfray.config import IMAGENET_MEAN, IMAGENET_STD, ConfigError, DetectorSpec
from dfray.detectors import WeightsError, create_detector
from dfray.detectors.effnet import (
    DEFAULT_ENCODER,
    DeepFakeClassifier,
    build_effnet,
    resolve_encoder_name,
)

SMALL = "efficientnet_b0"
SIZE = 64  # small crops keep the test fast; EfficientNet pools globally


def spec(weights=None, encoder=SMALL, **kw) -> DetectorSpec:
    return DetectorSpec(
        name="e",
        arch="effnet",
        weights=weights,
        input_size=SIZE,
        options={"encoder": encoder},
        **kw,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small DeepFakeClassifier saved the way DFDC 1st place saved checkpoints."""
    torch.manual_seed(0)
    model = build_effnet(SMALL)
    with torch.no_grad():  # move BN stats and fc away from init so the test is meaningful
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
        model.fc.weight.normal_(0, 0.5)
    model.eval()
    path = tmp_path_factory.mktemp("effnet") / "final_111_DeepFakeClassifier_b0_0_23"
    state = nn.DataParallel(model).state_dict()
    assert all(k.startswith("module.") for k in state)
    torch.save({"state_dict": state, "epoch": 3, "bce_best": 0.2}, path)
    return model, path


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)


def test_layout_attribute_names():
    model = build_effnet(SMALL)
    assert isinstance(model, DeepFakeClassifier)
    names = [n for n, _ in model.named_children()]
    assert names == ["encoder", "avg_pool", "dropout", "fc"]
    assert model.fc.in_features == model.encoder.num_features == 1280
    assert model.dropout.p == 0.0
    keys = model.state_dict().keys()
    assert "encoder.conv_stem.weight" in keys and "fc.weight" in keys
    # the encoder keeps timm's 1000-class head: their checkpoints contain it
    assert "encoder.classifier.weight" in keys
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 1)


def test_dfdc_checkpoint_loads_strict_and_matches(trained, crops):
    model, path = trained
    det = create_detector(spec(weights=str(path)))
    assert det.weights_sha256 and len(det.weights_sha256) == 64
    p = det.predict(crops)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    with torch.no_grad():
        ref = torch.sigmoid(model(x)).reshape(-1).numpy()
    np.testing.assert_allclose(p, ref, atol=1e-6)
    assert p.std() > 0  # not a constant output


def test_checkpoint_with_missing_key_fails(trained, tmp_path):
    model, _ = trained
    state = nn.DataParallel(model).state_dict()
    del state["module.fc.bias"]
    state["module.extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": state, "epoch": 1}, bad)
    with pytest.raises(WeightsError, match=r"missing keys \['fc.bias'\].*unexpected keys"):
        create_detector(spec(weights=str(bad)))


def test_checkpoint_of_other_encoder_fails(trained):
    _, path = trained
    with pytest.raises(WeightsError, match="shape|missing|unexpected"):
        create_detector(spec(weights=str(path), encoder="mobilenetv3_small_050"))


def test_default_encoder_name_resolves():
    name = resolve_encoder_name(DEFAULT_ENCODER)
    assert timm.is_model(name)
    assert resolve_encoder_name("tf_efficientnet_b7.ns_jft_in1k") == name
    assert resolve_encoder_name("tf_efficientnet_b0_ns").startswith("tf_efficientnet_b0")
    with pytest.raises(ConfigError, match="not a timm model"):
        resolve_encoder_name("no_such_efficientnet")


def test_default_encoder_builds_b7_layout():
    # b7 without weights builds in about a second on CPU; check the width their fc expects
    model = build_effnet()
    assert model.encoder.num_features == 2560 and model.fc.in_features == 2560
    assert "encoder.blocks.6.3.conv_pwl.weight" in model.state_dict()


def test_bad_encoder_option():
    with pytest.raises(ConfigError):
        create_detector(spec(encoder=""))
