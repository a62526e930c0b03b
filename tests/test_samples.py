"""The synthetic DFDC-layout corpus: layout, decodability, determinism, detectable faces."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dfray.samples import generate_corpus

PARAMS = dict(n_videos=6, seed=0, min_height=360, max_height=480, min_seconds=2.0, max_seconds=3.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    out = tmp_path_factory.mktemp("corpus")
    return out, generate_corpus(out, **PARAMS)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _frames(path: Path, n: int) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path))
    idx = np.linspace(0, len(vr) - 1, n).round().astype(int).tolist()
    return vr.get_batch(idx).asnumpy()


def test_metadata_layout(corpus):
    out, md = corpus
    assert json.loads((out / "metadata.json").read_text()) == md
    assert sorted(p.name for p in out.glob("*.mp4")) == sorted(md)
    assert not list(out.glob("*.partial"))
    assert len(md) == PARAMS["n_videos"]
    assert {v["label"] for v in md.values()} == {"REAL", "FAKE"}
    assert {v["kind"] for v in md.values()} == {"real", "faceswap", "selfblend"}
    for name, v in md.items():
        assert len(name) == len("abcdefghij.mp4") and name[:-4].isalpha()
        assert v["split"] == "train"
        if v["label"] == "REAL":
            assert v["kind"] == "real" and v["original"] is None
        else:
            original = md[v["original"]]
            assert original["label"] == "REAL"
            assert original["identity"] == v["identity"]
            assert (original["width"], original["height"]) == (v["width"], v["height"])
        if v["kind"] == "faceswap":
            assert v["donor"] != v["identity"]
        assert PARAMS["min_height"] <= v["height"] <= PARAMS["max_height"]
        assert v["height"] in (360, 480)
        assert v["width"] % 2 == 0 and abs(v["width"] / v["height"] - 16 / 9) < 0.01
        assert PARAMS["min_seconds"] - 0.05 <= v["seconds"] <= PARAMS["max_seconds"] + 0.05
        lo, hi = v["face_height_frac"]
        assert 0.15 <= lo <= hi <= 0.45


def test_clips_decode_with_expected_size_and_length(corpus):
    import decord

    out, md = corpus
    for name, v in md.items():
        vr = decord.VideoReader(str(out / name))
        assert abs(len(vr) - v["seconds"] * v["fps"]) <= 1
        assert abs(len(vr) - v["frames"]) <= 1
        assert vr[0].shape == (v["height"], v["width"], 3)
        assert vr[len(vr) - 1].shape == (v["height"], v["width"], 3)
        assert round(vr.get_avg_fps()) == v["fps"]


def test_fake_differs_from_its_original_only_around_the_face(corpus):
    out, md = corpus
    for name, v in md.items():
        if v["label"] != "FAKE":
            continue
        fake = _frames(out / name, 4).astype(np.int16)
        real = _frames(out / v["original"], 4).astype(np.int16)
        changed = np.abs(fake - real).max(axis=-1) > 24
        frac = changed.mean()
        assert 0.0005 < frac < 0.12, (name, v["kind"], frac)


def test_mtcnn_finds_faces_at_half_resolution(corpus):
    import torch
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(thresholds=[0.7, 0.8, 0.8], device="cpu", keep_all=True)
    out, md = corpus
    hits = total = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny images: extra threads only spin on a busy CI box
    try:
        for name, v in md.items():
            found = _faces_found(mtcnn, out / name)
            assert found >= 6, (name, v["kind"], found)
            hits += found
            total += 8
    finally:
        torch.set_num_threads(threads)
    assert hits / total >= 0.9


def _faces_found(mtcnn, path: Path) -> int:
    """Of 8 evenly spaced frames, downscaled by 0.5 like the pipeline, how many have a
    face with probability > 0.9."""
    from PIL import Image

    found = 0
    for frame in _frames(path, 8):
        img = Image.fromarray(frame)
        img = img.resize((img.width // 2, img.height // 2), Image.Resampling.BILINEAR)
        _, probs = mtcnn.detect(img)
        probs = [float(p) for p in (probs if probs is not None else []) if p is not None]
        found += max(probs, default=0.0) > 0.9
    return found


def test_same_seed_gives_identical_files(corpus, tmp_path):
    out, md = corpus
    again = generate_corpus(tmp_path, **PARAMS)
    assert again == md
    assert _digests(tmp_path) == _digests(out)


def test_different_seed_gives_a_different_corpus(corpus, tmp_path):
    out, md = corpus
    other = generate_corpus(tmp_path, **{**PARAMS, "n_videos": 2, "seed": 1})
    assert len(other) == 2 and {v["label"] for v in other.values()} == {"REAL", "FAKE"}
    assert set(other).isdisjoint(md)
    assert set(_digests(tmp_path).values()).isdisjoint(_digests(out).values())


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="min_height"):
        generate_corpus(tmp_path, 2, min_height=720, max_height=480)
    with pytest.raises(ValueError, match="n_videos"):
        generate_corpus(tmp_path, 0)
    with pytest.raises(ValueError, match="fake_ratio"):
        generate_corpus(tmp_path, 2, fake_ratio=1.5)
    with pytest.raises(ValueError, match="seconds"):
        generate_corpus(tmp_path, 2, min_seconds=3.0, max_seconds=2.0)
    assert not list(tmp_path.iterdir())


def test_cli_writes_a_corpus(tmp_path, capsys):
    from dfray.cli import main

    rc = main(
        [
            "samples", str(tmp_path / "c"), "--videos", "2", "--seed", "3",
            "--max-height", "360", "--min-seconds", "1", "--max-seconds", "1",
        ]
    )  # fmt: skip
    assert rc == 0
    md = json.loads((tmp_path / "c" / "metadata.json").read_text())
    assert len(md) == 2 and len(list((tmp_path / "c").glob("*.mp4"))) == 2
    assert "1 real / 1 fake" in capsys.readouterr().out


def test_command_module_imports_light():
    code = (
        "import sys, dfray.commands.samples; "
        "print(sorted(m for m in ('numpy', 'av', 'PIL', 'skimage') if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
