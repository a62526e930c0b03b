import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.parts import assert_exactly_once


def _part(run, name, ids):
    (run / "videos").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"video_id": ids}), run / "videos" / name)


def test_exactly_once_passes_and_fails_on_raw_duplicates(tmp_path):
    _part(tmp_path, "part-0.parquet", ["a", "b"])
    _part(tmp_path, "part-1.parquet", ["c"])
    assert assert_exactly_once(tmp_path, {"a", "b", "c"})["a"] == 1
    _part(tmp_path, "part-2.parquet", ["b"])
    with pytest.raises(AssertionError, match="'b': 2"):
        assert_exactly_once(tmp_path)


def test_exactly_once_fails_on_missing(tmp_path):
    _part(tmp_path, "part-0.parquet", ["a"])
    with pytest.raises(AssertionError, match="missing"):
        assert_exactly_once(tmp_path, {"a", "b"})


def test_a_duplicate_still_fails_after_compaction(tmp_path):
    from dfray.results import compact

    _part(tmp_path, "part-0.parquet", ["a", "b"])
    _part(tmp_path, "part-1.parquet", ["c"])
    _part(tmp_path, "part-2.parquet", ["b"])
    compact(str(tmp_path), tables=["videos"])
    assert len(list((tmp_path / "videos").glob("*.parquet"))) == 1  # "b" once in the file
    with pytest.raises(AssertionError, match="'b': 2"):
        assert_exactly_once(tmp_path)


def test_a_compaction_that_crashed_before_its_commit_is_not_counted(tmp_path):
    from dfray.results import compact

    class Crash(Exception):
        pass

    def crash(table, step):
        raise Crash(step)

    _part(tmp_path, "part-0.parquet", ["a", "b"])
    _part(tmp_path, "part-1.parquet", ["c"])
    with pytest.raises(Crash):
        compact(str(tmp_path), tables=["videos"], on_step=crash)  # after "written"
    assert len(list((tmp_path / "videos").glob("*.parquet"))) == 3
    assert assert_exactly_once(tmp_path, {"a", "b", "c"})["a"] == 1
    compact(str(tmp_path), tables=["videos"])
    assert len(list((tmp_path / "videos").glob("*.parquet"))) == 1
    assert_exactly_once(tmp_path, {"a", "b", "c"})
