"""Submissions: submission.yaml with relative weights, local and on S3 (moto over HTTP)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from dfray.config import StorageConfig
from dfray.detectors import create_detector
from dfray.submission import (
    SubmissionError,
    find_submissions,
    folder_id,
    load_submission,
    load_submissions,
)
from tests.conftest import upload_dir

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SIZE = 32


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


def make_submission(folder: Path, team="ACME Labs", name="v1", weights="models/m.onnx",
                    **extra) -> Path:
    (folder / "models").mkdir(parents=True, exist_ok=True)
    torch.onnx.export(Tiny().eval(), (torch.randn(2, 3, SIZE, SIZE),),
                      str(folder / "models" / "m.onnx"), input_names=["x"],
                      dynamic_axes={"x": {0: "n"}}, dynamo=False)
    doc = {"team": team, "name": name, "ensemble": {"detectors": [
        {"name": "main", "arch": "onnx", "weights": weights, "input_size": SIZE}]}, **extra}
    (folder / "submission.yaml").write_text(yaml.safe_dump(doc))
    return folder


def crops():
    return np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)


def test_local_submission_loads_and_scores(tmp_path):
    sub = load_submission(str(make_submission(tmp_path / "a")))
    assert sub.id == "acme_labs--v1" and sub.team == "ACME Labs" and sub.name == "v1"
    assert sub.source == str(tmp_path / "a")
    (spec,) = sub.ensemble.detectors
    assert spec.weights == str(tmp_path / "a" / "models" / "m.onnx")
    assert create_detector(spec).predict(crops()).shape == (3,)
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        sub.team = "x"


@pytest.mark.parametrize("weights,why", [
    ("/etc/passwd", "must be relative"),
    ("../other/m.onnx", "leaves the submission folder"),
    ("s3://bucket/m.onnx", "must be relative"),
    ("builtin:meso4_demo", "must be relative"),
    ("models/missing.onnx", "not found"),
])
def test_bad_weight_paths(tmp_path, weights, why):
    folder = make_submission(tmp_path / "bad", weights=weights)
    with pytest.raises(SubmissionError, match=why) as e:
        load_submission(str(folder))
    assert str(folder) in str(e.value) and e.value.submission == str(folder)


def test_bad_yaml_and_keys(tmp_path):
    folder = make_submission(tmp_path / "s")
    (folder / "submission.yaml").write_text("team: [unclosed")
    with pytest.raises(SubmissionError, match="not valid YAML"):
        load_submission(str(folder))
    (folder / "submission.yaml").write_text("team: a\nname: b\nensemble: {detectors: []}\n")
    with pytest.raises(SubmissionError, match="at least one detector"):
        load_submission(str(folder))
    (folder / "submission.yaml").write_text(
        "team: a\nname: b\nensemble: {detectors: [{name: m, arch: pickle, weights: x}]}\n")
    with pytest.raises(SubmissionError, match="unknown detector architecture 'pickle'"):
        load_submission(str(folder))
    (folder / "submission.yaml").write_text("team: a\nname: b\nensemble: {}\ncode: x.py\n")
    with pytest.raises(SubmissionError, match=r"unknown keys \['code'\]"):
        load_submission(str(folder))
    with pytest.raises(SubmissionError, match="cannot read submission.yaml"):
        load_submission(str(tmp_path / "nowhere"))


def test_find_submissions_local(tmp_path):
    make_submission(tmp_path / "all" / "b", name="b")
    make_submission(tmp_path / "all" / "a", name="a")
    single = make_submission(tmp_path / "single", name="c")
    found = find_submissions([str(tmp_path / "all"), str(single)])
    assert found == sorted([str(tmp_path / "all" / "a"), str(tmp_path / "all" / "b"),
                            str(single)])
    assert [load_submission(f).id for f in found] == ["acme_labs--a", "acme_labs--b",
                                                      "acme_labs--c"]


def test_s3_submission(tmp_path, s3, moto_server):
    s3.create_bucket(Bucket="subs")
    upload_dir(s3, make_submission(tmp_path / "one", name="one"), "subs", "incoming/one")
    upload_dir(s3, make_submission(tmp_path / "two", name="two"), "subs", "incoming/two")
    cfg = StorageConfig(endpoint_url=moto_server, region="us-east-1")
    found = find_submissions(["s3://subs/incoming"], cfg)
    assert found == ["s3://subs/incoming/one", "s3://subs/incoming/two"]
    sub = load_submission(found[0], cfg)
    assert sub.id == "acme_labs--one"
    (spec,) = sub.ensemble.detectors
    assert spec.weights == "s3://subs/incoming/one/models/m.onnx"
    det = create_detector(spec, storage=cfg, cache_dir=str(tmp_path / "cache"))
    local = create_detector(load_submission(str(tmp_path / "one")).ensemble.detectors[0])
    np.testing.assert_array_equal(det.predict(crops()), local.predict(crops()))
    s3.delete_object(Bucket="subs", Key="incoming/two/models/m.onnx")
    with pytest.raises(SubmissionError, match="s3://subs/incoming/two.*not found"):
        load_submission(found[1], cfg)


def test_load_submissions_reports_bad_and_duplicate_ids(tmp_path):
    make_submission(tmp_path / "all" / "x", name="same")
    make_submission(tmp_path / "all" / "y", name="same")
    make_submission(tmp_path / "all" / "z", name="fine")
    (tmp_path / "all" / "Broken One").mkdir()
    subs, bad = load_submissions(find_submissions([str(tmp_path / "all")]))
    assert [s.id for s in subs] == ["acme_labs--fine"]
    assert sorted(i for i, _ in bad) == ["folder--broken_one", "folder--x", "folder--y"]
    msgs = {i: str(e) for i, e in bad}
    assert "cannot read submission.yaml" in msgs["folder--broken_one"]
    assert "'acme_labs--same' also used by" in msgs["folder--x"]
    assert folder_id("s3://b/p/Team A/") == "folder--team_a"
