"""The container side, run locally: resource config, this instance's shard, resume seeds."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from dfray.cloud import container, processing, shipper


def test_resource_config(tmp_path):
    p = tmp_path / "resourceconfig.json"
    p.write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}))
    assert container.read_resource_config(str(p)) == ("algo-2", ["algo-1", "algo-2"])
    p.write_text(json.dumps({"current_host": "algo-3", "hosts": ["algo-1"]}))
    with pytest.raises(processing.SageMakerError, match="not among hosts"):
        container.read_resource_config(str(p))
    host, hosts = container.read_resource_config(str(tmp_path / "missing.json"))  # outside SageMaker
    assert hosts == [host]


def _entry_args(tmp_path, out, *extra):
    return container.entry_parser().parse_args(
        [
            "--run-id",
            "r",
            "--out",
            str(out),
            "--corpus",
            "s3://bkt/videos/",
            "--input-dir",
            str(tmp_path / "input"),
            "--scratch",
            str(tmp_path / "scratch"),
            *extra,
        ]
    )


def test_standalone_shard_uses_relative_ids_and_corpus_uris(tmp_path):
    from dfray.config import StorageConfig
    from dfray.results import RunFolder

    for rel in ("a.mp4", "sub/b.mp4", "notes.txt"):
        (tmp_path / "input" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "input" / rel).write_bytes(b"x" * 10)
    (tmp_path / "input" / "labels.csv").write_text("filename,label\nsub/b.mp4,FAKE\n")
    (tmp_path / "scratch").mkdir()
    args = _entry_args(tmp_path, tmp_path / "out")
    folder = RunFolder(str(tmp_path / "out"), "r", StorageConfig())
    rows = container.shard_rows(args, "h", ["h"], folder, StorageConfig(), print)
    by_id = {r["video_id"]: r for r in rows}
    assert set(by_id) == {"a.mp4", "sub/b.mp4"}
    assert by_id["sub/b.mp4"]["uri"] == "s3://bkt/videos/sub/b.mp4"
    assert (by_id["a.mp4"]["label"], by_id["sub/b.mp4"]["label"]) == (None, 1)
    man = pq.read_table(tmp_path / "out" / "r" / "manifest.parquet").to_pylist()
    assert {r["uri"] for r in man} == {"s3://bkt/videos/a.mp4", "s3://bkt/videos/sub/b.mp4"}
    with pytest.raises(processing.SageMakerError, match="multi-instance job needs the manifest"):
        container.shard_rows(
            args,
            "h",
            ["h", "g"],
            RunFolder(str(tmp_path / "o2"), "r", StorageConfig()),
            StorageConfig(),
            print,
        )


def test_resume_seeds_rows_already_on_the_run_folder(tmp_path):
    import pyarrow as pa

    from dfray.config import StorageConfig
    from dfray.results import RunFolder

    remote = RunFolder(str(tmp_path / "remote"), "r", StorageConfig())
    remote.write_part(
        "videos", pa.table({"video_id": ["a.mp4", "other.mp4"], "status": ["ok", "no_faces"]})
    )
    local = RunFolder(str(tmp_path / "local"), "r", StorageConfig())
    assert container._seed_done(local, remote, {"a.mp4", "b.mp4"}) == 1
    assert local.done_ids() == {"a.mp4"}  # what the runner will skip
    assert shipper.Shipper(local, remote, {}, "algo-1").sweep() == 0
    assert len(remote.parts("videos")) == 1  # the seed is never shipped back

