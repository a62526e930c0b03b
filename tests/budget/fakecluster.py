"""Ray's fake multi-node autoscaling cluster (infra/fake-multinode.yaml) for the budget
tests: tests/budget/test_autoscale_budget.py and tests/budget/test_fake_cluster_scenarios.py.

The fake cluster is started like ``ray.cluster_utils.AutoscalingCluster`` does
(``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=…``), but not with it: that
class reads ``fake_multi_node/example.yaml``, which the Ray 2.60 wheel does not ship, hides
the config path the governor must rewrite, and runs ``ray stop --force``, which would kill
every Ray process of the user on the machine. Here the head runs ``--block`` in its own
session with its own ports, temp dir and auth token, and teardown kills exactly the
processes of that tree.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from proctree import kill_tree

REPO = Path(__file__).resolve().parents[2]
FAKE_CONFIG = REPO / "infra" / "fake-multinode.yaml"
GPU_MARKER = "dfray_node_gpu_worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # every interface: the head binds them all
        return s.getsockname()[1]


def _reset_ray_auth() -> None:
    """Make this process re-read RAY_AUTH_* (Ray caches the mode and the token)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token authentication
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def fake_autoscaling_cluster(
    tmp: Path, *, head_cpus: int = 1, edit: Callable[[dict], None] | None = None
):
    """Yields (autoscaling config path, Ray address) of a fake autoscaling cluster.

    ``edit``: changes the copy of infra/fake-multinode.yaml in place before the head starts
    (the fake provider ignores ``node_config``; the budget ledger reads it)."""
    import ray
    from ray._private.services import get_node_ip_address

    config = yaml.safe_load(FAKE_CONFIG.read_text())
    port = free_port()
    address = f"{get_node_ip_address()}:{port}"
    config["provider"]["gcs_address"] = address  # where the fake workers join
    if edit is not None:
        edit(config)
    path = tmp / "autoscaling.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    temp_dir = Path(f"/tmp/dfray-fake-{uuid.uuid4().hex[:8]}")  # unix socket paths stay short
    token = uuid.uuid4().hex
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env = dict(
        os.environ,
        **auth,
        RAY_FAKE_CLUSTER="1",
        AUTOSCALER_UPDATE_INTERVAL_S="1",
        RAY_enable_autoscaler_v2="0",
        RAY_USAGE_STATS_ENABLED="0",
    )
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.pop("RAY_ADDRESS", None)
    log_path = tmp / "ray-start.log"
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--num-cpus={head_cpus}",
        "--num-gpus=0",
        f"--autoscaling-config={path}",
        f"--temp-dir={temp_dir}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-port={free_port()}",
        # every port of its own: the defaults (dashboard agent 52365, worker ports
        # 10002-19999, …) clash with a Ray that an earlier test in this process started
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        "--min-worker-port=0",
        "--max-worker-port=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    mp = pytest.MonkeyPatch()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the fake cluster did not start:\n{log_path.read_text()}")
            time.sleep(0.5)
        for k, v in auth.items():
            mp.setenv(k, v)
        mp.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        mp.delenv("RAY_ADDRESS", raising=False)
        _reset_ray_auth()
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        yield path, address
    finally:
        ray.shutdown()
        kill_tree(proc.pid, str(temp_dir))
        mp.undo()
        _reset_ray_auth()
        with contextlib.suppress(OSError):
            import shutil

            shutil.rmtree(temp_dir, ignore_errors=True)


def gpu_workers_alive() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"] and GPU_MARKER in n["Resources"])


def cap_in_file(path: Path) -> tuple[int, int]:
    c = yaml.safe_load(path.read_text())
    return c["max_workers"], c["available_node_types"]["gpu_worker"]["max_workers"]
