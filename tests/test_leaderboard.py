"""Leaderboard on a small known table, checked against metrics computed by hand."""

from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dfray.config import StorageConfig
from dfray.leaderboard import (
    SubmissionResult,
    build_leaderboard,
    resolution_bucket,
    seeded_split,
    split_from_file,
    split_from_metadata,
    write_leaderboard,
)

IDS = [f"part{i % 2}/v{i}.mp4" for i in range(10)]
LABELS = dict(zip(IDS, [1, 0, 1, 0, 1, 0, 1, 0, 1, 0], strict=True))
# public: v0..v5, private: v6..v9 (by base name, as a DFDC split file names them)
SPLIT_CSV = "filename,split\n" + "".join(
    f"v{i}.mp4,{'public' if i < 6 else 'private'}\n" for i in range(10))


def table(scores, failed=(), width=640, height=360):
    rows = []
    for v, s in zip(IDS, scores, strict=True):
        bad = v in failed
        rows.append({"video_id": v, "status": "error" if bad else "ok",
                     "score": None if bad else s, "width": width, "height": height})
    return pd.DataFrame(rows)


GOOD = [0.9, 0.2, 0.8, 0.3, 0.7, 0.1, 0.6, 0.4, 0.95, 0.05]
MEH = [0.6, 0.5, 0.4, 0.45, 0.55, 0.3, 0.5, 0.5, 0.5, 0.5]


def results():
    return [
        SubmissionResult("b--meh", "ok", table(MEH), wall_s=10.0, device_s=8.0, cost_usd=0.01),
        SubmissionResult("a--good", "ok", table(GOOD, failed={"part1/v3.mp4"}),
                         wall_s=12.0, device_s=9.0, cost_usd=0.02),
        SubmissionResult("c--broken", "load_error", None, message="not an ONNX file"),
    ]


def by_hand_log_loss(y, p):
    return -sum(math.log(q) if t else math.log(1 - q) for t, q in zip(y, p, strict=True)) / len(y)


def by_hand_auc(y, p):
    pos = [q for t, q in zip(y, p, strict=True) if t]
    neg = [q for t, q in zip(y, p, strict=True) if not t]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def by_hand_ap(y, p):
    order = sorted(range(len(p)), key=lambda i: -p[i])  # scores here have no ties
    hits, total = 0, 0.0
    for k, i in enumerate(order, 1):
        if y[i]:
            hits += 1
            total += hits / k
    return total / sum(y)


def test_known_table_by_hand():
    split = split_from_file(SPLIT_CSV, IDS)
    boards = build_leaderboard(results(), LABELS, split, seed=1, n_boot=200)
    pub, pub_slices = boards["public"]
    y = [1, 0, 1, 0, 1, 0]
    good = [0.9, 0.2, 0.8, 0.5, 0.7, 0.1]  # v3 failed: filled with 0.5 and counted
    a = pub.set_index("submission").loc["a--good"]
    assert a["log_loss"] == pytest.approx(by_hand_log_loss(y, good))
    assert a["roc_auc"] == pytest.approx(by_hand_auc(y, good))
    assert a["average_precision"] == pytest.approx(by_hand_ap(y, good))
    assert a["accuracy"] == 1.0  # the filled 0.5 is called REAL, and v3 is REAL
    assert (a["n_videos"], a["n_scored"], a["n_failed"], a["n_filled"]) == (6, 5, 1, 1)
    assert (a["wall_s"], a["device_s"], a["cost_usd"]) == (12.0, 9.0, 0.02)
    assert a["log_loss_lo"] <= a["log_loss"] <= a["log_loss_hi"]
    b = pub.set_index("submission").loc["b--meh"]
    assert b["log_loss"] == pytest.approx(by_hand_log_loss(y, MEH[:6]))
    assert b["n_failed"] == 0
    # ranks by log loss; the broken submission is listed, unranked, with its message
    assert pub["submission"].tolist() == ["a--good", "b--meh", "c--broken"]
    assert pub["rank"].tolist()[:2] == [1, 2] and pd.isna(pub["rank"].iloc[2])
    c = pub.set_index("submission").loc["c--broken"]
    assert c["status"] == "load_error" and pd.isna(c["log_loss"])
    assert 0.5 < a["p_beats_next"] <= 1 and pd.isna(b["p_beats_next"])
    # private split: v6..v9, nothing failed there
    priv = boards["private"][0].set_index("submission")
    assert priv.loc["a--good", "log_loss"] == pytest.approx(
        by_hand_log_loss([1, 0, 1, 0], [0.6, 0.4, 0.95, 0.05]))
    assert priv.loc["a--good", "n_videos"] == 4 and priv.loc["a--good", "n_failed"] == 0
    # slices: label-source folder and resolution bucket
    s = pub_slices[pub_slices["submission"] == "a--good"].set_index(["slice_kind", "slice"])
    part0 = [0, 2, 4]  # v0, v2, v4: all FAKE
    assert s.loc[("source", "part0"), "n_videos"] == 3
    assert s.loc[("source", "part0"), "log_loss"] == pytest.approx(
        by_hand_log_loss([1, 1, 1], [good[i] for i in part0]))
    assert s.loc[("resolution", "<=360"), "n_videos"] == 6


