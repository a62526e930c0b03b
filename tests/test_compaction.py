"""Compaction of a real run folder's parts (local and on moto's S3) and its atomic commit."""

import shutil
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import pytest
from conftest import upload_dir

from dfray import SCHEMA_VERSION, results
from dfray.config import StorageConfig

pytestmark = pytest.mark.timeout(600)


class Crash(Exception):
    pass


def compact(run, on_step=None):
    """videos/ into parts of 5 rows (2 for the 10 videos), faces/ into parts of 1000."""
    out = results.compact(run, target_rows=5, tables=["videos"], on_step=on_step)
    return {**out, **results.compact(run, target_rows=1000, tables=["faces"])}


def raw_parts(folder: results.RunFolder, name: str) -> list[str]:
    """Every part file present in the table's folder, whatever the commits say."""
    d = folder.table_dir(name)
    return [f"{d}/{b}" for b in folder.listing(name) if b.endswith(".parquet")]


def video_rows(folder):
    t = folder.read_table("videos")
    return sorted(t.to_pylist(), key=lambda r: r["video_id"])


def faces_by_video(folder):
    """video_id -> sorted (frame, face, det_prob) of the faces a reader sees, and asserts
    each video's faces sit in one row group of one part."""
    fs, _ = results.storage.filesystem(folder.root, folder.cfg)
    where, faces = {}, defaultdict(list)
    for p in folder.parts("faces"):
        pf = pq.ParquetFile(fs.open_input_file(p))
        for g in range(pf.num_row_groups):
            for f in pf.read_row_group(g, columns=["video_id", "frame_index", "face_index"]
                                       ).to_pylist():
                assert where.setdefault(f["video_id"], (p, g)) == (p, g), f
                faces[f["video_id"]].append((f["frame_index"], f["face_index"]))
    return {v: sorted(x) for v, x in faces.items()}


def assert_raw_once(folder, n_videos):
    fs, _ = results.storage.filesystem(folder.root, folder.cfg)
    ids = Counter()
    for p in raw_parts(folder, "videos"):
        path = p[len("s3://"):] if p.startswith("s3://") else p
        t = pq.read_table(fs.open_input_file(path))
        assert t.schema.metadata[b"schema_version"] == str(SCHEMA_VERSION).encode()
        assert t.schema.metadata[b"run_id"] == b"r"
        ids.update(t.column("video_id").to_pylist())
    assert len(ids) == n_videos and set(ids.values()) == {1}, ids


def test_parts_written_by_a_run_carry_schema_version_and_run_id(small_run):
    folder = results.RunFolder.at(str(small_run))
    for name in ("videos", "faces"):
        meta = pq.read_schema(folder.parts(name)[0]).metadata
        assert meta[b"schema_version"] == str(SCHEMA_VERSION).encode()
        assert meta[b"run_id"] == b"r"


def test_compaction_of_a_local_run(small_run, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(small_run, run)
    folder = results.RunFolder.at(str(run))
    rows, faces = video_rows(folder), faces_by_video(folder)
    n_parts, n_faces = len(folder.parts("videos")), len(folder.parts("faces"))
    assert n_parts > 2 and n_faces > 1 and len(rows) == 10
    out = compact(str(run))
    assert out["videos"] == {"parts_before": n_parts, "parts_after": 2}
    assert out["faces"] == {"parts_before": n_faces, "parts_after": 1}
    assert video_rows(folder) == rows and faces_by_video(folder) == faces
    assert_raw_once(folder, 10)
    assert len(raw_parts(folder, "faces")) == 1
    # the run folder still reads as before with the standard readers
    assert results.read_videos(str(run)).num_rows == 10
    assert pq.read_table(run / "videos").num_rows == 10
    # a second compaction of an already compact folder changes nothing
    before = folder.listing("videos")
    compact(str(run))
    assert sorted(folder.listing("videos")) == sorted(before)


@pytest.mark.parametrize("step", ["written", "committed"])
def test_a_crash_mid_compaction_leaves_a_consistent_folder(small_run, tmp_path, step):
    run = tmp_path / "r"
    shutil.copytree(small_run, run)
    folder = results.RunFolder.at(str(run))
    rows, faces = video_rows(folder), faces_by_video(folder)
    n_raw = len(raw_parts(folder, "videos"))

    def crash(table, at):
        if table == "videos" and at == step:
            raise Crash(at)

    with pytest.raises(Crash):
        compact(str(run), on_step=crash)
    # the crashed compaction left old and new files side by side; readers see each once
    assert len(raw_parts(folder, "videos")) == n_raw + 2
    assert video_rows(folder) == rows and faces_by_video(folder) == faces
    # the next compaction finishes the job
    compact(str(run))
    assert video_rows(folder) == rows and faces_by_video(folder) == faces
    assert_raw_once(folder, 10)
    assert len(folder.commits("videos")) <= 1


def test_compaction_on_s3(small_run, s3, moto_server):
    s3.create_bucket(Bucket="compact")
    upload_dir(s3, small_run, "compact", "runs/r")
    cfg = StorageConfig(endpoint_url=moto_server)
    folder = results.RunFolder.at("s3://compact/runs/r", cfg)
    rows, faces = video_rows(folder), faces_by_video(folder)
    assert len(rows) == 10

    def crash(table, at):
        if table == "videos" and at == "committed":
            raise Crash(at)

    with pytest.raises(Crash):
        compact(folder, on_step=crash)
    assert video_rows(folder) == rows
    compact(folder)
    assert video_rows(folder) == rows and faces_by_video(folder) == faces
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="compact", Prefix="runs/r/videos/")
            ["Contents"]]
    assert len([k for k in keys if k.endswith(".parquet")]) == 2
    assert_raw_once(folder, 10)


