"""Faults during a run: driver killed and resumed, a worker killed, a poison video, a hang.

Each run is a real `dfray score` in its own process group with its own local Ray, so a
kill takes the driver (and with it that Ray) down exactly as an operator would see it.
Scores use the shipped demo weights, so two runs are comparable.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from parts import assert_exactly_once
from proctree import kill_tree

from dfray.results import read_videos

HOOKS = str(Path(__file__).parent / "hooks")  # test-only fault injection (sitecustomize)

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


def start_score(corpus, out, run_id, *extra, env=None):
    cmd = [sys.executable, "-m", "dfray.cli", "score", str(corpus), "--out", str(out),
           "--run-id", run_id, "--flush-rows", "1", "--score-batch", "1", "--quiet", *extra]
    path = os.pathsep.join(p for p in (HOOKS, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, **(env or {}), "PYTHONPATH": path}
    return subprocess.Popen(cmd, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=600):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def wait_for_parts(run_dir, n, proc, timeout=400):
    deadline = time.time() + timeout
    while time.time() < deadline:
        parts = list((run_dir / "videos").glob("part-*.parquet")) if (run_dir / "videos").exists() else []
        if len(parts) >= n:
            return parts
        if proc.poll() is not None:
            pytest.fail(f"run ended before {n} parts were written:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"fewer than {n} parts after {timeout}s")


def rows(run_dir):
    assert_exactly_once(run_dir)  # raw part files: a duplicate fails here
    return {r["video_id"]: r for r in read_videos(str(run_dir)).to_pylist()}


def test_driver_killed_then_resumed_equals_clean_run(corpus_copy, tmp_path):
    out = tmp_path / "out"
    # the driver halts for good after its second videos part; then it is killed
    proc = start_score(corpus_copy, out, "k", env={"DFRAY_TEST_HALT_AFTER_PARTS": "2"})
    wait_for_parts(out / "k", 2, proc)
    kill_tree(proc.pid)  # the driver and all of the local Ray it started
    proc.wait()
    partial = rows(out / "k")
    assert len(partial) == 2
    doc = json.loads((out / "k" / "run.json").read_text())
    assert doc["state"] == "running"  # killed: never marked complete
    finish(start_score(corpus_copy, out, "k"))
    resumed = rows(out / "k")
    finish(start_score(corpus_copy, out, "clean"))
    clean = rows(out / "clean")
    assert set(resumed) == set(clean) and len(clean) == 6
    for vid, r in clean.items():
        assert resumed[vid]["status"] == r["status"] == "ok"
        assert resumed[vid]["score"] == pytest.approx(r["score"], abs=1e-5)
    for vid, r in partial.items():  # rows written before the kill were kept, not redone
        assert resumed[vid]["scored_at"] == r["scored_at"]
    doc = json.loads((out / "k" / "run.json").read_text())
    assert doc["state"] == "complete" and doc["launches"] == 2


def wait_for_file(path, proc, timeout=400):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        if proc.poll() is not None:
            pytest.fail(f"run ended before {path} appeared:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {path} after {timeout}s")


def test_worker_killed_mid_run_loses_and_duplicates_nothing(corpus_copy, tmp_path):
    # a worker blocks inside the extraction of zz-hold.mp4 (test hook); the test kills it
    # there, mid-video, and the run must redo that video once and complete
    good = sorted(corpus_copy.glob("*.mp4"))[0]
    (corpus_copy / "zz-hold.mp4").write_bytes(good.read_bytes())
    hold = tmp_path / "hold"
    hold.mkdir()
    out = tmp_path / "out"
    proc = start_score(corpus_copy, out, "w", env={"DFRAY_TEST_HOLD_DIR": str(hold)})
    pid = int(wait_for_file(hold / "held.pid", proc))
    assert psutil.Process(pid).is_running()
    os.kill(pid, signal.SIGKILL)
    finish(proc)
    r = rows(out / "w")
    assert len(r) == 7 and all(v["status"] == "ok" for v in r.values())
    assert r["zz-hold.mp4"]["score"] == pytest.approx(r[good.name]["score"], abs=1e-5)


def test_poison_and_hanging_videos_become_rows(corpus_copy, tmp_path):
    good = sorted(corpus_copy.glob("*.mp4"))[0]
    (corpus_copy / "poison.mp4").write_bytes(good.read_bytes())
    os.mkfifo(corpus_copy / "hang.mp4")  # opening it for reading blocks forever
    out = tmp_path / "out"
    proc = start_score(corpus_copy, out, "p", "--video-timeout", "20", "--max-attempts", "2",
                       env={"DFRAY_TEST_CRASH_ON": "poison"})
    finish(proc)
    r = rows(out / "p")
    assert len(r) == 8
    assert r["poison.mp4"]["status"] == "error"
    assert "crashed its worker 2 times" in r["poison.mp4"]["error"]
    assert r["poison.mp4"]["attempts"] == 3 and r["poison.mp4"]["score"] is None
    assert r["hang.mp4"]["status"] == "timeout" and "20 s" in r["hang.mp4"]["error"]
    assert sum(v["status"] == "ok" for v in r.values()) == 6
