"""The one cost model: plan, render and the governor agree on one budget to the cent, and
node rates count EBS, public IPv4 and the S3 allowance."""

from __future__ import annotations

import math

import pytest

from dfray.budget import cost
from dfray.budget.clock import SimClock
from dfray.budget.cluster import NodeTypes
from dfray.budget.governor import BudgetGovernor
from dfray.budget.planner import make_plan
from dfray.budget.prices import PriceBook
from dfray.budget.render import render_cluster
from dfray.progress import Progress

# The audit's example: budget $50, deadline 8 h, g5.xlarge spot, m5.large head, 150 GB gp3.
VOLUME = [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 150, "VolumeType": "gp3"}}]
TEMPLATE = {
    "cluster_name": "dfray-cost",
    "max_workers": 100,
    "provider": {"type": "aws", "region": "us-east-1"},
    "available_node_types": {
        "head": {
            "resources": {"CPU": 0},
            "node_config": {"InstanceType": "m5.large", "BlockDeviceMappings": VOLUME},
        },
        "gpu_g5_spot": {
            "min_workers": 0,
            "max_workers": 100,
            "resources": {"dfray_node_gpu_g5_spot": 1},
            "node_config": {
                "InstanceType": "g5.xlarge",
                "InstanceMarketOptions": {"MarketType": "spot"},
                "BlockDeviceMappings": VOLUME,
            },
        },
    },
    "head_node_type": "head",
}
PRICES = {"g5.xlarge:spot": 0.4216, "g5.xlarge:on_demand": 1.006, "m5.large": 0.096}
BUDGET, HOURS = 50.0, 8.0


def book() -> PriceBook:
    return PriceBook("us-east-1", offline=True, overrides=PRICES, cache_dir="/nonexistent")


def test_node_rate_counts_ebs_ipv4_and_s3():
    types = NodeTypes.from_cluster_config(TEMPLATE)
    rate = cost.node_rate(book().price("g5.xlarge", spot=True), types.by_name["gpu_g5_spot"])
    ebs = 150 * 0.08 / 730  # gp3 $0.08/GB-month
    assert rate.ebs_usd_per_hour == pytest.approx(ebs)
    assert rate.ipv4_usd_per_hour == 0.005
    assert rate.s3_usd_per_hour == 0.01
    assert rate.usd_per_hour == pytest.approx(0.4216 + ebs + 0.005 + 0.01)
    # not on AWS (a local or fake cluster): the instance alone
    fake = dict(TEMPLATE, provider={"type": "fake_multinode"})
    local = NodeTypes.from_cluster_config(fake).by_name["gpu_g5_spot"]
    assert cost.node_rate(book().price("g5.xlarge", spot=True), local).ipv4_usd_per_hour == 0
    # no public address when the interfaces say so
    private = {"NetworkInterfaces": [{"AssociatePublicIpAddress": False}]}
    nc = dict(TEMPLATE["available_node_types"]["gpu_g5_spot"]["node_config"], **private)
    t = dict(TEMPLATE["available_node_types"]["gpu_g5_spot"], node_config=nc)
    cfg = dict(TEMPLATE, available_node_types={"head": TEMPLATE["available_node_types"]["head"],
                                               "gpu_g5_spot": t})  # fmt: skip
    assert NodeTypes.from_cluster_config(cfg).by_name["gpu_g5_spot"].public_ipv4 == 0


def test_plan_render_and_governor_agree_to_the_cent():
    """Same budget, deadline and prices: same worker count, same projected total."""
    types = NodeTypes.from_cluster_config(TEMPLATE)
    # by hand, from the cost model's docstring
    extras = 150 * 0.08 / 730 + 0.005 + 0.01
    head, worker = 0.096 + extras, 0.4216 + extras
    usable = BUDGET * 0.98
    want = math.floor((usable - head * HOURS) / (worker * HOURS))
    want_total = (head + want * worker) * HOURS
    assert want == 13 and want_total <= usable

    plan = make_plan(
        n_videos=100_000,
        budget_usd=BUDGET,
        deadline_s=HOURS * 3600,
        videos_per_hour_per_worker=900,
        prices=book(),
        instance_types=["g5.xlarge"],
        markets=["spot"],
        head_type="m5.large",
        margin=0.0,
        node_types=types,
    )
    (row,) = plan.rows

    rendered = render_cluster(
        TEMPLATE,
        budget_usd=BUDGET,
        deadline_s=HOURS * 3600,
        prices=book(),
        instance_type="g5.xlarge",
        fallback=False,
    )

    g = BudgetGovernor(
        BUDGET,
        book(),
        cluster_config=TEMPLATE,
        deadline_s=HOURS * 3600,
        clock=SimClock(start=0.0),
        source=lambda: [],
        poll_s=0,
    )
    g.start(n_todo=100_000, prog=Progress(total=100_000, enabled=False))
    snap = g.snapshot()

    assert row.budget_workers == rendered.max_workers == g.max_workers() == want
    totals = {row.budget_projected_usd, rendered.projected_usd, snap["projected_at_cap_usd"]}
    assert {round(t, 2) for t in totals} == {round(want_total, 2)}
    assert snap["cap_usd"] == pytest.approx(usable)
    assert snap["head_usd_per_hour"] == pytest.approx(head, abs=1e-6)
    assert snap["worker_usd_per_hour"] == pytest.approx(worker, abs=1e-6)
    assert "data transfer" in " ".join(snap["not_counted"])