def test_a_compacted_face_cache_still_scores(tiny_corpus, tmp_path, random_config):
    """A real face cache written one part per flush, compacted into one faces part: each
    video's faces stay in one row group, and scoring from the cache (which reads one row
    group per task) gives the same scores as before compaction."""
    from dfray.config import RunConfig
    from dfray.options import from_args
    from dfray.runner.run import run_extract, run_scoring

    def cfg(corpus, out, run_id):
        return from_args(RunConfig, {"corpus": str(corpus), "out": str(out), "run_id": run_id,
                                     "ensemble": random_config, "flush_rows": 1}, environ={})

    run_extract(cfg(tiny_corpus, tmp_path / "caches", "c"), progress=False)
    cache = results.RunFolder.at(str(tmp_path / "caches" / "c"))
    before = run_scoring(cfg(cache.root, tmp_path / "out", "before"), progress=False)
    assert before.state == "complete"
    faces = faces_by_video(cache)
    assert len(cache.parts("faces")) > 1 and len(faces) == 6
    results.compact(cache, target_rows=100_000)
    assert len(cache.parts("faces")) == len(raw_parts(cache, "faces")) == 1
    assert faces_by_video(cache) == faces  # one row group per video, same faces
    after = run_scoring(cfg(cache.root, tmp_path / "out", "after"), progress=False)
    assert after.state == "complete"
    s_before = {r["video_id"]: r["score"] for r in results.read_videos(
        str(tmp_path / "out" / "before")).to_pylist()}
    s_after = {r["video_id"]: r["score"] for r in results.read_videos(
        str(tmp_path / "out" / "after")).to_pylist()}
    assert s_after == s_before and all(v is not None for v in s_after.values())



def test_faces_row_groups_are_merged_whole_never_split(small_run, tmp_path):
    """The run's faces rewritten one part per video (the writer's unit), then compacted
    with a target of about two and a half videos: several files, row groups holding whole
    videos only."""
    import pyarrow.compute as pc

    run = tmp_path / "r"
    shutil.copytree(small_run, run)
    folder = results.RunFolder.at(str(run))
    t = folder.read_table("faces")
    for p in folder.parts("faces"):
        (run / "faces" / p.rsplit("/", 1)[-1]).unlink()
    for vid in sorted(set(t.column("video_id").to_pylist())):
        folder.write_part("faces", t.filter(pc.equal(t.column("video_id"), vid)))
    faces = faces_by_video(folder)
    n = max(len(f) for f in faces.values())
    out = results.compact(folder, target_rows=int(n * 2.5), tables=["faces"])
    assert out["faces"]["parts_before"] == 6 and 1 < out["faces"]["parts_after"] < 6
    assert faces_by_video(folder) == faces  # asserts one row group per video
    fs, _ = results.storage.filesystem(folder.root, folder.cfg)
    per_group = [len(set(pf.read_row_group(g, columns=["video_id"]).column(0).to_pylist()))
                 for p in folder.parts("faces")
                 for pf in [pq.ParquetFile(fs.open_input_file(p))]
                 for g in range(pf.num_row_groups)]
    assert sum(per_group) == 6 and max(per_group) >= 2  # merged whole, never split
