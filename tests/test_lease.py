import json
import os
import socket
import time

import pytest

from dfray import lease
from dfray.config import StorageConfig

STALE_S = 60.0  # the lease timeout these tests pass (the run option's default is longer)


def _held_by_other(run, cfg, read, write):
    with lease.acquire(run, cfg, {"host": "h1", "pid": 11, "started": "t0"},
                       stale_after_s=STALE_S) as mine:
        assert read()["token"] == mine["token"]
        with pytest.raises(lease.LeaseHeld, match="host h1 pid 11") as e:
            with lease.acquire(run, cfg, {"host": "h2", "pid": 22, "started": "t1"},
                               stale_after_s=STALE_S):
                pass
        assert isinstance(e.value, ValueError)
        assert read()["token"] == mine["token"]  # the refused writer left it alone
    assert read() is None  # released on exit
    # a stale lease (writer gone) is taken over
    write({"host": "dead", "pid": 1, "started": "t", "token": "x",
           "heartbeat": time.time() - STALE_S - 5})
    with lease.acquire(run, cfg, {"host": "h3", "pid": 33, "started": "t2"},
                       stale_after_s=STALE_S) as new:
        assert read()["host"] == "h3" and read()["token"] == new["token"]
    assert read() is None


def test_local_lease(tmp_path):
    run = str(tmp_path / "run")
    path = tmp_path / "run" / lease.LEASE_NAME

    def read():
        return json.loads(path.read_text()) if path.exists() else None

    def write(d):
        path.write_text(json.dumps(d))

    _held_by_other(run, StorageConfig(), read, write)


def test_s3_lease_conditional_put(moto_server, s3):
    s3.create_bucket(Bucket="lease")
    cfg = StorageConfig(endpoint_url=moto_server, region="us-east-1")
    key = f"runs/r1/{lease.LEASE_NAME}"

    def read():
        try:
            return json.loads(s3.get_object(Bucket="lease", Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            return None

    def write(d):
        s3.put_object(Bucket="lease", Key=key, Body=json.dumps(d).encode())

    _held_by_other("s3://lease/runs/r1", cfg, read, write)


def test_holder_of_this_host_that_no_longer_exists_is_gone_at_once(tmp_path):
    """A lease of a process of this host (and PID namespace) that has exited is taken over
    without waiting for the timeout; one of a live process is not."""
    import subprocess
    import sys

    run = str(tmp_path / "run")
    path = tmp_path / "run" / lease.LEASE_NAME
    path.parent.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = lease.default_holder()
    for pid, refused in ((os.getpid(), True), (dead.pid, False)):
        path.write_text(json.dumps({**me, "pid": pid, "token": "t", "heartbeat": time.time()}))
        if refused:
            with pytest.raises(lease.LeaseHeld, match=f"pid {pid} "):
                with lease.acquire(run, StorageConfig(), stale_after_s=3600):
                    pass
        else:
            with lease.acquire(run, StorageConfig(), stale_after_s=3600) as mine:
                assert json.loads(path.read_text())["token"] == mine["token"]


# -- real `dfray score` processes on one run id --------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_second_score_on_a_run_is_refused_naming_the_holder(corpus_copy, tmp_path):
    """Two real `dfray score` processes on one run id: the second is refused with exit 2 and
    one line naming the first (host, pid); the first scores every video exactly once."""
    from parts import assert_exactly_once
    from test_faults import finish, start_score, wait_for_parts

    out = tmp_path / "out"
    go = tmp_path / "go"
    # the first writer pauses after its first videos part until `go` exists
    first = start_score(corpus_copy, out, "l", env={"DFRAY_TEST_HALT_AFTER_PARTS": "1",
                                                  "DFRAY_TEST_RESUME_FILE": str(go)})
    wait_for_parts(out / "l", 1, first)
    second = start_score(corpus_copy, out, "l")
    text, _ = second.communicate(timeout=300)
    assert second.returncode == 2, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dfray score: error: run is being written"), text
    assert f"host {socket.gethostname()} pid {first.pid} " in lines[0]
    go.touch()
    finish(first)
    ids = {p.name for p in corpus_copy.glob("*.mp4")}
    assert_exactly_once(out / "l", ids)
    doc = json.loads((out / "l" / "run.json").read_text())
    assert doc["state"] == "complete" and doc["launches"] == 1
    assert sum(doc["counts"].values()) == doc["n_rows"] == len(ids)
    assert not (out / "l" / lease.LEASE_NAME).exists()  # released on exit


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lease_of_a_writer_that_is_gone_is_taken_over_after_the_timeout(corpus_copy, tmp_path):
    """A writer killed on a node that is gone leaves its lease: it is refused while the
    lease is younger than --lease-timeout and taken over once it is older."""
    from parts import assert_exactly_once
    from proctree import kill_tree
    from test_faults import finish, start_score, wait_for_parts

    out = tmp_path / "out"
    first = start_score(corpus_copy, out, "g", env={"DFRAY_TEST_HALT_AFTER_PARTS": "2"})
    wait_for_parts(out / "g", 2, first)
    kill_tree(first.pid)
    first.wait()
    path = out / "g" / lease.LEASE_NAME
    held = json.loads(path.read_text())
    assert held["pid"] == first.pid
    # as if it had run on another node (one that was lost): only the timeout frees it
    path.write_text(json.dumps({**held, "host": "lost-node"}))
    refused = start_score(corpus_copy, out, "g", "--lease-timeout", "3600")
    text, _ = refused.communicate(timeout=300)
    assert refused.returncode == 2 and "host lost-node" in text and "3600s" in text, text
    timeout_s = 5.0
    while time.time() - held["heartbeat"] <= timeout_s:
        time.sleep(0.5)
    finish(start_score(corpus_copy, out, "g", "--lease-timeout", str(timeout_s)))
    assert_exactly_once(out / "g", {p.name for p in corpus_copy.glob("*.mp4")})
    doc = json.loads((out / "g" / "run.json").read_text())
    assert doc["state"] == "complete" and doc["launches"] == 2
    assert not path.exists()
