import socket
from pathlib import Path

import pytest

from dfray import storage
from dfray.config import ConfigError, StorageConfig, load_ensemble


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: nothing listens there


def test_unreachable_endpoint_is_one_storage_error_naming_it():
    cfg = StorageConfig(endpoint_url=f"http://127.0.0.1:{_closed_port()}", connect_timeout_s=2)
    with pytest.raises(storage.StorageError, match="cannot reach S3 endpoint http://127.0.0.1"):
        storage.check_reachable(cfg)


def test_endpoint_with_user_info_is_refused_without_showing_it():
    with pytest.raises(ConfigError, match="--endpoint-url must not carry user info") as e:
        StorageConfig(endpoint_url="http://user:hunter2@127.0.0.1:9000")
    assert "hunter2" not in str(e.value) and "http://127.0.0.1:9000" in str(e.value)


def test_reachable_endpoint_passes(moto_server):
    storage.check_reachable(StorageConfig(endpoint_url=moto_server))


def test_clients_use_connect_timeout():
    cfg = StorageConfig(endpoint_url="http://127.0.0.1:1", connect_timeout_s=3)
    assert storage.s3_client(cfg).meta.config.connect_timeout == 3


@pytest.mark.parametrize("text, match", [
    ("detectors: [null]", "each detector is a mapping"),
    ("detectors: [{name: a, arch: meso4, mean: 0.5}]", "detector 'a': wrong value type"),
    ("detectors: [{name: a, arch: meso4, input_size: big}]", "detector 'a': wrong value type"),
    ("detectors: [{name: a, arch: meso4, options: [1]}]", "options must be a mapping"),
])
def test_yaml_type_mistakes_are_config_errors(tmp_path, text, match):
    p = tmp_path / "e.yaml"
    p.write_text(text + "\n")
    with pytest.raises(ConfigError, match=match):
        load_ensemble(str(p))


def test_cli_unreachable_endpoint_exits_2_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "dfray.cli", "score", "s3://bucket/videos", "--out", str(tmp_path),
         "--endpoint-url", f"http://127.0.0.1:{_closed_port()}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("dfray score: error: cannot reach S3 endpoint http://127.0.0.1"), r.stderr
    assert "Traceback" not in r.stderr
