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


def test_hostile_entries_never_abort_listing(corpus_copy, tmp_path):
    """Real dangling symlinks, a symlink loop, a non-UTF-8 name, dot-files, other
    extensions, a label for no video and a BOM in labels.csv: listing goes on and says so."""
    import os

    from dfray.corpus import local_path

    good = sorted(p.name for p in corpus_copy.glob("*.mp4"))
    (corpus_copy / "metadata.json").unlink()
    os.symlink(corpus_copy / "gone.mp4", corpus_copy / "dangling.mp4")
    os.symlink(corpus_copy / "gone.txt", corpus_copy / "dangling.txt")
    os.symlink(corpus_copy / "loop_b.mp4", corpus_copy / "loop_a.mp4")
    os.symlink(corpus_copy / "loop_a.mp4", corpus_copy / "loop_b.mp4")
    bad_name = os.fsencode(str(corpus_copy)) + b"/caf\xe9.mp4"  # Latin-1, not UTF-8
    with open(bad_name, "wb") as f:
        f.write((corpus_copy / good[0]).read_bytes())
    (corpus_copy / ".hidden.mp4").write_bytes(b"x")
    (corpus_copy / "notes.txt").write_text("x")
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xef\xbb\xbffilename,label\n" + f"{good[0]},FAKE\nnot_there.mp4,REAL\n".encode())
    out = tmp_path / "m.parquet"
    s = build_manifest(str(corpus_copy), str(out), StorageConfig(), labels_uri=str(labels))
    rows = {r["video_id"]: r for r in read(out)}
    # video entries that cannot be read stay as rows (extraction makes them read_error)
    for vid in ("dangling.mp4", "loop_a.mp4", "loop_b.mp4"):
        assert rows[vid]["size_bytes"] == 0 and rows[vid]["etag"] == "unreadable"
    # the non-UTF-8 name: percent-encoded id, reversible to the exact bytes on disk
    assert rows["caf%E9.mp4"]["uri"].startswith("file://")
    assert local_path(rows["caf%E9.mp4"]["uri"]) == bad_name
    with open(local_path(rows["caf%E9.mp4"]["uri"]), "rb") as f:
        assert f.read() == (corpus_copy / good[0]).read_bytes()
    assert set(rows) == set(good) | {"dangling.mp4", "loop_a.mp4", "loop_b.mp4", "caf%E9.mp4"}
    assert rows[good[0]]["label"] == 1  # the BOM did not eat the header
    c = s.listing.counts
    assert c["unreadable_video"] == 3 and c["unreadable_entry"] == 1
    assert c["non_utf8_name"] == 1 and c["dot_file"] == 1
    assert c["other_extension"] == 1 and c["label_without_video"] == 1 and c["labels_bom"] == 1
    assert s.listing.examples["label_without_video"] == ["not_there.mp4"]
    d = s.listing.to_dict()
    assert json.loads(json.dumps(d)) == d
    text = "\n".join(s.listing.lines())
    assert "dangling.txt" in text and "not_there.mp4" in text and "3 kept as read_error" in text


def test_unreadable_and_non_utf8_videos_through_extraction(tiny_corpus, tmp_path):
    """A dangling video symlink becomes a read_error row with the OS's message; a video
    with a non-UTF-8 name is read through its percent-encoded URI like any other."""
    import os

    from dfray.config import DecodeConfig, FaceConfig
    from dfray.extract import VideoExtractor

    src = sorted(tiny_corpus.glob("*.mp4"))[0]
    os.symlink(tmp_path / "gone.mp4", tmp_path / "dangling.mp4")
    with open(os.fsencode(str(tmp_path)) + b"/\xff.mp4", "wb") as f:
        f.write(src.read_bytes())
    out = tmp_path / "m" / "manifest.parquet"
    build_manifest(str(tmp_path), str(out), StorageConfig())
    rows = {r["video_id"]: r for r in read(out)}
    ex = VideoExtractor(FaceConfig(), DecodeConfig(), StorageConfig())
    bad = ex(rows["dangling.mp4"])
    assert bad["status"] == "read_error" and "No such file" in bad["error"]
    ok = ex(rows["%FF.mp4"])
    assert ok["status"] != "read_error" and ok["n_frames"] > 0, ok.get("error")
