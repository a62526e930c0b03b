"""End-to-end scoring runs on a real local Ray with real videos, MTCNN and Parquet."""

import io
import json

import pyarrow.parquet as pq
import pytest
from conftest import add_bad_inputs, upload_dir

from dfray.cli import main
from dfray.results import read_videos, videos_schema

pytestmark = pytest.mark.timeout(600)


def score(*args):
    return main(["score", *args, "--quiet"])


def test_score_run_writes_one_row_per_video_with_schema(corpus_copy, tmp_path, random_config):
    expected_bad = add_bad_inputs(corpus_copy)
    meta = json.loads((corpus_copy / "metadata.json").read_text())
    out = tmp_path / "out"
    assert score(str(corpus_copy), "--out", str(out), "--config", random_config, "--run-id", "r1") == 0
    run = out / "r1"
    t = read_videos(str(run))
    assert t.schema.equals(videos_schema(["m"]))
    rows = {r["video_id"]: r for r in t.to_pylist()}
    assert t.num_rows == len(rows) == len(meta) + len(expected_bad)  # exactly one row each
    for vid, status in expected_bad.items():
        assert rows[vid]["status"] == status, rows[vid]
        assert rows[vid]["error"], rows[vid]
        assert rows[vid]["score"] is None and rows[vid]["model_scores"] is None
    for name, info in meta.items():
        r = rows[name]
        assert r["status"] == "ok", r
        assert 0.0 <= r["score"] <= 1.0 and r["model_scores"]["m"] == pytest.approx(r["score"])
        assert r["label"] == (1 if info["label"] == "FAKE" else 0)
        assert r["n_frames"] == 32 and r["n_faces"] >= 24
        assert (r["width"], r["height"]) == (info["width"], info["height"])
        assert r["frame_count"] == info["frames"] and r["fps"] == pytest.approx(info["fps"])
        assert r["run_id"] == "r1" and r["worker"] and r["scored_at"] is not None
        assert r["decode_s"] > 0 and r["detect_s"] > 0 and r["score_s"] >= 0
    faces = pq.read_table(run / "faces").to_pylist()
    assert {f["video_id"] for f in faces} == set(meta)
    assert sum(1 for f in faces if f["video_id"] == name) == rows[name]["n_faces"]
    assert all(len(f["box"]) == 4 and 0 <= f["score_m"] <= 1 for f in faces)
    doc = json.loads((run / "run.json").read_text())
    assert doc["state"] == "complete" and doc["schema_version"] == 1
    assert doc["counts"]["ok"] == len(meta) and sum(doc["counts"].values()) == t.num_rows
    assert doc["detectors"][0]["name"] == "m" and doc["versions"]["ray"]
    assert set(doc["stats"]["stages"]) == {"decode", "detect", "score"}
    # the first video was measured in a child while Ray started; the run does not wait
    # for it, so the layout records its costs only if it was done in time (a broken first
    # video gives none), else the defaults
    attempt = doc["attempts"][-1]
    costs = attempt["layout"]["costs"]
    first = pq.read_table(run / "manifest.parquet").column("video_id")[0].as_py()
    assert costs["source"] in ("default", "calibration (first video)"), costs
    assert first not in expected_bad or costs["source"] == "default", (first, costs)
    assert costs["extract_s"] > 0 and costs["score_s"] > 0
    assert attempt["workers"] == attempt["layout"]["extract"]["actors"] >= 1
    assert attempt["score_workers"] == attempt["layout"]["score"]["actors"] >= 1
    for stage in attempt["stages"].values():
        assert 0 < stage["utilization"] <= 1.5 and stage["workers"] >= 1
    assert pq.read_table(run / "manifest.parquet").num_rows == t.num_rows

    # metrics on the run: fills the unscored labelled videos explicitly (none here)
    assert main(["metrics", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["n_evaluated"] == len(meta) and m["counts"]["ok"] == len(meta)


def test_rerun_same_id_scores_only_missing_videos(corpus_copy, tmp_path, random_config):
    out = tmp_path / "out"
    assert score(str(corpus_copy), "--out", str(out), "--config", random_config,
                 "--run-id", "r", "--limit", "2") == 0
    first = {r["video_id"]: r for r in read_videos(str(out / "r")).to_pylist()}
    assert len(first) == 2
    # the second launch batches two videos per detector pass: on this CPU node that keeps
    # a score pool of its own (the first launch ran both stages in one pool)
    assert score(str(corpus_copy), "--out", str(out), "--config", random_config, "--run-id", "r",
                 "--score-batch", "2") == 0
    t = read_videos(str(out / "r"))
    rows = t.to_pylist()
    assert len(rows) == len({r["video_id"] for r in rows}) == 6
    for r in rows:  # the first two rows were not rewritten
        if r["video_id"] in first:
            assert r["scored_at"] == first[r["video_id"]]["scored_at"]
    doc = json.loads((out / "r" / "run.json").read_text())
    assert doc["launches"] == 2 and [a["n_scored"] for a in doc["attempts"]] == [2, 4]
    # the second launch took its costs from the first one's timings, without calibrating
    sources = [a["layout"]["costs"]["source"] for a in doc["attempts"]]
    assert sources[0] in ("default", "calibration (first video)")
    assert sources[1] == "earlier attempts of this run"
    assert doc["stats"]["n_scored"] == 6 and doc["stats"]["attempts"] == 2
    assert [a["layout"]["fused"] for a in doc["attempts"]] == [True, False]
    assert all(r["status"] == "ok" and r["n_faces"] > 0 for r in rows)


def test_s3_corpus_and_outputs(tiny_corpus, s3, moto_server, random_config):
    s3.create_bucket(Bucket="corpus")
    s3.create_bucket(Bucket="results")
    upload_dir(s3, tiny_corpus, "corpus", "dfdc")
    s3.put_object(Bucket="corpus", Key="dfdc/broken.mp4", Body=b"not a video at all")
    rc = score("s3://corpus/dfdc", "--out", "s3://results/runs", "--config", random_config,
               "--run-id", "s3run", "--endpoint-url", moto_server)
    assert rc == 0
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="results")["Contents"]]
    assert "runs/s3run/run.json" in keys and "runs/s3run/manifest.parquet" in keys
    parts = [k for k in keys if k.startswith("runs/s3run/videos/")]
    rows = []
    for k in parts:
        body = s3.get_object(Bucket="results", Key=k)["Body"].read()
        rows += pq.read_table(io.BytesIO(body)).to_pylist()
    meta = json.loads((tiny_corpus / "metadata.json").read_text())
    by_id = {r["video_id"]: r for r in rows}
    assert len(rows) == len(by_id) == len(meta) + 1
    assert by_id["broken.mp4"]["status"] == "decode_error"
    assert all(by_id[n]["status"] == "ok" and by_id[n]["uri"] == f"s3://corpus/dfdc/{n}" for n in meta)
    assert all(by_id[n]["etag"] for n in meta)



