"""`dfray export` of a real run: DFDC's submission.csv and the videos table."""

import csv
import io
import json

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import upload_dir

from dfray.cli import main
from dfray.results import RunFolder, read_manifest, read_videos

pytestmark = pytest.mark.timeout(600)


def test_kaggle_submission_has_one_line_per_video_with_fills(small_run, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    assert main(["export", str(small_run), "--format", "kaggle", "-o", str(out), "-q"]) == 0
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["filename", "label"]
    ids = read_manifest(RunFolder.at(str(small_run)), ["video_id"]).column("video_id").to_pylist()
    assert [r[0] for r in rows[1:]] == ids and len(ids) == 10  # one line per video
    scores = {r["video_id"]: r for r in read_videos(str(small_run)).to_pylist()}
    for name, label in rows[1:]:
        v = scores[name]
        if v["score"] is None:
            assert label == "0.500000", (name, v["status"])
        else:
            assert float(label) == pytest.approx(v["score"], abs=1e-6)
    assert "4 of 10 videos had no score; filled with 0.5" in capsys.readouterr().err


def test_kaggle_fill_value_and_stdout(small_run, capsys):
    assert main(["export", str(small_run), "--fill", "0.3", "-q"]) == 0
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert len(lines) == 11 and sum(1 for x in lines if x.endswith(",0.300000")) == 4
    assert "filled with 0.3" in cap.err


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_videos_table_exports(small_run, tmp_path, fmt):
    out = tmp_path / f"videos.{fmt}"
    assert main(["export", str(small_run), "--format", fmt, "-o", str(out), "-q"]) == 0
    want = {r["video_id"]: r for r in read_videos(str(small_run)).to_pylist()}
    if fmt == "parquet":
        got = pq.read_table(out).to_pylist()
    elif fmt == "csv":
        got = pacsv.read_csv(out).to_pylist()
        assert "model_scores.m" in got[0]  # the struct flattened per detector
    else:
        got = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(got) == len(want) == 10
    for g in got:
        w = want[g["video_id"]]
        assert g["status"] == w["status"]
        assert (g["score"] is None) == (w["score"] is None)
        if w["score"] is not None:
            assert g["score"] == pytest.approx(w["score"], rel=1e-6)


def test_parquet_export_needs_a_file(small_run):
    assert main(["export", str(small_run), "--format", "parquet"]) == 2


def test_kaggle_export_of_an_s3_run(small_run, s3, moto_server, tmp_path):
    s3.create_bucket(Bucket="exp")
    upload_dir(s3, small_run, "exp", "runs/r")
    assert main(["export", "s3://exp/runs/r", "--endpoint-url", moto_server,
                 "-o", "s3://exp/submission.csv", "-q"]) == 0
    body = s3.get_object(Bucket="exp", Key="submission.csv")["Body"].read().decode()
    assert len(list(csv.reader(io.StringIO(body)))) == 11


def test_kaggle_export_of_a_stopped_run_fills_videos_without_a_row(small_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(small_run, run)
    parts = RunFolder.at(str(run)).parts("videos")
    assert len(parts) > 1
    (run / "videos" / parts[-1].rsplit("/", 1)[-1]).unlink()  # as if the run stopped there
    kept = read_videos(str(run)).to_pylist()
    scored = {r["video_id"]: r["score"] for r in kept if r["score"] is not None}
    out = tmp_path / "submission.csv"
    assert main(["export", str(run), "-o", str(out), "-q"]) == 0
    rows = list(csv.reader(out.open()))[1:]
    assert len(rows) == 10 and len(kept) < 10
    filled = [name for name, label in rows if name not in scored]
    assert filled and all(label == "0.500000" for name, label in rows if name in filled)
    assert f"{len(filled)} of 10 videos had no score" in capsys.readouterr().err