def test_bootstrap_is_stable_for_a_seed():
    split = split_from_file(SPLIT_CSV, IDS)
    one = build_leaderboard(results(), LABELS, split, seed=7, n_boot=300)["public"][0]
    two = build_leaderboard(results(), LABELS, split, seed=7, n_boot=300)["public"][0]
    other = build_leaderboard(results(), LABELS, split, seed=8, n_boot=300)["public"][0]
    cols = [c for c in one.columns if c.endswith(("_lo", "_hi"))] + ["p_beats_next"]
    pd.testing.assert_frame_equal(one[cols], two[cols])
    assert not one[cols].equals(other[cols])


def test_splits_from_metadata_and_seeded():
    meta = {"s3://b/part0/metadata.json": json.dumps(
        {"v0.mp4": {"label": "FAKE", "split": "public"},
         "v2.mp4": {"label": "FAKE", "split": "private"},
         "v4.mp4": {"label": "FAKE", "split": "train"}})}
    sp = split_from_metadata(meta, IDS)
    assert sp.assignment == {"part0/v0.mp4": "public", "part0/v2.mp4": "private",
                             "part0/v4.mp4": "train"}
    a = seeded_split(IDS, seed=3, public_fraction=0.5)
    assert a == seeded_split(list(reversed(IDS)), seed=3, public_fraction=0.5)
    assert a.source == {"kind": "seeded", "seed": 3, "public_fraction": 0.5}
    assert set(a.assignment.values()) == {"public", "private"}
    with pytest.raises(ValueError, match="line 2"):
        split_from_file("filename,split\nv0.mp4\n", IDS)


def test_resolution_buckets():
    assert [resolution_bucket(w, h) for w, h in
            [(640, 360), (854, 480), (1280, 720), (1920, 1080), (3840, 2160), (None, 5)]] \
        == ["<=360", "<=480", "<=720", "<=1080", ">1080", "unknown"]


def check_written(read):
    md = read("public/leaderboard.md").decode()
    assert md.startswith("# Leaderboard: public")
    assert "| 1 | a--good | ok |" in md and "load_error: not an ONNX file" in md
    assert "source: part0" in md and '"kind": "file"' in md
    assert "private" in read("private/leaderboard.md").decode()
    assert json.loads(read("private/split.json"))["videos"] == sorted(IDS[6:])


def test_write_local_and_s3(tmp_path, s3, moto_server):
    split = split_from_file(SPLIT_CSV, IDS, where="splits.csv")
    boards = build_leaderboard(results(), LABELS, split, seed=1, n_boot=50)
    write_leaderboard(boards, str(tmp_path / "lb"), split, seed=1, n_boot=50)
    t = pq.read_table(tmp_path / "lb" / "public" / "leaderboard.parquet")
    assert t.column("submission").to_pylist() == ["a--good", "b--meh", "c--broken"]
    assert json.loads(t.schema.metadata[b"dfray.bootstrap"]) == {"seed": 1, "n_boot": 50}
    check_written(lambda p: (tmp_path / "lb" / p).read_bytes())

    s3.create_bucket(Bucket="boards")
    cfg = StorageConfig(endpoint_url=moto_server, region="us-east-1")
    write_leaderboard(boards, "s3://boards/out", split, cfg, seed=1, n_boot=50)
    check_written(lambda p: s3.get_object(Bucket="boards", Key=f"out/{p}")["Body"].read())