def test_todo_lists_the_largest_videos_first_within_limit_and_without_done(tmp_path):
    import pyarrow.parquet as pq

    from dfray.config import StorageConfig
    from dfray.corpus import build_manifest
    from dfray.results import RunFolder
    from dfray.runner.driver import write_todo

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sizes = {"a": 300, "b": 100, "c": 900, "d": 500, "e": 700, "f": 200}  # listing order a..f
    for name, n in sizes.items():
        (corpus / f"{name}.mp4").write_bytes(b"x" * n)
    folder = RunFolder.at(str(tmp_path / "run"))
    build_manifest(str(corpus), folder.manifest, StorageConfig())
    uri, n_todo, n_total = write_todo(folder, done={"d.mp4"}, limit=5, actors=1)
    f = pq.ParquetFile(uri)
    ids = f.read().column("video_id").to_pylist()
    # the first 5 of the manifest less the done one, largest file first (the cheap ones
    # are the single-video tasks at the end)
    assert (n_todo, n_total) == (4, 5) and ids == ["c.mp4", "e.mp4", "a.mp4", "b.mp4"]
    assert [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)] == [1, 1, 1, 1]


def test_todo_groups_shrink_towards_the_end_of_the_list():
    from dfray.runner.driver import TASKS_PER_ACTOR, TODO_GROUP, todo_groups

    assert todo_groups(0, 2) == []
    assert todo_groups(6, 2) == [1] * 6  # the tests' corpora: one video per task
    long = todo_groups(10_000, 2)
    assert long[0] == TODO_GROUP and long[-1] == 1
    for n in range(1, 300):
        for actors in (1, 2, 5):
            sizes = todo_groups(n, actors)
            assert sum(sizes) == n and all(1 <= g <= TODO_GROUP for g in sizes)
            assert sizes == sorted(sizes, reverse=True)  # big groups first, single videos last
            # whatever is left at any point makes at least TASKS_PER_ACTOR tasks per actor
            for i in range(len(sizes)):
                assert len(sizes) - i >= min(sum(sizes[i:]), TASKS_PER_ACTOR * actors)
