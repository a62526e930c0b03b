"""Detector registry and the Detector wrapper, with real torch (meso4 on CPU)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from dfray.config import ConfigError, DetectorSpec
from dfray.detectors import (
    Detector,
    WeightsError,
    create_detector,
    get_detector_defaults,
    list_detectors,
    register_detector,
)
from dfray.detectors.meso4 import build_meso4
from dfray.detectors.registry import unregister_detector

HALF = (0.5, 0.5, 0.5)


def meso_spec(**kw) -> DetectorSpec:
    base = dict(name="m", arch="meso4", input_size=256, mean=HALF, std=HALF)
    base.update(kw)
    return DetectorSpec(**base)


@pytest.fixture(scope="module")
def meso_weights(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = build_meso4(256).eval()
    # non-trivial BatchNorm statistics, so normalisation differences show in the output
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("w") / "meso4.pt"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, 256, 256, 3), dtype=np.uint8)


def test_list_detectors_has_builtins():
    names = list_detectors()
    assert {"meso4", "effnet", "torchscript"} <= set(names)
    assert names == sorted(names)


def test_defaults_carry_input_contract():
    d = get_detector_defaults("meso4")  # the MesoNet authors' preprocessing: 256 px, x/255
    assert (d["input_size"], d["mean"], d["std"]) == (256, (0.0,) * 3, (1.0,) * 3)
    e = get_detector_defaults("effnet")
    assert e["input_size"] == 380 and e["mean"] == (0.485, 0.456, 0.406)
    assert get_detector_defaults("torchscript")["requires_weights"] is True


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_detector("meso4", input_size=256, mean=HALF, std=HALF)(lambda spec: None)
    try:
        register_detector("dup_test", input_size=32, mean=HALF, std=HALF)(lambda spec: None)
        with pytest.raises(ValueError, match="dup_test"):
            register_detector("dup_test", input_size=32, mean=HALF, std=HALF)(lambda spec: None)
    finally:
        unregister_detector("dup_test")
    assert "dup_test" not in list_detectors()


def test_unknown_arch_lists_known():
    with pytest.raises(ConfigError, match="unknown detector architecture 'nope'.*meso4"):
        create_detector(DetectorSpec(name="x", arch="nope"))
    with pytest.raises(ValueError, match="effnet"):
        get_detector_defaults("nope")


def test_unknown_option_rejected():
    with pytest.raises(ConfigError, match="unknown options"):
        create_detector(meso_spec(options={"encoder": "x"}))


def test_torchscript_needs_weights():
    with pytest.raises(ConfigError, match="needs 'weights'"):
        create_detector(DetectorSpec(name="t", arch="torchscript"))


def test_random_init_warns(caplog, crops):
    with caplog.at_level("WARNING"):
        det = create_detector(meso_spec())
    assert "RANDOM" in caplog.text
    assert isinstance(det, Detector)
    assert det.weights_sha256 is None and det.device == "cpu" and det.precision == "fp32"
    assert not det.model.training
    p = det.predict(crops)
    assert p.shape == (5,) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))


def test_predict_matches_manual_forward(meso_weights, crops):
    det = create_detector(meso_spec(weights=meso_weights))
    assert len(det.weights_sha256) == 64
    p = det.predict(crops)
    assert p.shape == (5,) and p.dtype == np.float32
    assert np.all((p > 0) & (p < 1))
    # reference: x/255, (x - mean)/std, NCHW, sigmoid(logit)
    model = build_meso4(256).eval()
    model.load_state_dict(torch.load(meso_weights, weights_only=True))
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        ref = torch.sigmoid(model(x)).reshape(-1).numpy()
    np.testing.assert_allclose(p, ref, atol=1e-6)
    # batching does not change results; empty input gives an empty array
    np.testing.assert_allclose(det.predict(crops, batch_size=2), p, atol=1e-6)
    empty = det.predict(crops[:0])
    assert empty.shape == (0,) and empty.dtype == np.float32


def test_preprocessing_follows_spec(meso_weights, crops):
    a = create_detector(meso_spec(weights=meso_weights))
    b = create_detector(meso_spec(weights=meso_weights, mean=(0.485, 0.456, 0.406)))
    c = create_detector(meso_spec(weights=meso_weights, std=(0.25, 0.25, 0.25)))
    pa, pb, pc = a.predict(crops), b.predict(crops), c.predict(crops)
    assert not np.allclose(pa, pb, atol=1e-4)
    assert not np.allclose(pa, pc, atol=1e-4)
    x = b.preprocess(crops[:1]).numpy()
    ref = (
        crops[:1].transpose(0, 3, 1, 2) / 255.0 - np.reshape((0.485, 0.456, 0.406), (1, 3, 1, 1))
    ) / 0.5
    np.testing.assert_allclose(x, ref, atol=1e-5)


def test_input_size_from_spec(meso_weights):
    # meso4 built for 128 input: the flatten size follows the input size
    det = create_detector(meso_spec(input_size=128))
    assert det.predict(np.zeros((2, 128, 128, 3), np.uint8)).shape == (2,)
    # 256 weights do not fit a 128 model: the Linear shape differs
    with pytest.raises(WeightsError, match="shape"):
        create_detector(meso_spec(input_size=128, weights=meso_weights))


def test_wrong_crops_raise(crops):
    det = create_detector(meso_spec())
    with pytest.raises(ValueError, match=r"\(N, 256, 256, 3\)"):
        det.predict(np.zeros((2, 224, 224, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        det.predict(crops.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        det.predict(np.zeros((256, 256, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        det.predict(np.zeros((1, 3, 256, 256), np.uint8))
    with pytest.raises(ValueError, match="numpy"):
        det.predict([[0]])


def test_sha_checked_on_create(meso_weights):
    with pytest.raises(WeightsError, match="mismatch"):
        create_detector(meso_spec(weights=meso_weights, sha256="0" * 64))


def test_bad_precision_and_device():
    with pytest.raises(ValueError, match="precision"):
        create_detector(meso_spec(), precision="int8")
    with pytest.raises(ValueError, match="fp16"):
        create_detector(meso_spec(), precision="fp16")
    with pytest.raises(ValueError, match="device"):
        create_detector(meso_spec(), device="tpu")


def test_bf16_on_cpu_close_to_fp32(meso_weights, crops):
    p32 = create_detector(meso_spec(weights=meso_weights)).predict(crops)
    p16 = create_detector(meso_spec(weights=meso_weights), precision="bf16").predict(crops)
    np.testing.assert_allclose(p16, p32, atol=0.05)


def test_import_does_not_load_torch():
    code = (
        "import sys, dfray.detectors as d; d.list_detectors(); d.get_detector_defaults('effnet');"
        "bad = [m for m in ('torch', 'timm') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_lists_archs_and_config(tmp_path, capsys):
    from dfray.cli import main

    assert main(["detectors"]) == 0
    out = capsys.readouterr().out
    assert "meso4" in out and "effnet" in out and "380" in out
    cfg = tmp_path / "ens.yaml"
    cfg.write_text(
        "detectors:\n"
        "  - {name: m1, arch: meso4, input_size: 256, mean: [0.5, 0.5, 0.5],"
        " std: [0.5, 0.5, 0.5], aggregation: mean, weight: 2}\n"
    )
    assert main(["detectors", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "m1" in out and "(random init)" in out and "mean" in out
    assert main(["detectors", "--config", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_half_precision_close_to_fp32(meso_weights, crops):
    p32 = create_detector(meso_spec(weights=meso_weights)).predict(crops)
    det = create_detector(meso_spec(weights=meso_weights), device="cuda")
    assert det.precision == "fp16"
    np.testing.assert_allclose(det.predict(crops), p32, atol=0.01)
    if torch.cuda.is_bf16_supported():
        bf = create_detector(meso_spec(weights=meso_weights), device="cuda", precision="bf16")
        np.testing.assert_allclose(bf.predict(crops), p32, atol=0.05)
