"""Shared fixtures: a moto S3 server on 127.0.0.1, small generated corpora, configs.

Fake AWS credentials are set at import time, before any Ray instance starts, so Ray
workers inherit them (they reach only the moto server on loopback; there is no AWS here).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Local test Rays run without Ray 2.60's token auth. A fixture that turns it on for its own
# cluster (tests/budget/fakecluster.py) restores this value when it is done, so
# later in-process `ray.init()`s do not inherit a token mode without a token.
os.environ["RAY_AUTH_MODE"] = "disabled"

RANDOM_MESO = """detectors:
  - name: m
    arch: meso4
    input_size: 256
    mean: [0.5, 0.5, 0.5]
    std: [0.5, 0.5, 0.5]
    aggregation: confident
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 API over HTTP (moto in server mode); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(moto_server):
    import boto3

    return boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")


def upload_dir(s3, local: Path, bucket: str, prefix: str) -> None:
    for p in sorted(local.rglob("*")):
        if p.is_file():
            s3.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(local).as_posix()}")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """6 labelled 360p clips of 2-3 s (DFDC layout), generated once per session."""
    from dfray.samples import generate_corpus

    root = tmp_path_factory.mktemp("tiny") / "corpus"
    generate_corpus(root, n_videos=6, seed=7, min_height=360, max_height=360,
                    min_seconds=2.0, max_seconds=3.0)
    return root


@pytest.fixture
def corpus_copy(tiny_corpus, tmp_path) -> Path:
    dst = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, dst)
    return dst


@pytest.fixture(scope="session")
def random_config(tmp_path_factory) -> str:
    p = tmp_path_factory.mktemp("cfg") / "random_meso.yaml"
    p.write_text(RANDOM_MESO)
    return str(p)


@pytest.fixture(scope="session")
def seeded_config(tmp_path_factory) -> str:
    """random_config's detector with fixed (seeded) weights in a file: two runs in two
    processes score alike, so their scores can be compared."""
    import torch

    from dfray.detectors.meso4 import build_meso4

    root = tmp_path_factory.mktemp("seeded")
    torch.manual_seed(0)
    torch.save(build_meso4(256).state_dict(), root / "meso4.pt")
    p = root / "seeded_meso.yaml"
    p.write_text(RANDOM_MESO.replace("    arch: meso4\n",
                                     f"    arch: meso4\n    weights: {root / 'meso4.pt'}\n"))
    return str(p)


def add_bad_inputs(root: Path) -> dict[str, str]:
    """The bad inputs of the issue; returns video_id -> expected status."""
    import av
    import numpy as np

    (root / "bad").mkdir(exist_ok=True)
    (root / "bad" / "zero.mp4").write_bytes(b"")
    (root / "bad" / "text.mp4").write_text("this is not a video\n" * 20)
    good = sorted(root.glob("*.mp4"))[0].read_bytes()
    (root / "bad" / "truncated.mp4").write_bytes(good[: len(good) // 3])
    path = root / "bad" / "noface.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 320, 180, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(12):
            img = rng.integers(0, 255, (180, 320, 3), dtype=np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return {
        "bad/zero.mp4": "read_error",
        "bad/text.mp4": "decode_error",
        "bad/truncated.mp4": "decode_error",
        "bad/noface.mp4": "no_faces",
    }


@pytest.fixture(scope="session")
def small_run(tiny_corpus, tmp_path_factory, random_config) -> Path:
    """A finished score run (6 good clips and the 4 bad inputs) written one part per video
    (--flush-rows 1) and not compacted (--no-compact), as a run of many flushes leaves it
    before its compaction. Read-only: copy before changing."""
    from dfray.cli import main

    root = tmp_path_factory.mktemp("smallrun")
    corpus = root / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    add_bad_inputs(corpus)
    rc = main(["score", str(corpus), "--out", str(root / "out"), "--config", random_config,
               "--run-id", "r", "--flush-rows", "1", "--no-compact", "--quiet"])
    assert rc == 0
    return root / "out" / "r"


@pytest.fixture(scope="module", autouse=True)
def _no_orphans_left(request):
    """After each test module: Ray processes it left running with no parent (a killed
    driver's workers, a cluster stopped by a signal) are killed, and a warning names them in
    the summary. They would otherwise keep this 2-core machine busy for every later test
    (tests/proctree.py says what that cost)."""
    import time
    import warnings

    from proctree import reap

    start = time.time()
    yield
    left = reap(start)
    if left:
        warnings.warn(f"{request.module.__name__} left Ray processes running (killed): {left}",
                      stacklevel=1)


@pytest.fixture(autouse=True)
def _time_sharing_scheduler():
    """Before each test: if something outside the suite has put this process under a
    real-time policy (a CI run found it under SCHED_FIFO 99), back to the normal one, with a
    warning. Every process a test starts inherits the policy, and a real-time process that
    spins (terraform's provider did) holds a core against everything else, `timeout` and
    this process's own timeouts included."""
    import warnings

    if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
        policy = os.sched_getscheduler(0)
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        warnings.warn(f"the test process ran under scheduling policy {policy}; reset to "
                      "SCHED_OTHER", stacklevel=1)
    yield


@pytest.fixture(autouse=True)
def _reset_dfray_logging():
    """The CLI configures the `dfray` logger for its process (own handler, no
    propagation); tests that call `main()` in-process must not leave that to the next test
    (caplog listens at the root logger)."""
    import logging

    yield
    logger = logging.getLogger("dfray")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
