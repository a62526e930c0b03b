"""The face cache (dfray/cache.py): `dfray extract` once, then `dfray score CACHE` runs only
the detectors and equals scoring the corpus directly. Real Ray, real MTCNN, real videos."""

import io
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import add_bad_inputs, upload_dir
from parts import assert_exactly_once

from dfray.cache import decode_png
from dfray.cli import main
from dfray.results import read_videos

pytestmark = pytest.mark.timeout(900)


def dfray(*args) -> int:
    return main([*args, "--quiet"])


def rows_by_id(run) -> dict:
    return {r["video_id"]: r for r in read_videos(str(run)).to_pylist()}


def test_cache_then_score_equals_direct_scoring_with_the_corpus_gone(
        corpus_copy, tmp_path, seeded_config):
    expected_bad = add_bad_inputs(corpus_copy)
    out = tmp_path / "out"
    assert dfray("score", str(corpus_copy), "--out", str(out), "--config", seeded_config,
                 "--run-id", "direct") == 0
    assert dfray("extract", str(corpus_copy), "--out", str(tmp_path / "caches"),
                 "--run-id", "c", "--flush-rows", "3", "--no-compact") == 0
    cache = tmp_path / "caches" / "c"
    videos = rows_by_id(cache)
    assert_exactly_once(cache, set(videos))
    assert len(pq.ParquetDataset(cache / "videos").files) > 1  # resumable parts, not one file

    # cache.json: the extraction spec, the version, counts by status
    doc = json.loads((cache / "cache.json").read_text())
    ext = doc["extraction"]
    assert ext["frames"] == 32 and len(ext["mtcnn_thresholds"]) == 3
    assert {"scale", "min_face_size", "margin", "dfray_version"} <= set(ext)
    assert doc["state"] == "complete" and doc["counts"]["ok"] == 6
    assert sum(doc["counts"].values()) == len(videos) == 6 + len(expected_bad)
    for vid, status in expected_bad.items():
        assert videos[vid]["status"] == status and "score" not in videos[vid]

    # one faces row per face, the margin crop lossless at its native resolution
    faces = pq.read_table(cache / "faces").to_pylist()
    for vid, row in videos.items():
        mine = [f for f in faces if f["video_id"] == vid]
        assert len(mine) == (row["n_faces"] or 0), vid
    f = faces[0]
    crop = decode_png(f["crop"])
    x0, y0, x1, y1 = f["box"]
    assert crop.dtype == np.uint8 and crop.shape[2] == 3
    assert crop.shape[0] >= (y1 - y0) * 0.9 and crop.shape[1] >= (x1 - x0) * 0.9  # box + margin

    # score from the cache with the corpus deleted: no decode, no MTCNN
    shutil.rmtree(corpus_copy)
    assert dfray("score", str(cache), "--out", str(out), "--config", seeded_config,
                 "--run-id", "cached") == 0
    direct, cached = rows_by_id(out / "direct"), rows_by_id(out / "cached")
    assert_exactly_once(out / "cached", set(direct))
    assert set(direct) == set(cached)
    for vid, d in direct.items():
        c = cached[vid]
        assert (c["status"], c["n_faces"], c["n_frames"]) == (d["status"], d["n_faces"],
                                                            d["n_frames"]), vid
        if d["score"] is None:
            assert c["score"] is None and c["error"], vid
        else:
            assert c["score"] == pytest.approx(d["score"], abs=1e-6), vid
            assert c["model_scores"]["m"] == pytest.approx(d["model_scores"]["m"], abs=1e-6)
    run_doc = json.loads((out / "cached" / "run.json").read_text())
    assert run_doc["face_cache"] == str(cache)
    assert set(run_doc["stats"]["stages"]) >= {"score"}
    assert not run_doc["stats"]["stages"].get("detect", {}).get("busy_s")


def test_extract_to_s3_resumes_exactly_once_and_scores(tiny_corpus, s3, moto_server,
                                                       seeded_config, tmp_path):
    s3.create_bucket(Bucket="corpus")
    s3.create_bucket(Bucket="caches")
    upload_dir(s3, tiny_corpus, "corpus", "dfdc")
    s3.put_object(Bucket="corpus", Key="dfdc/broken.mp4", Body=b"not a video at all")
    ep = ("--endpoint-url", moto_server)
    assert dfray("extract", "s3://corpus/dfdc", "--out", "s3://caches/c", "--run-id", "x",
                 "--limit", "3", *ep) == 0
    assert dfray("extract", "s3://corpus/dfdc", "--out", "s3://caches/c", "--run-id", "x",
                 *ep) == 0  # the resume extracts only the other four

    def raw(prefix):
        """video ids in the parts under prefix, and those a compaction dropped as
        duplicates (its _commit file says; the run compacts its parts when it completes)."""
        ids = []
        for o in s3.list_objects_v2(Bucket="caches", Prefix=prefix)["Contents"]:
            if o["Key"].endswith("/"):
                continue  # a folder marker pyarrow leaves when it deletes (the compaction)
            body = s3.get_object(Bucket="caches", Key=o["Key"])["Body"].read()
            if o["Key"].endswith(".json"):
                ids += json.loads(body)["dropped_duplicates"]
                continue
            ids += pq.read_table(io.BytesIO(body), columns=["video_id"]).column(0).to_pylist()
        return ids

    ids = raw("c/x/videos/")
    assert len(ids) == len(set(ids)) == 7  # exactly once in the raw parts
    doc = json.loads(s3.get_object(Bucket="caches", Key="c/x/cache.json")["Body"].read())
    assert doc["launches"] == 2 and doc["counts"] == {"ok": 6, "decode_error": 1}

    out = tmp_path / "out"
    assert dfray("score", "s3://caches/c/x", "--out", str(out), "--config", seeded_config,
                 "--run-id", "s", *ep) == 0
    rows = rows_by_id(out / "s")
    assert_exactly_once(out / "s", set(ids))
    assert rows["broken.mp4"]["status"] == "decode_error"
    assert all(r["status"] == "ok" and 0 <= r["score"] <= 1 for v, r in rows.items()
               if v != "broken.mp4")


def test_crops_round_trip_in_a_process_that_imported_decord_first():
    """A worker that decoded videos (decord loaded first) must still read the cache: with
    OpenCV's PNG codec it could not (libpng "bad parameters to zlib", imdecode None)."""
    import subprocess
    import sys

    code = (
        "import decord, numpy as np\n"
        "from dfray.cache import decode_png, encode_png\n"
        "a = np.random.default_rng(0).integers(0, 256, (247, 207, 3), dtype=np.uint8)\n"
        "b = decode_png(encode_png(a))\n"
        "assert b.dtype == np.uint8 and (b == a).all()\n"
        "print('same')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "same", out.stderr[-2000:]
    with pytest.raises(ValueError, match="not a readable PNG"):
        decode_png(b"\x89PNG\r\n\x1a\nbroken")
