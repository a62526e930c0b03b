import json

import pyarrow.parquet as pq
import pytest
from conftest import upload_dir

from dfray.config import StorageConfig
from dfray.corpus import CorpusError, build_manifest, count_videos, iter_entries


def read(path):
    return pq.read_table(path).to_pylist()


def test_local_listing_with_dfdc_labels(corpus_copy, tmp_path):
    meta = json.loads((corpus_copy / "metadata.json").read_text())
    (corpus_copy / "part_1").mkdir()
    (corpus_copy / "part_1" / "x.mp4").write_bytes(b"\0" * 10)
    (corpus_copy / "part_1" / "metadata.json").write_text(json.dumps({"x.mp4": {"label": "FAKE"}}))
    (corpus_copy / "notes.txt").write_text("not a video")
    out = tmp_path / "run" / "manifest.parquet"
    summary = build_manifest(str(corpus_copy), str(out), StorageConfig())
    rows = read(out)
    assert summary.n_videos == len(meta) + 1 == len(rows)
    by_id = {r["video_id"]: r for r in rows}
    assert by_id["part_1/x.mp4"]["label"] == 1
    for name, info in meta.items():
        assert by_id[name]["label"] == (1 if info["label"] == "FAKE" else 0)
        assert by_id[name]["uri"] == str(corpus_copy / name)
        assert by_id[name]["size_bytes"] == (corpus_copy / name).stat().st_size
    assert [r["video_id"] for r in rows] == sorted(by_id)  # deterministic key order
    assert count_videos(str(corpus_copy), StorageConfig()) == len(rows)


def test_labels_csv_and_unlabelled(corpus_copy, tmp_path):
    (corpus_copy / "metadata.json").unlink()
    names = sorted(p.name for p in corpus_copy.glob("*.mp4"))
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,label\n" + f"{names[0]},FAKE\n{names[1]},0\n")
    out = tmp_path / "m.parquet"
    s = build_manifest(str(corpus_copy), str(out), StorageConfig(), labels_uri=str(csv))
    labels = {r["video_id"]: r["label"] for r in read(out)}
    assert labels[names[0]] == 1 and labels[names[1]] == 0
    assert all(labels[n] is None for n in names[2:])
    assert s.n_labelled == 2


def test_bad_labels_are_clear_errors(corpus_copy, tmp_path):
    (corpus_copy / "metadata.json").write_text("{not json")
    with pytest.raises(CorpusError, match="not valid JSON"):
        build_manifest(str(corpus_copy), str(tmp_path / "m.parquet"), StorageConfig())
    with pytest.raises(CorpusError, match="not found"):
        build_manifest(str(tmp_path / "nope"), str(tmp_path / "m.parquet"), StorageConfig())


def test_s3_listing_and_manifest_on_s3(tiny_corpus, s3, moto_server):
    s3.create_bucket(Bucket="videos")
    upload_dir(s3, tiny_corpus, "videos", "dfdc/part_0")
    cfg = StorageConfig(endpoint_url=moto_server)
    entries = list(iter_entries("s3://videos/dfdc", cfg, page_size=2))  # several pages
    assert len(entries) == len(list(tiny_corpus.iterdir()))
    s = build_manifest("s3://videos/dfdc", "s3://videos/runs/r/manifest.parquet", cfg)
    obj = s3.get_object(Bucket="videos", Key="runs/r/manifest.parquet")["Body"].read()
    import io

    rows = pq.read_table(io.BytesIO(obj)).to_pylist()
    meta = json.loads((tiny_corpus / "metadata.json").read_text())
    assert s.n_videos == len(meta) == len(rows) == s.n_labelled
    for r in rows:
        assert r["video_id"].startswith("part_0/")
        assert r["uri"] == f"s3://videos/dfdc/{r['video_id']}"
        name = r["video_id"].split("/", 1)[1]
        assert r["label"] == (1 if meta[name]["label"] == "FAKE" else 0)
        assert r["etag"]
