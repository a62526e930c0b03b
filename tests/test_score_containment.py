"""A submitted model that misbehaves on one video gives that video an `error` row with
the DetectorOutputError message; its batch-mates are scored (dfray/score.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfray.config import DetectorSpec, EnsembleConfig
from dfray.faces import pack_crops
from dfray.score import EnsembleScorer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
SIZE = 32


class NanWhenBright(nn.Module):
    """A logit per crop; NaN for crops whose mean normalised value is > 1 (bright)."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.where(m > 1.0, torch.full_like(m, float("nan")), m).unsqueeze(1)


class TwiceProbWhenBright(nn.Module):
    """A 'probability' that leaves [0, 1] for bright crops."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.where(m > 1.0, torch.full_like(m, 2.0), torch.sigmoid(m))


def row(vid: str, value: int) -> dict:
    crops = [np.full((40, 36, 3), value, np.uint8) for _ in range(2)]
    data, shapes = pack_crops(crops)
    return {"video_id": vid, "status": "extracted", "n_faces": 2, "label": 1,
            "face_crops": data, "face_shapes": shapes}


def export(arch, model, path):
    x = torch.randn(2, 3, SIZE, SIZE)
    if arch == "onnx":
        torch.onnx.export(model.eval(), (x,), str(path), input_names=["x"],
                          dynamic_axes={"x": {0: "n"}}, dynamo=False)
    elif arch == "torch_export":
        n = torch.export.Dim("n", min=1, max=1024)
        torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes=({0: n},)),
                          str(path))
    else:
        torch.jit.save(torch.jit.trace(model.eval(), x), str(path))


@pytest.mark.parametrize("arch", ["onnx", "torch_export", "torchscript"])
@pytest.mark.parametrize("case", ["nan", "prob"])
def test_bad_output_on_one_video_is_one_error_row(tmp_path, arch, case):
    model, options, want = {
        "nan": (NanWhenBright(), {}, "non-finite"),
        "prob": (TwiceProbWhenBright(), {"output": "prob"}, "outside [0, 1]"),
    }[case]
    path = tmp_path / f"m.{arch}"
    export(arch, model, path)
    spec = DetectorSpec(name="sub", arch=arch, weights=str(path), input_size=SIZE,
                        options=options)
    scorer = EnsembleScorer(EnsembleConfig((spec,)), device="cpu")
    out = {r["video_id"]: r for r in scorer([row("a", 40), row("bright", 250), row("c", 90)])}
    assert out["bright"]["status"] == "error" and out["bright"]["score"] is None
    assert "DetectorOutputError" in out["bright"]["error"] and want in out["bright"]["error"]
    assert "'sub'" in out["bright"]["error"]
    for v in ("a", "c"):
        assert out[v]["status"] == "ok" and 0.0 <= out[v]["score"] <= 1.0
