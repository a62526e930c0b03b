"""Spend ledger: uptime × price on a SimClock; node sources (ray.nodes() shapes, EC2 on moto)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dfray.budget.clock import SimClock, WallClock
from dfray.budget.ledger import (
    Ec2NodeSource,
    Ledger,
    LedgerError,
    NodeSeen,
    NodeTypes,
    RayNodeSource,
)
from dfray.budget.prices import PriceBook

FAKE_CONFIG = Path(__file__).resolve().parents[2] / "infra" / "fake-multinode.yaml"
PRICES = {"g4dn.xlarge": 1.00, "m6i.large": 0.10}
HEAD = NodeSeen("h", "m6i.large", True, role="head")


def W(node_id: str, alive: bool = True, **kw) -> NodeSeen:
    return NodeSeen(node_id, "g4dn.xlarge", alive, **kw)


def test_clocks():
    c = SimClock(start=100.0)
    assert c.now() == 100.0
    assert c.advance(50) == 150.0 and c.now() == 150.0
    c.set(200.0)
    assert c.now() == 200.0
    with pytest.raises(ValueError):
        c.advance(-1)
    with pytest.raises(ValueError):
        c.set(10.0)
    assert abs(WallClock().now() - SimClock().now()) < 5


def test_uptime_times_price_head_included():
    clock = SimClock(start=0.0)
    led = Ledger(PRICES, clock)
    led.observe([HEAD, W("w1"), W("w2")])
    assert led.spend_usd() == 0.0 and led.count_running() == 3
    assert led.burn_usd_per_hour() == pytest.approx(2.10)
    clock.advance(1800)
    # running nodes are billed up to now, not only to their last snapshot
    assert led.spend_usd() == pytest.approx(0.5 * (0.10 + 2 * 1.00))
    clock.advance(1800)
    led.observe([HEAD, W("w1")])  # complete snapshot: w2 is gone, billed until now (1 h)
    assert [r.node_id for r in led.running()] == ["h", "w1"]
    assert led.burn_usd_per_hour() == pytest.approx(1.10)
    assert led.burn_usd_per_hour("worker") == pytest.approx(1.00)
    clock.advance(3600)
    assert led.spend_usd() == pytest.approx(2 * 0.10 + 2 * 1.00 + 1 * 1.00)
    nodes = {n["node_id"]: n for n in led.nodes()}
    assert nodes["w2"]["uptime_s"] == 3600 and not nodes["w2"]["running"]
    assert nodes["w2"]["ended_at"] is not None and nodes["w1"]["ended_at"] is None
    assert nodes["h"]["role"] == "head" and nodes["h"]["cost_usd"] == pytest.approx(0.2)
    assert nodes["w1"]["price_source"] == "override" and nodes["w1"]["usd_per_hour"] == 1.0


def test_dead_nodes_minimum_billing_and_partial_snapshots():
    clock = SimClock(start=0.0)
    led = Ledger(PRICES, clock, min_billed_s=60)
    led.observe([HEAD, W("old", alive=False)])  # first seen dead: never ours, ignored
    assert "old" not in led.records
    led.observe([W("w1")], complete=False)  # a partial snapshot ends nobody
    clock.advance(10)
    led.observe([HEAD, W("w1", alive=False)])  # reported dead after 10 s: billed 60 s
    assert not led.records["w1"].running
    assert led.records["w1"].billed_s(clock.now(), 60) == 60
    clock.advance(100)
    assert led.spend_usd() == pytest.approx(110 / 3600 * 0.10 + 60 / 3600 * 1.00)
    # a node that comes back (a stopped instance started again) opens a second period
    led.observe([HEAD, W("w1")])
    clock.advance(120)
    rec = led.records["w1"]
    assert rec.running and rec.periods == 2
    assert rec.billed_s(clock.now(), 60) == 60 + 120


def test_launch_time_is_billed_but_not_before_the_ledger_started():
    clock = SimClock(start=1000.0)
    led = Ledger(PRICES, clock)  # since = 1000
    clock.advance(100)
    led.observe(
        [
            NodeSeen("h", "m6i.large", True, role="head", launched_at=0.0),  # up long before
            NodeSeen("w", "g4dn.xlarge", True, launched_at=1040.0),  # booted 60 s ago
        ]
    )
    assert led.records["h"].first_seen == 1000.0
    assert led.records["w"].first_seen == 1040.0
    assert led.spend_usd() == pytest.approx(100 / 3600 * 0.10 + 60 / 3600 * 1.00)


def test_price_book_markets_and_sources():
    book = PriceBook(
        "us-east-1",
        overrides={"g4dn.xlarge": 0.526, "g4dn.xlarge:spot": 0.2, "m6i.large": 0.096},
        offline=True,
    )
    clock = SimClock(start=0.0)
    led = Ledger(book, clock)
    led.observe(
        [
            NodeSeen("h", "m6i.large", True, role="head", spot=False),
            W("od", spot=False),
            W("sp", spot=True),
        ]
    )
    assert led.burn_usd_per_hour() == pytest.approx(0.096 + 0.526 + 0.2)
    src = led.price_sources()
    assert set(src) == {"m6i.large:on_demand", "g4dn.xlarge:on_demand", "g4dn.xlarge:spot"}
    assert src["g4dn.xlarge:spot"]["usd_per_hour"] == 0.2
    assert {s["source"] for s in src.values()} == {"override"}
    # a plain callable decides the market itself
    led2 = Ledger(lambda itype: book.price(itype, spot=False), clock)
    led2.observe([W("sp", spot=True)])
    assert led2.burn_usd_per_hour() == pytest.approx(0.526)


def test_unpriced_instance_type_is_an_error():
    led = Ledger(PRICES, SimClock())
    with pytest.raises(LedgerError, match="p5.48xlarge"):
        led.observe([NodeSeen("x", "p5.48xlarge", True)])


# -- Ray's view: ray.nodes() entries as Ray 2.60 returns them --------------------------------


def ray_node(node_id: str, resources: dict, alive: bool = True) -> dict:
    res = {"memory": 1e9, "object_store_memory": 1e9, "node:192.0.2.2": 1.0, **resources}
    return {
        "NodeID": node_id,
        "Alive": alive,
        "alive": alive,
        "Resources": res,
        "Labels": {"ray.io/node-id": node_id},
    }


def test_ray_nodes_classified_by_marker_resources():
    types = NodeTypes.from_cluster_config(yaml.safe_load(FAKE_CONFIG.read_text()))
    assert types.head.name == "ray.head.default" and types.head.instance_type == "m6i.large"
    assert {t.name: t.markers for t in types.workers} == {
        "gpu_worker": frozenset({"dfray_node_gpu_worker"}),
        "cpu_worker": frozenset({"dfray_node_cpu_worker"}),
    }
    src = RayNodeSource(types)
    seen = src.parse(
        [
            ray_node("f0", {"CPU": 1.0, "node:__internal_head__": 1.0}),
            ray_node("f1", {"CPU": 1.0, "GPU": 1.0, "dfray_node_gpu_worker": 1.0}),
            ray_node("f2", {"CPU": 1.0, "dfray_node_cpu_worker": 1.0}),
            ray_node("f3", {"CPU": 1.0, "GPU": 1.0, "dfray_node_gpu_worker": 1.0}, alive=False),
        ]
    )
    assert [(n.node_id, n.instance_type, n.role, n.node_type, n.alive) for n in seen] == [
        ("f0", "m6i.large", "head", "ray.head.default", True),
        ("f1", "g4dn.xlarge", "worker", "gpu_worker", True),
        ("f2", "m6i.large", "worker", "cpu_worker", True),
        ("f3", "g4dn.xlarge", "worker", "gpu_worker", False),
    ]
    assert seen[0].spot is False and seen[1].spot is False
    # a node without a marker: the default worker type, or an error that says what to do
    bare = [ray_node("f9", {"CPU": 4.0, "GPU": 1.0})]
    assert RayNodeSource(types, worker_instance_type="g5.xlarge", worker_spot=True).parse(bare)[0][
        1:3
    ] == ("g5.xlarge", True)
    with pytest.raises(LedgerError, match="marker resource"):
        src.parse(bare)


def test_node_types_market_and_instance_type_overrides():
    config = {
        "head_node_type": "head",
        "available_node_types": {
            "head": {"node_config": {"InstanceType": "m6i.xlarge"}, "resources": {}},
            "gpu_spot": {
                "node_config": {
                    "InstanceType": "g4dn.xlarge",
                    "InstanceMarketOptions": {"MarketType": "spot"},
                },
                "resources": {"GPU": 1, "CPU": 4, "spot_gpu": 1},
                "max_workers": 3,
            },
            "local": {"node_config": {}, "resources": {"CPU": 1, "local_marker": 1}},
        },
    }
    types = NodeTypes.from_cluster_config(config, instance_types={"local": "m5.large"})
    t = types.by_name
    assert (t["gpu_spot"].instance_type, t["gpu_spot"].spot, t["gpu_spot"].max_workers) == (
        "g4dn.xlarge",
        True,
        3,
    )
    assert (t["local"].instance_type, t["local"].spot) == ("m5.large", False)
    # a local Ray with no cluster config: only the head, priced as the given head type
    only_head = RayNodeSource(head_instance_type="m6i.large").parse(
        [ray_node("h", {"CPU": 2.0, "node:__internal_head__": 1.0})]
    )
    assert only_head == [NodeSeen("h", "m6i.large", True, "head", False, None, None)]


# -- AWS's view: EC2 DescribeInstances by the ray-cluster-name tag, on moto -----------------------


@pytest.fixture
def ec2():
    import boto3
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("ec2", region_name="us-east-1")


def _run(ec2, itype: str, cluster: str, kind: str, spot: bool = False) -> str:
    image = "ami-12c6146b"  # one of moto's built-in AMIs
    kw = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
    tags = [
        {"Key": "ray-cluster-name", "Value": cluster},
        {"Key": "ray-node-type", "Value": kind},
        {"Key": "ray-user-node-type", "Value": f"{kind}-{itype}"},
    ]
    r = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType=itype,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        **kw,
    )
    return r["Instances"][0]["InstanceId"]


def test_ec2_source_counts_the_clusters_instances(ec2):
    head = _run(ec2, "m6i.large", "dfray", "head")
    w1 = _run(ec2, "g4dn.xlarge", "dfray", "worker", spot=True)
    w2 = _run(ec2, "g4dn.xlarge", "dfray", "worker")
    _run(ec2, "g4dn.xlarge", "another-cluster", "worker")  # not ours
    gone = _run(ec2, "g4dn.xlarge", "dfray", "worker")
    ec2.terminate_instances(InstanceIds=[gone])  # ended before we looked: not billed

    clock = SimClock()  # starts at the wall time: EC2 launch times are on the same axis
    src = Ec2NodeSource("dfray", client=ec2)
    seen = {n.node_id: n for n in src()}
    assert set(seen) == {head, w1, w2, gone}
    assert (seen[head].role, seen[head].instance_type, seen[head].spot) == (
        "head",
        "m6i.large",
        False,
    )
    assert (seen[w1].instance_type, seen[w1].spot, seen[w1].node_type) == (
        "g4dn.xlarge",
        True,
        "worker-g4dn.xlarge",
    )
    assert seen[w2].spot is False and seen[w2].alive and not seen[gone].alive
    launch = {
        i["InstanceId"]: i["LaunchTime"].timestamp()
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
    }
    assert seen[w1].launched_at == launch[w1]

    prices = {"m6i.large": 0.10, "g4dn.xlarge": 1.00}
    led = Ledger(prices, clock, since=clock.now() - 3600)
    led.observe(src())
    assert sorted(r.node_id for r in led.running()) == sorted([head, w1, w2])
    assert gone not in led.records
    for nid in (head, w1, w2):  # billed from the launch time, which is before "now"
        assert led.records[nid].first_seen == launch[nid] <= clock.now()
    clock.advance(1800)
    ec2.terminate_instances(InstanceIds=[w2])
    led.observe(src())
    clock.advance(1800)
    since_launch = {nid: clock.now() - launch[nid] for nid in (head, w1)}
    w2_s = clock.now() - 1800 - launch[w2]
    expected = (since_launch[head] * 0.10 + since_launch[w1] * 1.00 + w2_s * 1.00) / 3600
    assert led.spend_usd() == pytest.approx(expected, abs=1e-6)
    assert led.spend_usd() == pytest.approx(0.1 * 1 + 1.0 * 1 + 1.0 * 0.5, abs=0.01)
