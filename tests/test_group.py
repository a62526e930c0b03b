"""dfray/runner/group.py: several ensembles scored from one read of a face cache, each in
its own actor pool, each run folder equal to scoring the cache with that ensemble alone.
Real Ray, real MTCNN (the cache), TorchScript and ONNX submissions built by the tests."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from parts import assert_exactly_once
from test_rescore import Tiny, submission

from dfray.config import DecodeConfig, RunConfig
from dfray.results import read_videos
from dfray.runner import run_extract, run_scoring
from dfray.runner.group import run_group_scoring
from dfray.submission import load_submissions

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]


@pytest.fixture(scope="module")
def group_cache(tiny_corpus, tmp_path_factory):
    """A face cache of the tiny corpus in several faces row groups (2 videos per part)."""
    out = tmp_path_factory.mktemp("gcache")
    run_extract(RunConfig(corpus=str(tiny_corpus), out=str(out), run_id="c", flush_rows=2,
                          compact=False, decode=DecodeConfig(n_frames=4)), progress=False)
    return out / "c"


@pytest.fixture(scope="module")
def ensembles(tmp_path_factory):
    root = tmp_path_factory.mktemp("gsubs")
    folders = [submission(root, "t", "a", "torchscript", Tiny(11)),
               submission(root, "t", "b", "onnx", Tiny(12)),
               submission(root, "t", "c", "torchscript", Tiny(13))]
    subs, bad = load_submissions([str(f) for f in folders], None)
    assert not bad
    return [s.ensemble for s in sorted(subs, key=lambda s: s.id)]


def _cfg(cache, out, run_id, ensemble) -> RunConfig:
    return RunConfig(corpus=str(cache), out=str(out), run_id=run_id, ensemble=ensemble,
                     flush_rows=1, score_batch_videos=1)


def _rows(run_dir) -> dict:
    return {r["video_id"]: r for r in read_videos(str(run_dir)).to_pylist()}


def test_a_group_reads_the_cache_once_and_equals_each_run_alone(group_cache, ensembles,
                                                               tmp_path):
    cache_ids = set(pq.read_table(group_cache / "manifest.parquet")["video_id"].to_pylist())
    cache_rows = _rows(group_cache)
    ok = {v for v, r in cache_rows.items() if r["status"] == "ok"}
    assert ok and len(pq.ParquetDataset(group_cache / "faces").files) > 1
    runs = ["a", "b", "c"]
    results = run_group_scoring([_cfg(group_cache, tmp_path / "g", r, e)
                                 for r, e in zip(runs, ensembles, strict=True)], progress=False)
    assert [r.state for r in results] == ["complete"] * 3
    for run_id, ens in zip(runs, ensembles, strict=True):
        assert run_scoring(_cfg(group_cache, tmp_path / "solo", run_id, ens),
                           progress=False).state == "complete"
        assert_exactly_once(tmp_path / "g" / run_id, cache_ids)
        got, want = _rows(tmp_path / "g" / run_id), _rows(tmp_path / "solo" / run_id)
        assert got.keys() == want.keys() == cache_ids
        for v, w in want.items():
            g = got[v]
            assert (g["status"], g["n_faces"], g["run_id"]) == (w["status"], w["n_faces"], run_id)
            assert g["status"] == ("ok" if v in ok else cache_rows[v]["status"])
            if w["score"] is None:
                assert g["score"] is None
            else:
                assert g["score"] == pytest.approx(w["score"], abs=1e-6), (run_id, v)
        # the three ensembles gave different scores: each pool ran its own detectors
    scores = [{v: r["score"] for v, r in _rows(tmp_path / "g" / k).items()} for k in runs]
    assert scores[0] != scores[1] != scores[2]
    # every faces row group of the cache read once for the whole group, not once per run
    doc = json.loads((tmp_path / "g" / "a" / "run.json").read_text())
    group = doc["attempts"][-1]["group"]
    assert group["runs"] == runs and group["cache_row_groups"] >= 2
    assert group["cache_row_groups_read"] == group["cache_row_groups"]
    assert doc["attempts"][-1]["layout"]["score"]["actors"] >= 1
    assert doc["state"] == "complete" and doc["group"] == runs


def test_a_group_scores_only_what_each_run_is_missing(group_cache, ensembles, tmp_path):
    """A run that is complete is left alone; a new run in the group gets every video."""
    out = tmp_path / "g"
    first = run_group_scoring([_cfg(group_cache, out, "a", ensembles[0])], progress=False)
    assert first[0].state == "complete"
    before = (out / "a" / "run.json").read_text()
    parts_a = sorted(p.name for p in (out / "a").rglob("*.parquet"))
    again = run_group_scoring([_cfg(group_cache, out, "a", ensembles[0]),
                               _cfg(group_cache, out, "b", ensembles[1])], progress=False)
    assert [r.scored_now for r in again] == [0, len(_rows(group_cache))]
    assert (out / "a" / "run.json").read_text() == before
    assert sorted(p.name for p in (out / "a").rglob("*.parquet")) == parts_a
    assert_exactly_once(out / "b", set(_rows(group_cache)))
