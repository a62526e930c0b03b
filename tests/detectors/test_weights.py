"""Weights: resolve (local, builtin, s3 via moto, http), verify sha256, load safely."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from dfray.config import StorageConfig
from dfray.detectors import weights as W
from dfray.detectors.weights import WeightsError, load_state_dict, resolve_weights


class NotAllowed:
    """A custom class: pickling it into a checkpoint must make loading fail."""

    def __init__(self) -> None:
        self.x = 1


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def weights_file(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "w.pt"
    torch.save({"a": torch.arange(3.0)}, path)
    return path, sha(path.read_bytes())


def test_local_sha_match_and_mismatch(weights_file):
    path, digest = weights_file
    assert resolve_weights(str(path), None) == (path, digest)
    assert resolve_weights(str(path), digest.upper()) == (path, digest)
    assert resolve_weights(f"file://{path}", f"sha256:{digest}")[1] == digest
    with pytest.raises(WeightsError) as e:
        resolve_weights(str(path), "f" * 64)
    assert "f" * 64 in str(e.value) and digest in str(e.value)
    assert isinstance(e.value, ValueError)
    with pytest.raises(WeightsError, match="64 hex"):
        resolve_weights(str(path), "abc")


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(str(tmp_path / "nope.pt"), None)
    with pytest.raises(WeightsError, match="unsupported"):
        resolve_weights("gs://bucket/w.pt", None)


def test_builtin(tmp_path, monkeypatch, weights_file):
    assert W.builtin_path("meso4_demo") == W.BUILTIN_DIR / "meso4_demo.pt"
    assert W.BUILTIN_DIR == Path(W.__file__).parent / "weights"
    monkeypatch.setattr(W, "BUILTIN_DIR", tmp_path)
    path, digest = weights_file
    (tmp_path / "demo.pt").write_bytes(path.read_bytes())
    assert resolve_weights("builtin:demo", digest) == (tmp_path / "demo.pt", digest)
    with pytest.raises(WeightsError, match="builtin weights 'builtin:other' not found.*demo"):
        resolve_weights("builtin:other", None)
    with pytest.raises(WeightsError, match="bad builtin"):
        resolve_weights("builtin:../x", None)


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def test_s3_download_cached_and_verified(moto_endpoint, aws_env, tmp_path, weights_file):
    import boto3

    src, digest = weights_file
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="dfdc/w.pt", Body=src.read_bytes())
    storage = StorageConfig(endpoint_url=moto_endpoint, region="us-east-1")
    cache = tmp_path / "cache"

    path, got = resolve_weights("s3://models/dfdc/w.pt", digest, cache_dir=cache, storage=storage)
    assert got == digest and path.read_bytes() == src.read_bytes()
    assert path.parent == cache / digest and path.name == "w.pt"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]
    assert torch.equal(load_state_dict(path)["a"], torch.arange(3.0))

    # cached: served from the cache even after the object is gone
    s3.delete_object(Bucket="models", Key="dfdc/w.pt")
    s3.put_object(Bucket="models", Key="dfdc/w.pt", Body=src.read_bytes())
    mtime = path.stat().st_mtime_ns
    assert resolve_weights("s3://models/dfdc/w.pt", digest, cache, storage) == (path, digest)
    assert path.stat().st_mtime_ns == mtime

    # without a sha: cached by URI, size and mtime; the sha is still computed
    p2, got2 = resolve_weights("s3://models/dfdc/w.pt", None, cache_dir=cache, storage=storage)
    assert got2 == digest and p2.parent != path.parent

    # a wrong sha: error naming both, and nothing left in the cache under that sha
    with pytest.raises(WeightsError, match=f"expected {'0' * 64}, got {digest}"):
        resolve_weights("s3://models/dfdc/w.pt", "0" * 64, cache_dir=cache, storage=storage)
    assert not (cache / ("0" * 64) / "w.pt").exists()

    with pytest.raises(WeightsError, match="not found"):
        resolve_weights("s3://models/nope.pt", None, cache_dir=cache, storage=storage)


def test_http_download(tmp_path, weights_file):
    src, digest = weights_file
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(src.parent))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/w.pt"
        path, got = resolve_weights(url, digest, cache_dir=tmp_path / "c")
        assert got == digest and path.read_bytes() == src.read_bytes()
        with pytest.raises(WeightsError, match="cannot download"):
            resolve_weights(url + ".missing", None, cache_dir=tmp_path / "c")
    finally:
        server.shutdown()
        server.server_close()


def test_load_state_dict_formats(tmp_path):
    sd = {"encoder.w": torch.ones(2), "fc.bias": torch.zeros(1)}
    torch.save(sd, tmp_path / "raw.pt")
    torch.save(
        {
            "state_dict": {f"module.{k}": v for k, v in sd.items()},
            "epoch": 3,
            "bce_best": np.float64(0.2),  # old training scripts stored numpy metrics
        },
        tmp_path / "ckpt.pth",
    )
    for name in ("raw.pt", "ckpt.pth"):
        got = load_state_dict(tmp_path / name)
        assert sorted(got) == sorted(sd)
        assert torch.equal(got["encoder.w"], sd["encoder.w"])


def test_custom_class_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(1)}, "extra": NotAllowed()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="weights_only.*NotAllowed"):
        load_state_dict(tmp_path / "evil.pt")


def test_not_a_state_dict(tmp_path):
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="expected a state dict"):
        load_state_dict(tmp_path / "list.pt")
    torch.save({"w": torch.ones(1), "epoch": 3}, tmp_path / "mixed.pt")
    with pytest.raises(WeightsError, match="not tensors.*epoch"):
        load_state_dict(tmp_path / "mixed.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot load"):
        load_state_dict(tmp_path / "junk.pt")


def test_legacy_format_with_numpy_1x_scalars(tmp_path):
    """Checkpoints from 2020 (torch < 1.6 legacy format, numpy 1.x scalars as metrics)."""
    import io

    buf = io.BytesIO()
    ckpt = {"state_dict": {"module.w": torch.ones(2)}, "bce_best": np.float64(0.2)}
    torch.save(ckpt, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    (tmp_path / "old.pth").write_bytes(raw)
    got = load_state_dict(tmp_path / "old.pth")
    assert list(got) == ["w"] and torch.equal(got["w"], torch.ones(2))


def test_create_detector_from_s3(moto_endpoint, aws_env, tmp_path):
    import boto3

    from dfray.config import DetectorSpec
    from dfray.detectors import create_detector
    from dfray.detectors.meso4 import build_meso4

    path = tmp_path / "meso4.pt"
    torch.save(build_meso4(256).state_dict(), path)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="zoo")
    s3.upload_file(str(path), "zoo", "meso4.pt")
    spec = DetectorSpec(
        name="m",
        arch="meso4",
        weights="s3://zoo/meso4.pt",
        sha256=sha(path.read_bytes()),
        input_size=256,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
    )
    storage = StorageConfig(endpoint_url=moto_endpoint, region="us-east-1")
    det = create_detector(spec, storage=storage, cache_dir=str(tmp_path / "cache"))
    assert det.weights_sha256 == spec.sha256
    assert det.weights_path.startswith(str(tmp_path / "cache"))
    assert det.predict(np.zeros((1, 256, 256, 3), np.uint8)).shape == (1,)
