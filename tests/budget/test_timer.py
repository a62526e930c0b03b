"""The governor acts on its own clock: a stalled pipeline (no rows at all) is stopped on the
runner's tick, the poll thread stops a run whose driver does not check at all, a stop scales
to zero workers and says how to take the head down, and `--down-on-exit` terminates the
cluster's EC2 instances (moto)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from dfray.budget.clock import SimClock
from dfray.budget.governor import BudgetGovernor
from dfray.budget.ledger import Ec2NodeSource, NodeSeen
from dfray.progress import Progress

FAKE_CONFIG = Path(__file__).resolve().parents[2] / "infra" / "fake-multinode.yaml"
PRICES = {"g4dn.xlarge": 1.00, "m6i.large": 0.10}
NODES = [
    NodeSeen("h", "m6i.large", True, role="head"),
    NodeSeen("w1", "g4dn.xlarge", True, node_type="gpu_worker"),
    NodeSeen("w2", "g4dn.xlarge", True, node_type="gpu_worker"),
]


@pytest.fixture
def fake_config(tmp_path) -> Path:
    path = tmp_path / "autoscaling.yaml"
    shutil.copy(FAKE_CONFIG, path)
    return path


def _cap(path: Path) -> int:
    return yaml.safe_load(path.read_text())["max_workers"]


def test_stalled_pipeline_is_stopped_by_the_tick(fake_config):
    clock = SimClock(start=0.0)
    g = BudgetGovernor(
        2.0, PRICES, clock=clock, source=lambda: NODES, poll_s=0,
        autoscaling_config=str(fake_config),
    )  # fmt: skip
    prog = Progress(total=1000, enabled=False)
    g.start(n_todo=1000, prog=prog)
    for _ in range(5):  # a few rows, then the pipeline stalls: actors hold the GPUs
        clock.advance(60)
        prog.add([{"status": "ok"}])
        assert not g.should_stop(prog)
    done_when_stalled = prog.done
    ticks = 0
    while not g.should_stop(prog):  # the runner's tick: no rows, the clock moves on
        clock.advance(1)
        ticks += 1
        assert ticks < 3600 * 3, "the tick never stopped the stalled run"
    assert prog.done == done_when_stalled  # stopped with no row arriving
    rep = g.report()
    assert rep["stopped_reason"].startswith("budget")
    assert rep["spent_usd"] <= g.cap_usd
    assert _cap(fake_config) == 0  # the workers are scaled away at once
    assert "ray down" in rep["after_stop"] and "m6i.large" in rep["after_stop"]


def test_poll_thread_stops_a_run_whose_driver_does_not_check(fake_config):
    clock = SimClock(start=0.0)
    g = BudgetGovernor(
        2.0, PRICES, clock=clock, source=lambda: NODES, poll_s=1,
        autoscaling_config=str(fake_config), background_poll=True,
    )  # fmt: skip
    prog = Progress(total=1000, enabled=False)
    g.start(n_todo=1000, prog=prog)
    try:
        assert g.stopped_reason is None and _cap(fake_config) > 0
        clock.advance(3600)  # an hour with no check from the driver: $2.10 of burn
        t_end = time.monotonic() + 30
        while g.stopped_reason is None and time.monotonic() < t_end:
            time.sleep(0.2)
        assert g.stopped_reason is not None and g.stopped_reason.startswith("budget (timer)")
        assert _cap(fake_config) == 0
        assert g.should_stop(prog) is True  # the driver's next check sees it
    finally:
        g.report()


@pytest.fixture
def ec2():
    import boto3
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("ec2", region_name="us-east-1")


def _launch(ec2, cluster: str, kind: str) -> str:
    tags = [{"Key": "ray-cluster-name", "Value": cluster}, {"Key": "ray-node-type", "Value": kind}]
    r = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="m6i.large",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )  # fmt: skip
    return r["Instances"][0]["InstanceId"]


def test_down_on_exit_terminates_the_clusters_instances(ec2):
    head, w1 = _launch(ec2, "dfray-t", "head"), _launch(ec2, "dfray-t", "worker")
    other = _launch(ec2, "another", "worker")
    g = BudgetGovernor(
        5.0, {"m6i.large": 0.1}, head_type="m6i.large", worker_type="m6i.large",
        clock=SimClock(), poll_s=0, source=Ec2NodeSource("dfray-t", client=ec2),
    )  # fmt: skip
    g.start(n_todo=10)
    g.report()
    out = g.take_down()
    assert out["terminated"] == [w1, head]  # workers first, the head last
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
    }
    assert states[head] == states[w1] == "terminated"
    assert states[other] == "running"


def test_down_on_exit_is_one_option():
    from dfray.config import BudgetConfig

    assert BudgetConfig(budget_usd=1.0, down_on_exit=True).down_on_exit
