"""MesoNet from the authors' Keras weights: conversion, strict loading, the builtins scored
through `dfray detectors score`, the recorded Keras outputs, and the architecture's input
contract filling a spec. The .h5 files, test images, LICENSE and NOTICE under
tests/detectors/data/mesonet/ are the authors' (Apache-2.0), as in ../shared/third_party."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dfray.commands.detectors import load_image
from dfray.config import ConfigError, DetectorSpec, detector_spec_from_dict, load_ensemble
from dfray.detectors import create_detector, get_detector_defaults
from dfray.detectors.meso4 import build_meso4
from dfray.detectors.mesoinception4 import build_mesoinception4
from dfray.detectors.mesonet import ConversionError, convert_keras_mesonet
from dfray.detectors.weights import BUILTIN_DIR, WeightsError, load_into, load_state_dict

DATA = Path(__file__).parent / "data" / "mesonet"
REPO = Path(__file__).resolve().parents[2]
FILES = {
    "meso4_df": ("Meso4_DF.h5", "meso4"),
    "meso4_f2f": ("Meso4_F2F.h5", "meso4"),
    "mesoinception4_df": ("MesoInception_DF.h5", "mesoinception4"),
    "mesoinception4_f2f": ("MesoInception_F2F.h5", "mesoinception4"),
}
IMAGES = sorted((DATA / "test_images").glob("*/*.jpg"))


def _build(arch):
    return build_meso4(256) if arch == "meso4" else build_mesoinception4(256)


@pytest.mark.parametrize("name", sorted(FILES))
def test_converts_each_file_to_the_shipped_builtin(name):
    fname, arch = FILES[name]
    sd = convert_keras_mesonet(DATA / "weights" / fname)  # arch guessed from the file
    model = _build(arch)
    load_into(model, sd)  # strict: every key, every shape
    assert set(sd) == set(model.state_dict())
    shipped = load_state_dict(BUILTIN_DIR / f"{name}.pt")
    assert set(shipped) == set(sd)
    for k, v in sd.items():
        assert torch.equal(shipped[k], v), k


def test_layout_conversions():
    sd = convert_keras_mesonet(DATA / "weights" / "Meso4_DF.h5")
    import h5py

    with h5py.File(DATA / "weights" / "Meso4_DF.h5") as f:
        k = np.asarray(f["conv2d_5/conv2d_5/kernel:0"])  # HWIO
        var = np.asarray(f["batch_normalization_5/batch_normalization_5/moving_variance:0"])
        d1 = np.asarray(f["dense_3/dense_3/kernel:0"])  # (1024, 16), rows (h, w, c)
        d2 = np.asarray(f["dense_4/dense_4/kernel:0"])  # (16, 1)
    assert np.array_equal(sd["features.0.0.weight"].numpy(), k.transpose(3, 2, 0, 1))
    np.testing.assert_allclose(sd["features.0.2.running_var"].numpy(), var + 1e-3 - 1e-5,
                               rtol=1e-6)
    # torch row (c, h, w) == Keras row (h, w, c)
    c, h, w = 5, 2, 7
    assert np.array_equal(sd["classifier.2.weight"].numpy()[:, c * 64 + h * 8 + w],
                          d1[h * 128 + w * 16 + c])
    assert np.array_equal(sd["classifier.5.weight"].numpy(), -d2.T)  # P(real) -> P(fake)


def test_inception_maps_by_name_not_position():
    import h5py

    sd = convert_keras_mesonet(DATA / "weights" / "MesoInception_DF.h5")
    with h5py.File(DATA / "weights" / "MesoInception_DF.h5") as f:
        # conv2d_1 is branch 1 of the first block but comes 4th in the file's layer order
        assert [n.decode() for n in f.attrs["layer_names"]][1:5] == [
            "conv2d_2", "conv2d_4", "conv2d_6", "conv2d_1"]
        b1 = np.asarray(f["conv2d_1/conv2d_1/kernel:0"])
        b3 = np.asarray(f["conv2d_4/conv2d_4/kernel:0"])  # b3's 1x1, same shape as b2's
        b2 = np.asarray(f["conv2d_2/conv2d_2/kernel:0"])
    assert np.array_equal(sd["features.0.0.b1.0.weight"].numpy(), b1.transpose(3, 2, 0, 1))
    assert np.array_equal(sd["features.0.0.b2.0.0.weight"].numpy(), b2.transpose(3, 2, 0, 1))
    assert np.array_equal(sd["features.0.0.b3.0.0.weight"].numpy(), b3.transpose(3, 2, 0, 1))
    assert not np.array_equal(b2, b3)


def test_wrong_arch_and_strict_loading_fail_clearly(tmp_path):
    with pytest.raises(ConversionError, match="mesoinception4"):
        convert_keras_mesonet(DATA / "weights" / "MesoInception_DF.h5", "meso4")
    with pytest.raises(ConversionError, match="meso4 file has|mesoinception4 file has"):
        convert_keras_mesonet(DATA / "weights" / "Meso4_DF.h5", "mesoinception4")
    with pytest.raises(ConversionError, match="not an HDF5"):
        convert_keras_mesonet(IMAGES[0])
    # a meso4 state dict does not load into mesoinception4, strictly
    with pytest.raises(WeightsError, match="missing keys"):
        load_into(build_mesoinception4(256), load_state_dict(BUILTIN_DIR / "meso4_df.pt"))


def test_convert_command(tmp_path):
    out = tmp_path / "m.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "dfray.cli", "convert", "mesonet",
                        str(DATA / "weights" / "MesoInception_F2F.h5"), "-o", str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "arch mesoinception4" in r.stdout and "P(fake)" in r.stdout
    sd = load_state_dict(out)
    shipped = load_state_dict(BUILTIN_DIR / "mesoinception4_f2f.pt")
    assert all(torch.equal(sd[k], shipped[k]) for k in shipped)
    r = subprocess.run([sys.executable, "-m", "dfray.cli", "convert", "mesonet",
                        str(DATA / "weights" / "MesoInception_F2F.h5"), "-o", str(out),
                        "--arch", "meso4"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 2 and "use --arch mesoinception4" in r.stderr


def _score(spec: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "dfray.cli", "detectors", "score", spec,
                        *map(str, IMAGES)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["image"] for row in rows] == [str(p) for p in IMAGES]
    return {Path(row["image"]).parent.name + "/" + Path(row["image"]).name: row["score"]
            for row in rows}


@pytest.mark.parametrize("spec", ["meso4_df", "builtin:mesoinception4_df"])
def test_df_models_score_df_images_above_real_ones(spec):
    s = _score(spec)
    df = [v for k, v in s.items() if k.startswith("df/")]
    real = [v for k, v in s.items() if k.startswith("real/")]
    assert len(df) == 2 and len(real) == 2
    assert min(df) > max(real)
    assert min(df) > 0.5 > max(real)  # P(fake), not MesoNet's P(real)


def test_recorded_keras_outputs_are_reproduced():
    """tests/detectors/data/mesonet_keras_outputs.json: Keras's P(real) recorded by
    benchmarks/mesonet_keras_check.sh on the test images and seeded random inputs."""
    ref = json.loads((DATA.parent / "mesonet_keras_outputs.json").read_text())
    n_img = len(IMAGES)
    assert ref["names"][:n_img] == [f"{p.parent.name}/{p.name}" for p in IMAGES]
    rng = np.random.default_rng(ref["seed"])
    rand = rng.integers(0, 256, size=(ref["n_random"], 256, 256, 3), dtype=np.uint8)
    x = np.concatenate([np.stack([load_image(p, 256) for p in IMAGES]), rand])
    for name, (_, arch) in FILES.items():
        det = create_detector(DetectorSpec(name=name, arch=arch, weights=f"builtin:{name}"))
        p_fake = det.predict(x).astype(np.float64)
        expected = 1.0 - np.asarray(ref["p_real"][name])
        assert np.abs(p_fake - expected).max() <= 1e-4, name


def test_architecture_contract_fills_a_spec_that_leaves_it_out():
    for arch in ("meso4", "mesoinception4"):
        spec = detector_spec_from_dict({"name": "m", "arch": arch})
        assert (spec.input_size, spec.mean, spec.std) == (256, (0.0,) * 3, (1.0,) * 3)
        d = get_detector_defaults(arch)
        assert (spec.input_size, spec.mean, spec.std) == (d["input_size"], d["mean"], d["std"])
    eff = DetectorSpec(name="e", arch="effnet")
    assert (eff.input_size, eff.mean) == (380, (0.485, 0.456, 0.406))
    # a field the spec gives wins; the others still come from the architecture
    part = detector_spec_from_dict({"name": "m", "arch": "meso4", "mean": [0.5, 0.5, 0.5]})
    assert (part.input_size, part.mean, part.std) == (256, (0.5,) * 3, (1.0,) * 3)
    # the demo builtin keeps its own training preprocessing
    demo = load_ensemble("builtin:demo").detectors[0]
    assert (demo.input_size, demo.mean, demo.std) == (256, (0.5,) * 3, (0.5,) * 3)
    # builtin:real leaves the contract to the architectures
    real = load_ensemble("builtin:real").detectors
    assert {d.arch for d in real} == {"meso4", "mesoinception4"}
    assert all((d.input_size, d.mean, d.std) == (256, (0.0,) * 3, (1.0,) * 3) for d in real)
    with pytest.raises(ConfigError, match="builtin:real"):
        load_ensemble("builtin:nope")


def test_license_and_notice_ship_beside_the_weights():
    for f in ("LICENSE-mesonet", "NOTICE-mesonet"):
        assert (BUILTIN_DIR / f).read_text() == (DATA / f.split("-")[0]).read_text()
    assert "Apache License" in (BUILTIN_DIR / "LICENSE-mesonet").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "detectors/weights/LICENSE-*" in pyproject and "detectors/weights/NOTICE-*" in pyproject


def test_score_yaml_spec_uses_contract_and_image_at_size_as_is(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    at_size = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    Image.fromarray(at_size).save(tmp_path / "a.png")
    (tmp_path / "spec.yaml").write_text("name: m\narch: meso4\nweights: builtin:meso4_df\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "dfray.cli", "detectors", "score",
                        str(tmp_path / "spec.yaml"), str(tmp_path / "a.png"), str(IMAGES[0])],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    got = [json.loads(line)["score"] for line in r.stdout.splitlines()]
    det = create_detector(DetectorSpec(name="m", arch="meso4", input_size=256,
                                       mean=(0.0,) * 3, std=(1.0,) * 3,
                                       weights="builtin:meso4_df"))
    assert load_image(tmp_path / "a.png", 256).tobytes() == at_size.tobytes()  # as is
    assert IMAGES[0].stat().st_size and load_image(IMAGES[0], 256).shape == (256, 256, 3)
    want = det.predict(np.stack([at_size, load_image(IMAGES[0], 256)]))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # an unreadable image is an error line and exit 1, the others are still scored
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    r = subprocess.run([sys.executable, "-m", "dfray.cli", "detectors", "score", "meso4_df",
                        str(tmp_path / "bad.jpg"), str(tmp_path / "a.png")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1 and "cannot read image" in r.stderr
    assert len(r.stdout.splitlines()) == 1
