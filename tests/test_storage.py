"""dfray.storage's one atomic local write, and write_bytes through it."""

from __future__ import annotations

import os
import stat

import pytest

from dfray import storage
from dfray.config import StorageConfig


def test_atomic_path_replaces_whole_file_and_keeps_mode(tmp_path):
    target = tmp_path / "sub" / "cap.yaml"
    with storage.atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(target.parent) and not target.exists()
        with open(tmp, "w") as f:
            f.write("one")
    assert target.read_text() == "one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    target.chmod(0o600)
    with storage.atomic_path(target) as tmp, open(tmp, "w") as f:
        f.write("two")
    assert target.read_text() == "two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # the replaced file's mode
    assert sorted(p.name for p in target.parent.iterdir()) == ["cap.yaml"]


def test_atomic_path_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "run.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), storage.atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary left


def test_write_bytes_local_is_atomic_and_creates_folders(tmp_path):
    uri = str(tmp_path / "a" / "b" / "x.bin")
    storage.write_bytes(uri, b"data", StorageConfig())
    assert storage.read_bytes(uri, StorageConfig()) == b"data"
    assert os.listdir(tmp_path / "a" / "b") == ["x.bin"]
