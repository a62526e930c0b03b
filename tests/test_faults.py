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

import psutil
import pytest

from dfray.results import read_videos

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


def start_score(corpus, out, run_id, *extra, env=None):
    cmd = [sys.executable, "-m", "dfray.cli", "score", str(corpus), "--out", str(out),
           "--run-id", run_id, "--flush-rows", "1", "--score-batch", "1", "--quiet", *extra]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, start_new_session=True,
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
    t = read_videos(str(run_dir)).to_pylist()
    assert len(t) == len({r["video_id"] for r in t}), "duplicate rows"
    return {r["video_id"]: r for r in t}


def test_driver_killed_then_resumed_equals_clean_run(corpus_copy, tmp_path):
    out = tmp_path / "out"
    proc = start_score(corpus_copy, out, "k")
    wait_for_parts(out / "k", 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    partial = rows(out / "k")
    assert 2 <= len(partial) < 6
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


def extract_workers(root_pid):
    procs = psutil.Process(root_pid).children(recursive=True)
    return [p for p in procs if "_Extract" in " ".join(p.cmdline())]


def test_worker_killed_mid_run_loses_and_duplicates_nothing(corpus_copy, tmp_path):
    out = tmp_path / "out"
    proc = start_score(corpus_copy, out, "w")
    wait_for_parts(out / "w", 1, proc)
    victims = extract_workers(proc.pid)
    assert victims, "no extract worker process found"
    victims[0].kill()
    finish(proc)
    r = rows(out / "w")
    assert len(r) == 6 and all(v["status"] == "ok" for v in r.values())


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
