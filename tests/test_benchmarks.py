"""benchmarks/: the agreement check between dfray's pipeline and the sequential reference.

The smoke test runs the real benchmark (2 generated 360p videos, 8 frames, its default
EfficientNet-B0 ensemble at 380 px) end to end on a local Ray and requires both scorers to
agree within 1e-4; the speed figures it prints are not checked (they mean nothing on a
shared 2-core machine).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_pipeline  # noqa: E402
import reference_scorer  # noqa: E402


def _row(vid, status="ok", score=0.5, n_faces=8):
    return {"video_id": vid, "status": status, "score": score, "n_faces": n_faces}


def test_check_agreement_accepts_equal_results_and_reports_max_delta():
    pipe = [_row("a", score=0.25), _row("b", score=0.75), _row("c", "no_faces", None, 0)]
    ref = [_row("a", score=0.25 + 4e-5), _row("b", score=0.75), _row("c", "no_faces", None, 0)]
    out = bench_pipeline.check_agreement(pipe, ref, tol=1e-4)
    assert out["ok"] and out["problems"] == []
    assert out["n_compared"] == 2 and out["n_videos"] == 3
    assert out["max_abs_delta"] == pytest.approx(4e-5)


@pytest.mark.parametrize(
    ("pipe", "ref", "needle"),
    [
        ([_row("a", score=0.2)], [_row("a", score=0.2002)], "|Δscore|"),
        ([_row("a")], [_row("a", "no_faces", None, 0)], "status"),
        ([_row("a"), _row("b")], [_row("a")], "pipeline only"),
        ([_row("a")], [_row("a"), _row("b")], "reference only"),
        ([_row("a", score=float("nan"))], [_row("a")], "|Δscore|"),
        ([_row("a", score=None)], [_row("a")], "without a score"),
    ],
)
def test_check_agreement_flags_every_kind_of_mismatch(pipe, ref, needle):
    out = bench_pipeline.check_agreement(pipe, ref, tol=1e-4)
    assert not out["ok"]
    assert any(needle in p for p in out["problems"]), out["problems"]


def test_compare_boxes_counts_crops_that_change_after_int():
    pipe = [
        {"video_id": "a", "frame_index": 0, "box": [10.0, 20.0, 50.99999, 70.0]},
        {"video_id": "a", "frame_index": 0, "box": [200.0, 20.0, 250.0, 70.0]},
        {"video_id": "a", "frame_index": 5, "box": [11.0, 21.0, 51.0, 71.0]},
    ]
    ref = [
        {
            "video_id": "a",
            "boxes": [
                (0, 200.0, 20.0, 250.0, 70.0),
                (0, 10.0, 20.0, 51.00001, 70.0),
                (5, 11.0, 21.0, 51.0, 71.0),
                (7, 1.0, 1.0, 9.0, 9.0),
            ],
        },
        {"video_id": "b", "status": "read_error"},  # no boxes: not compared
    ]
    out = bench_pipeline.compare_boxes(pipe, ref)
    assert set(out) == {"a"}
    a = out["a"]
    assert a["n_faces"] == 4 and a["n_crops_differ"] == 1 and a["frames_differ"] == [7]
    assert a["max_abs_delta"] == pytest.approx(2e-5)


def test_reference_confident_strategy_matches_dfray():
    from dfray.aggregate import confident

    rng = np.random.default_rng(0)
    cases = [rng.random(n) for n in (1, 5, 12, 32, 100)]
    cases += [np.full(32, 0.9), np.full(32, 0.1), np.r_[np.full(13, 0.95), np.full(19, 0.5)]]
    for pred in cases:
        assert reference_scorer.confident_strategy(pred) == pytest.approx(confident(pred), abs=0)


def test_config_options():
    args = bench_pipeline.parse_args([])
    assert args.config == bench_pipeline.EFFNET and args.ref_workers == 6
    assert args.ref_threads is None  # torch's default intra-op threads
    assert bench_pipeline.parse_args(["--config", "builtin:demo"]).config == "builtin:demo"
    with pytest.raises(SystemExit):
        bench_pipeline.parse_args(["--config", "builtin:demo", "--encoder", "efficientnet_b0"])


@pytest.mark.timeout(300)
def test_smoke_pipeline_and_reference_agree(tmp_path):
    """2 videos, 360p, 8 frames, the default ensemble (EfficientNet-B0 at 380 px,
    confident): the benchmark's own check passes (|Δscore| <= 1e-4), the reference ran as
    the DFDC script (6 worker threads, OpenCV decode giving dfray's frames), and the seeded
    checkpoint is the winner's format, loaded with weights_only=True."""
    import torch

    from dfray.decode import decode_frames

    out_json = tmp_path / "bench.json"
    rc = bench_pipeline.main(
        [
            "--videos", "2", "--max-height", "360", "--frames", "8",
            "--work", str(tmp_path / "work"), "--json", str(out_json),
            "--no-startup-run", "--quiet",
        ]
    )  # fmt: skip
    doc = json.loads(out_json.read_text())
    assert rc == 0, doc["check"]["problems"]
    check = doc["check"]
    assert check["ok"] and check["n_videos"] == 2 and check["n_compared"] == 2
    assert check["max_abs_delta"] <= 1e-4
    videos = sorted((tmp_path / "work").glob("corpus-*/*.mp4"))
    assert set(doc["per_video"]) == {p.name for p in videos}
    assert all(v["n_frames"] == 8 for v in doc["per_video"].values())
    assert doc["pipeline"]["videos_per_s"] > 0 and doc["reference"]["videos_per_s"] > 0
    assert doc["reference"]["workers"] == 6

    (det,) = doc["ensemble"]["detectors"]
    assert det["arch"] == "effnet" and det["input_size"] == 380
    assert det["aggregation"] == "confident" and det["options"] == {"encoder": "efficientnet_b0"}
    ckpt = torch.load(det["weights"], map_location="cpu", weights_only=True)
    assert set(ckpt) == {"state_dict", "epoch", "bce_best"}
    assert all(k.startswith("module.") for k in ckpt["state_dict"])
    # the BatchNorm statistics and head move the scores away from 0.5
    scores = [v["reference"] for v in doc["per_video"].values()]
    assert max(abs(x - 0.5) for x in scores) > 0.05, scores

    # the reference's OpenCV reader returns dfray's decord frames, bit for bit
    import types

    for path in videos:
        ref_frames, idxs = reference_scorer.ReferenceScorer.read_frames(
            types.SimpleNamespace(n_frames=8), str(path)
        )
        frames, _ = decode_frames(str(path), 8)
        assert len(idxs) == 8 and np.array_equal(ref_frames, frames)


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_smoke_rescore_benchmark_agrees(tmp_path):
    """2 submissions, 2 videos, 4 frames: N `dfray score` runs and `dfray extract` + `dfray
    rescore` give the same runs and leaderboards (the benchmark's own check)."""
    import bench_rescore

    out_json = tmp_path / "bench.json"
    rc = bench_rescore.main(["--submissions", "2", "--videos", "2", "--frames", "4",
                             "--work", str(tmp_path / "work"), "--json", str(out_json),
                             "--quiet"])
    assert rc == 0
    doc = json.loads(out_json.read_text())
    assert doc["submissions"] == 2 and doc["direct_s"] > 0 and doc["cache_s"] > 0


def test_smoke_extract_benchmark(tiny_corpus, tmp_path):
    import bench_extract

    out = tmp_path / "ext.json"
    assert bench_extract.main([str(tiny_corpus), "--videos", "2", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["videos"] == 2 and doc["statuses"] == {"extracted": 2}
    assert doc["cpu_s_per_video"] > 0 and doc["minor_faults_per_video"] >= 0
